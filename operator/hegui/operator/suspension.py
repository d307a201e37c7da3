"""Suspension of a service that keeps breaking its promises (Art.21): a pure state machine.

`step()` takes the previous `status.suspension`, the latest SLO evaluation
(`hegui.operator.slo.evaluate`), optionally a moderation-incident rate and its declared limit,
the service's `spec.suspension`, any deliberate request (suspend or resume, from the kubectl
plugin) and the time, and returns the new status and the transitions to act on (Event, record,
metric, the sidecars' notice). It reads no clock and calls nothing, so every edge is testable.

Rules:

- **Violation**: the evaluation is grounds for suspension (an alert fires, or no data under
  `noData: Suspend`) or the incident rate is above its limit. An evaluation without a verdict
  (Prometheus down, too little traffic, no data under Keep) is no violation, and a gap in the
  evidence restarts the clock.
- **Sustained**: a violation counts once it has lasted `sustainedFor`; when it began is kept in
  the status (`violatingSince`), so an operator restart or a failover loses nothing. In mode
  Auto a sustained violation suspends the service (trigger Auto); in Manual and Off it is only
  reported (`Step.sustained`) for a person to act on.
- **Deliberate requests** (SuspensionOrder and ResumeRequest objects, `hegui.api.suspension`)
  hold in every mode: a person (or an authority's order, 责令暂停) may suspend, and only a
  person resumes a service a person suspended. A request counts only if it was made (its
  server-stamped creationTimestamp) at or after the start of the current state (`since`), so a
  stale request (a resume left over from an earlier suspension) never undoes a newer one; of two
  valid requests the later one wins. Each is acted on once: its uid joins `consumedRequests`
  in the same status write as the new state, and every request gets an outcome (`Step.outcomes`).
- **Orders on a suspended service** are recorded on the suspension in force: a person's order
  makes an automatic suspension a manual one (no cool-down lifts it), an authority's order makes
  it trigger Order, which only a member of the order's issuer group can lift.
- **Cool-down** (hysteresis): a service the operator suspended resumes by itself only if
  `coolDown` is declared and the evaluation has been *calm* for that long (`healthySince`):
  every window that holds requests burns at most 1x its budget, far below the factors that
  suspend it. While the service is suspended its traffic is refused and not counted, so the long
  windows become calm only once the failures that caused the suspension have aged out of them:
  auto-resume comes no earlier than the longest alert window plus `coolDown` after the failures.
- **Never twice**: a suspended service is never suspended again and a running one never
  resumed; a spec change (GitOps self-heal included) never resumes a service.
- After any resume the violation clock starts from zero, so a service resumed by hand gets
  `sustainedFor` of grace before the old failures still in the long windows can suspend it
  again; a fixed model clears the short windows well within it.

The two clocks live in `status.suspension` as `violatingSince` and `healthySince`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from hegui.api.common import parse_duration, rfc3339
from hegui.api.generativeservice import (
    Suspension,
    SuspensionMode,
    SuspensionRecord,
    SuspensionStatus,
    SuspensionTrigger,
)
from hegui.operator.slo import SloEvaluation, human_duration

HISTORY_LIMIT = 10
CONSUMED_LIMIT = 32
_STATUS_REASON_CHARS = 1024
_RECORD_REASON_CHARS = 512
_NAME_CHARS = 256
_AUTHORITY_CHARS = 128
COOL_DOWN_BY = "cool-down"  # resumedBy when the operator resumed the service


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _aware(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware, not {moment!r}")
    return moment


@dataclass(frozen=True)
class SuspendRequest:
    """A deliberate suspension (a SuspensionOrder): by a person, or on an authority's order when
    `issuer_group` is set (then only that group lifts it)."""

    by: str
    reason: str
    at: datetime  # the order's creationTimestamp: the server's time, never the client's
    uid: str = ""
    order: str = ""  # the SuspensionOrder's name
    authority: str | None = None
    issuer_group: str | None = None


@dataclass(frozen=True)
class ResumeRequest:
    """A deliberate resume (a ResumeRequest) by a person, with the groups they are in."""

    by: str
    reason: str
    at: datetime  # creationTimestamp
    uid: str = ""
    groups: tuple[str, ...] = ()


class Outcome(StrEnum):
    """What became of a request (the request's status.phase)."""

    APPLIED = "Applied"
    IGNORED = "Ignored"


@dataclass(frozen=True)
class IncidentRate:
    """Moderation incidents (blocks, Art.14) against the limit the service declares."""

    rate: float
    limit: float
    unit: str = "per hour"

    @property
    def exceeded(self) -> bool:
        return self.rate > self.limit

    def describe(self) -> str:
        return (f"moderation incidents at {self.rate:g} {self.unit}, above the declared limit "
                f"of {self.limit:g} (Art.14)")


class TransitionKind(StrEnum):
    SUSPEND = "Suspend"
    RESUME = "Resume"


@dataclass(frozen=True)
class Transition:
    """Something to act on: an Event, a record, a metric, the sidecars' notice."""

    kind: TransitionKind
    at: datetime
    by: str  # "operator" for an automatic suspension, cool-down for an automatic resume
    trigger: SuspensionTrigger  # Auto (the operator) or Manual (a person)
    reason: str
    figures: dict[str, float | str] = field(default_factory=dict)


@dataclass(frozen=True)
class SuspensionState:
    """`status.suspension` plus the two clocks the state machine keeps."""

    suspended: bool = False
    since: datetime | None = None
    reason: str = ""
    history: tuple[SuspensionRecord, ...] = ()
    violating_since: datetime | None = None  # not suspended: when the violation began
    healthy_since: datetime | None = None  # suspended: since when the evaluation is calm
    consumed: tuple[str, ...] = ()  # uids of the requests acted on, newest first

    @classmethod
    def from_status(cls, status: SuspensionStatus | None) -> SuspensionState:
        if status is None:
            return cls()
        return cls(status.suspended, status.since, status.reason, tuple(status.history),
                   status.violating_since, status.healthy_since,
                   tuple(status.consumed_requests))

    def consuming(self, uids: list[str]) -> SuspensionState:
        """The same state with `uids` acted on (kept newest first, CONSUMED_LIMIT of them)."""
        fresh = [uid for uid in dict.fromkeys(uids) if uid and uid not in self.consumed]
        return replace(self, consumed=(*fresh, *self.consumed)[:CONSUMED_LIMIT])

    def to_dict(self) -> dict[str, Any]:
        """The camelCase `status.suspension` to patch, clocks included."""
        out = self.to_status().to_dict()
        for name, value in (("violatingSince", self.violating_since),
                            ("healthySince", self.healthy_since)):
            out[name] = rfc3339(value) if value else None
        return out

    def to_status(self) -> SuspensionStatus:
        return SuspensionStatus(suspended=self.suspended, since=self.since,
                                reason=_cut(self.reason, _STATUS_REASON_CHARS),
                                history=list(self.history[:HISTORY_LIMIT]),
                                violating_since=self.violating_since,
                                healthy_since=self.healthy_since,
                                consumed_requests=list(self.consumed[:CONSUMED_LIMIT]))

    @property
    def current(self) -> SuspensionRecord | None:
        """The record of the suspension in force, if the history has it."""
        if self.suspended and self.history and self.history[0].resumed_at is None:
            return self.history[0]
        return None


@dataclass(frozen=True)
class Step:
    state: SuspensionState
    transitions: tuple[Transition, ...] = ()
    violating: bool = False  # grounds for suspension now
    sustained: bool = False  # ... for at least sustainedFor (reported in every mode)
    notes: tuple[str, ...] = ()
    #: What became of each request given, by uid: (Applied or Ignored, why).
    outcomes: dict[str, tuple[Outcome, str]] = field(default_factory=dict)

    @property
    def status(self) -> SuspensionStatus:
        return self.state.to_status()


def step(previous: SuspensionStatus | SuspensionState | None, *, spec: Suspension | None,
         evaluation: SloEvaluation | None, now: datetime,
         incidents: IncidentRate | None = None, suspend: SuspendRequest | None = None,
         resume: ResumeRequest | None = None) -> Step:
    """The next suspension state of one service (see the module doc for the rules).

    `spec` is `spec.suspension` (absent: Manual, no cool-down); `evaluation` the latest SLO
    evaluation, None when the service declares no SLO; `now` must be timezone-aware. The
    requests given are consumed whatever becomes of them (`Step.outcomes` says what).
    """
    outcomes: dict[str, tuple[Outcome, str]] = {}
    result = _step(previous, spec, evaluation, _aware(now, "now"), incidents, suspend, resume,
                   outcomes)
    given = [r for r in (suspend, resume) if r is not None]
    for request in given:
        outcomes.setdefault(request.uid, (Outcome.IGNORED, "not acted on"))
    return replace(result, state=result.state.consuming([r.uid for r in given]),
                   outcomes=outcomes)


def _step(previous: SuspensionStatus | SuspensionState | None, spec: Suspension | None,
          evaluation: SloEvaluation | None, now: datetime, incidents: IncidentRate | None,
          suspend: SuspendRequest | None, resume: ResumeRequest | None,
          outcomes: dict[str, tuple[Outcome, str]]) -> Step:
    spec = spec or Suspension()
    state = previous if isinstance(previous, SuspensionState) else \
        SuspensionState.from_status(previous)
    notes: list[str] = []
    grounds = [evaluation.reason] if evaluation is not None and evaluation.violating else []
    if incidents is not None and incidents.exceeded:
        grounds.append(incidents.describe())
    violating = bool(grounds)
    request = _latest_valid(state, suspend, resume, notes, outcomes)

    if state.suspended:
        if isinstance(request, ResumeRequest):
            outcomes[request.uid] = (Outcome.APPLIED, f"resumed at {rfc3339(now)}")
            return _resume(state, now, request.by, SuspensionTrigger.MANUAL,
                           f"resumed by {request.by}: {request.reason}", evaluation,
                           violating, notes)
        if isinstance(request, SuspendRequest):
            state = _record_order(state, request, notes, outcomes)
        return _while_suspended(state, spec, evaluation, incidents, now, violating, notes)

    if isinstance(request, SuspendRequest):
        outcomes[request.uid] = (Outcome.APPLIED, f"suspended at {rfc3339(now)}")
        return _suspend(state, now, request.by, _trigger(request),
                        f"suspended by {request.by}{_on_order(request)}: {request.reason}",
                        evaluation, incidents, violating, sustained=False, notes=notes,
                        order=request)
    if not violating:
        return Step(replace(state, violating_since=None, healthy_since=None), (), False, False,
                    tuple(notes))
    since = state.violating_since or now
    lasted = now - since
    sustained_for = parse_duration(spec.sustained_for)
    sustained = lasted >= sustained_for
    if sustained and spec.mode is SuspensionMode.AUTO:
        reason = (f"violation sustained for {human_duration(max(lasted, timedelta(0)))} "
                  f"(sustainedFor {spec.sustained_for}): " + "; ".join(grounds))
        return _suspend(state, now, "operator", SuspensionTrigger.AUTO, reason, evaluation,
                        incidents, violating, sustained=True, notes=notes)
    if sustained:
        notes.append(f"violation sustained for {human_duration(lasted)}; mode {spec.mode.value}: "
                     "not suspended automatically, a person decides (Art.21)")
    else:
        notes.append(f"violating for {human_duration(max(lasted, timedelta(0)))} of "
                     f"{spec.sustained_for} before it counts")
    return Step(replace(state, violating_since=since, healthy_since=None), (), True, sustained,
                tuple(notes))


def _trigger(request: SuspendRequest) -> SuspensionTrigger:
    return SuspensionTrigger.ORDER if request.issuer_group else SuspensionTrigger.MANUAL


def _on_order(request: SuspendRequest) -> str:
    return f" on the order of {request.authority}" if request.authority else ""


def _record_order(state: SuspensionState, request: SuspendRequest, notes: list[str],
                  outcomes: dict[str, tuple[Outcome, str]]) -> SuspensionState:
    """An order for a service already suspended is recorded on the suspension in force: a
    person's order stops the cool-down from lifting it, an authority's reserves lifting it to
    the issuer's group. A second authority's order leaves the first one's group in charge."""
    current = state.current
    if current is None:
        outcomes[request.uid] = (Outcome.IGNORED, "already suspended, but the history holds no "
                                                  "open record to put the order on")
        return state
    if current.issuer_group and request.issuer_group:
        outcomes[request.uid] = (Outcome.IGNORED, (
            f"already suspended on the order of {current.authority}; only group "
            f"{current.issuer_group} can lift it"))
        return state
    update: dict[str, Any] = {"order": _cut(request.order, _NAME_CHARS) or current.order,
                              "suspended_by": _cut(request.by, _NAME_CHARS)}
    if request.issuer_group:
        update.update(trigger=SuspensionTrigger.ORDER, issuer_group=request.issuer_group,
                      authority=_cut(request.authority or "", _AUTHORITY_CHARS) or None)
    elif current.trigger is SuspensionTrigger.AUTO:
        update["trigger"] = SuspensionTrigger.MANUAL
    record = current.model_copy(update=update)
    message = (f"recorded on the suspension in force since {rfc3339(current.suspended_at)}"
               + (f": only group {request.issuer_group} can lift it" if request.issuer_group
                  else ": only a ResumeRequest lifts it, not a cool-down"))
    outcomes[request.uid] = (Outcome.APPLIED, message)
    notes.append(f"order {request.order or request.uid} by {request.by} {message}")
    return replace(state, history=(record, *state.history[1:]))


def _latest_valid(state: SuspensionState, suspend: SuspendRequest | None,
                  resume: ResumeRequest | None, notes: list[str],
                  outcomes: dict[str, tuple[Outcome, str]]
                  ) -> SuspendRequest | ResumeRequest | None:
    """The deliberate request that applies: made at or after the current state began (a stale
    one never undoes a newer state), allowed to act on it, the later of two; None if none
    applies. Every request left out gets its reason in `outcomes`."""
    valid: list[SuspendRequest | ResumeRequest] = []
    current = state.current
    for request in (suspend, resume):
        if request is None:
            continue
        name = type(request).__name__
        _aware(request.at, f"{name}.at")
        if state.since is not None and request.at < state.since:
            why = (f"made at {rfc3339(request.at)}, before the current state began "
                   f"({rfc3339(state.since)}): stale")
            notes.append(f"{name} by {request.by}: {why}, ignored")
            outcomes[request.uid] = (Outcome.IGNORED, why)
            continue
        if (isinstance(request, ResumeRequest) and state.suspended and current is not None
                and current.issuer_group and current.issuer_group not in request.groups):
            why = (f"this suspension is an order of {current.authority or 'an authority'}: "
                   f"only a member of group {current.issuer_group}, which issued it, can lift "
                   f"it; {request.by} is not (Art.21)")
            notes.append(f"{name} by {request.by} refused: {why}")
            outcomes[request.uid] = (Outcome.IGNORED, why)
            continue
        valid.append(request)
    if not valid:
        return None
    latest = max(valid, key=lambda r: (r.at, isinstance(r, ResumeRequest)))
    for other in valid:
        if other is not latest:
            outcomes[other.uid] = (Outcome.IGNORED, f"superseded by the later "
                                                    f"{type(latest).__name__} of {latest.by}")
    if isinstance(latest, ResumeRequest) and not state.suspended:
        notes.append(f"ResumeRequest by {latest.by}: the service is running; nothing to do")
        outcomes[latest.uid] = (Outcome.IGNORED, "the service is not suspended: nothing to do")
        return None
    return latest


def _figures(evaluation: SloEvaluation | None,
             incidents: IncidentRate | None) -> dict[str, float | str]:
    figures = dict(evaluation.figures()) if evaluation is not None else {}
    if incidents is not None:
        figures["incidents.rate"] = incidents.rate
        figures["incidents.limit"] = incidents.limit
    return figures


def _suspend(state: SuspensionState, now: datetime, by: str, trigger: SuspensionTrigger,
             reason: str, evaluation: SloEvaluation | None, incidents: IncidentRate | None,
             violating: bool, *, sustained: bool, notes: list[str],
             order: SuspendRequest | None = None) -> Step:
    if not reason.endswith("(Art.21)"):
        reason += " (Art.21)"
    record = SuspensionRecord(
        suspended_at=now, trigger=trigger, reason=_cut(reason, _RECORD_REASON_CHARS),
        suspended_by=_cut(by, _NAME_CHARS),
        order=_cut(order.order, _NAME_CHARS) or None if order else None,
        authority=_cut(order.authority, _AUTHORITY_CHARS) if order and order.authority
        else None,
        issuer_group=order.issuer_group if order else None)
    new = SuspensionState(suspended=True, since=now, reason=_cut(reason, _STATUS_REASON_CHARS),
                          history=(record, *state.history)[:HISTORY_LIMIT],
                          consumed=state.consumed)
    transition = Transition(TransitionKind.SUSPEND, now, _cut(by, _NAME_CHARS), trigger, reason,
                            _figures(evaluation, incidents))
    return Step(new, (transition,), violating, sustained, tuple(notes))


def _resume(state: SuspensionState, now: datetime, by: str, trigger: SuspensionTrigger,
            reason: str, evaluation: SloEvaluation | None, violating: bool,
            notes: list[str]) -> Step:
    by = _cut(by, _NAME_CHARS)
    history = list(state.history)
    if state.current is not None:
        history[0] = history[0].model_copy(update={"resumed_at": now, "resumed_by": by})
    else:
        notes.append("the history holds no open record of this suspension")
    new = SuspensionState(suspended=False, since=now, reason="", history=tuple(history),
                          consumed=state.consumed)
    transition = Transition(TransitionKind.RESUME, now, by, trigger, reason + " (Art.21)",
                            _figures(evaluation, None))
    return Step(new, (transition,), violating, False, tuple(notes))


def _while_suspended(state: SuspensionState, spec: Suspension,
                     evaluation: SloEvaluation | None, incidents: IncidentRate | None,
                     now: datetime, violating: bool, notes: list[str]) -> Step:
    calm = evaluation is not None and evaluation.calm and not (incidents and incidents.exceeded)
    healthy_since = (state.healthy_since or now) if calm else None
    current = state.current
    if spec.cool_down is None:
        notes.append("no coolDown declared: only a deliberate resume ends the suspension")
    elif current is None or current.trigger is not SuspensionTrigger.AUTO:
        notes.append("suspended by a person: only a deliberate resume ends it")
    elif healthy_since is None:
        notes.append("objectives not calm yet: the cool-down has not started")
    else:
        cool_down = parse_duration(spec.cool_down)
        calm_for = now - healthy_since
        if calm_for >= cool_down:
            return _resume(state, now, COOL_DOWN_BY, SuspensionTrigger.AUTO,
                           f"objectives calm for {human_duration(calm_for)} (coolDown "
                           f"{spec.cool_down}): every window burns at most 1x its budget",
                           evaluation, violating, notes)
        notes.append(f"calm for {human_duration(max(calm_for, timedelta(0)))} of coolDown "
                     f"{spec.cool_down}")
    return Step(replace(state, violating_since=None, healthy_since=healthy_since), (),
                violating, False, tuple(notes))


__all__ = ["CONSUMED_LIMIT", "COOL_DOWN_BY", "HISTORY_LIMIT", "IncidentRate", "Outcome",
           "ResumeRequest", "Step",
           "SuspendRequest", "SuspensionState", "Transition", "TransitionKind", "step"]
