"""What a rule module declares, and what its check reads.

Each rule lives in one module of `hegui.rules` (`coverage`, `filing`, ...) as a `RuleDefinition`:
its id (`hegui.api.articles.Rule`, which fixes its article: the CRDs, the sidecar and the status
share that table), what it checks, how to fix it, where it is enforced, its Python check and its
CEL twin. `hegui.rules.registry` gathers them; the engine, the ValidatingAdmissionPolicies,
`kubectl hegui explain`, the status conditions and the README's table are made from it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from hegui.api.articles import Rule
from hegui.api.generativeservice import GenerativeService, ServiceConditionType
from hegui.rules import workloads
from hegui.rules.index import ComplianceIndex, EffectivePolicy, ObjectKey


@dataclass(frozen=True)
class Workload:
    """The object under review, reduced to what rules need."""

    obj: Mapping[str, Any]
    kind: str
    namespace: str
    name: str

    @classmethod
    def of(cls, obj: Mapping[str, Any], namespace: str = "") -> Workload:
        meta = obj.get("metadata")
        if not isinstance(meta, (dict, Mapping)):  # a dict (JSON) is known without the ABC
            meta = {}
        name = meta.get("name") or meta.get("generateName") or "(unnamed)"
        return cls(obj, str(obj.get("kind", "")), str(meta.get("namespace") or namespace),
                   str(name))

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass
class Context:
    """What a workload rule reads: the workload, its pods, why it is generative, the index."""

    workload: Workload
    templates: list[workloads.PodTemplate]
    index: ComplianceIndex
    now: dt.datetime
    #: The policies enforcing the workload's namespace, merged (`ComplianceIndex.policy_for`,
    #: whatever their workload scopes): looked up once a review, not by each rule that asks.
    policy: EffectivePolicy | None
    services: list[ObjectKey] = field(default_factory=list)

    @cached_property
    def evidence(self) -> list[workloads.GpuEvidence]:
        """Every reason the workload's pods run a generative model, by the namespace's
        detection signals: worked out when a finding names them, not on every review (the
        engine admits a workload on its first reason, `workloads.is_generative`)."""
        detection = self.policy.detection if self.policy else workloads.BUILTIN
        return [e for t in self.templates for e in workloads.generative_evidence(
            t, self.workload.namespace, self.index.claim_classes, detection)]


@dataclass(frozen=True)
class ServiceContext:
    """What a posture rule reads: one GenerativeService, hegui's other objects, the time."""

    key: ObjectKey
    service: GenerativeService
    index: ComplianceIndex
    now: dt.datetime
    #: The policies enforcing the service's namespace, merged (`ComplianceIndex.policy_for`):
    #: looked up once a service, not by each posture rule that asks (moderation, injection,
    #: dataProtection and every opt-in rule do).
    policy: EffectivePolicy | None


Violation = tuple[str, str, str]  # (location, message, fix)
#: A check gives its findings as any iterable: most are generators; one that has at most one
#: finding may return a tuple, which costs less to make where it finds nothing.
WorkloadCheck = Callable[[Context], Iterable[Violation]]
ServiceCheck = Callable[[ServiceContext], Iterable[Violation]]


def service_location(key: ObjectKey, path: str) -> str:
    return f"GenerativeService {key.namespace}/{key.name} {path}"


def required_by(ctx: ServiceContext, rule: Rule) -> str | None:
    """The CompliancePolicies selecting the service's namespace that name an opt-in rule in
    spec.rules (`Rule.opt_in`), as a finding cites them: they require its declaration. None
    where no policy does (then only what the service declares is checked)."""
    effective = ctx.policy
    if effective is None or rule not in effective.named:
        return None  # the common case, known without naming the policies
    names = effective.naming(rule)
    if not names:
        return None
    return (f"CompliancePolicy {', '.join(names)} requires it (spec.rules names "
            f"{rule.value})")


@dataclass(frozen=True)
class CelTwin:
    """The rule as a ValidatingAdmissionPolicy, which holds while the webhook is down. Each
    GenerativeService of the namespace is a parameter; `variables.selected` says whether it
    selects the workload's pods."""

    validations: tuple[Mapping[str, str], ...]
    #: What the binding does when the namespace has no GenerativeService at all.
    when_no_service: str = "Allow"


@dataclass(frozen=True)
class RuleDefinition:
    rule: Rule
    #: What the rule asks, in one line (explain, SARIF, the README).
    summary: str
    #: How a team makes it hold.
    fix: str
    #: Where it is enforced, for the README and `explain`.
    enforced_by: str
    #: A check of the workload under review (admission, audit, `hegui check`).
    workload_check: WorkloadCheck | None = None
    #: A check of a GenerativeService's posture: run for every workload it selects at
    #: admission, and by the operator for the service itself.
    service_check: ServiceCheck | None = None
    cel: CelTwin | None = None
    #: Refused when the GenerativeService itself is applied (a floor no later object can
    #: make good), not only on the workloads it selects.
    apply_time: bool = False
    #: The status condition that follows the rule.
    condition: ServiceConditionType | None = None

    @property
    def article(self) -> str:
        return self.rule.article


def cel_prefix(rule: Rule, path: str) -> str:
    """CEL for the start of a message about the parameter service, as `Finding.render` writes
    it."""
    return (f"'[{rule.value}, {rule.article}] GenerativeService ' + params.metadata.namespace "
            f"+ '/' + params.metadata.name + ' {path}: '")


@dataclass(frozen=True)
class RequiredSection:
    """A section of the posture (`spec.<field>`) an opt-in rule asks for (`Rule.opt_in`): a
    CompliancePolicy that names the rule requires it of every service. One declaration gives
    the finding and its CEL twin, which say the same."""

    rule: Rule
    field: str  # camelCase, as in the CRD: "audience", "userAgreement"
    missing: str  # what is not declared, e.g. "no complaint and report channel is declared"
    fix: str

    @property
    def path(self) -> str:
        return f"spec.{self.field}"

    def absent(self, ctx: ServiceContext, value: object) -> tuple[Violation, ...]:
        """The finding when `value` (the section) is absent and a policy names the rule (a
        tuple, not a generator: most reviews find nothing, and a generator costs more to make
        than the test)."""
        if value is None and (by := required_by(ctx, self.rule)):
            return ((service_location(ctx.key, self.path), f"{self.missing}; {by}", self.fix),)
        return ()

    def cel(self) -> dict[str, str]:
        """The twin: the section is there wherever a policy binds the rule."""
        text = (f"{self.missing}; a CompliancePolicy requires it. Fix: {self.fix}"
                .replace("\\", "\\\\").replace("'", "\\'"))
        return {"expression": f"!variables.selected || has(params.{self.path})",
                "messageExpression": cel_prefix(self.rule, self.path) + f" + '{text}'"}
