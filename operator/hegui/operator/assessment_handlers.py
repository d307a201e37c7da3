"""kopf handlers that run SafetyAssessments (安全评估, Art.17) with a `spec.target`.

One daemon per assessment that still has a run to do (a target, and no verdict for the current
generation). It reads the banks, resumes from the checkpoint in status or starts afresh, asks the
questions in steps of about assessment_step_seconds (settings.py) and writes the checkpoint after
each step. Once the verdict is written the daemon's filter no longer matches and kopf stops it
(and drops its finalizer); changing the spec (e.g. `spec.target.runId`) starts a new run.
Assessments without a target are recorded by whoever ran them and are left alone, without a
finalizer.

A bank that cannot be read keeps the run Pending, with the `Complete` condition naming the
ConfigMap, key and line, and is read again every assessment_retry_seconds (settings.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from hegui.api.assessment import SafetyAssessment
from hegui.api.common import API_VERSION, GROUP, VERSION
from hegui.api.policy import Sidecar
from hegui.operator import assessment as runner
from hegui.operator import provider_lexicon, workloads
from hegui.operator.cluster import CONFIG_MAP, DEPLOYMENT, POD, STATEFUL_SET, Kind
from hegui.operator.reconciler import Operator, operator_of
from hegui.operator.settings import OperatorSettings
from hegui.rules.index import ObjectKey
from hegui.rules.injection import injecting_policy
from hegui.rules.workloads import labels, owner_kinds

log = logging.getLogger(__name__)

PLURAL = "safetyassessments"
SAFETY_ASSESSMENT = Kind(API_VERSION, PLURAL, "SafetyAssessment")


def needs_run(spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, **_: Any) -> bool:
    """A target, and no verdict yet for the current generation."""
    return bool(spec.get("target")) and (
        status.get("observedGeneration") != meta.get("generation")
        or status.get("verdict", "Pending") == "Pending")


def _read_banks(op: Operator, namespace: str, spec: Any) -> dict[str, dict[str, str] | None]:
    found: dict[str, dict[str, str] | None] = {}
    for name in {bank.config_map_ref.name for bank in spec.question_banks}:
        try:
            config_map = op.cluster.get(CONFIG_MAP, namespace, name)
        except ApiException as error:
            if error.status != 404:
                raise
            found[name] = None
            continue
        found[name] = config_map.get("data") or {}
    return found


def _targets(op: Operator, namespace: str, spec: Any) -> list[str] | None:
    """The service's own pods to ask (`runner.pod_targets`); None where the operator was told
    to use spec.target.url (HEGUI_ASSESSMENT_TARGET_URL=allow: rigs whose pods run nothing)."""
    if op.settings.assessment_target_url:
        return None
    service = op.index.services.get(ObjectKey(namespace, spec.service_ref.name))
    if service is None:
        raise runner.TargetError(f"GenerativeService {namespace}/{spec.service_ref.name} "
                                 "does not exist (spec.serviceRef)")
    effective = op.index.policy_for(namespace)
    if effective is None or not any(p.spec.sidecar for p in effective.policies):
        raise runner.TargetError("no CompliancePolicy injects hegui's sidecar here, and the "
                                 "assessment asks the service through it")
    # Each pod at the port of the sidecar injection put into it (the first injecting policy
    # whose spec.workloads takes it: `injecting_policy`), not the namespace's first.
    groups: dict[str, tuple[Sidecar, list[Mapping[str, Any]]]] = {}
    for pod in op.cluster.objects(POD, namespace):
        found = injecting_policy(effective, owner_kinds({**pod, "kind": "Pod"}), [labels(pod)])
        if found is not None and found[0].spec.sidecar is not None:
            groups.setdefault(found[0].name, (found[0].spec.sidecar, []))[1].append(pod)
    urls: list[str] = []
    for sidecar, pods in groups.values():
        try:
            urls += runner.pod_targets(service, pods, sidecar)
        except runner.TargetError:
            continue  # none of these: the others may have some
    if not urls:
        declared = next(p.spec.sidecar for p in effective.policies if p.spec.sidecar)
        return runner.pod_targets(service, [], declared)  # raises, naming why
    return sorted(urls)


def _judge(op: Operator, namespace: str, plan: runner.Plan, service: str = "") -> runner.Judge:
    """The judge, on the lexicon the service's sidecars run: the provider's that the sidecar
    its pods get names (spec.sidecar.lexicon of the injecting CompliancePolicy, as its
    ConfigMap is rendered: `workloads.service_sidecar`), else the shipped one (issue 19,
    Art.17)."""
    names = provider_lexicon.wanted(_service_sidecar(op, namespace, service))
    base = None
    if names:
        try:
            base = provider_lexicon.keywords(op.cluster, op.settings.own_namespace, names)
        except (ApiException, ValueError) as error:
            # Not judged by a weaker list than the sidecars': the run waits for it.
            raise runner.BankError(
                f"the provider's lexicon (CompliancePolicy spec.sidecar.lexicon) the answers "
                f"are judged by cannot be read: {str(error)[:300]}") from None
    return runner.Judge(plan.keywords, base)


def _service_sidecar(op: Operator, namespace: str, name: str) -> Sidecar | None:
    """The sidecar declaration the service's ConfigMap is rendered from (what the reconciler
    renders: `workloads.observe`), from its workloads as listed now."""
    service = op.index.services.get(ObjectKey(namespace, name))
    if service is None:  # the namespace's reading, as for a service without pods
        return workloads.namespace_sidecar(op.index.policy_for(namespace))
    seen = workloads.observe(
        service, op.index, now=dt.datetime.now(dt.UTC),
        pods=op.cluster.objects(POD, namespace),
        deployments=op.cluster.objects(DEPLOYMENT, namespace),
        statefulsets=op.cluster.objects(STATEFUL_SET, namespace))
    return seen.sidecar


def _keep_transition(status: dict[str, Any], previous: Any) -> None:
    """A condition's lastTransitionTime moves only when its status or reason does."""
    old = {c.get("type"): c for c in (previous or {}).get("conditions") or []}
    for new in status.get("conditions") or []:
        before = old.get(new["type"])
        if before and (before.get("status"), before.get("reason")) == (new["status"],
                                                                       new["reason"]):
            new["lastTransitionTime"] = before.get("lastTransitionTime",
                                                   new["lastTransitionTime"])


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    """Register the assessment daemon (a bank it cannot read is read again after
    assessment_retry_seconds)."""
    kopf.daemon(GROUP, VERSION, PLURAL, when=needs_run, cancellation_timeout=10.0,
                backoff=settings.assessment_retry_seconds, registry=registry)(run_assessment)


async def run_assessment(stopped: kopf.DaemonStopped, body: kopf.Body, name: str,
                         namespace: str | None, memo: Any, **_: Any) -> None:
    """Run the assessment to its verdict in bounded, checkpointed steps (Art.17)."""
    import aiohttp

    op = operator_of(memo)
    retry, ns = op.settings.assessment_retry_seconds, namespace or ""

    def write(status: dict[str, Any]) -> None:
        op.cluster.patch_status(SAFETY_ASSESSMENT, ns, name, status)

    while not stopped:
        generation = body.meta.get("generation")
        assessment = SafetyAssessment.from_dict(dict(body))
        spec = assessment.spec
        if spec.target is None:
            return
        now = dt.datetime.now(dt.UTC)
        try:
            banks = await asyncio.to_thread(_read_banks, op, ns, spec)
            plan = runner.plan(spec, ns, banks)
            urls = await asyncio.to_thread(_targets, op, ns, spec)
            judge = await asyncio.to_thread(_judge, op, ns, plan, spec.service_ref.name)
        except (runner.BankError, runner.TargetError) as bad:
            message = (f"[assessment, Art.17] question bank refused: {bad}"
                       if isinstance(bad, runner.BankError)
                       else f"[assessment, Art.17] nothing to assess: {bad}")
            log.warning("SafetyAssessment %s/%s: %s", ns, name, message)
            # null: a merge patch drops what an earlier run left (its figures do not hold).
            status = {"observedGeneration": generation, "verdict": "Pending",
                      "message": message[:1024], "startedAt": None, "completedAt": None,
                      "expiresAt": None, "results": None, "summary": None, "progress": None,
                      "conditions": [runner.condition(
                          "False", "InvalidQuestionBank" if isinstance(bad, runner.BankError)
                          else "NoTarget", message, generation, now)]}
            _keep_transition(status, body.get("status"))
            await asyncio.to_thread(write, status)
            await stopped.wait(retry)
            continue
        checkpoint = runner.Checkpoint.resume(dict(body.get("status") or {}), plan, generation)
        if checkpoint is None:
            checkpoint = runner.Checkpoint.fresh(spec, plan, now)
            log.info("SafetyAssessment %s/%s: run started, %d questions", ns, name,
                     len(plan.questions))
        else:
            log.info("SafetyAssessment %s/%s: resumed at %d/%d questions", ns, name,
                     checkpoint.asked, len(plan.questions))
        async with aiohttp.ClientSession() as session:
            while not stopped and body.meta.get("generation") == generation:
                await runner.step(session, spec, plan, checkpoint, judge,
                                  seconds=op.settings.assessment_step_seconds, urls=urls)
                now = dt.datetime.now(dt.UTC)
                status = runner.status_of(spec, plan, checkpoint, generation, now)
                _keep_transition(status, body.get("status"))
                await asyncio.to_thread(write, status)
                if checkpoint.done(plan):
                    log.info("SafetyAssessment %s/%s: %s", ns, name, status["message"])
                    op.cluster.event(
                        body, type="Normal" if status["verdict"] == "Pass" else "Warning",
                        reason=f"Assessment{status['verdict']}", message=status["message"][:1000])
                    # The verdict makes needs_run false: kopf stops this daemon. Returning now
                    # would stop it for good, and a later spec change would not run again.
                    await stopped.wait()
                    return
