"""Rule training (Art.7): training data and base models have lawful sources and licences. Declared
in spec.training, which the dossier explains (Art.19); no check judges it yet."""

from __future__ import annotations

from hegui.api.articles import Rule
from hegui.rules.base import RuleDefinition

RULE = RuleDefinition(
    Rule.TRAINING,
    summary="training data and base models have lawful sources and licences",
    fix="declare spec.training: data sources with their kind, licence and "
        "personal-information basis, and base models",
    enforced_by="declared in spec.training (the CRD requires a licence for Licensed sources);"
                " the dossier reports it; no check yet",
)
