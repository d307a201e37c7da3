"""Rule userAgreement (Art.9): a service agreement with registered users exists. Declared in
spec.userAgreement; no check judges it yet."""

from __future__ import annotations

from hegui.api.articles import Rule
from hegui.rules.base import RuleDefinition

RULE = RuleDefinition(
    Rule.USER_AGREEMENT,
    summary="a service agreement with registered users exists",
    fix="declare spec.userAgreement: where the agreement is published, its version and the "
        "day it took effect",
    enforced_by="declared in spec.userAgreement (the CRD checks its shape); no check yet",
)
