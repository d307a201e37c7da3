"""Rule suspension (Art.21): a service that keeps breaking its objectives, or that an authority
orders stopped, is suspended until corrected: the operator's steps, not an admission check."""

from __future__ import annotations

from hegui.api.articles import Rule
from hegui.api.generativeservice import ServiceConditionType
from hegui.rules.base import RuleDefinition

RULE = RuleDefinition(
    Rule.SUSPENSION,
    summary="a service that keeps breaking its objectives is suspended until corrected",
    fix="fix the cause, then ask the compliance group to run `kubectl hegui resume SERVICE "
        "--reason ...` (a ResumeRequest)",
    enforced_by="the operator suspends on sustained violation of spec.slo or on a "
                "SuspensionOrder and lifts it on a ResumeRequest, condition Suspended "
                "(hegui.operator); the validating webhook keeps a suspended service's pods "
                "fenced (hegui.admission.guards)",
    condition=ServiceConditionType.SUSPENDED,
)
