"""Rule stability (Art.13): the service is safe, stable and continuous (安全、稳定、持续的服务):
judged from live metrics by the operator, not at admission."""

from __future__ import annotations

from hegui.api.articles import Rule
from hegui.api.generativeservice import ServiceConditionType
from hegui.rules.base import RuleDefinition

RULE = RuleDefinition(
    Rule.STABILITY,
    summary="the service meets its stability objectives (安全、稳定、持续的服务)",
    fix="declare spec.slo and meet it; the operator reads it from Prometheus",
    enforced_by="the operator judges spec.slo against Prometheus, condition SLOMet "
                "(hegui.operator.stability)",
    condition=ServiceConditionType.SLO_MET,
)
