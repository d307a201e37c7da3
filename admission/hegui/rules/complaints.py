"""Rule complaints (Art.15): a complaint and report channel with a published response deadline
exists. Declared in spec.complaints; the sidecar takes complaints on it and records their deadline;
no check judges the declaration yet."""

from __future__ import annotations

from hegui.api.articles import Rule
from hegui.rules.base import RuleDefinition

RULE = RuleDefinition(
    Rule.COMPLAINTS,
    summary="a complaint and report channel with a published response deadline exists",
    fix="declare spec.complaints: a url, email or phone, the published process and the "
        "response deadline",
    enforced_by="declared in spec.complaints (the CRD requires a channel); the sidecar "
                "records complaints and `hegui complaints list` shows overdue ones; no check "
                "yet",
)
