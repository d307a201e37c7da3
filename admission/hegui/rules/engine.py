"""The rule engine: workload + posture in, findings out.

One function per rule, each registered with its id (from `hegui.api.articles.Rule`, which fixes
its article), its severity and a fix hint. The admission webhook, the operator's background audit
and `hegui check` all call `evaluate`; they differ only in where the `ComplianceIndex` comes from
(API watches, kopf indexes, files) and in what they do with the findings (deny/warn, status,
exit code).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from hegui.api.articles import Rule
from hegui.api.generativeservice import FailureMode, GenerativeService
from hegui.api.policy import EnforcementMode
from hegui.rules import workloads
from hegui.rules.index import ComplianceIndex, ObjectKey, exemption_scope


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
class Workload:
    """The object under review, reduced to what rules need."""

    obj: Mapping[str, Any]
    kind: str
    namespace: str
    name: str

    @classmethod
    def of(cls, obj: Mapping[str, Any], namespace: str = "") -> Workload:
        meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
        assert isinstance(meta, Mapping)
        name = meta.get("name") or meta.get("generateName") or "(unnamed)"
        return cls(obj, str(obj.get("kind", "")), str(meta.get("namespace") or namespace),
                   str(name))

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass
class Context:
    workload: Workload
    templates: list[workloads.PodTemplate]
    evidence: list[workloads.GpuEvidence]
    index: ComplianceIndex
    now: dt.datetime
    services: list[ObjectKey] = field(default_factory=list)


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


@dataclass(frozen=True)
class ServiceContext:
    """What a posture rule reads: one GenerativeService, hegui's other objects, the time."""

    key: ObjectKey
    service: GenerativeService
    index: ComplianceIndex
    now: dt.datetime


Violation = tuple[str, str, str]  # (location, message, fix)
WorkloadCheck = Callable[[Context], Iterator[Violation]]
ServiceCheck = Callable[[ServiceContext], Iterator[Violation]]


@dataclass(frozen=True)
class RuleSpec:
    rule: Rule
    check: WorkloadCheck


@dataclass(frozen=True)
class ServiceRuleSpec:
    rule: Rule
    check: ServiceCheck


#: Rules about the workload itself (is it declared?).
RULES: list[RuleSpec] = []
#: Rules about a service's posture: checked for every workload it selects at admission, and for
#: the service itself by the operator, so a status and a refusal always agree.
SERVICE_RULES: list[ServiceRuleSpec] = []


def rule(which: Rule) -> Callable[[WorkloadCheck], WorkloadCheck]:
    def register(check: WorkloadCheck) -> WorkloadCheck:
        RULES.append(RuleSpec(which, check))
        return check
    return register


def service_rule(which: Rule) -> Callable[[ServiceCheck], ServiceCheck]:
    def register(check: ServiceCheck) -> ServiceCheck:
        SERVICE_RULES.append(ServiceRuleSpec(which, check))
        return check
    return register


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
    context = ServiceContext(key, service, index, now or dt.datetime.now(dt.UTC))
    return [(spec.rule, violation) for spec in SERVICE_RULES
            if rules is None or spec.rule in rules for violation in spec.check(context)]


#: The posture rules a GenerativeService is refused for when it is applied: the policy's floor,
#: which no later object can make good. (Filing, assessment and labeling are refused on the
#: workloads: a service is declared before its assessment runs.)
APPLY_TIME_RULES = frozenset({Rule.MODERATION})


def evaluate_service_object(obj: Mapping[str, Any], index: ComplianceIndex, *,
                            namespace: str = "", now: dt.datetime | None = None
                            ) -> list[Finding]:
    """The apply-time findings of a GenerativeService object (the webhook and `hegui check`), in
    the modes of the policies enforcing its namespace; empty where none does."""
    service = GenerativeService.from_dict(obj)
    key = ObjectKey(service.namespace or namespace, service.name)
    policy = index.policy_for(key.namespace)
    if policy is None:
        return []
    return [Finding(which, location, message, fix, policy.mode_for(which))
            for which, (location, message, fix) in evaluate_posture(
                key, service, index, now=now, rules=APPLY_TIME_RULES)]


def evaluate(obj: Mapping[str, Any], index: ComplianceIndex, *, namespace: str = "",
             now: dt.datetime | None = None) -> list[Finding]:
    """Every finding for one workload object; empty when it is compliant or not generative."""
    workload = Workload.of(obj, namespace)
    policy = index.policy_for(workload.namespace)
    if policy is None:
        return []
    detection = policy.detection  # merged from the policies' signals: once a review
    templates = workloads.pod_templates(obj, detection)
    evidence = [e for t in templates for e in workloads.generative_evidence(
        t, workload.namespace, index.claim_classes, detection)]
    if not evidence:
        return []
    because = "; ".join(str(e) for e in evidence[:4]) + (
        f"; and {len(evidence) - 4} more" if len(evidence) > 4 else "")
    scoped, left_out_by = policy.scoped(workloads.owner_kinds(obj),
                                        [t.labels for t in templates])
    if scoped is None:
        # Out of every policy's workload scope: reported as waived, never silently dropped.
        return [Finding(Rule.COVERAGE, f"{workload}",
                        "runs a generative model but the policy's workload scope leaves it out",
                        "nothing if it serves no generated content; otherwise narrow the "
                        "policy's spec.workloads", policy.mode_for(Rule.COVERAGE),
                        left_out_by, because)]
    policy = scoped
    context = Context(workload, templates, evidence, index, now or dt.datetime.now(dt.UTC))
    context.services = index.services_selecting(workload.namespace,
                                                [t.labels for t in templates])
    found: list[tuple[Rule, Violation]] = [
        (spec.rule, violation) for spec in RULES for violation in spec.check(context)]
    for key in context.services:
        found += evaluate_service(key, index, now=context.now)
    scope = exemption_scope(obj)
    return [Finding(which, location, message, fix, policy.mode_for(which),
                    index.exemption_for(workload.namespace, scope, which, context.now), because)
            for which, (location, message, fix) in found]


# --- the rules ------------------------------------------------------------------------------------

def _service_location(key: ObjectKey, path: str) -> str:
    return f"GenerativeService {key.namespace}/{key.name} {path}"


@rule(Rule.COVERAGE)
def _covered_by_one_service(ctx: Context) -> Iterator[Violation]:
    reasons = "; ".join(sorted({e.reason for e in ctx.evidence}))
    labels_path = ("metadata.labels" if ctx.workload.kind == "Pod"
                   else ctx.templates[0].spec_path.removesuffix(".spec") + ".metadata.labels")
    broken = ctx.index.broken_services_in(ctx.workload.namespace)
    if not ctx.services:
        detail = (f"; these GenerativeServices could not be read: {', '.join(broken)}"
                  if broken else "")
        yield (f"{ctx.workload} {labels_path}",
               f"runs a generative model ({reasons}) but no GenerativeService in namespace "
               f"{ctx.workload.namespace} selects its pods{detail}",
               "declare the service: apply a GenerativeService whose spec.selector matches "
               "these pod labels, with its filing, assessment and labeling")
    elif len(ctx.services) > 1:
        names = ", ".join(k.name for k in ctx.services)
        yield (f"{ctx.workload} {labels_path}",
               f"is selected by {len(ctx.services)} GenerativeServices ({names}); its posture "
               "is ambiguous",
               "narrow the selectors so that exactly one GenerativeService selects these pods")


@service_rule(Rule.FILING)
def _filed(ctx: ServiceContext) -> Iterator[Violation]:
    key, filing = ctx.key, ctx.service.spec.filing
    if filing.public_opinion and filing.algorithm is None:
        yield (_service_location(key, "spec.filing.algorithm"),
               "no algorithm filing number (算法备案) is declared for a service with "
               "public-opinion attributes (filing.publicOpinion: true)",
               "set spec.filing.algorithm.number to the number the CAC issued, e.g. "
               "网信算备110108823483901230011号")
    elif filing.algorithm is None and filing.service is None:
        yield (_service_location(key, "spec.filing"),
               "neither an algorithm filing (算法备案) nor a generative-service filing or "
               "registration (备案/登记) is declared",
               "set spec.filing.service.number (or spec.filing.algorithm.number) to the "
               "number the regulator issued")


@service_rule(Rule.ASSESSMENT)
def _assessed(ctx: ServiceContext) -> Iterator[Violation]:
    key, service = ctx.key, ctx.service
    required = service.spec.filing.public_opinion
    assessment = service.spec.assessment
    if assessment is None:
        if required:
            yield (_service_location(key, "spec.assessment"),
                   "no security assessment (安全评估) is declared for a service that needs "
                   "one", "reference a passing SafetyAssessment (spec.assessment."
                   "safetyAssessmentRef) or an external report (spec.assessment.external)")
        return
    if assessment.external is not None:
        report = assessment.external
        if report.result.value != "Pass":
            yield (_service_location(key, "spec.assessment.external.result"),
                   f"the external assessment {report.report_id} did not pass",
                   "pass a new assessment and reference its report")
        elif not report.valid_on(ctx.now.date()):
            yield (_service_location(key, "spec.assessment.external.expiresOn"),
                   f"the external assessment {report.report_id} is not valid on "
                   f"{ctx.now.date().isoformat()} (valid {report.assessed_on.isoformat()} to "
                   f"{report.expires_on.isoformat()})",
                   "renew the assessment and update spec.assessment.external")
        elif ctx.index.attestation_of(key.namespace, key.name, report.report_id,
                                      ctx.now) is None:
            # The spec is the team's to write: a report it declares is its own word until the
            # assessor records it where only the assessor can write (a status subresource).
            yield (_service_location(key, "spec.assessment.external"),
                   f"the external assessment {report.report_id} is declared by the service "
                   "itself; no SafetyAssessment for this service records it (a Pass with "
                   f"status.reportId {report.report_id}, written by the assessor)",
                   f"create a SafetyAssessment for {key.name} without spec.target and have the "
                   "assessor (ClusterRole hegui-assessor) record the verdict, reportId and "
                   "expiresAt in its status")
    elif assessment.safety_assessment_ref is not None:
        name = assessment.safety_assessment_ref.name
        verdict = ctx.index.assessment_verdict(key.namespace, name, ctx.now, key.name)
        if verdict is not None:
            yield (_service_location(key, "spec.assessment.safetyAssessmentRef"),
                   f"SafetyAssessment {key.namespace}/{name} {verdict}",
                   "run the SafetyAssessment again until it passes, or reference one "
                   "that passed and has not expired")


@service_rule(Rule.LABELING)
def _labeled(ctx: ServiceContext) -> Iterator[Violation]:
    key, labeling = ctx.key, ctx.service.spec.labeling
    if labeling is None:
        yield (_service_location(key, "spec.labeling"),
               "no content labeling (标识) is configured for generated content",
               "set spec.labeling with the modalities the service generates and its "
               "implicit label (GB 45438-2025); explicit labels for text and images")


@service_rule(Rule.MODERATION)
def _above_the_floor(ctx: ServiceContext) -> Iterator[Violation]:
    """The service's moderation and labels against every selecting policy's floor (Art.14)."""
    effective = ctx.index.policy_for(ctx.key.namespace)
    floors = [(p, p.spec.moderation) for p in (effective.policies if effective else ())
              if p.spec.moderation is not None]
    key, spec = ctx.key, ctx.service.spec
    for policy, floor in floors:
        assert floor is not None
        by = f"CompliancePolicy {policy.name}'s moderation floor"
        moderation = spec.moderation
        if moderation is None:
            yield (_service_location(key, "spec.moderation"),
                   f"no moderation is declared; {by} requires it",
                   "declare spec.moderation with the categories, directions and endpoint the "
                   "policy requires")
            continue
        for direction in floor.directions:
            if not getattr(moderation, direction.value).enabled:
                yield (_service_location(key, f"spec.moderation.{direction.value}.enabled"),
                       f"{direction.value}s are not moderated; {by} requires it",
                       f"set spec.moderation.{direction.value}.enabled to true")
        categories = {c.name: (i, c) for i, c in enumerate(moderation.categories)}
        for name in floor.block_categories:
            if name not in categories:
                yield (_service_location(key, "spec.moderation.categories"),
                       f"category {name} is not scored; {by} requires it to block",
                       f"add {{name: {name}, action: Block, threshold: <= "
                       f"{floor.max_block_threshold}}} to spec.moderation.categories")
                continue
            at, category = categories[name]
            where = f"spec.moderation.categories[{at}]"
            if category.action.value != "Block":
                yield (_service_location(key, f"{where}.action"),
                       f"category {name} has action {category.action.value}; {by} requires "
                       "Block", f"set {where}.action to Block")
            if category.threshold > floor.max_block_threshold:
                yield (_service_location(key, f"{where}.threshold"),
                       f"category {name} blocks only at {category.threshold}, above the "
                       f"{floor.max_block_threshold} {by} allows",
                       f"set {where}.threshold to at most {floor.max_block_threshold}")
            if missing := sorted(d.value for d in floor.directions
                                 if d not in category.directions):
                yield (_service_location(key, f"{where}.directions"),
                       f"category {name} does not apply to {', '.join(missing)}; {by} requires "
                       "it on every moderated side", f"add {', '.join(missing)} to "
                       f"{where}.directions")
        if floor.failure_mode is FailureMode.CLOSED and \
                moderation.failure_mode is not FailureMode.CLOSED:
            yield (_service_location(key, "spec.moderation.failureMode"),
                   f"failure mode {moderation.failure_mode.value}; {by} requires "
                   f"{floor.failure_mode.value}",
                   f"set spec.moderation.failureMode to {floor.failure_mode.value}")
        allowed = floor.allowed_endpoints(policy.spec.defaults.triton)
        endpoint = moderation.triton or policy.spec.defaults.triton
        if allowed and endpoint not in allowed:
            shown = f"{endpoint.address} model {endpoint.model}" if endpoint else "none"
            yield (_service_location(key, "spec.moderation.triton"),
                   f"moderation endpoint {shown} is not one {by} allows",
                   "use one of " + ", ".join(f"{e.address} model {e.model}" for e in allowed)
                   + " (or leave spec.moderation.triton out for the policy's default)")
        labeling = spec.labeling
        if floor.labels and labeling is not None:
            if not labeling.implicit.enabled:
                yield (_service_location(key, "spec.labeling.implicit.enabled"),
                       f"implicit labels are off; {by} keeps labels on for generated content "
                       "(Art.12)", "set spec.labeling.implicit.enabled to true")
            if labeling.explicit is not None and not labeling.explicit.enabled:
                yield (_service_location(key, "spec.labeling.explicit.enabled"),
                       f"explicit labels are off; {by} keeps labels on for generated content "
                       "(Art.12)", "set spec.labeling.explicit.enabled to true")
