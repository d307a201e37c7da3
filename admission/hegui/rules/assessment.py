"""Rule assessment (Art.17): a service with public-opinion attributes passed a security
assessment (安全评估) that is current: a SafetyAssessment hegui ran, or an external report the
assessor recorded."""

from __future__ import annotations

from collections.abc import Iterator

from hegui.api.articles import Rule
from hegui.api.generativeservice import ServiceConditionType
from hegui.rules.base import RuleDefinition, ServiceContext, Violation, service_location


def check(ctx: ServiceContext) -> Iterator[Violation]:
    key, service = ctx.key, ctx.service
    required = service.spec.filing.public_opinion
    assessment = service.spec.assessment
    if assessment is None:
        if required:
            yield (service_location(key, "spec.assessment"),
                   "no security assessment (安全评估) is declared for a service that needs "
                   "one", "reference a passing SafetyAssessment (spec.assessment."
                   "safetyAssessmentRef) or an external report (spec.assessment.external)")
        return
    if assessment.external is not None:
        report = assessment.external
        if report.result != "Pass":  # a StrEnum: its value without the enum's property
            yield (service_location(key, "spec.assessment.external.result"),
                   f"the external assessment {report.report_id} did not pass",
                   "pass a new assessment and reference its report")
        elif not report.valid_on(ctx.now.date()):
            yield (service_location(key, "spec.assessment.external.expiresOn"),
                   f"the external assessment {report.report_id} is not valid on "
                   f"{ctx.now.date().isoformat()} (valid {report.assessed_on.isoformat()} to "
                   f"{report.expires_on.isoformat()})",
                   "renew the assessment and update spec.assessment.external")
        elif ctx.index.attestation_of(key.namespace, key.name, report.report_id,
                                      ctx.now) is None:
            # The spec is the team's to write: a report it declares is its own word until the
            # assessor records it where only the assessor can write (a status subresource).
            yield (service_location(key, "spec.assessment.external"),
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
            yield (service_location(key, "spec.assessment.safetyAssessmentRef"),
                   f"SafetyAssessment {key.namespace}/{name} {verdict}",
                   "run the SafetyAssessment again until it passes, or reference one "
                   "that passed and has not expired")



RULE = RuleDefinition(
    Rule.ASSESSMENT,
    summary="a passing, unexpired security assessment (安全评估) is declared",
    fix="reference a passing, unexpired SafetyAssessment or an external assessment report in "
        "spec.assessment",
    enforced_by="admission refuses the workloads the service selects when a public-opinion "
                "service has no assessment, or the declared one failed, expired, does not "
                "exist, assesses another service, or is an external report no assessor "
                "recorded; condition Assessed",
    service_check=check,
    condition=ServiceConditionType.ASSESSED,
)
