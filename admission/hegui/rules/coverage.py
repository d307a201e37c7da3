"""Rule coverage (Art.17): a workload that runs a generative model is declared by exactly one
GenerativeService, the object that carries its filing, assessment and labeling."""

from __future__ import annotations

from collections.abc import Iterator

from hegui.api.articles import Rule
from hegui.rules.base import CelTwin, Context, RuleDefinition, Violation


def check(ctx: Context) -> Iterator[Violation]:
    if len(ctx.services) == 1:
        return  # the common case: what a finding says is worked out only for a finding
    labels_path = ("metadata.labels" if ctx.workload.kind == "Pod"
                   else ctx.templates[0].spec_path.removesuffix(".spec") + ".metadata.labels")
    if not ctx.services:
        reasons = "; ".join(sorted({e.reason for e in ctx.evidence}))
        broken = ctx.index.broken_services_in(ctx.workload.namespace)
        detail = (f"; these GenerativeServices could not be read: {', '.join(broken)}"
                  if broken else "")
        yield (f"{ctx.workload} {labels_path}",
               f"runs a generative model ({reasons}) but no GenerativeService in namespace "
               f"{ctx.workload.namespace} selects its pods{detail}",
               "declare the service: apply a GenerativeService whose spec.selector matches "
               "these pod labels, with its filing, assessment and labeling")
    elif len(ctx.services) > 1:
        names = ", ".join(k.name for k in ctx.services)
        yield (f"{ctx.workload} {labels_path}",
               f"is selected by {len(ctx.services)} GenerativeServices ({names}); its posture "
               "is ambiguous",
               "narrow the selectors so that exactly one GenerativeService selects these pods")


RULE = RuleDefinition(
    Rule.COVERAGE,
    summary="a workload that runs a generative model is declared by a GenerativeService",
    fix="declare a GenerativeService whose selector matches the workload's pod labels",
    enforced_by="admission refuses the workload when no GenerativeService selects its pods, or "
                "several do",
    workload_check=check,
    # Natively only "the namespace has a GenerativeService": the binding's
    # parameterNotFoundAction (Deny) makes the refusal; that it selects the pods is the
    # webhook's.
    cel=CelTwin(({"expression": "true"},), when_no_service="Deny"),
)
