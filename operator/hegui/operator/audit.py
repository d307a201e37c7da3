"""Background audit: the workloads already running, judged by the webhook's own rules.

Admission only sees what is created or changed. Workloads admitted before hegui was installed,
while the webhook was down, or before a policy became stricter are found here, with the same
`hegui.rules.engine.evaluate` the webhook and `hegui check` run, and reported per namespace as a
PolicyReport (wgpolicyk8s.io/v1alpha2, the format Kyverno and the Policy Reporter UI read), so
existing report tooling shows hegui's findings with no adapter.

Reports stay small (Kyverno's lesson): at most MAX_RESULTS results, failures first; the summary
always counts everything.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from kubernetes.client.exceptions import ApiException

from hegui.api.common import rfc3339
from hegui.api.policy import EnforcementMode
from hegui.operator.cluster import (
    CRON_JOB,
    DAEMON_SET,
    DEPLOYMENT,
    JOB,
    POD,
    POLICY_REPORT,
    STATEFUL_SET,
    Kind,
)
from hegui.rules.engine import Finding, evaluate
from hegui.rules.index import ComplianceIndex

if TYPE_CHECKING:
    import kopf

    from hegui.operator.reconciler import Operator

log = logging.getLogger(__name__)

REPORT_NAME = "hegui-audit"
MAX_RESULTS = 100
#: Kinds audited, as (apiVersion, kind); bare Pods only (owned ones are their controller's).
AUDITED_KINDS = (DEPLOYMENT, STATEFUL_SET, DAEMON_SET, JOB, CRON_JOB, POD)
_SEVERITY = {EnforcementMode.ENFORCE: "high", EnforcementMode.WARN: "medium",
             EnforcementMode.AUDIT: "medium"}
_ORDER = {"fail": 0, "warn": 1, "error": 2, "skip": 3, "pass": 4}


def _result(obj: Mapping[str, Any], finding: Finding | None, now: dt.datetime) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    resource = {"apiVersion": obj.get("apiVersion", ""), "kind": obj.get("kind", ""),
                "name": meta.get("name", ""), "namespace": meta.get("namespace", ""),
                "uid": meta.get("uid", "")}
    base = {"source": "hegui", "resources": [resource],
            "timestamp": {"seconds": int(now.timestamp()), "nanos": 0}}
    if finding is None:
        return {**base, "policy": "hegui", "rule": "all", "result": "pass",
                "message": "every rule hegui applies to this workload holds"}
    if finding.exempted_by:
        outcome = "skip"
    elif finding.mode is EnforcementMode.WARN:
        outcome = "warn"
    else:
        outcome = "fail"  # Enforce, or Audit: a violation either way, only admission differs
    message = finding.render()
    if finding.exempted_by:
        message = f"waived by ComplianceException {finding.exempted_by}: {message}"
    return {**base, "policy": f"hegui/{finding.rule.value}", "rule": finding.rule.value,
            "category": finding.article, "severity": _SEVERITY[finding.mode],
            "result": outcome, "message": message[:1024],
            "properties": {"article": finding.article, "mode": finding.mode.value,
                           "generativeBecause": finding.because[:512]}}


def audit_namespace(namespace: str, objects: Iterable[Mapping[str, Any]],
                    index: ComplianceIndex, now: dt.datetime) -> dict[str, Any] | None:
    """The namespace's PolicyReport, or None when no policy enforces it (hegui stays out)."""
    if index.policy_for(namespace) is None:
        return None
    results = _Results()
    for obj in objects:
        results.add(_object_results(obj, index, namespace, now))
    return results.report(namespace)


def _object_results(obj: Mapping[str, Any], index: ComplianceIndex, namespace: str,
                    now: dt.datetime) -> list[dict[str, Any]]:
    """The report's results for one workload: one per finding, else a pass for a generative
    one (none for a pod its controller owns: its controller is judged)."""
    if obj.get("kind") == "Pod" and (obj.get("metadata") or {}).get("ownerReferences"):
        return []
    findings = evaluate(obj, index, namespace=namespace, now=now)
    if findings:
        return [_result(obj, finding, now) for finding in findings]
    return [_result(obj, None, now)] if _is_generative(obj, index, namespace) else []


def _order(result: Mapping[str, Any]) -> tuple[int, str, str, str]:
    return (_ORDER[result["result"]], result["resources"][0]["kind"],
            result["resources"][0]["name"], result.get("rule", ""))


class _Results:
    """One namespace's results as they come: every one counted, the first MAX_RESULTS (in
    report order) kept, so the audit holds a report's worth per namespace, not every result
    (nor every object) of the cluster. Sorting is stable: the same results as sorting them
    all at the end."""

    def __init__(self) -> None:
        self.summary: Counter[str] = Counter()
        self.kept: list[dict[str, Any]] = []

    def add(self, results: list[dict[str, Any]]) -> None:
        self.summary.update(r["result"] for r in results)
        self.kept += results
        if len(self.kept) > 4 * MAX_RESULTS:
            self.kept = sorted(self.kept, key=_order)[:MAX_RESULTS]

    def report(self, namespace: str) -> dict[str, Any]:
        return {
            "apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReport",
            "metadata": {"name": REPORT_NAME, "namespace": namespace,
                         "labels": {"app.kubernetes.io/managed-by": "hegui"}},
            "summary": {k: self.summary.get(k, 0)
                        for k in ("pass", "fail", "warn", "error", "skip")},
            "results": sorted(self.kept, key=_order)[:MAX_RESULTS],
        }


def _is_generative(obj: Mapping[str, Any], index: ComplianceIndex, namespace: str) -> bool:
    from hegui.rules import workloads

    policy = index.policy_for(namespace)
    detection = policy.detection if policy else workloads.BUILTIN
    return any(workloads.generative_evidence(t, namespace, index.claim_classes, detection)
               for t in workloads.pod_templates(obj))


def same_report(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether rewriting the report would change more than its timestamps."""
    def strip(report: Mapping[str, Any]) -> Any:
        return (report.get("summary"),
                [{k: v for k, v in r.items() if k != "timestamp"}
                 for r in report.get("results") or []])
    return bool(strip(current) == strip(wanted))


#: Objects per listing page: the audit holds one page of objects at a time.
PAGE_SIZE = 500


def _audit_by_namespace(op: Operator, namespaces: set[str],
                        now: dt.datetime) -> dict[str, _Results]:
    """Every audited workload in `namespaces` judged, one cluster-wide listing per kind read
    page by page: at 10,000 pods the audit held every object of the cluster at once, the
    operator's peak memory (issue 20)."""
    found = {ns: _Results() for ns in namespaces if op.index.policy_for(ns) is not None}
    for kind, page in _pages(op):
        for obj in page:
            namespace = (obj.get("metadata") or {}).get("namespace")
            if namespace in found:
                # Items of a list carry no apiVersion/kind; the rules need the kind.
                found[namespace].add(_object_results(
                    {**obj, "apiVersion": kind.api_version, "kind": kind.kind}, op.index,
                    namespace, now))
    return found


def _pages(op: Operator) -> Iterator[tuple[Kind, list[dict[str, Any]]]]:
    """Pages of the audited kinds, then of the serving custom resources (KServe, NIM, LWS,
    KubeRay, ... and those policies add), so the audit judges what a person applied; a CRD
    not installed here is skipped."""
    from hegui.rules.index import detection_of

    for kind in AUDITED_KINDS:
        for page in op.cluster.pages(kind, PAGE_SIZE):
            yield kind, page
    for serving in detection_of(list(op.index.policies.values())).kinds:
        kind = Kind(f"{serving.group}/{serving.versions[0]}", serving.plural, serving.kind)
        try:
            for page in op.cluster.pages(kind, PAGE_SIZE):
                yield kind, page
        except ApiException as error:
            if error.status in (403, 404):
                continue  # not installed, or not granted to the operator
            raise


def write_report(op: Operator, report: dict[str, Any]) -> None:
    """Create or replace the namespace's PolicyReport when more than its timestamps changed."""
    namespace, name = report["metadata"]["namespace"], report["metadata"]["name"]
    try:
        try:
            current = op.cluster.get(POLICY_REPORT, namespace, name)
        except ApiException as error:
            if error.status != 404:
                raise
            op.cluster.create(POLICY_REPORT, namespace, report)
            return
        if not same_report(current, report):
            report["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            op.cluster.replace(POLICY_REPORT, namespace, name, report)
    except ApiException as error:
        if error.status != 404:
            raise
        if not op.reports_missing:
            log.warning("PolicyReport (wgpolicyk8s.io/v1alpha2) is not installed: audit "
                        "findings go to metrics and logs only; install "
                        "crds/external/wgpolicyk8s.io_policyreports.yaml to get reports")
            op.reports_missing = True


def audit_policy(op: Operator, body: kopf.Body, patch: kopf.Patch, name: str) -> None:
    """Audit the workloads in the namespaces the policy enforces (Art.17 and the rest, as at
    admission) and report what the policy reaches in its status."""
    op.index.upsert(dict(body))
    policy = op.index.policies.get(name)
    if policy is None:
        return
    namespaces = {ns for ns, labels in list(op.index.namespace_labels.items())
                  if policy.spec.selects_namespace(ns, labels)}
    now = dt.datetime.now(dt.UTC)
    failing = 0
    for namespace, results in sorted(_audit_by_namespace(op, namespaces, now).items()):
        report = results.report(namespace)
        op.metrics.audit(namespace, report["summary"])
        failing += report["summary"]["fail"]
        write_report(op, report)
    message = (f"enforces {len(namespaces)} namespace(s); the audit finds {failing} failing "
               f"result(s) in running workloads")
    previous = {c.get("type"): c for c in (body.get("status") or {}).get("conditions") or []}
    old = previous.get("Ready") or {}
    condition = {"type": "Ready", "status": "True", "reason": "Audited", "message": message,
                 "observedGeneration": body.meta.get("generation"), "article": "Art.17",
                 "lastTransitionTime": old.get("lastTransitionTime") if old.get("status") == "True"
                 else rfc3339(now, whole_seconds=True)}
    status = {"observedGeneration": body.meta.get("generation"), "conditions": [condition],
              "enforcedNamespaces": len(namespaces), "message": message}
    current = dict(body.get("status") or {})
    if any(current.get(k) != v for k, v in status.items()):
        for field, value in status.items():
            patch.status[field] = value
