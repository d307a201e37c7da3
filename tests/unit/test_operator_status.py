"""The operator's status: conditions per article from the shared rule engine."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hegui.operator.status import compute
from hegui.rules.index import ComplianceIndex, ObjectKey

T0 = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)


def _service(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "selector": {"matchLabels": {"app": "chat"}},
        "filing": {"publicOpinion": False, "service": {"number": "Beijing-HeguiChat-20250402"}},
        "labeling": {"modalities": ["text"], "implicit": {"contentProducer": "Example AI Co."}},
    }
    body.update(spec)
    return {"apiVersion": "hegui.io/v1alpha1", "kind": "GenerativeService",
            "metadata": {"name": "chat", "namespace": "ai", "generation": 4}, "spec": body}


KEY = ObjectKey("ai", "chat")


def _conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_a_complete_posture_is_compliant_with_each_article_named() -> None:
    status = compute(KEY, ComplianceIndex.from_objects([_service()]), generation=4, previous=[],
                     now=T0)
    conditions = _conditions(status)
    assert {k: v["status"] for k, v in conditions.items()} == {
        "Filed": "True", "Assessed": "True", "Labeled": "True", "Compliant": "True"}
    assert conditions["Filed"]["article"] == "Art.17"
    assert conditions["Labeled"]["article"] == "Art.12"
    assert status["observedGeneration"] == 4 and status["findings"] == []


def test_a_gap_is_a_false_condition_and_a_finding_with_the_fix() -> None:
    service = _service()
    del service["spec"]["labeling"]
    status = compute(KEY, ComplianceIndex.from_objects([service]), generation=4, previous=[],
                     now=T0)
    labeled = _conditions(status)["Labeled"]
    assert labeled["status"] == "False" and labeled["reason"] == "LabelingIncomplete"
    assert "[labeling, Art.12]" in labeled["message"] and "Fix:" in labeled["message"]
    assert _conditions(status)["Compliant"]["message"] == "unmet: Labeled (Art.12)"
    assert [(f["rule"], f["article"]) for f in status["findings"]] == [("labeling", "Art.12")]


def test_transition_time_moves_only_when_the_status_changes() -> None:
    index = ComplianceIndex.from_objects([_service()])
    first = compute(KEY, index, generation=4, previous=[], now=T0)
    later = compute(KEY, index, generation=5, previous=first["conditions"],
                    now=T0 + dt.timedelta(hours=1))
    assert _conditions(later)["Filed"]["lastTransitionTime"] == "2026-11-29T12:00:00Z"
    assert _conditions(later)["Filed"]["observedGeneration"] == 5


def test_a_posture_below_the_policy_floor_is_not_moderated_nor_compliant() -> None:
    """Rule moderation (Art.14): the operator judges every service against its policy's floor,
    as the webhook does when the service is applied."""
    policy = {"apiVersion": "hegui.io/v1alpha1", "kind": "CompliancePolicy",
              "metadata": {"name": "floor"},
              "spec": {"namespaces": ["ai"], "moderation": {"blockCategories": ["subversion"]}}}
    below = _service(moderation={"failureMode": "Open", "categories": [
        {"name": "subversion", "threshold": 0.5, "action": "Block"}]})
    status = compute(KEY, ComplianceIndex.from_objects([policy, below]), generation=4,
                     previous=[], now=T0)
    conditions = _conditions(status)
    assert conditions["Moderated"]["status"] == "False"
    assert conditions["Moderated"]["reason"] == "BelowPolicyFloor"
    assert "spec.moderation.failureMode" in conditions["Moderated"]["message"]
    assert conditions["Compliant"]["status"] == "False"
    assert [f["rule"] for f in status["findings"]] == ["moderation"]
    at_floor = _service(moderation={"categories": [
        {"name": "subversion", "threshold": 0.5, "action": "Block"}]})
    status = compute(KEY, ComplianceIndex.from_objects([policy, at_floor]), generation=4,
                     previous=[], now=T0)
    assert _conditions(status)["Compliant"]["status"] == "True"


def _policy(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "hegui.io/v1alpha1", "kind": "CompliancePolicy",
            "metadata": {"name": "p"}, "spec": {"namespaces": ["ai"], **spec}}


def test_a_finding_is_as_severe_as_the_mode_of_its_rule() -> None:
    """What the webhook would refuse is an Error, what it would warn of a Warning, what it only
    audits Info: an opt-in rule a policy does not name (userAgreement, Art.9) is checked on what
    the service declares, and reported, but refuses nothing."""
    service = _service(userAgreement={"url": "https://chat.example.cn/terms", "version": "3",
                                      "effectiveOn": "2027-01-01"})
    del service["spec"]["labeling"]
    enforced = _policy(defaultMode="Enforce")
    status = compute(KEY, ComplianceIndex.from_objects([enforced, service]), generation=4,
                     previous=[], now=T0)
    assert [(f["rule"], f["severity"]) for f in status["findings"]] == [
        ("labeling", "Error"), ("userAgreement", "Info")]
    warned = _policy(defaultMode="Enforce", rules=[{"rule": "labeling", "mode": "Warn"}])
    status = compute(KEY, ComplianceIndex.from_objects([warned, service]), generation=4,
                     previous=[], now=T0)
    assert ("labeling", "Warning") in [(f["rule"], f["severity"]) for f in status["findings"]]


def test_a_port_declared_open_around_the_sidecar_is_not_moderated() -> None:
    policy = _policy(sidecar={"image": "registry.example.cn/hegui/sidecar:0.1.0", "port": 8443})
    service = _service(traffic={"openPorts": [
        {"port": 8000, "endPort": 9000, "purpose": "PodToPod", "reason": "Ray workers"}]})
    status = compute(KEY, ComplianceIndex.from_objects([policy, service]), generation=4,
                     previous=[], now=T0)
    moderated = _conditions(status)["Moderated"]
    assert moderated["status"] == "False" and moderated["reason"] == "PortOpenAroundSidecar"
    assert "spec.traffic.openPorts[0]" in moderated["message"]
    assert _conditions(status)["Compliant"]["status"] == "False"
