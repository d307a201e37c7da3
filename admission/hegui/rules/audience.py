"""Rule audience (Art.10): intended users, occasions and uses are published and minors are
protected. Declared in spec.audience, whose shape the CRD checks; no check judges it yet."""

from __future__ import annotations

from hegui.api.articles import Rule
from hegui.rules.base import RuleDefinition

RULE = RuleDefinition(
    Rule.AUDIENCE,
    summary="intended users, occasions and uses are published; minors are protected",
    fix="declare spec.audience: intended users, uses, where they are published, and whether "
        "minors may use the service",
    enforced_by="declared in spec.audience (the CRD checks its shape); no check yet",
)
