"""Rule audience (Art.10): the intended users, occasions and uses (适用人群、场合、用途) are
published, and minors are guarded against over-reliance and addiction. Opt-in (`Rule.opt_in`): a
CompliancePolicy that names it requires spec.audience of every service; the CRD checks what is
declared (a dailyLimit wherever minors are allowed), so there is nothing more to judge."""

from __future__ import annotations

from hegui.api.articles import Rule
from hegui.rules.base import (
    CelTwin,
    RequiredSection,
    RuleDefinition,
    ServiceContext,
    Violation,
)

FIX = ("declare spec.audience: intendedUsers, uses, publishedAt (where users read them) and "
       "minors (allowed, and their dailyLimit if they are)")


SECTION = RequiredSection(
    Rule.AUDIENCE, "audience", "the intended users, occasions and uses (适用人群、场合、用途) and "
    "whether minors may use the service are not declared", FIX)


def check(ctx: ServiceContext) -> tuple[Violation, ...]:
    return SECTION.absent(ctx, ctx.service.spec.audience)


RULE = RuleDefinition(
    Rule.AUDIENCE,
    summary="intended users, occasions and uses are published; minors are protected",
    fix=FIX,
    enforced_by="opt-in: where a CompliancePolicy names audience in spec.rules, admission "
                "refuses, warns about or audits (its mode) the workloads of a service without "
                "spec.audience (also a ValidatingAdmissionPolicy); the CRD requires a daily "
                "limit wherever minors are allowed; the dossier reports it",
    service_check=check,
    cel=CelTwin((SECTION.cel(),)),
)
