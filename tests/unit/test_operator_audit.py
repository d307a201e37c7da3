"""The background audit: running workloads judged by the webhook's rules, as a PolicyReport."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hegui.operator.audit import MAX_RESULTS, audit_namespace, same_report
from hegui.rules.index import ComplianceIndex

NOW = dt.datetime(2026, 11, 29, tzinfo=dt.UTC)


def _index(mode: str = "Enforce", services: int = 1) -> ComplianceIndex:
    objects: list[dict[str, Any]] = [
        {"apiVersion": "hegui.io/v1alpha1", "kind": "CompliancePolicy",
         "metadata": {"name": "p"}, "spec": {"namespaces": ["ai"], "defaultMode": mode}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ai"}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}}]
    objects += [{"apiVersion": "hegui.io/v1alpha1", "kind": "GenerativeService",
                 "metadata": {"name": "chat", "namespace": "ai"},
                 "spec": {"selector": {"matchLabels": {"app": "chat"}},
                          "filing": {"publicOpinion": False,
                                     "algorithm": {"number": "网信算备110108823483901230011号"}},
                          "labeling": {"modalities": ["text"],
                                       "implicit": {"contentProducer": "Example AI Co."}}}}
                ][:services]
    return ComplianceIndex.from_objects(objects)


def _deployment(name: str, app: str, gpu: bool = True) -> dict[str, Any]:
    resources = {"limits": {"nvidia.com/gpu": "1"}} if gpu else {}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "ai", "uid": f"uid-{name}"},
            "spec": {"template": {"metadata": {"labels": {"app": app}}, "spec": {
                "containers": [{"name": "m", "image": "m:1", "resources": resources}]}}}}


def test_uncovered_gpu_workloads_fail_with_rule_and_article_and_covered_ones_pass() -> None:
    objects = [_deployment("chat", "chat"), _deployment("rogue", "rogue"),
               _deployment("web", "web", gpu=False)]
    report = audit_namespace("ai", objects, _index(), NOW)
    assert report is not None
    assert report["apiVersion"] == "wgpolicyk8s.io/v1alpha2"
    assert report["summary"] == {"pass": 1, "fail": 1, "warn": 0, "error": 0, "skip": 0}
    failed, passed = report["results"]
    assert failed["result"] == "fail" and failed["rule"] == "coverage"
    assert failed["category"] == "Art.17" and "[coverage, Art.17]" in failed["message"]
    assert failed["resources"][0]["name"] == "rogue"
    assert passed["result"] == "pass" and passed["resources"][0]["name"] == "chat"


def test_warn_mode_reports_warn_and_an_unenforced_namespace_gets_no_report() -> None:
    report = audit_namespace("ai", [_deployment("rogue", "rogue")], _index("Warn"), NOW)
    assert report is not None and report["results"][0]["result"] == "warn"
    assert audit_namespace("web", [_deployment("rogue", "rogue")], _index(), NOW) is None


def test_owned_pods_are_left_to_their_controllers() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "rogue-x", "namespace": "ai",
                        "ownerReferences": [{"kind": "ReplicaSet", "name": "rogue"}]},
           "spec": {"containers": [{"name": "m", "image": "m:1",
                                    "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}
    report = audit_namespace("ai", [pod], _index(), NOW)
    assert report is not None and report["results"] == []


def test_reports_are_capped_but_the_summary_counts_everything() -> None:
    objects = [_deployment(f"rogue-{i}", f"rogue-{i}") for i in range(MAX_RESULTS + 20)]
    report = audit_namespace("ai", objects, _index(), NOW)
    assert report is not None
    assert len(report["results"]) == MAX_RESULTS
    assert report["summary"]["fail"] == MAX_RESULTS + 20


def test_a_namespace_of_many_workloads_keeps_the_same_first_results_as_sorting_them_all(
        ) -> None:
    """The audit keeps a report's worth of results as they come (issue 20: memory), and the
    report is still the most severe first, by kind and name (Art.17 reporting)."""
    objects = [_deployment(f"rogue-{i:04d}", f"rogue-{i}") for i in range(999, -1, -1)]
    objects += [_deployment(f"chat-{i:04d}", "chat") for i in range(500)]
    report = audit_namespace("ai", objects, _index(), NOW)
    assert report is not None and report["summary"]["fail"] == 1000
    names = [r["resources"][0]["name"] for r in report["results"]]
    assert names == [f"rogue-{i:04d}" for i in range(MAX_RESULTS)]


def test_an_unchanged_audit_is_not_rewritten_for_its_timestamps() -> None:
    objects = [_deployment("rogue", "rogue")]
    first = audit_namespace("ai", objects, _index(), NOW)
    later = audit_namespace("ai", objects, _index(), NOW + dt.timedelta(minutes=5))
    assert first is not None and later is not None and same_report(first, later)
    fixed = audit_namespace("ai", [], _index(), NOW)
    assert fixed is not None and not same_report(first, fixed)
