"""Saying what is not generative: a CompliancePolicy's workload scope (spec.workloads), and the
"why" every finding carries (rule coverage, Art.17)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hegui.admission.mutate import sidecar_duty
from hegui.api.policy import CompliancePolicy
from hegui.rules.engine import Verdict, evaluate
from hegui.rules.index import ComplianceIndex

NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)


def _policy(**workloads: Any) -> dict[str, Any]:
    return {"apiVersion": "hegui.io/v1alpha1", "kind": "CompliancePolicy",
            "metadata": {"name": "platform"},
            "spec": {"namespaces": ["ai"], "defaultMode": "Enforce", "workloads": workloads,
                     "sidecar": {"image": "hegui/sidecar:1"}}}


def _job(labels: dict[str, str] | None = None, kind: str = "Job") -> dict[str, Any]:
    template = {"metadata": {"labels": labels or {}}, "spec": {"containers": [
        {"name": "train", "image": "trainer:1", "resources": {"limits": {"nvidia.com/gpu": "8"}}}]}}
    spec = ({"template": template} if kind != "CronJob"
            else {"jobTemplate": {"spec": {"template": template}}})
    return {"apiVersion": "batch/v1", "kind": kind, "metadata": {"name": "lora", "namespace": "ai"},
            "spec": spec}


def _pod_of(job: dict[str, Any]) -> dict[str, Any]:
    template = job["spec"]["template"]
    owner = {"kind": "Job", "name": "lora", "apiVersion": "batch/v1", "uid": "u"}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "lora-x", "namespace": "ai", "ownerReferences": [owner],
                         "labels": template["metadata"]["labels"]},
            "spec": template["spec"]}


def _verdict(policy: dict[str, Any], workload: dict[str, Any]) -> Verdict:
    return Verdict.of(evaluate(workload, ComplianceIndex.from_objects([policy]), now=NOW))


def test_a_training_job_excluded_by_kind_is_reported_not_refused() -> None:
    policy = _policy(exclude=[{"kinds": ["Job", "CronJob"]}])
    verdict = _verdict(policy, _job())
    assert verdict.allowed
    [skipped] = verdict.exempted
    assert skipped.exempted_by == "CompliancePolicy platform spec.workloads.exclude[0]"
    assert "nvidia.com/gpu" in skipped.because
    # Its pods are out too (a pod counts as its owner's kind), so the injector leaves them alone.
    assert _verdict(policy, _pod_of(_job())).allowed
    index = ComplianceIndex.from_objects([policy, {
        "apiVersion": "hegui.io/v1alpha1", "kind": "GenerativeService",
        "metadata": {"name": "chat", "namespace": "ai"},
        "spec": {"selector": {"matchLabels": {}}, "filing": {"service": {"number": "x"}}}}])
    assert sidecar_duty(_pod_of(_job()), "ai", index, NOW) is None
    # A Deployment with the same GPU is still refused.
    deployment = {**_job(), "kind": "Deployment", "apiVersion": "apps/v1"}
    assert not _verdict(policy, deployment).allowed


def test_exclusion_by_pod_labels_reaches_the_workload_and_its_pods() -> None:
    policy = _policy(exclude=[{"selector": {"matchLabels": {"platform.example/purpose": "smoke"}}}])
    smoke = _job({"platform.example/purpose": "smoke"})
    assert _verdict(policy, smoke).allowed and _verdict(policy, _pod_of(smoke)).allowed
    assert not _verdict(policy, _job({"platform.example/purpose": "serving"})).allowed


def test_kinds_and_selector_together_must_both_hold() -> None:
    """A label alone, which the workload's author sets, does not take a Deployment out when the
    platform ties it to Jobs."""
    policy = _policy(exclude=[{"kinds": ["Job"],
                               "selector": {"matchLabels": {"purpose": "training"}}}])
    assert _verdict(policy, _job({"purpose": "training"})).allowed
    served = {**_job({"purpose": "training"}), "kind": "Deployment", "apiVersion": "apps/v1"}
    assert not _verdict(policy, served).allowed


def test_include_narrows_to_what_it_names() -> None:
    policy = _policy(include=[{"kinds": ["Deployment", "InferenceService"]}])
    [finding] = _verdict(policy, _job()).exempted
    assert finding.exempted_by == ("CompliancePolicy platform spec.workloads.include "
                                   "(no filter matches)")


def test_a_filter_on_nothing_leaves_nothing_out() -> None:
    """`exclude: [{}]` (a typo, or a template rendered empty) must not switch hegui off."""
    deployment = {**_job(), "kind": "Deployment", "apiVersion": "apps/v1"}
    for policy in (_policy(exclude=[{}]), _policy(include=[{}]), _policy(include=[{}, {}])):
        CompliancePolicy.from_dict(policy)
        assert not _verdict(policy, deployment).allowed


def test_every_finding_says_why_the_workload_counts_as_generative() -> None:
    verdict = _verdict(_policy(), {**_job(), "kind": "Deployment", "apiVersion": "apps/v1"})
    [finding] = verdict.denied
    assert finding.because == ("limits on nvidia.com/gpu "
                               "(spec.template.spec.containers[0].resources.limits, NVIDIA)")
    assert finding.render().endswith(f"(generative because: {finding.because})")


def test_a_policy_declares_a_serving_kind_that_check_and_the_engine_judge() -> None:
    from hegui.admission.check import Document, judge

    policy = _policy()
    policy["spec"]["detection"] = {"workloadKinds": [{
        "apiVersion": "example.com/v1", "kind": "ModelServer", "plural": "modelservers",
        "pods": [{"path": "spec.replicas[*].pod"}, {"path": "spec.engine", "shape": "Container"}]}]}
    server = {"apiVersion": "example.com/v1", "kind": "ModelServer",
              "metadata": {"name": "qwen", "namespace": "ai"},
              "spec": {"engine": {"image": "vllm", "resources": {"limits": {"amd.com/gpu": 1}}}}}
    [judged] = judge([Document(policy, "p.yaml", 1), Document(server, "s.yaml", 1)], "ai").judged
    [finding] = judged.findings
    assert finding.because == (
        "limits on amd.com/gpu (spec.engine.containers[0].resources.limits, AMD)")
    # Without the policy's declaration the kind is unknown: not judged at all.
    assert judge([Document(server, "s.yaml", 1)], "ai").judged == []
