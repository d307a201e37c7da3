"""The operator's view of stability and suspension (Art.13, Art.21) without a Prometheus: the
conditions it reports and the resume request it honours."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from hegui.api.generativeservice import GenerativeService
from hegui.api.policy import PrometheusSource
from hegui.operator.stability import judge

NOW = dt.datetime(2026, 11, 29, 8, 0, tzinfo=dt.UTC)
SINCE = "2026-11-29T07:00:00Z"


def _service(annotation: dict[str, str] | None = None, suspended: bool = True) -> GenerativeService:
    meta: dict[str, Any] = {"name": "chat", "namespace": "ai"}
    if annotation:
        meta["annotations"] = {"hegui.io/resume": json.dumps(annotation)}
    status: dict[str, Any] = {"suspension": {
        "suspended": suspended, "since": SINCE, "reason": "availability burn 40x",
        "history": [{"suspendedAt": SINCE, "trigger": "Auto",
                     "reason": "availability burn 40x"}] if suspended else []}}
    return GenerativeService.from_dict({
        "apiVersion": "hegui.io/v1alpha1", "kind": "GenerativeService", "metadata": meta,
        "spec": {"selector": {"matchLabels": {"app": "chat"}},
                 "filing": {"publicOpinion": False,
                            "algorithm": {"number": "网信算备110108823483901230011号"}},
                 "slo": {"availability": {"objective": 0.99}},
                 "suspension": {"mode": "Auto"}},
        "status": status})


def test_a_resume_request_newer_than_the_suspension_lifts_it_and_names_who() -> None:
    asked = {"by": "alice@example.cn", "reason": "model rolled back to v41",
             "at": "2026-11-29T07:30:00Z"}
    result = judge(_service(asked), None, NOW)
    assert not result.suspended
    record = result.step.state.history[0]
    assert record.resumed_by == "alice@example.cn" and record.resumed_at == NOW
    assert "suspended: false" in result.notice()


def test_a_stale_resume_request_does_not_lift_a_newer_suspension() -> None:
    stale = {"by": "alice@example.cn", "reason": "the previous incident, long over",
             "at": "2026-11-29T06:00:00Z"}
    result = judge(_service(stale), None, NOW)
    assert result.suspended
    kinds = {kind.value: (state, reason) for kind, state, reason, _ in result.conditions}
    assert kinds["Suspended"][0] == "True"
    assert "suspended: true" in result.notice()


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
