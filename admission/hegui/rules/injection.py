"""Rule injection (Art.14): the sidecar carries the data path's moderation and labels; a pod
without it serves unmoderated. Its checks run where pods are made (the mutating webhook) and where
they run (the operator), not in the rule engine."""

from __future__ import annotations

from hegui.api.articles import Rule
from hegui.api.generativeservice import ServiceConditionType
from hegui.rules.base import RuleDefinition

RULE = RuleDefinition(
    Rule.INJECTION,
    summary="the moderation and labeling sidecar runs in every pod of the service",
    fix="let hegui's webhook inject the sidecar: recreate pods that lack it, serve through "
        "the serving port's name, never by number",
    enforced_by="the mutating webhook injects the sidecar into every pod a GenerativeService "
                "selects (hegui.admission.mutate); the validating webhook refuses a "
                "NetworkPolicy that would let traffic around it (hegui.admission.guards); the"
                " operator reports and evicts pods without it, condition Moderated "
                "(hegui.operator.workloads)",
    condition=ServiceConditionType.MODERATED,
)
