"""Rule moderation (Art.14): inputs and outputs are moderated and illegal content is stopped;
a GenerativeService's posture is held to every selecting CompliancePolicy's moderation floor."""

from __future__ import annotations

from collections.abc import Iterator

from hegui.api.articles import Rule
from hegui.api.generativeservice import (
    FailureMode,
    Modality,
    RouteFamily,
    ServiceConditionType,
)
from hegui.rules.base import RuleDefinition, ServiceContext, Violation, service_location


def check(ctx: ServiceContext) -> Iterator[Violation]:
    """The service's moderation and labels against every selecting policy's floor (Art.14)."""
    effective = ctx.policy
    floors = [(p, p.spec.moderation) for p in (effective.policies if effective else ())
              if p.spec.moderation is not None]
    key, spec = ctx.key, ctx.service.spec
    for policy, floor in floors:
        assert floor is not None
        by = f"CompliancePolicy {policy.name}'s moderation floor"
        moderation = spec.moderation
        if moderation is None:
            yield (service_location(key, "spec.moderation"),
                   f"no moderation is declared; {by} requires it",
                   "declare spec.moderation with the categories, directions and endpoint the "
                   "policy requires")
            continue
        for direction in floor.directions:
            if not getattr(moderation, direction.value).enabled:
                yield (service_location(key, f"spec.moderation.{direction.value}.enabled"),
                       f"{direction.value}s are not moderated; {by} requires it",
                       f"set spec.moderation.{direction.value}.enabled to true")
        categories = {c.name: (i, c) for i, c in enumerate(moderation.categories)}
        for name in floor.block_categories:
            if name not in categories:
                yield (service_location(key, "spec.moderation.categories"),
                       f"category {name} is not scored; {by} requires it to block",
                       f"add {{name: {name}, action: Block, threshold: <= "
                       f"{floor.max_block_threshold}}} to spec.moderation.categories")
                continue
            at, category = categories[name]
            where = f"spec.moderation.categories[{at}]"
            if category.action.value != "Block":
                yield (service_location(key, f"{where}.action"),
                       f"category {name} has action {category.action.value}; {by} requires "
                       "Block", f"set {where}.action to Block")
            if category.threshold > floor.max_block_threshold:
                yield (service_location(key, f"{where}.threshold"),
                       f"category {name} blocks only at {category.threshold}, above the "
                       f"{floor.max_block_threshold} {by} allows",
                       f"set {where}.threshold to at most {floor.max_block_threshold}")
            if missing := sorted(d.value for d in floor.directions
                                 if d not in category.directions):
                yield (service_location(key, f"{where}.directions"),
                       f"category {name} does not apply to {', '.join(missing)}; {by} requires "
                       "it on every moderated side", f"add {', '.join(missing)} to "
                       f"{where}.directions")
        if floor.failure_mode is FailureMode.CLOSED and \
                moderation.failure_mode is not FailureMode.CLOSED:
            yield (service_location(key, "spec.moderation.failureMode"),
                   f"failure mode {moderation.failure_mode.value}; {by} requires "
                   f"{floor.failure_mode.value}",
                   f"set spec.moderation.failureMode to {floor.failure_mode.value}")
        allowed = floor.allowed_endpoints(policy.spec.defaults.triton)
        endpoint = moderation.triton or policy.spec.defaults.triton
        if allowed and endpoint not in allowed:
            shown = f"{endpoint.address} model {endpoint.model}" if endpoint else "none"
            yield (service_location(key, "spec.moderation.triton"),
                   f"moderation endpoint {shown} is not one {by} allows",
                   "use one of " + ", ".join(f"{e.address} model {e.model}" for e in allowed)
                   + " (or leave spec.moderation.triton out for the policy's default)")
        labeling = spec.labeling
        if floor.image_classifier and moderation.images is None and (
                (labeling is not None and Modality.IMAGE in labeling.modalities)
                or any(r.family is RouteFamily.IMAGES for r in moderation.routes)):
            yield (service_location(key, "spec.moderation.images"),
                   f"the service generates images and declares no image classifier; {by} "
                   "requires one, so that its pictures are moderated like its text",
                   "declare spec.moderation.images with the image classifier's Triton model "
                   "(model: image_classifier)")
        if floor.labels and labeling is not None:
            if not labeling.implicit.enabled:
                yield (service_location(key, "spec.labeling.implicit.enabled"),
                       f"implicit labels are off; {by} keeps labels on for generated content "
                       f"({Rule.LABELING.article})", "set spec.labeling.implicit.enabled to true")
            if labeling.explicit is not None and not labeling.explicit.enabled:
                yield (service_location(key, "spec.labeling.explicit.enabled"),
                       f"explicit labels are off; {by} keeps labels on for generated content "
                       f"({Rule.LABELING.article})", "set spec.labeling.explicit.enabled to true")


RULE = RuleDefinition(
    Rule.MODERATION,
    summary="inputs and outputs are moderated and illegal content is stopped",
    fix="declare spec.moderation for input and output with a Triton endpoint, at least as "
        "strict as the CompliancePolicy's moderation floor",
    enforced_by="admission refuses a service below its CompliancePolicy's moderation floor when "
                "it is applied, and the workloads it selects; condition Moderated; the sidecar "
                "moderates every request and answer",
    service_check=check,
    apply_time=True,
    condition=ServiceConditionType.MODERATED,
)
