"""Rule licences (Art.23): administrative licences the service needs are held. Declared in
spec.licences; no check judges them yet."""

from __future__ import annotations

from hegui.api.articles import Rule
from hegui.rules.base import RuleDefinition

RULE = RuleDefinition(
    Rule.LICENCES,
    summary="administrative licences the service needs are held",
    fix="list the licences the service holds in spec.licences, with number, issuer and expiry",
    enforced_by="declared in spec.licences (the CRD checks its shape); no check yet",
)
