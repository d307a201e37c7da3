"""The suspension state machine (Art.21): sustained violations suspend in mode Auto, only a
deliberate request or a calm cool-down resumes, never twice, nothing lost at clock edges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hegui.api.generativeservice import (
    Suspension,
    SuspensionStatus,
    SuspensionTrigger,
)
from hegui.operator.slo import SloEvaluation, Verdict
from hegui.operator.suspension import (
    COOL_DOWN_BY,
    IncidentRate,
    Outcome,
    ResumeRequest,
    Step,
    SuspendRequest,
    SuspensionState,
    TransitionKind,
    step,
)

T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)

BURNING = SloEvaluation("ns/chat", Verdict.VIOLATING, violating=True, calm=False,
                        reason="availability 0.99 burns 20.0x (1h) and 30.0x (5m) (Art.13)")
HEALTHY = SloEvaluation("ns/chat", Verdict.HEALTHY, violating=False, calm=True,
                        reason="objectives met (Art.13)")
RECOVERING = SloEvaluation("ns/chat", Verdict.HEALTHY, violating=False, calm=False,
                           reason="objectives met (Art.13), old failures in the long window")
BLIND = SloEvaluation("ns/chat", Verdict.ERROR, violating=False, calm=False,
                      reason="Prometheus unreachable", error="unreachable")
QUIET = SloEvaluation("ns/chat", Verdict.INSUFFICIENT_TRAFFIC, violating=False, calm=True,
                      reason="too little traffic")


def spec(**fields: Any) -> Suspension:
    return Suspension.from_dict({"mode": "Auto", "sustainedFor": "15m", **fields})


def run(state: SuspensionState | None, evaluations: list[tuple[timedelta, SloEvaluation]],
        **kwargs: Any) -> tuple[SuspensionState, list[Step]]:
    """Feed evaluations at T0 + offset, as the operator's timer would."""
    steps = []
    current = state or SuspensionState()
    for offset, evaluation in evaluations:
        result = step(current, evaluation=evaluation, now=T0 + offset,
                      **{"spec": spec(), **kwargs})
        steps.append(result)
        current = result.state
    return current, steps


def suspended_at(moment: datetime, trigger: SuspensionTrigger = SuspensionTrigger.AUTO,
                 **spec_fields: Any) -> SuspensionState:
    if trigger is SuspensionTrigger.MANUAL:
        request = SuspendRequest("alice", "regulator's order", moment)
        return step(None, spec=spec(**spec_fields), evaluation=None, now=moment,
                    suspend=request).state
    return step(None, spec=spec(sustainedFor="0s", **spec_fields), evaluation=BURNING,
                now=moment).state


# --- suspending ----------------------------------------------------------------------------------

def test_a_violation_suspends_once_it_has_lasted_sustained_for() -> None:
    state, steps = run(None, [(0 * MIN, BURNING), (5 * MIN, BURNING),
                              (15 * MIN - timedelta(seconds=1), BURNING)])
    assert not state.suspended and state.violating_since == T0
    assert all(not s.transitions for s in steps) and steps[-1].violating
    assert "of 15m before it counts" in steps[-1].notes[0]
    result = step(state, spec=spec(), evaluation=BURNING, now=T0 + 15 * MIN)  # exactly 15m
    assert result.state.suspended and result.state.since == T0 + 15 * MIN
    [transition] = result.transitions
    assert transition.kind is TransitionKind.SUSPEND
    assert transition.trigger is SuspensionTrigger.AUTO and transition.by == "operator"
    assert "sustained for 15m" in transition.reason and "20.0x" in transition.reason
    assert transition.reason.endswith("(Art.21)")
    assert transition.figures["verdict"] == "Violating"
    record = result.state.history[0]
    assert record.trigger is SuspensionTrigger.AUTO and record.resumed_at is None
    assert result.state.violating_since is None


def test_an_interrupted_violation_starts_over() -> None:
    state, _ = run(None, [(0 * MIN, BURNING), (10 * MIN, HEALTHY), (11 * MIN, BURNING),
                          (24 * MIN, BURNING)])
    assert not state.suspended and state.violating_since == T0 + 11 * MIN


@pytest.mark.parametrize("gap", [BLIND, QUIET], ids=["prometheus-down", "too-little-traffic"])
def test_a_gap_in_the_evidence_restarts_the_clock(gap: SloEvaluation) -> None:
    state, steps = run(None, [(0 * MIN, BURNING), (10 * MIN, gap), (16 * MIN, BURNING)])
    assert not state.suspended and state.violating_since == T0 + 16 * MIN
    assert not steps[1].violating


def test_a_clock_that_goes_back_never_suspends_early() -> None:
    # A failover to a replica whose clock is behind: the violation has not lasted at all.
    state = SuspensionState(violating_since=T0 + 20 * MIN)
    result = step(state, spec=spec(), evaluation=BURNING, now=T0 + 30 * MIN)
    assert not result.state.suspended and result.state.violating_since == T0 + 20 * MIN
    result = step(state, spec=spec(), evaluation=BURNING, now=T0 + 35 * MIN)
    assert result.state.suspended


@pytest.mark.parametrize("mode", ["Manual", "Off"])
def test_manual_and_off_report_a_sustained_violation_without_suspending(mode: str) -> None:
    state, steps = run(None, [(0 * MIN, BURNING), (20 * MIN, BURNING)], spec=spec(mode=mode))
    assert not state.suspended and not steps[-1].transitions
    assert steps[-1].sustained and steps[-1].violating
    assert f"mode {mode}" in steps[-1].notes[0]


def test_no_slo_and_too_many_incidents_suspend_too() -> None:
    incidents = IncidentRate(rate=42, limit=10)
    state, steps = run(None, [(0 * MIN, HEALTHY), (15 * MIN, HEALTHY)], incidents=incidents)
    assert state.suspended
    assert "moderation incidents at 42 per hour, above the declared limit of 10 (Art.14)" in \
        steps[-1].transitions[0].reason
    assert steps[-1].transitions[0].figures["incidents.rate"] == 42


def test_no_double_suspension_an_order_is_recorded_on_the_suspension_in_force() -> None:
    """An order for a service already suspended starts no second suspension: it is written on
    the one in force, which then no cool-down lifts (a person's order) and, for an authority's
    order, only the issuer's group (Art.21)."""
    state = suspended_at(T0)
    for offset, uid in ((1, "o1"), (30, "o2"), (90, "o3")):
        result = step(state, spec=spec(), evaluation=BURNING, now=T0 + offset * MIN,
                      suspend=SuspendRequest("bob", "again", T0 + offset * MIN, uid=uid,
                                             order=f"chat-{uid}"))
        assert result.transitions == () and result.state.suspended
        assert len(result.state.history) == 1 and result.state.since == T0
        assert result.outcomes[uid][0] is Outcome.APPLIED
        assert result.state.history[0].trigger is SuspensionTrigger.MANUAL
        assert result.state.history[0].order == f"chat-{uid}"
        state = result.state
    assert state.consumed == ("o3", "o2", "o1")
    ordered = step(state, spec=spec(), evaluation=BURNING, now=T0 + 100 * MIN,
                   suspend=SuspendRequest("wang", "order 2026-117", T0 + 100 * MIN, uid="o4",
                                          authority="CAC (2026-117)", issuer_group="cac"))
    record = ordered.state.history[0]
    assert record.trigger is SuspensionTrigger.ORDER and record.issuer_group == "cac"
    second = step(ordered.state, spec=spec(), evaluation=BURNING, now=T0 + 101 * MIN,
                  suspend=SuspendRequest("zhao", "another order", T0 + 101 * MIN, uid="o5",
                                         authority="MIIT (9)", issuer_group="miit"))
    assert second.state.history[0].issuer_group == "cac"  # the first issuer keeps it
    assert second.outcomes["o5"][0] is Outcome.IGNORED and "cac" in second.outcomes["o5"][1]


def test_a_resume_outside_the_issuer_group_is_refused() -> None:
    state = step(None, spec=spec(), evaluation=HEALTHY, now=T0,
                 suspend=SuspendRequest("wang", "order 2026-117", T0, uid="o1",
                                        authority="CAC (2026-117)", issuer_group="cac")).state
    refused = step(state, spec=spec(), evaluation=HEALTHY, now=T0 + MIN,
                   resume=ResumeRequest("alice", "we fixed it", T0 + MIN, uid="r1",
                                        groups=("hegui:compliance",)))
    assert refused.state.suspended and refused.transitions == ()
    assert "only a member of group cac" in refused.outcomes["r1"][1]
    lifted = step(refused.state, spec=spec(), evaluation=HEALTHY, now=T0 + 2 * MIN,
                  resume=ResumeRequest("li", "order lifted", T0 + 2 * MIN, uid="r2",
                                       groups=("cac",)))
    assert not lifted.state.suspended
    assert lifted.state.history[0].resumed_by == "li"


def test_a_person_may_suspend_in_any_mode() -> None:
    result = step(None, spec=spec(mode="Off"), evaluation=HEALTHY, now=T0,
                  suspend=SuspendRequest("alice", "order of the cyberspace office", T0))
    assert result.state.suspended
    [transition] = result.transitions
    assert transition.trigger is SuspensionTrigger.MANUAL and transition.by == "alice"
    assert transition.reason == "suspended by alice: order of the cyberspace office (Art.21)"


# --- resuming ------------------------------------------------------------------------------------

def test_a_deliberate_resume_ends_the_suspension_and_closes_its_record() -> None:
    state = suspended_at(T0)
    result = step(state, spec=spec(), evaluation=BURNING, now=T0 + 5 * MIN,
                  resume=ResumeRequest("alice", "model rolled back", T0 + 4 * MIN))
    assert not result.state.suspended and result.state.since == T0 + 5 * MIN
    [transition] = result.transitions
    assert transition.kind is TransitionKind.RESUME and transition.by == "alice"
    assert transition.trigger is SuspensionTrigger.MANUAL
    assert "resumed by alice: model rolled back" in transition.reason
    record = result.state.history[0]
    assert record.resumed_at == T0 + 5 * MIN and record.resumed_by == "alice"


def test_a_resumed_service_gets_sustained_for_of_grace() -> None:
    # The long windows still hold the outage: it must burn 15m anew before it counts again.
    state = suspended_at(T0)
    resumed = step(state, spec=spec(), evaluation=BURNING, now=T0 + 5 * MIN,
                   resume=ResumeRequest("alice", "fixed", T0 + 5 * MIN)).state
    state, steps = run(resumed, [(6 * MIN, BURNING), (20 * MIN, BURNING)],
                       resume=ResumeRequest("alice", "fixed", T0 + 5 * MIN))
    assert not state.suspended and all(not s.transitions for s in steps)
    state, steps = run(state, [(21 * MIN, BURNING)])
    assert state.suspended and len(state.history) == 2


def test_a_stale_resume_never_undoes_a_newer_suspension() -> None:
    # The resume request of the first suspension is still there when the second one starts.
    old = ResumeRequest("alice", "fixed", T0 - 60 * MIN)
    state = suspended_at(T0)
    result = step(state, spec=spec(), evaluation=BURNING, now=T0 + MIN, resume=old)
    assert result.state.suspended and result.transitions == ()
    assert "before the current state began" in result.notes[0]


def test_a_resume_made_at_the_second_of_the_suspension_counts() -> None:
    state = suspended_at(T0)
    result = step(state, spec=spec(), evaluation=BURNING, now=T0 + MIN,
                  resume=ResumeRequest("alice", "false alarm", T0))
    assert not result.state.suspended


def test_a_resume_is_not_lost_across_steps() -> None:
    # The request stays until it is honoured: a blind step (Prometheus down) does not eat it.
    state = suspended_at(T0)
    request = ResumeRequest("alice", "fixed", T0 + MIN)
    result = step(state, spec=spec(), evaluation=BLIND, now=T0 + 2 * MIN, resume=request)
    assert not result.state.suspended
    again = step(result.state, spec=spec(), evaluation=BLIND, now=T0 + 3 * MIN, resume=request)
    assert again.transitions == () and not again.state.suspended  # and not resumed twice
    assert len(again.state.history) == 1


def test_of_two_requests_the_later_wins() -> None:
    suspend = SuspendRequest("bob", "check", T0 + MIN)
    resume = ResumeRequest("bob", "never mind", T0 + 2 * MIN)
    result = step(None, spec=spec(), evaluation=HEALTHY, now=T0 + 3 * MIN, suspend=suspend,
                  resume=resume)
    assert not result.state.suspended and result.transitions == ()
    later = SuspendRequest("bob", "on second thought", T0 + 3 * MIN)
    result = step(None, spec=spec(), evaluation=HEALTHY, now=T0 + 3 * MIN, suspend=later,
                  resume=resume)
    assert result.state.suspended


def test_cool_down_resumes_after_a_calm_stretch_only() -> None:
    state = suspended_at(T0, coolDown="30m")
    cool = spec(coolDown="30m")
    state, steps = run(state, [(10 * MIN, RECOVERING), (20 * MIN, HEALTHY),
                               (35 * MIN, BURNING), (40 * MIN, HEALTHY),
                               (69 * MIN, HEALTHY)], spec=cool)
    assert state.suspended and state.healthy_since == T0 + 40 * MIN
    assert "calm for 29m of coolDown 30m" in steps[-1].notes[0]
    result = step(state, spec=cool, evaluation=QUIET, now=T0 + 70 * MIN)
    assert not result.state.suspended
    [transition] = result.transitions
    assert transition.by == COOL_DOWN_BY and transition.trigger is SuspensionTrigger.AUTO
    assert result.state.history[0].resumed_by == COOL_DOWN_BY


def test_a_blind_step_restarts_the_cool_down() -> None:
    cool = spec(coolDown="30m")
    state, _ = run(suspended_at(T0, coolDown="30m"),
                   [(1 * MIN, HEALTHY), (20 * MIN, BLIND), (21 * MIN, HEALTHY),
                    (40 * MIN, HEALTHY)], spec=cool)
    assert state.suspended and state.healthy_since == T0 + 21 * MIN


def test_without_cool_down_or_after_a_person_suspended_only_a_person_resumes() -> None:
    state, steps = run(suspended_at(T0), [(m * MIN, HEALTHY) for m in (1, 100, 1000)])
    assert state.suspended and "no coolDown declared" in steps[-1].notes[0]
    cool = spec(coolDown="5m")
    state, steps = run(suspended_at(T0, SuspensionTrigger.MANUAL),
                       [(m * MIN, HEALTHY) for m in (1, 100, 1000)], spec=cool)
    assert state.suspended and "suspended by a person" in steps[-1].notes[0]


def test_a_spec_change_never_resumes() -> None:
    # GitOps turning automatic suspension off does not undo one in force.
    state = suspended_at(T0)
    for mode in ("Manual", "Off"):
        result = step(state, spec=spec(mode=mode, coolDown="1m"), evaluation=HEALTHY,
                      now=T0 + 60 * MIN)
        assert result.state.suspended
    assert step(state, spec=None, evaluation=None, now=T0 + 60 * MIN).state.suspended


# --- the status ----------------------------------------------------------------------------------

def test_history_keeps_the_ten_newest_first() -> None:
    state = SuspensionState()
    for cycle in range(12):
        at = T0 + cycle * 60 * MIN
        state = step(state, spec=spec(), evaluation=None, now=at,
                     suspend=SuspendRequest("ops", f"drill {cycle}", at)).state
        state = step(state, spec=spec(), evaluation=None, now=at + MIN,
                     resume=ResumeRequest("ops", "done", at + MIN)).state
    assert len(state.history) == 10
    assert [r.reason for r in state.history[:2]] == ["suspended by ops: drill 11 (Art.21)",
                                                     "suspended by ops: drill 10 (Art.21)"]
    assert all(r.resumed_at is not None for r in state.history)


def test_hostile_text_is_bounded_and_the_status_validates() -> None:
    result = step(None, spec=spec(), evaluation=None, now=T0,
                  suspend=SuspendRequest("x" * 5000, "y" * 50_000, T0))
    status = result.status
    assert len(status.reason) <= 1024 and len(status.history[0].reason) <= 512
    assert len(result.transitions[0].by) <= 256
    assert SuspensionStatus.from_dict(status.to_dict()) == status  # what the apiserver stores


def test_the_status_round_trips_with_its_clocks() -> None:
    state = step(None, spec=spec(), evaluation=BURNING, now=T0).state
    written = state.to_dict()
    assert written["violatingSince"] == "2026-05-01T08:00:00Z"
    assert written["healthySince"] is None  # null: a merge patch removes it
    back = SuspensionState.from_status(state.to_status())
    assert back.suspended is False
    if "violating_since" in SuspensionStatus.model_fields:  # once the API carries the clocks
        assert back.violating_since == T0


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        step(None, spec=spec(), evaluation=HEALTHY, now=datetime(2026, 5, 1))
    with pytest.raises(ValueError, match=r"ResumeRequest\.at must be timezone-aware"):
        step(suspended_at(T0), spec=spec(), evaluation=HEALTHY, now=T0,
             resume=ResumeRequest("a", "b", datetime(2026, 5, 1)))
