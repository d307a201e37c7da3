"""The rule engine: workload + posture in, findings out.

The checks are the rule modules' (`hegui.rules.registry`: one module per rule, holding its id and
article, what it asks, its fix, its check and its CEL twin). A finding's mode (Enforce, Warn,
Audit) is the strictest of the policies enforcing the namespace. The admission webhook, the
operator's background audit and `hegui check` all call `evaluate`; they differ only in where the
`ComplianceIndex` comes from (API watches, kopf indexes, files) and in what they do with the
findings (deny/warn, status, exit code).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hegui.api.articles import Rule
from hegui.api.generativeservice import GenerativeService
from hegui.api.policy import EnforcementMode
from hegui.rules import workloads
from hegui.rules.base import (
    Context,
    ServiceCheck,
    ServiceContext,
    Violation,
    Workload,
    WorkloadCheck,
)
from hegui.rules.index import ComplianceIndex, ObjectKey, exemption_scope
from hegui.rules.registry import DEFINITIONS

__all__ = ["APPLY_TIME_RULES", "Context", "Finding", "ServiceContext", "Verdict", "Violation",
           "Workload", "evaluate", "evaluate_posture", "evaluate_service",
           "evaluate_service_object"]


class ReviewIndex(ComplianceIndex):
    """The index as one review reads it: the same objects (nothing is copied), with the merged
    policies of each namespace as they were when the review began. Every check asks for them
    (the engine, injection, moderation, each opt-in rule: a dozen times a workload review), and
    all of them judge by the same policies even when a watch changes one mid-review: the index
    replaces its dict of merged policies on a change, never empties it in place, and this view
    keeps the dict it found."""

    def __init__(self, index: ComplianceIndex) -> None:
        self.__dict__.update(vars(index))  # the index's own dicts and lock, shared


def for_review(index: ComplianceIndex) -> ComplianceIndex:
    """`index` as one review reads it (ReviewIndex), once."""
    return index if isinstance(index, ReviewIndex) else ReviewIndex(index)


@dataclass(frozen=True)
class Finding:
    rule: Rule
    #: Where the problem is: "<Kind> <namespace>/<name> <json path>".
    location: str
    message: str
    fix: str
    mode: EnforcementMode = EnforcementMode.ENFORCE
    #: The exception that waives this finding, if one does (it is then reported, not acted on).
    exempted_by: str | None = None
    #: Why the workload counts as generative: the signals matched, field by field.
    because: str = ""

    @property
    def article(self) -> str:
        return self.rule.article

    def render(self) -> str:
        """One line naming rule, article, field and fix, as a denial or a warning shows it."""
        why = f" (generative because: {self.because})" if self.because else ""
        return (f"[{self.rule.value}, {self.article}] {self.location}: {self.message}. "
                f"Fix: {self.fix}{why}")


@dataclass(frozen=True)
class Verdict:
    """What the findings about one workload amount to at admission, as the webhook acts on them
    and `hegui check` reports them."""

    denied: list[Finding]
    warned: list[Finding]
    audited: list[Finding]
    exempted: list[Finding]

    @classmethod
    def of(cls, findings: list[Finding]) -> Verdict:
        active = [f for f in findings if not f.exempted_by]
        return cls(
            denied=[f for f in active if f.mode is EnforcementMode.ENFORCE],
            warned=[f for f in active if f.mode is EnforcementMode.WARN],
            audited=[f for f in active if f.mode is EnforcementMode.AUDIT],
            exempted=[f for f in findings if f.exempted_by],
        )

    @property
    def allowed(self) -> bool:
        return not self.denied


#: The checks, from the rule modules (`hegui.rules.registry`), in the order findings are reported.
WORKLOAD_CHECKS: list[tuple[Rule, WorkloadCheck]] = [
    (d.rule, d.workload_check) for d in DEFINITIONS.values() if d.workload_check]
#: Checks of a service's posture: run for every workload it selects at admission, and for the
#: service itself by the operator, so a status and a refusal always agree.
SERVICE_CHECKS: list[tuple[Rule, ServiceCheck]] = [
    (d.rule, d.service_check) for d in DEFINITIONS.values() if d.service_check]


def evaluate_service(key: ObjectKey, index: ComplianceIndex, *,
                     now: dt.datetime | None = None) -> list[tuple[Rule, Violation]]:
    """The posture findings of one GenerativeService (empty when complete), whoever asks."""
    service = index.services.get(key)
    if service is None:
        return []
    return evaluate_posture(key, service, index, now=now)


def evaluate_posture(key: ObjectKey, service: GenerativeService, index: ComplianceIndex, *,
                     now: dt.datetime | None = None,
                     rules: frozenset[Rule] | None = None) -> list[tuple[Rule, Violation]]:
    """The findings of a posture that need not be in the index yet (a GenerativeService under
    review at admission), limited to `rules` when given."""
    index = for_review(index)
    context = ServiceContext(key, service, index, now or dt.datetime.now(dt.UTC),
                             index.policy_for(key.namespace))
    return [(rule, violation) for rule, check in SERVICE_CHECKS
            if rules is None or rule in rules for violation in check(context)]


#: The posture rules a GenerativeService is refused for when it is applied: the policy's floor,
#: which no later object can make good. (Filing, assessment and labeling are refused on the
#: workloads: a service is declared before its assessment runs.)
APPLY_TIME_RULES = frozenset(d.rule for d in DEFINITIONS.values() if d.apply_time)


def evaluate_service_object(obj: Mapping[str, Any], index: ComplianceIndex, *,
                            namespace: str = "", now: dt.datetime | None = None
                            ) -> list[Finding]:
    """The apply-time findings of a GenerativeService object (the webhook and `hegui check`), in
    the modes of the policies enforcing its namespace; empty where none does."""
    service = GenerativeService.from_dict(obj)
    key = ObjectKey(service.namespace or namespace, service.name)
    index = for_review(index)
    policy = index.policy_for(key.namespace)
    if policy is None:
        return []
    return [Finding(which, location, message, fix, policy.mode_for(which))
            for which, (location, message, fix) in evaluate_posture(
                key, service, index, now=now, rules=APPLY_TIME_RULES)]


def evaluate(obj: Mapping[str, Any], index: ComplianceIndex, *, namespace: str = "",
             now: dt.datetime | None = None) -> list[Finding]:
    """Every finding for one workload object; empty when it is compliant or not generative."""
    index = for_review(index)
    workload = Workload.of(obj, namespace)
    policy = effective = index.policy_for(workload.namespace)
    if policy is None:
        return []
    detection = policy.detection  # merged from the policies' signals: once a namespace
    templates = workloads.pod_templates(obj, detection)
    if not any(workloads.is_generative(t, workload.namespace, index.claim_classes, detection)
               for t in templates):
        return []
    label_sets = [t.labels for t in templates]
    scoped, left_out_by = (policy, "") if policy.takes_every_workload else policy.scoped(
        workloads.owner_kinds(obj), label_sets)
    if scoped is None:
        # Out of every policy's workload scope: reported as waived, never silently dropped.
        evidence = [e for t in templates for e in workloads.generative_evidence(
            t, workload.namespace, index.claim_classes, detection)]
        return [Finding(Rule.COVERAGE, f"{workload}",
                        "runs a generative model but the policy's workload scope leaves it out",
                        "nothing if it serves no generated content; otherwise narrow the "
                        "policy's spec.workloads", policy.mode_for(Rule.COVERAGE),
                        left_out_by, _because(evidence))]
    policy = scoped
    context = Context(workload, templates, index, now or dt.datetime.now(dt.UTC), effective,
                      index.services_selecting(workload.namespace, label_sets))
    found: list[tuple[Rule, Violation]] = [
        (rule, violation) for rule, check in WORKLOAD_CHECKS for violation in check(context)]
    for key in context.services:
        found += evaluate_service(key, index, now=context.now)
    if not found:
        return []  # the common case: a compliant workload
    scope, because = exemption_scope(obj), _because(context.evidence)
    return [Finding(which, location, message, fix, policy.mode_for(which),
                    index.exemption_for(workload.namespace, scope, which, context.now), because)
            for which, (location, message, fix) in found]


def _because(evidence: list[workloads.GpuEvidence]) -> str:
    """Why the workload counts as generative, as a finding says it."""
    return "; ".join(str(e) for e in evidence[:4]) + (
        f"; and {len(evidence) - 4} more" if len(evidence) > 4 else "")
