"""Rule dataProtection (Art.11): users' inputs and usage records are protected, pseudonymised and
kept no longer than needed. Declared in spec.dataProtection; the sidecar pseudonymises what it
records and the evidence store keeps it for retentionDays; no check judges the declaration yet."""

from __future__ import annotations

from hegui.api.articles import Rule
from hegui.rules.base import RuleDefinition

RULE = RuleDefinition(
    Rule.DATA_PROTECTION,
    summary="inputs and usage records are protected, pseudonymised and not retained beyond "
            "need",
    fix="declare spec.dataProtection: retention, pseudonymisation and the channel for "
        "individuals' requests",
    enforced_by="declared in spec.dataProtection (the CRD checks its shape); the sidecar and "
                "the evidence store apply it; no check yet",
)
