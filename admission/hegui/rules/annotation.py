"""Rule annotation (Art.8): annotation rules exist and annotation quality is sampled. Declared in
spec.training.annotation; no check judges it yet."""

from __future__ import annotations

from hegui.api.articles import Rule
from hegui.rules.base import RuleDefinition

RULE = RuleDefinition(
    Rule.ANNOTATION,
    summary="annotation rules exist and annotation quality is sampled",
    fix="declare spec.training.annotation: the rules, annotator training and the latest "
        "quality sampling",
    enforced_by="declared in spec.training.annotation (the CRD checks its shape); the dossier"
                " reports it; no check yet",
)
