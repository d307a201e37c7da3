"""Rule annotation (Art.8): where data was annotated, there are annotation rules (标注规则),
annotators are trained (标注人员培训) and annotation quality is sampled (抽样核验). Declared in
spec.training.annotation, absent when no data was annotated, so nothing requires it; what is
declared is checked: annotators trained and a quality sampling on record. Opt-in (`Rule.opt_in`):
in a policy's mode where one names it, else reported in status (Audit)."""

from __future__ import annotations

from collections.abc import Iterator

from hegui.api.articles import Rule
from hegui.rules.base import (
    CelTwin,
    RuleDefinition,
    ServiceContext,
    Violation,
    cel_prefix,
    service_location,
)

_HAS = "has(params.spec.training) && has(params.spec.training.annotation)"


def check(ctx: ServiceContext) -> Iterator[Violation]:
    training = ctx.service.spec.training
    annotation = training.annotation if training is not None else None
    if annotation is None:
        return
    if not annotation.annotators_trained:
        yield (service_location(ctx.key, "spec.training.annotation.annotatorsTrained"),
               "annotators are not trained (标注人员培训)",
               "train the annotators in the annotation rules, then set annotatorsTrained to "
               "true")
    if annotation.latest_sampling is None:
        yield (service_location(ctx.key, "spec.training.annotation.latestSampling"),
               "no annotation quality sampling (抽样核验) is on record",
               "sample the annotations, check their accuracy and record it in latestSampling "
               "(sampledOn, sampleSize, accuracy)")


RULE = RuleDefinition(
    Rule.ANNOTATION,
    summary="annotation rules exist, annotators are trained and annotation quality is sampled",
    fix="where data was annotated, declare spec.training.annotation: rulesUrl, "
        "annotatorsTrained: true and the latest quality sampling",
    enforced_by="opt-in: where a CompliancePolicy names annotation in spec.rules, admission "
                "refuses, warns about or audits (its mode) the workloads of a service whose "
                "declared annotation has untrained annotators or no quality sampling (also a "
                "ValidatingAdmissionPolicy); reported in status where no policy names it; the "
                "dossier reports it",
    service_check=check,
    cel=CelTwin((
        {"expression": f"!variables.selected || !({_HAS}) || "
                       "params.spec.training.annotation.annotatorsTrained",
         "messageExpression": cel_prefix(Rule.ANNOTATION,
                                         "spec.training.annotation.annotatorsTrained")
                              + " + 'annotators are not trained (标注人员培训). Fix: train "
                              "them, then set annotatorsTrained to true'"},
        {"expression": f"!variables.selected || !({_HAS}) || "
                       "has(params.spec.training.annotation.latestSampling)",
         "messageExpression": cel_prefix(Rule.ANNOTATION,
                                         "spec.training.annotation.latestSampling")
                              + " + 'no annotation quality sampling (抽样核验) is on record. "
                              "Fix: record it in latestSampling'"},
    )),
)
