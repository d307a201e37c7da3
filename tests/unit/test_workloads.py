"""Which workloads are generative model workloads (issue: validating admission, item 2)."""

from __future__ import annotations

from typing import Any

import pytest

from hegui.rules.workloads import (
    device_classes_of,
    generative_evidence,
    pod_templates,
)


def _pod_spec(**extra: Any) -> dict[str, Any]:
    return {"containers": [{"name": "model", "image": "m:1"}], **extra}


def _with_limits(limits: dict[str, str], group: str = "containers") -> dict[str, Any]:
    spec = _pod_spec()
    spec[group] = [{"name": "c", "image": "m:1", "resources": {"limits": limits}}]
    if group == "initContainers":
        spec["containers"] = [{"name": "model", "image": "m:1"}]
    return spec


def _deployment(spec: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"template": {"metadata": {"labels": labels or {}}, "spec": spec}}}


GPU_CASES = [
    ("whole GPU", _with_limits({"nvidia.com/gpu": "1"}), "limits on nvidia.com/gpu"),
    ("MIG slice", _with_limits({"nvidia.com/mig-1g.10gb": "1"}),
     "limits on nvidia.com/mig-1g.10gb"),
    ("shared GPU", _with_limits({"nvidia.com/gpu.shared": "1"}),
     "limits on nvidia.com/gpu.shared"),
    ("GPU in an init container", _with_limits({"nvidia.com/gpu": "1"}, "initContainers"),
     "limits on nvidia.com/gpu"),
    ("runtime class", _pod_spec(runtimeClassName="nvidia"), "runtimeClassName nvidia"),
    ("DRA claim template", _pod_spec(resourceClaims=[
        {"name": "gpu", "resourceClaimTemplateName": "one-gpu"}]),
     "DRA ResourceClaimTemplate one-gpu (gpu.nvidia.com)"),
    ("DRA claim, unresolvable", _pod_spec(resourceClaims=[
        {"name": "gpu", "resourceClaimName": "mystery"}]),
     "DRA ResourceClaim mystery (unresolved)"),
]

NOT_GPU_CASES = [
    ("CPU only", _with_limits({"cpu": "2", "memory": "1Gi"})),
    ("another vendor's resource", _with_limits({"amd.com/gpu": "1"})),
    ("another runtime class", _pod_spec(runtimeClassName="gvisor")),
    ("DRA claim on a NIC", _pod_spec(resourceClaims=[
        {"name": "nic", "resourceClaimTemplateName": "rdma-nic"}])),
    ("no spec at all", {}),
]


def _resolver(namespace: str, kind: str, name: str) -> frozenset[str] | None:
    known = {"one-gpu": frozenset({"gpu.nvidia.com"}), "rdma-nic": frozenset({"rdma.example"})}
    return known.get(name)


@pytest.mark.parametrize(("case", "spec", "reason"), GPU_CASES, ids=[c[0] for c in GPU_CASES])
def test_generative_workloads_are_detected(case: str, spec: dict[str, Any], reason: str) -> None:
    [template] = pod_templates(_deployment(spec))
    evidence = generative_evidence(template, "ns", _resolver)
    assert reason in [e.reason for e in evidence]
    assert all(e.field.startswith("spec.template.spec") for e in evidence)


@pytest.mark.parametrize(("case", "spec"), NOT_GPU_CASES, ids=[c[0] for c in NOT_GPU_CASES])
def test_other_workloads_are_not(case: str, spec: dict[str, Any]) -> None:
    [template] = pod_templates(_deployment(spec))
    assert generative_evidence(template, "ns", _resolver) == []


def test_opt_in_label_marks_a_cpu_model() -> None:
    [template] = pod_templates(_deployment(_pod_spec(), {"hegui.io/generative": "true"}))
    assert [e.reason for e in generative_evidence(template)] == ["label hegui.io/generative=true"]


@pytest.mark.parametrize(("kind", "obj", "path"), [
    ("Pod", {"kind": "Pod", "metadata": {"labels": {"a": "b"}}, "spec": _pod_spec()}, "spec"),
    ("StatefulSet", {"kind": "StatefulSet", "spec": {"template": {"spec": _pod_spec()}}},
     "spec.template.spec"),
    ("DaemonSet", {"kind": "DaemonSet", "spec": {"template": {"spec": _pod_spec()}}},
     "spec.template.spec"),
    ("Job", {"kind": "Job", "spec": {"template": {"spec": _pod_spec()}}}, "spec.template.spec"),
    ("ReplicaSet", {"kind": "ReplicaSet", "spec": {"template": {"spec": _pod_spec()}}},
     "spec.template.spec"),
    ("CronJob", {"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {
        "spec": _pod_spec()}}}}}, "spec.jobTemplate.spec.template.spec"),
])
def test_every_workload_kind_yields_its_pod(kind: str, obj: dict[str, Any], path: str) -> None:
    [template] = pod_templates(obj)
    assert template.spec_path == path
    assert template.spec["containers"][0]["name"] == "model"


def test_inference_service_components_are_pods() -> None:
    isvc = {"kind": "InferenceService", "metadata": {"labels": {"x": "y"}}, "spec": {
        "predictor": {"model": {"modelFormat": {"name": "huggingface"},
                                "resources": {"limits": {"nvidia.com/gpu": "1"}}}},
        "transformer": {"containers": [{"name": "t", "image": "t:1"}]},
    }}
    predictor, transformer = pod_templates(isvc)
    assert predictor.spec_path == "spec.predictor"
    assert [e.reason for e in generative_evidence(predictor)] == ["limits on nvidia.com/gpu"]
    assert generative_evidence(transformer) == []


@pytest.mark.parametrize("junk", [
    {"kind": "Deployment", "spec": "not a mapping"},
    {"kind": "Deployment", "spec": {"template": {"spec": {"containers": "nope"}}}},
    {"kind": "Pod", "spec": {"containers": [None, 3, {"resources": []}]}},
    {"kind": "ConfigMap", "data": {}},
    {},
])
def test_malformed_workloads_never_crash(junk: dict[str, Any]) -> None:
    for template in pod_templates(junk):
        assert generative_evidence(template) == []


def test_device_classes_of_claims_and_templates() -> None:
    claim = {"kind": "ResourceClaim", "spec": {"devices": {"requests": [
        {"name": "g", "exactly": {"deviceClassName": "gpu.nvidia.com"}},
        {"name": "m", "firstAvailable": [{"deviceClassName": "mig.nvidia.com"}]}]}}}
    template = {"kind": "ResourceClaimTemplate", "spec": {"spec": {"devices": {"requests": [
        {"name": "g", "deviceClassName": "gpu.nvidia.com"}]}}}}
    assert device_classes_of(claim) == {"gpu.nvidia.com", "mig.nvidia.com"}
    assert device_classes_of(template) == {"gpu.nvidia.com"}


def test_extended_detection_adds_resources_prefixes_runtime_classes_and_labels() -> None:
    from hegui.rules.workloads import BUILTIN

    detection = BUILTIN.extended(resources=["amd.com/gpu", "huawei.com/Ascend-"],
                                 runtime_classes=["ascend"], labels=["example.com/llm"])
    for spec, labels, reason in [
        (_with_limits({"amd.com/gpu": "1"}), {}, "limits on amd.com/gpu"),
        (_with_limits({"huawei.com/Ascend-910b": "1"}), {}, "limits on huawei.com/Ascend-910b"),
        (_pod_spec(runtimeClassName="ascend"), {}, "runtimeClassName ascend"),
        (_pod_spec(), {"example.com/llm": "true"}, "label example.com/llm=true"),
        (_with_limits({"nvidia.com/gpu": "1"}), {}, "limits on nvidia.com/gpu"),
    ]:
        [template] = pod_templates(_deployment(spec, labels))
        assert reason in [e.reason for e in generative_evidence(template, detection=detection)]
        if "nvidia" not in reason:
            assert generative_evidence(template) == []
