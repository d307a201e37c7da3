"""The validating webhook's decision: findings from the rule engine turned into an answer.

Enforce-mode findings deny, naming rule, article, field and fix; Warn-mode findings admit with
AdmissionResponse warnings (kubectl prints them); Audit-mode findings admit silently and are
counted and logged. Findings waived by a current ComplianceException are logged as such. Nothing
here writes to the cluster, so a dry-run request is answered exactly like a real one.
"""

from __future__ import annotations

import datetime as dt
import logging

from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError

from hegui.admission import guards, review
from hegui.admission.mutate import false_fronting
from hegui.api.exception import ComplianceException
from hegui.rules import engine
from hegui.rules.index import ComplianceIndex, detection_of
from hegui.rules.injection import FRONTED_LABEL, swapped_own_containers
from hegui.rules.workloads import WORKLOAD_KINDS, labels

log = logging.getLogger(__name__)


def make_validator(index: ComplianceIndex, registry: CollectorRegistry) -> review.Validator:
    findings_total = Counter(
        "hegui_admission_findings", "Rule findings at admission, by rule, article and mode.",
        ["rule", "article", "mode"], registry=registry)

    def validate(request: review.AdmissionRequest) -> review.Decision:
        if request.kind == "GenerativeService" and request.operation != "DELETE":
            return judge_posture(request)
        if request.kind == "NetworkPolicy":
            return guards.check_network_policy(request, index)
        if request.kind == "ComplianceException" and request.operation == "CREATE":
            return check_exception(request, index)
        if request.kind == "Pod" and request.operation != "DELETE" and (
                refused := judge_fronting(request)):
            return refused
        if request.operation == "DELETE" or not (
                request.kind in WORKLOAD_KINDS
                or detection_of(list(index.policies.values())).is_workload_kind(request.kind)):
            return review.Decision(True)
        return _decide(request, engine.evaluate(request.obj, index,
                                                namespace=request.namespace))

    def judge_fronting(request: review.AdmissionRequest) -> review.Decision | None:
        """A refusal for a pod that claims to be fronted without being so, or that swaps
        hegui's containers in place (rule injection, Art.14); None otherwise."""
        if index.policy_for(request.namespace) is None:
            return None
        subject = f"hegui refused Pod {request.namespace}/{request.name}: [injection, Art.14]"
        old = request.old_obj
        if old is not None and (swapped := swapped_own_containers(old, request.obj)):
            where, what = swapped[0]
            return review.Decision(False, f"{subject} spec.{where} {what}. Fix: leave hegui's "
                                   "containers as injected; recreate the pod (its controller "
                                   "does) to take a new sidecar image", code=403)
        if old is not None and FRONTED_LABEL in labels(old):
            return None  # judged when the pod got the label; its containers are unchanged
        if false := false_fronting(request.obj, request.namespace, index,
                                   dt.datetime.now(dt.UTC), created=old is None):
            return review.Decision(False, f"{subject} {false}. Fix: leave hegui's label and "
                                   "containers to its injector: remove them and create the pod "
                                   "again", code=403)
        return None

    def judge_posture(request: review.AdmissionRequest) -> review.Decision:
        """A GenerativeService below its policy's floor is refused when it is applied (rule
        moderation, Art.14): a team cannot declare its way out of moderation."""
        try:
            findings = engine.evaluate_service_object(request.obj, index,
                                                      namespace=request.namespace)
        except ValidationError:
            return review.Decision(True)  # the apiserver's schema already judged its shape
        return _decide(request, findings)

    def _decide(request: review.AdmissionRequest,
                findings: list[engine.Finding]) -> review.Decision:
        if not findings:
            return review.Decision(True)  # the common case: nothing to count, log or say
        for finding in findings:
            findings_total.labels(finding.rule.value, finding.article,
                                  "Exempted" if finding.exempted_by else finding.mode.value).inc()
        verdict = engine.Verdict.of(findings)
        for finding in verdict.exempted:
            log.info("exempted by ComplianceException %s: %s", finding.exempted_by,
                     finding.render())
        if not request.dry_run:
            for finding in verdict.audited:
                log.info("audit: %s", finding.render())
        warnings = [f.render() for f in verdict.warned]
        if not verdict.allowed:
            subject = f"{request.kind} {request.namespace}/{request.name}"
            message = (f"hegui refused {subject} under the Interim Measures for Generative AI "
                       "Services:\n- " + "\n- ".join(f.render() for f in verdict.denied))
            return review.Decision(False, message, code=403, warnings=warnings)
        return review.Decision(True, warnings=warnings)

    return validate


def check_exception(request: review.AdmissionRequest, index: ComplianceIndex) -> review.Decision:
    """A ComplianceException longer than a selecting policy's exceptions.maxDuration is refused
    when it is created (CEL on the exception cannot read the policy); the rule engine also
    ignores one that outlasts a policy tightened later."""
    try:
        exception = ComplianceException.from_dict(request.obj)
    except ValidationError:
        return review.Decision(True)  # the apiserver's schema already judged its shape
    effective = index.policy_for(request.namespace)
    problems = [problem for policy in (effective.policies if effective else ())
                if (problem := exception.within_policy(policy))]
    if not problems:
        return review.Decision(True)
    return review.Decision(False, (
        f"hegui refused ComplianceException {request.namespace}/{request.name}: "
        + "; ".join(problems) + ". Fix: ask for a shorter exemption and renew it, if still "
        "needed, with a new exception"), code=403)
