"""A GenerativeService's status, computed by the rule engine the webhook uses.

Each condition rests on the rules of its article; the findings are the same objects (rule,
article, field, fix) a refusal names, so `kubectl get gsvc` and a denied Deployment always agree.
lastTransitionTime only moves when a condition's status changes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from hegui.api.articles import Rule
from hegui.api.common import rfc3339
from hegui.api.generativeservice import ServiceConditionType, Severity
from hegui.api.policy import EnforcementMode
from hegui.operator.stability import Stability
from hegui.operator.workloads import Observation
from hegui.rules.engine import evaluate_service
from hegui.rules.index import ComplianceIndex, ObjectKey
from hegui.rules.registry import posture_conditions

#: The conditions computed from posture rules, and the rule each one follows.
POSTURE_CONDITIONS = posture_conditions()
MAX_FINDINGS = 32
_SEVERITY_ORDER = {"Error": 0, "Warning": 1, "Info": 2}
SEVERITY_OF_MODE = {EnforcementMode.ENFORCE: Severity.ERROR.value,
                    EnforcementMode.WARN: Severity.WARNING.value,
                    EnforcementMode.AUDIT: Severity.INFO.value}


def compute(key: ObjectKey, index: ComplianceIndex, *, generation: int | None,
            previous: list[Mapping[str, Any]], now: dt.datetime,
            observed: Observation | None = None,
            stability: Stability | None = None) -> dict[str, Any]:
    """The `status` fields the operator owns: observedGeneration, conditions, findings, and
    what it observed of the running workloads (matched workloads, pods without the sidecar)."""
    found = evaluate_service(key, index, now=now)
    by_rule: dict[Rule, list[tuple[str, str, str]]] = {}
    for rule, violation in found:
        by_rule.setdefault(rule, []).append(violation)
    before = {str(c.get("type")): c for c in previous if isinstance(c, Mapping)}

    def condition(kind: ServiceConditionType, holds: bool | str, reason: str,
                  message: str) -> dict[str, Any]:
        status = holds if isinstance(holds, str) else "True" if holds else "False"
        old = before.get(kind.value)
        kept = old.get("lastTransitionTime") if old and old.get("status") == status else None
        return {"type": kind.value, "status": status, "observedGeneration": generation,
                "lastTransitionTime": kept or rfc3339(now, whole_seconds=True),
                "reason": reason, "message": message[:1024], "article": kind.article}

    conditions = []
    for kind, rule in POSTURE_CONDITIONS.items():
        violations = by_rule.get(rule, [])
        if violations:
            location, message, fix = violations[0]
            conditions.append(condition(kind, False, f"{rule.name.title()}Incomplete",
                                        f"[{rule.value}, {rule.article}] {location}: "
                                        f"{message}. Fix: {fix}"))
        else:
            conditions.append(condition(kind, True, "Complete",
                                        f"rule {rule.value} ({rule.article}) holds"))
    # The posture itself moderates too little (the policy's floor) or opens a way around the
    # sidecar (a port left out of its capture): Art.14 either way, whatever the pods do.
    unmoderated = [(rule, violation) for rule in (Rule.MODERATION, Rule.INJECTION)
                   for violation in by_rule.get(rule, [])]
    if unmoderated:
        rule, (location, message, fix) = unmoderated[0]
        conditions.append(condition(
            ServiceConditionType.MODERATED, False,
            "BelowPolicyFloor" if rule is Rule.MODERATION else "PortOpenAroundSidecar",
            f"[{rule.value}, {rule.article}] {location}: {message}. Fix: {fix}"
            + (f" (and {len(unmoderated) - 1} more)" if len(unmoderated) > 1 else "")))
    elif observed is not None and observed.sidecar is not None:
        gaps = [f for f in observed.findings if f["rule"] == Rule.INJECTION.value]
        conditions.append(condition(
            ServiceConditionType.MODERATED, not gaps,
            "SidecarInEveryPod" if not gaps else "SidecarBypassed",
            f"every pod of the service carries hegui's sidecar (rule {Rule.INJECTION.value}, "
            f"{Rule.INJECTION.article})"
            if not gaps else f"[{Rule.INJECTION.value}, {Rule.INJECTION.article}] "
                             f"{gaps[0]['message']}"
            + (f" (and {len(gaps) - 1} more)" if len(gaps) > 1 else "")))
    if stability is not None:
        conditions += [condition(kind, state, reason, message)
                       for kind, state, reason, message in stability.conditions]
    # Unmet: a rule that does not hold, or a suspension in force (Art.21).
    unmet = [c for c in conditions if (c["status"] == "False") != (c["type"] == "Suspended")
             and c["status"] != "Unknown"]
    conditions.append(condition(
        ServiceConditionType.COMPLIANT, not unmet,
        "AllRulesHold" if not unmet else "RulesUnmet",
        "every posture rule holds" if not unmet else
        "unmet: " + ", ".join(f"{c['type']} ({c['article']})" for c in unmet)))
    # A finding is as severe as the mode the policies give its rule: what a refusal would be
    # is an Error, a warning a Warning, an audit-only (or opt-in, unnamed) rule Info.
    effective = index.policy_for(key.namespace)
    findings = [{"rule": rule.value, "article": rule.article,
                 "severity": SEVERITY_OF_MODE[effective.mode_for(rule) if effective
                                              else EnforcementMode.ENFORCE],
                 "message": f"{location}: {message}. Fix: {fix}"[:512]}
                for rule, (location, message, fix) in found]
    if observed is not None:
        findings += observed.findings
    # Most severe first (the CRD caps the list); sort is stable, so rules keep their order.
    findings.sort(key=lambda f: _SEVERITY_ORDER.get(f["severity"], 3))
    status: dict[str, Any] = {"observedGeneration": generation, "conditions": conditions,
                              "findings": findings[:MAX_FINDINGS]}
    if observed is not None:
        status["matchedWorkloads"] = observed.matched
        status["matchedWorkloadCount"] = observed.matched_count
        status["uninjectedPods"] = len(observed.uninjected)
    if stability is not None:
        status["suspension"] = stability.step.state.to_dict()
    service = index.services.get(key)
    if service is not None and service.spec.assessment is not None:
        external = service.spec.assessment.external
        if external is not None:
            status["assessmentExpiresOn"] = external.expires_on.isoformat()
        elif (ref := service.spec.assessment.safety_assessment_ref) is not None:
            assessment = index.assessments.get(ObjectKey(key.namespace, ref.name))
            if assessment and assessment.status and assessment.status.expires_at:
                status["assessmentExpiresOn"] = assessment.status.expires_at.date().isoformat()
    return status


def merge_patch(wanted: Mapping[str, Any], *bases: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns each of `bases` into `wanted`: a field absent
    from `wanted` is null, a changed one is written, an unchanged one left out; empty when no
    base differs, so an unchanged status costs no write."""
    patch: dict[str, Any] = {}
    for key in dict.fromkeys([*wanted, *(k for base in bases for k in base)]):
        if key not in wanted:
            patch[key] = None
            continue
        value, olds = wanted[key], [base.get(key) for base in bases]
        if isinstance(value, Mapping):
            # A non-object is replaced by the object; diffing against {} writes all of it.
            nested = merge_patch(value, *(o if isinstance(o, Mapping) else {} for o in olds))
            if nested or any(not isinstance(o, Mapping) for o in olds):
                patch[key] = nested if all(isinstance(o, Mapping) for o in olds) else dict(value)
        elif any(key not in base or base[key] != value for base in bases):
            patch[key] = value
    return patch
