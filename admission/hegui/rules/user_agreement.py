"""Rule userAgreement (Art.9): a service agreement (服务协议) with registered users, in effect.
Opt-in (`Rule.opt_in`): a CompliancePolicy that names it requires spec.userAgreement of every
service. A declared agreement that takes effect only later is no agreement yet; that needs the
day, which CEL does not have, so only the webhook and the operator judge it."""

from __future__ import annotations

from collections.abc import Iterator

from hegui.api.articles import Rule
from hegui.rules.base import (
    CelTwin,
    RequiredSection,
    RuleDefinition,
    ServiceContext,
    Violation,
    service_location,
)

FIX = ("declare spec.userAgreement: url (where it is published), version and effectiveOn, the "
       "day that version took effect")


SECTION = RequiredSection(
    Rule.USER_AGREEMENT, "userAgreement",
    "no service agreement (服务协议) with registered users is declared", FIX)


def check(ctx: ServiceContext) -> Iterator[Violation]:
    key, agreement = ctx.key, ctx.service.spec.user_agreement
    if agreement is None:
        yield from SECTION.absent(ctx, agreement)
        return
    today = ctx.now.date()
    if agreement.effective_on > today:
        yield (service_location(key, "spec.userAgreement.effectiveOn"),
               f"agreement version {agreement.version} takes effect only on "
               f"{agreement.effective_on.isoformat()}; on {today.isoformat()} no agreement "
               "declared here is in effect",
               "declare the version in effect today (effectiveOn on or before today) until "
               "the new one takes effect")


RULE = RuleDefinition(
    Rule.USER_AGREEMENT,
    summary="a service agreement with registered users is in effect",
    fix=FIX,
    enforced_by="opt-in: where a CompliancePolicy names userAgreement in spec.rules, admission "
                "refuses, warns about or audits (its mode) the workloads of a service without "
                "spec.userAgreement (also a ValidatingAdmissionPolicy); an agreement whose "
                "effectiveOn is still to come is a finding (webhook and status); the dossier "
                "reports it",
    service_check=check,
    cel=CelTwin((SECTION.cel(),)),
)
