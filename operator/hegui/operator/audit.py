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
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from hegui.api.policy import EnforcementMode
from hegui.rules.engine import Finding, evaluate
from hegui.rules.index import ComplianceIndex

REPORT_NAME = "hegui-audit"
MAX_RESULTS = 100
#: Kinds audited, as (apiVersion, kind); bare Pods only (owned ones are their controller's).
AUDITED_KINDS = (("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"),
                 ("apps/v1", "DaemonSet"), ("batch/v1", "Job"), ("batch/v1", "CronJob"),
                 ("v1", "Pod"))
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
    results = []
    for obj in objects:
        if obj.get("kind") == "Pod" and (obj.get("metadata") or {}).get("ownerReferences"):
            continue
        findings = evaluate(obj, index, namespace=namespace, now=now)
        if findings:
            results += [_result(obj, finding, now) for finding in findings]
        elif _is_generative(obj, index, namespace):
            results.append(_result(obj, None, now))
    summary = Counter(r["result"] for r in results)
    results.sort(key=lambda r: (_ORDER[r["result"]], r["resources"][0]["kind"],
                                r["resources"][0]["name"], r.get("rule", "")))
    return {
        "apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReport",
        "metadata": {"name": REPORT_NAME, "namespace": namespace,
                     "labels": {"app.kubernetes.io/managed-by": "hegui"}},
        "summary": {k: summary.get(k, 0) for k in ("pass", "fail", "warn", "error", "skip")},
        "results": results[:MAX_RESULTS],
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
