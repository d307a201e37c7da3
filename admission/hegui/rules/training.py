"""Rule training (Art.7): training data and base models have lawful sources (具有合法来源的数据
和基础模型), licences where they are licensed, and a basis for personal information. Opt-in
(`Rule.opt_in`): a CompliancePolicy that names it requires spec.training of every service. The CRD
requires each data source's personal-information basis and a licence for Licensed sources; a
base model needs one of the two things that show its source lawful: the licence it is used
under, or its own generative AI service filing."""

from __future__ import annotations

from collections.abc import Iterator

from hegui.api.articles import Rule
from hegui.rules.base import (
    CelTwin,
    RequiredSection,
    RuleDefinition,
    ServiceContext,
    Violation,
    cel_prefix,
    service_location,
)

FIX = ("declare spec.training: dataSources with their kind, licence and personalInformation "
       "basis, and baseModels with a licence or serviceFilingNumber")


SECTION = RequiredSection(Rule.TRAINING, "training",
                          "no training data sources or base models are declared", FIX)


def check(ctx: ServiceContext) -> Iterator[Violation]:
    key, training = ctx.key, ctx.service.spec.training
    if training is None:
        yield from SECTION.absent(ctx, training)
        return
    unsourced = [m.name for m in training.base_models
                 if m.licence is None and m.service_filing_number is None]
    if unsourced:
        yield (service_location(key, "spec.training.baseModels"),
               f"base model {', '.join(unsourced)} has neither a licence nor a service filing "
               "number: its lawful source (合法来源) is not shown",
               "set licence (the licence the model is used under) or serviceFilingNumber (a "
               "filed third-party model) on every base model")


RULE = RuleDefinition(
    Rule.TRAINING,
    summary="training data and base models have lawful sources and licences",
    fix=FIX,
    enforced_by="opt-in: where a CompliancePolicy names training in spec.rules, admission "
                "refuses, warns about or audits (its mode) the workloads of a service without "
                "spec.training (also a ValidatingAdmissionPolicy); a base model with neither "
                "licence nor filing is a finding (also CEL), reported in status where no policy "
                "names the rule; the CRD requires a licence for Licensed sources; the dossier "
                "reports it",
    service_check=check,
    cel=CelTwin((
        SECTION.cel(),
        {"expression": "!variables.selected || !has(params.spec.training) || "
                       "!has(params.spec.training.baseModels) || "
                       "params.spec.training.baseModels.all(m, has(m.licence) || "
                       "has(m.serviceFilingNumber))",
         "messageExpression": cel_prefix(Rule.TRAINING, "spec.training.baseModels")
                              + " + 'a base model has neither a licence nor a service filing "
                              "number. Fix: set licence or serviceFilingNumber on every base "
                              "model'"},
    )),
)
