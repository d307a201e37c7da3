"""The operator's view of stability and suspension (Art.13, Art.21) without a Prometheus: the
conditions it reports and the SuspensionOrders and ResumeRequests it honours (once each, at the
server's time, an authority's order only from its issuer group)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from hegui.api.generativeservice import GenerativeService
from hegui.api.policy import PrometheusSource
from hegui.api.suspension import ResumeRequest, SuspensionOrder
from hegui.operator.stability import judge
from hegui.operator.suspension import Outcome

NOW = dt.datetime(2026, 11, 29, 8, 0, tzinfo=dt.UTC)
SINCE = "2026-11-29T07:00:00Z"
CREATED = "2026-11-01T00:00:00Z"


def _service(annotations: dict[str, str] | None = None, suspended: bool = True,
             **record: Any) -> GenerativeService:
    meta: dict[str, Any] = {"name": "chat", "namespace": "ai", "creationTimestamp": CREATED,
                            "annotations": annotations or {}}
    status: dict[str, Any] = {"suspension": {
        "suspended": suspended, "since": SINCE, "reason": "availability burn 40x",
        "history": [{"suspendedAt": SINCE, "trigger": "Auto",
                     "reason": "availability burn 40x", **record}] if suspended else []}}
    return GenerativeService.from_dict({
        "apiVersion": "hegui.io/v1alpha1", "kind": "GenerativeService", "metadata": meta,
        "spec": {"selector": {"matchLabels": {"app": "chat"}},
                 "filing": {"publicOpinion": False,
                            "algorithm": {"number": "网信算备110108823483901230011号"}},
                 "slo": {"availability": {"objective": 0.99}},
                 "suspension": {"mode": "Auto", "coolDown": "1m"}},
        "status": status})


def _resume(at: str, by: str = "alice@example.cn", uid: str = "r1",
            groups: tuple[str, ...] = ("hegui:compliance",)) -> ResumeRequest:
    return ResumeRequest.from_dict({
        "apiVersion": "hegui.io/v1alpha1", "kind": "ResumeRequest",
        "metadata": {"name": f"chat-resume-{uid}", "namespace": "ai", "uid": uid,
                     "creationTimestamp": at},
        "spec": {"serviceRef": {"name": "chat"}, "reason": "model rolled back to v41",
                 "requestedBy": by, "groups": list(groups)}})


def _order(at: str, uid: str = "o1", issuer: str | None = None) -> SuspensionOrder:
    spec: dict[str, Any] = {"serviceRef": {"name": "chat"}, "requestedBy": "wang@cac.example",
                            "reason": "order of the provincial CAC office"}
    if issuer:
        spec.update(authority={"name": "北京市互联网信息办公室", "reference": "case 2026-117"},
                    issuerGroup=issuer)
    return SuspensionOrder.from_dict({
        "apiVersion": "hegui.io/v1alpha1", "kind": "SuspensionOrder",
        "metadata": {"name": f"chat-suspend-{uid}", "namespace": "ai", "uid": uid,
                     "creationTimestamp": at}, "spec": spec})


def test_a_resume_request_newer_than_the_suspension_lifts_it_names_who_and_is_consumed() -> None:
    result = judge(_service(), None, NOW, [_resume("2026-11-29T07:30:00Z")])
    assert not result.suspended
    record = result.step.state.history[0]
    assert record.resumed_by == "alice@example.cn" and record.resumed_at == NOW
    assert "suspended: false" in result.notice()
    assert result.step.outcomes["r1"][0] is Outcome.APPLIED
    assert result.step.state.to_status().consumed_requests == ["r1"]


def test_a_consumed_request_never_acts_again() -> None:
    """A resume acted on once is in consumedRequests: when the service is suspended again
    later (even within the same second), the same request cannot lift the new suspension."""
    service = _service()
    assert service.status is not None and service.status.suspension is not None
    service.status.suspension.consumed_requests = ["r1"]
    result = judge(service, None, NOW, [_resume("2026-11-29T07:30:00Z")])
    assert result.suspended and "r1" not in result.step.outcomes


def test_a_stale_resume_request_does_not_lift_a_newer_suspension() -> None:
    result = judge(_service(), None, NOW, [_resume("2026-11-29T06:00:00Z")])
    assert result.suspended
    kinds = {kind.value: (state, reason) for kind, state, reason, _ in result.conditions}
    assert kinds["Suspended"][0] == "True"
    assert "suspended: true" in result.notice()
    phase, why = result.step.outcomes["r1"]
    assert phase is Outcome.IGNORED and "stale" in why


def test_the_teams_annotation_is_no_request_at_all() -> None:
    """The annotation path is gone: whatever a team writes on its own GenerativeService, even
    dated 2099 and in someone else's name, lifts nothing."""
    forged = json.dumps({"by": "officer@example.cn", "reason": "please resume us now",
                         "at": "2099-01-01T00:00:00Z"})
    result = judge(_service({"hegui.io/resume": forged}), None, NOW)
    assert result.suspended and not result.step.transitions


def test_a_request_older_than_the_service_names_an_earlier_one() -> None:
    """Delete and re-create a service: the old, consumed orders in the namespace do not
    suspend (or resume) the new one."""
    result = judge(_service(suspended=False), None, NOW, [_order("2026-10-01T00:00:00Z")])
    assert not result.suspended
    phase, why = result.step.outcomes["o1"]
    assert phase is Outcome.IGNORED and "before this GenerativeService was created" in why


def test_an_authoritys_order_is_lifted_only_by_its_issuer_group() -> None:
    ordered = judge(_service(suspended=False), None, NOW,
                    [_order("2026-11-29T07:59:00Z", issuer="cac:beijing")])
    assert ordered.suspended
    record = ordered.step.state.history[0]
    assert record.trigger.value == "Order" and record.issuer_group == "cac:beijing"
    assert record.authority == "北京市互联网信息办公室 (case 2026-117)"
    assert record.order == "chat-suspend-o1" and record.suspended_by == "wang@cac.example"
    later = NOW + dt.timedelta(hours=1)
    status = ordered.step.state.to_status()
    service = _service(suspended=False).model_copy(deep=True)
    assert service.status is not None
    service.status.suspension = status
    refused = judge(service, None, later, [_resume("2026-11-29T08:30:00Z", uid="r2")])
    assert refused.suspended
    phase, why = refused.step.outcomes["r2"]
    assert phase is Outcome.IGNORED and "cac:beijing" in why
    service.status.suspension = refused.step.state.to_status()
    lifted = judge(service, None, later, [_resume("2026-11-29T08:40:00Z", uid="r3",
                                                  by="li@cac.example", groups=("cac:beijing",))])
    assert not lifted.suspended and lifted.step.outcomes["r3"][0] is Outcome.APPLIED


def test_an_order_on_an_automatic_suspension_stops_the_cool_down_from_lifting_it() -> None:
    result = judge(_service(), None, NOW, [_order("2026-11-29T07:10:00Z", issuer="cac:bj")])
    assert result.suspended
    record = result.step.state.history[0]
    assert record.trigger.value == "Order" and record.issuer_group == "cac:bj"
    assert result.step.outcomes["o1"][0] is Outcome.APPLIED


def test_of_several_pending_requests_the_latest_acts_and_the_rest_are_superseded() -> None:
    result = judge(_service(), None, NOW, [_resume("2026-11-29T07:30:00Z", uid="r1"),
                                          _resume("2026-11-29T07:40:00Z", uid="r2")])
    assert not result.suspended
    assert result.step.outcomes["r2"][0] is Outcome.APPLIED
    assert result.step.outcomes["r1"][0] is Outcome.IGNORED
    assert set(result.step.state.consumed) == {"r1", "r2"}


def test_objectives_without_a_prometheus_are_unknown_not_violated() -> None:
    result = judge(_service(suspended=False), None, NOW)
    kinds = {kind.value: (state, reason) for kind, state, reason, _ in result.conditions}
    assert kinds["SLOMet"] == ("Unknown", "NoPrometheus")
    assert kinds["Suspended"][0] == "False" and not result.suspended


def test_an_unreachable_prometheus_is_no_verdict_and_suspends_nothing() -> None:
    nowhere = PrometheusSource(url="http://127.0.0.1:9", timeout="1s")
    result = judge(_service(suspended=False), nowhere, NOW)
    kinds = {kind.value: (state, reason, message) for kind, state, reason, message
             in result.conditions}
    assert kinds["SLOMet"][:2] == ("Unknown", "Error")
    assert "Art.13" in kinds["SLOMet"][2]
    assert not result.suspended and not result.step.transitions
