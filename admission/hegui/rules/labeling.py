"""Rule labeling (Art.12): generated content carries explicit and implicit labels (标识,
GB 45438-2025), so the service declares how it labels."""

from __future__ import annotations

from collections.abc import Iterator

from hegui.api.articles import Rule
from hegui.api.generativeservice import ServiceConditionType
from hegui.rules.base import (
    CelTwin,
    RuleDefinition,
    ServiceContext,
    Violation,
    cel_prefix,
    service_location,
)


def check(ctx: ServiceContext) -> Iterator[Violation]:
    key, labeling = ctx.key, ctx.service.spec.labeling
    if labeling is None:
        yield (service_location(key, "spec.labeling"),
               "no content labeling (标识) is configured for generated content",
               "set spec.labeling with the modalities the service generates and its "
               "implicit label (GB 45438-2025); explicit labels for text and images")


RULE = RuleDefinition(
    Rule.LABELING,
    summary="generated content carries explicit and implicit labels (标识)",
    fix="declare spec.labeling: modalities, explicit label text and implicit metadata",
    enforced_by="admission refuses the workloads the service selects when no content labeling "
                "is configured (also a ValidatingAdmissionPolicy); condition Labeled; the "
                "sidecar writes the labels",
    service_check=check,
    cel=CelTwin(({
        "expression": "!variables.selected || has(params.spec.labeling)",
        "messageExpression": cel_prefix(Rule.LABELING, "spec.labeling") + " + 'no content "
                             "labeling (标识) is configured for generated content. Fix: set "
                             "spec.labeling'",
    },)),
    condition=ServiceConditionType.LABELED,
)
