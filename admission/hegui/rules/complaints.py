"""Rule complaints (Art.15): a convenient complaint and report channel (投诉、举报入口), its
published process and response deadline (处理流程和反馈时限). Opt-in (`Rule.opt_in`): a
CompliancePolicy that names it requires spec.complaints of every service; the CRD requires a
channel, the process and the deadline in what is declared, and the sidecar takes complaints on it
and records their deadline (`hegui complaints list` shows the overdue ones)."""

from __future__ import annotations

from hegui.api.articles import Rule
from hegui.rules.base import (
    CelTwin,
    RequiredSection,
    RuleDefinition,
    ServiceContext,
    Violation,
)

FIX = ("declare spec.complaints: a url, email or phone, processUrl (the published process) and "
       "responseDeadline, e.g. 72h")


SECTION = RequiredSection(
    Rule.COMPLAINTS, "complaints", "no complaint and report channel (投诉、举报入口) with a "
    "published process and response deadline is declared", FIX)


def check(ctx: ServiceContext) -> tuple[Violation, ...]:
    return SECTION.absent(ctx, ctx.service.spec.complaints)


RULE = RuleDefinition(
    Rule.COMPLAINTS,
    summary="a complaint and report channel with a published response deadline exists",
    fix=FIX,
    enforced_by="opt-in: where a CompliancePolicy names complaints in spec.rules, admission "
                "refuses, warns about or audits (its mode) the workloads of a service without "
                "spec.complaints (also a ValidatingAdmissionPolicy); the CRD requires a "
                "channel, the process and the deadline; the sidecar records complaints and "
                "`hegui complaints list` shows overdue ones",
    service_check=check,
    cel=CelTwin((SECTION.cel(),)),
)
