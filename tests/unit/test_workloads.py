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
    ("an FPGA", _with_limits({"xilinx.com/fpga-xilinx_u250": "1"})),
    ("an SR-IOV NIC", _with_limits({"openshift.io/mlnx_sriov_rdma": "1"})),
    ("NVIDIA_VISIBLE_DEVICES=void", _pod_spec(containers=[
        {"name": "c", "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"}]}])),
    ("a GPU node selector without the toleration", _pod_spec(
        nodeSelector={"nvidia.com/gpu.present": "true"})),
    ("privileged on a CPU node", _pod_spec(containers=[
        {"name": "c", "securityContext": {"privileged": True}}])),
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

    detection = BUILTIN.extended(resources=["example.com/npu", "example.org/tpu-"],
                                 runtime_classes=["gpu-kata"], labels=["example.com/llm"])
    for spec, labels, reason in [
        (_with_limits({"example.com/npu": "1"}), {}, "limits on example.com/npu"),
        (_with_limits({"example.org/tpu-v5": "1"}), {}, "limits on example.org/tpu-v5"),
        (_pod_spec(runtimeClassName="gpu-kata"), {}, "runtimeClassName gpu-kata"),
        (_pod_spec(), {"example.com/llm": "true"}, "label example.com/llm=true"),
        (_with_limits({"nvidia.com/gpu": "1"}), {}, "limits on nvidia.com/gpu"),
    ]:
        [template] = pod_templates(_deployment(spec, labels))
        found = generative_evidence(template, detection=detection)
        assert reason in [e.reason for e in found]
        if "nvidia" not in reason:
            assert generative_evidence(template) == []
            assert found[0].signal == "policy"


# --- the ecosystem: every accelerator's names, from the projects that publish them ----------

ECOSYSTEM = [
    # (resource, signal set) as the device plugins and HAMi/Volcano publish them
    ("nvidia.com/gpu", "NVIDIA"), ("nvidia.com/gpu.shared", "NVIDIA"),
    ("nvidia.com/mig-3g.40gb", "NVIDIA"), ("nvidia.com/gpumem", "NVIDIA"),
    ("nvidia.com/gpucores", "NVIDIA"), ("nvidia.com/gpumem-percentage", "NVIDIA"),
    ("amd.com/gpu", "AMD"), ("habana.ai/gaudi", "Intel"), ("gpu.intel.com/i915", "Intel"),
    ("huawei.com/Ascend910", "Huawei Ascend"), ("huawei.com/Ascend910B", "Huawei Ascend"),
    ("huawei.com/Ascend310P", "Huawei Ascend"), ("huawei.com/Ascend910-4c", "Huawei Ascend"),
    ("huawei.com/Ascend910B-memory", "Huawei Ascend"), ("cambricon.com/mlu", "Cambricon MLU"),
    ("cambricon.com/vmlu", "Cambricon MLU"), ("hygon.com/dcunum", "Hygon DCU"),
    ("kunlunxin.com/xpu", "Kunlunxin XPU"), ("metax-tech.com/gpu", "MetaX"),
    ("metax-tech.com/sgpu", "MetaX"), ("mthreads.com/vgpu", "Moore Threads"),
    ("iluvatar.ai/vgpu", "Iluvatar"), ("enflame.com/vgcu", "Enflame"),
    ("volcano.sh/vgpu-number", "Volcano vGPU"), ("volcano.sh/vgpu-memory", "Volcano vGPU"),
    ("tencent.com/vcuda-core", "GPU sharing"), ("aliyun.com/gpu-mem", "GPU sharing"),
    ("google.com/tpu", "Cloud accelerators"), ("aws.amazon.com/neuroncore", "Cloud accelerators"),
]


@pytest.mark.parametrize(("resource", "signal"), ECOSYSTEM, ids=[r for r, _ in ECOSYSTEM])
def test_every_accelerator_is_known_without_a_policy(resource: str, signal: str) -> None:
    [template] = pod_templates(_deployment(_with_limits({resource: "1"})))
    [evidence] = generative_evidence(template)
    assert evidence.signal == signal
    assert str(evidence) == (f"limits on {resource} "
                             f"(spec.template.spec.containers[0].resources.limits, {signal})")


def test_every_signal_set_names_its_source() -> None:
    from hegui.rules.workloads import SIGNAL_SETS

    assert all(s.source for s in SIGNAL_SETS)
    assert len({s.name for s in SIGNAL_SETS}) == len(SIGNAL_SETS)


@pytest.mark.parametrize(("spec", "reason"), [
    (_pod_spec(containers=[{"name": "c", "env": [
        {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]}]), "env NVIDIA_VISIBLE_DEVICES=all"),
    (_pod_spec(containers=[{"name": "c", "env": [
        {"name": "ASCEND_VISIBLE_DEVICES", "value": "0,1"}]}]), "env ASCEND_VISIBLE_DEVICES=0,1"),
    (_pod_spec(runtimeClassName="nvidia-cdi"), "runtimeClassName nvidia-cdi"),
    (_pod_spec(runtimeClassName="kata-qemu-nvidia-gpu"), "runtimeClassName kata-qemu-nvidia-gpu"),
    (_pod_spec(containers=[{"name": "c", "securityContext": {"privileged": True}}],
               nodeSelector={"nvidia.com/gpu.present": "true"}),
     "privileged container (sees every device) on an accelerator node "
     "(nodeSelector nvidia.com/gpu.present=true)"),
    (_pod_spec(containers=[{"name": "c", "securityContext": {"privileged": True}}],
               tolerations=[{"key": "huawei.com/Ascend910", "operator": "Exists"}]),
     "privileged container (sees every device) on an accelerator node "
     "(toleration huawei.com/Ascend910)"),
    (_pod_spec(nodeSelector={"cloud.google.com/gke-accelerator": "nvidia-l4"},
               tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}]),
     "pinned to accelerator nodes (nodeSelector cloud.google.com/gke-accelerator=nvidia-l4, "
     "toleration nvidia.com/gpu), where the device runtime hands out the GPUs"),
    (_pod_spec(affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "feature.node.kubernetes.io/pci-10de.present", "operator": "In",
             "values": ["true"]}]}]}}},
               tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}]),
     "pinned to accelerator nodes (node affinity on feature.node.kubernetes.io/pci-10de.present"
     ", toleration nvidia.com/gpu), where the device runtime hands out the GPUs"),
], ids=["env all", "Ascend env", "nvidia-cdi", "kata nvidia", "privileged+selector",
        "privileged+toleration", "selector+toleration", "affinity+toleration"])
def test_gpus_handed_out_without_a_resource_are_found(spec: dict[str, Any], reason: str) -> None:
    [template] = pod_templates(_deployment(spec))
    assert reason in [e.reason for e in generative_evidence(template)]


def test_an_ephemeral_container_with_every_device_is_found() -> None:
    """`kubectl debug` adds ephemeral containers: no resources, but env and privilege."""
    pod = {"kind": "Pod", "spec": {
        "containers": [{"name": "web", "image": "nginx"}],
        "ephemeralContainers": [{"name": "debugger", "image": "cuda", "env": [
            {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]}]}}
    [template] = pod_templates(pod)
    [evidence] = generative_evidence(template)
    assert evidence.field == "spec.ephemeralContainers[0].env[0]"


def test_dra_is_matched_by_driver_whatever_the_class_is_called() -> None:
    from hegui.rules.index import ComplianceIndex

    index = ComplianceIndex.from_objects([
        {"kind": "DeviceClass", "metadata": {"name": "big-accelerators"}, "spec": {"selectors": [
            {"cel": {"expression": 'device.driver == "gpu.nvidia.com" && '
                                   'device.attributes["gpu.nvidia.com"].productName == "H200"'}}]}},
        {"kind": "DeviceClass", "metadata": {"name": "fast-nics"}, "spec": {"selectors": [
            {"cel": {"expression": "device.driver == 'sriovnetwork.k8snetworkplumbingwg.io'"}}]}},
        {"kind": "ResourceClaimTemplate", "metadata": {"namespace": "ns", "name": "h200"},
         "spec": {"spec": {"devices": {"requests": [
             {"name": "g", "exactly": {"deviceClassName": "big-accelerators"}}]}}}},
        {"kind": "ResourceClaimTemplate", "metadata": {"namespace": "ns", "name": "nic"},
         "spec": {"spec": {"devices": {"requests": [
             {"name": "n", "exactly": {"deviceClassName": "fast-nics"}}]}}}},
        {"kind": "ResourceClaim", "metadata": {"namespace": "ns", "name": "amd"},
         "spec": {"devices": {"requests": [{"name": "g", "exactly": {
             "deviceClassName": "anything", "selectors": [
                 {"cel": {"expression": 'device.driver == "gpu.amd.com"'}}]}}]}}},
    ])

    def evidence_for(claim: dict[str, str]) -> list[str]:
        [template] = pod_templates(_deployment(_pod_spec(resourceClaims=[
            {"name": "x", **claim}])))
        return [e.reason for e in generative_evidence(template, "ns", index.claim_classes)]

    assert evidence_for({"resourceClaimTemplateName": "h200"}) == [
        "DRA ResourceClaimTemplate h200 (gpu.nvidia.com)"]
    assert evidence_for({"resourceClaimName": "amd"}) == ["DRA ResourceClaim amd (gpu.amd.com)"]
    assert evidence_for({"resourceClaimTemplateName": "nic"}) == []


# --- serving custom resources ---------------------------------------------------------------------

def _gpu_container(name: str = "model") -> dict[str, Any]:
    return {"name": name, "image": "vllm/vllm-openai",
            "resources": {"limits": {"nvidia.com/gpu": "1"}}}


@pytest.mark.parametrize(("obj", "paths"), [
    ({"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet", "spec": {
        "leaderWorkerTemplate": {"size": 2, "workerTemplate": {
            "metadata": {"labels": {"role": "worker"}},
            "spec": {"containers": [_gpu_container()]}}}}},
     ["spec.leaderWorkerTemplate.workerTemplate.spec"]),
    ({"apiVersion": "disaggregatedset.x-k8s.io/v1", "kind": "DisaggregatedSet", "spec": {
        "roles": [{"name": "prefill", "spec": {"leaderWorkerTemplate": {"workerTemplate": {
            "spec": {"containers": [_gpu_container()]}}}}},
            {"name": "decode", "spec": {"leaderWorkerTemplate": {"workerTemplate": {
                "spec": {"containers": [_gpu_container()]}}}}}]}},
     ["spec.roles[0].spec.leaderWorkerTemplate.workerTemplate.spec",
      "spec.roles[1].spec.leaderWorkerTemplate.workerTemplate.spec"]),
    ({"apiVersion": "ray.io/v1", "kind": "RayService", "spec": {"rayClusterConfig": {
        "headGroupSpec": {"template": {"spec": {"containers": [{"name": "head"}]}}},
        "workerGroupSpecs": [{"template": {"spec": {"containers": [_gpu_container()]}}}]}}},
     # The head asks for no GPU but is where Ray Serve takes requests (its entry).
     ["spec.rayClusterConfig.headGroupSpec.template.spec",
      "spec.rayClusterConfig.workerGroupSpecs[0].template.spec"]),
    ({"apiVersion": "apps.nvidia.com/v1alpha1", "kind": "NIMService", "spec": {
        "image": {"repository": "nvcr.io/nim/meta/llama3-8b-instruct"},
        "resources": {"limits": {"nvidia.com/gpu": 1}}}}, ["spec"]),
    ({"apiVersion": "serving.kserve.io/v1alpha1", "kind": "LLMInferenceService", "spec": {
        "model": {"uri": "hf://Qwen/Qwen3-8B"}, "template": {"containers": [
            {"name": "main", "image": "vllm"}]}}}, ["spec.template"]),
], ids=["LeaderWorkerSet", "DisaggregatedSet", "RayService", "NIMService",
        "LLMInferenceService"])
def test_serving_custom_resources_yield_their_pods(obj: dict[str, Any], paths: list[str]) -> None:
    found = [(t.spec_path, e) for t in pod_templates(obj) for e in generative_evidence(t)]
    assert sorted({path for path, _ in found}) == paths


def test_a_ray_head_is_the_entry_only_of_a_cluster_that_runs_a_model() -> None:
    """Ray Serve's HTTP proxy on the CPU head hands requests to the GPU workers over Ray's own
    transport, which no sidecar sees: the head must be fronted (Art.14). A Ray cluster with no
    model (CPU workers) has no entry to front."""
    from hegui.rules.workloads import serving_entry

    def cluster(worker: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": "ray.io/v1", "kind": "RayCluster", "spec": {
            "headGroupSpec": {"template": {"spec": {"containers": [{"name": "ray-head"}]}}},
            "workerGroupSpecs": [{"template": {"spec": {"containers": [worker]}}}]}}

    [head, _] = pod_templates(cluster(_gpu_container()))
    [why] = generative_evidence(head)
    assert head.spec_path == "spec.headGroupSpec.template.spec"
    assert "serving entry of a RayCluster" in str(why)
    assert not any(generative_evidence(t) for t in pod_templates(cluster({"name": "cpu"})))
    def pod(labels: dict[str, str], *owners: str) -> dict[str, Any]:
        return {"metadata": {"labels": labels, "ownerReferences": [
            {"apiVersion": "ray.io/v1", "kind": kind, "name": "c", "uid": "u"}
            for kind in owners]}}

    assert serving_entry(pod({"ray.io/node-type": "head", "app": "chat"}))
    # KubeRay keeps a label the template sets: a head relabelled `worker` is still its node.
    assert serving_entry(pod({"ray.io/node-type": "worker"}, "RayCluster"))
    assert not serving_entry(pod({"ray.io/node-type": "worker"}))
    assert not serving_entry(pod({}, "ReplicaSet")) and not serving_entry({})


def test_a_serving_kind_of_another_group_is_not_read() -> None:
    other = {"apiVersion": "example.com/v1", "kind": "NIMService",
             "spec": {"resources": {"limits": {"nvidia.com/gpu": 1}}}}
    assert pod_templates(other) == []


def test_a_policy_adds_a_serving_kind_by_paths() -> None:
    from hegui.rules.workloads import BUILTIN, ServingKind

    kind = ServingKind("example.com", ("v1",), "ModelServer", "modelservers",
                       templates=("spec.replicas[*].pod",))
    detection = BUILTIN.extended(kinds=[kind])
    obj = {"apiVersion": "example.com/v1", "kind": "ModelServer", "spec": {"replicas": [
        {"pod": {"spec": {"containers": [_gpu_container()]}}}]}}
    assert pod_templates(obj) == []
    [template] = pod_templates(obj, detection)
    assert template.spec_path == "spec.replicas[0].pod.spec"
    assert detection.is_workload_kind("ModelServer") and not BUILTIN.is_workload_kind("ModelServer")
    with pytest.raises(ValueError, match="bad path"):
        ServingKind("example.com", ("v1",), "X", "xs", templates=("spec..pod",))
