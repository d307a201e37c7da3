"""Rule filing (Art.17): the algorithm filing (算法备案) of a service with public-opinion
attributes, and some filing or registration for every other."""

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
    key, filing = ctx.key, ctx.service.spec.filing
    if filing.public_opinion and filing.algorithm is None:
        yield (service_location(key, "spec.filing.algorithm"),
               "no algorithm filing number (算法备案) is declared for a service with "
               "public-opinion attributes (filing.publicOpinion: true)",
               "set spec.filing.algorithm.number to the number the CAC issued, e.g. "
               "网信算备110108823483901230011号")
    elif filing.algorithm is None and filing.service is None:
        yield (service_location(key, "spec.filing"),
               "neither an algorithm filing (算法备案) nor a generative-service filing or "
               "registration (备案/登记) is declared",
               "set spec.filing.service.number (or spec.filing.algorithm.number) to the "
               "number the regulator issued")


RULE = RuleDefinition(
    Rule.FILING,
    summary="the algorithm filing (算法备案) is declared where the service is in Art.17 scope",
    fix="set spec.filing.algorithm.number (算法备案号) or the service filing/registration",
    enforced_by="admission refuses the workloads the service selects when a public-opinion "
                "service has no algorithm filing (算法备案) or any service has no filing at all "
                "(also a ValidatingAdmissionPolicy, which holds while the webhook is down); "
                "condition Filed",
    service_check=check,
    # The numbers' formats are left to the CRD and the webhook.
    cel=CelTwin(({
        "expression": "!variables.selected || (params.spec.filing.publicOpinion ? "
                      "has(params.spec.filing.algorithm) : (has(params.spec.filing.algorithm) "
                      "|| has(params.spec.filing.service)))",
        "messageExpression": cel_prefix(Rule.FILING, "spec.filing") + " + 'no filing (算法备案 "
                             "for public-opinion services) is declared. Fix: set "
                             "spec.filing.algorithm.number or spec.filing.service.number'",
    },)),
    condition=ServiceConditionType.FILED,
)
