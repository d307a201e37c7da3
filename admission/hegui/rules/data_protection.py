"""Rule dataProtection (Art.11): users' inputs and usage records are protected, no record that can
identify a user is kept unlawfully (不得非法留存能够识别使用者身份的输入信息和使用记录), and
individuals' requests are handled. Opt-in (`Rule.opt_in`): a CompliancePolicy that names it
requires spec.dataProtection of every service. What a service declares is checked against itself
(records kept are pseudonymised) and against the evidence store its policies ship records to
(which locks every record for the store's retentionDays: a shorter declared retention is
untrue). The sidecar pseudonymises and keeps records as declared."""

from __future__ import annotations

from collections.abc import Iterator

from hegui.api.articles import Rule
from hegui.rules.base import (
    CelTwin,
    RequiredSection,
    RuleDefinition,
    ServiceContext,
    Violation,
    cel_prefix,
    service_location,
)

FIX = ("declare spec.dataProtection: retentionDays, pseudonymise with its "
       "pseudonymisationKeyRef, and userRequests (the channel and deadline for access, copy, "
       "correction and deletion)")


def _store_lock(ctx: ServiceContext) -> tuple[int, str] | None:
    """The days the evidence store locks every shipped record, and the policy that says so:
    the longest of the selecting policies' (the store the sidecar ships to)."""
    effective = ctx.policy
    stores = [(p.spec.evidence.store.retention_days, p.name)
              for p in (effective.policies if effective else ()) if p.spec.evidence is not None]
    return max(stores, key=lambda s: (s[0], s[1])) if stores else None


SECTION = RequiredSection(
    Rule.DATA_PROTECTION, "dataProtection", "no protection of users' inputs and usage records "
    "(retention, pseudonymisation, individuals' requests) is declared", FIX)


def check(ctx: ServiceContext) -> Iterator[Violation]:
    key, protection = ctx.key, ctx.service.spec.data_protection
    if protection is None:
        yield from SECTION.absent(ctx, protection)
        return
    if protection.retention_days == 0:
        return  # nothing is kept
    if not protection.pseudonymise:
        yield (service_location(key, "spec.dataProtection.pseudonymise"),
               f"records are kept {protection.retention_days} days with user ids in the clear: "
               "inputs and usage records that identify users (能够识别使用者身份) are retained",
               "set spec.dataProtection.pseudonymise to true with a pseudonymisationKeyRef, or "
               "retentionDays to 0")
    lock = _store_lock(ctx)
    if lock is not None and lock[0] > protection.retention_days:
        days, policy = lock
        yield (service_location(key, "spec.dataProtection.retentionDays"),
               f"records are declared kept {protection.retention_days} days, but CompliancePolicy "
               f"{policy}'s evidence store locks every shipped record for {days} days",
               f"declare (and publish) retentionDays of at least {days}, or have the platform "
               "lower the policy's evidence.store.retentionDays")


RULE = RuleDefinition(
    Rule.DATA_PROTECTION,
    summary="inputs and usage records are protected, pseudonymised and not retained beyond "
            "what is declared",
    fix=FIX,
    enforced_by="opt-in: where a CompliancePolicy names dataProtection in spec.rules, admission "
                "refuses, warns about or audits (its mode) the workloads of a service without "
                "spec.dataProtection (also a ValidatingAdmissionPolicy); records kept without "
                "pseudonymisation (also CEL) or locked in the evidence store longer than the "
                "declared retentionDays are findings, reported in status where no policy names "
                "the rule; the sidecar and the evidence store apply it",
    service_check=check,
    cel=CelTwin((
        SECTION.cel(),
        {"expression": "!variables.selected || !has(params.spec.dataProtection) || "
                       "params.spec.dataProtection.retentionDays == 0 || "
                       "!has(params.spec.dataProtection.pseudonymise) || "
                       "params.spec.dataProtection.pseudonymise",
         "messageExpression": cel_prefix(Rule.DATA_PROTECTION,
                                         "spec.dataProtection.pseudonymise")
                              + " + 'records are kept with user ids in the clear. Fix: set "
                              "spec.dataProtection.pseudonymise to true, or retentionDays to 0'"},
    )),
)
