"""Rule licences (Art.23): the administrative licences (行政许可) a service needs are held.
Which ones the law requires is not something a cluster can read, so it is opt-in
(`Rule.opt_in`): a CompliancePolicy that names it requires every service to list at least one
licence. A listed licence past its expiry is not held, whoever names the rule; that needs the
day, which CEL does not have, so only the webhook and the operator judge it."""

from __future__ import annotations

from collections.abc import Iterator

from hegui.api.articles import Rule
from hegui.rules.base import (
    CelTwin,
    RuleDefinition,
    ServiceContext,
    Violation,
    cel_prefix,
    required_by,
    service_location,
)

FIX = ("list the licences the service holds in spec.licences, with kind, number, issuer and "
       "expiresOn")


def check(ctx: ServiceContext) -> Iterator[Violation]:
    key, licences = ctx.key, ctx.service.spec.licences
    if not licences:
        if by := required_by(ctx, Rule.LICENCES):
            yield (service_location(key, "spec.licences"),
                   f"no administrative licence (行政许可) is declared; {by}", FIX)
        return
    today = ctx.now.date()
    for at, licence in enumerate(licences):
        if not licence.valid_on(today):
            assert licence.expires_on is not None
            yield (service_location(key, f"spec.licences[{at}].expiresOn"),
                   f"licence {licence.kind} {licence.number} expired on "
                   f"{licence.expires_on.isoformat()}",
                   "renew the licence and update its number and expiresOn")


RULE = RuleDefinition(
    Rule.LICENCES,
    summary="administrative licences the service needs are held and current",
    fix=FIX,
    enforced_by="opt-in: where a CompliancePolicy names licences in spec.rules, admission "
                "refuses, warns about or audits (its mode) the workloads of a service that "
                "lists no licence (also a ValidatingAdmissionPolicy); a listed licence past its "
                "expiresOn is a finding (webhook and status), reported in status where no "
                "policy names the rule",
    service_check=check,
    cel=CelTwin(({
        "expression": "!variables.selected || (has(params.spec.licences) && "
                      "size(params.spec.licences) > 0)",
        "messageExpression": cel_prefix(Rule.LICENCES, "spec.licences") + " + 'no "
                             "administrative licence (行政许可) is declared; a CompliancePolicy "
                             "requires it. Fix: list the licences in spec.licences'",
    },)),
)
