"""A team that cannot switch injection off tries to route around the sidecar from inside the pod
(rule injection, Art.14): a container with NET_ADMIN could delete the capture's redirect, a
privileged one anything, `kubectl debug --profile=netadmin` adds such a container to a running
pod, and a shared process namespace or a debug container targeting the sidecar opens its keys
(Art.11). Each is refused by the rule
engine the webhook, the audit and `hegui check` share; the model's ordinary pods pass."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest

from hegui.api.articles import Rule
from hegui.rules.engine import evaluate, evaluate_service_object
from hegui.rules.index import ComplianceIndex

NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
SIDECAR = {"image": "registry.example.cn/hegui/sidecar:0.1.0", "port": 8443}


def _policy(sidecar: bool = True) -> dict[str, Any]:
    spec: dict[str, Any] = {"namespaces": ["ai"], "defaultMode": "Enforce"}
    if sidecar:
        spec["sidecar"] = SIDECAR
    return {"apiVersion": "hegui.io/v1alpha1", "kind": "CompliancePolicy",
            "metadata": {"name": "default"}, "spec": spec}


def _pod(**model: Any) -> dict[str, Any]:
    """A vLLM pod as the team writes it (and as hegui injected it: sidecar and capture)."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "llm-0", "namespace": "ai", "labels": {"app": "chat"}},
            "spec": {
                "initContainers": [
                    {"name": "hegui-sidecar", "image": SIDECAR["image"], "restartPolicy": "Always",
                     "volumeMounts": [{"name": "hegui-keys", "mountPath": "/etc/hegui-keys"}]},
                    {"name": "hegui-capture", "image": SIDECAR["image"],
                     "securityContext": {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}}}],
                "containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.8.5",
                                "args": ["--model", "Qwen/Qwen2.5-7B-Instruct"],
                                "resources": {"limits": {"nvidia.com/gpu": "1"}}, **model}],
                "volumes": [{"name": "hegui-keys", "emptyDir": {}}]}}


def _injection(workload: dict[str, Any], *, sidecar: bool = True) -> list[str]:
    index = ComplianceIndex.from_objects([_policy(sidecar)])
    return [f.render() for f in evaluate(workload, index, now=NOW) if f.rule is Rule.INJECTION]


def test_hegui_s_own_containers_and_an_ordinary_model_pass() -> None:
    assert _injection(_pod()) == []


@pytest.mark.parametrize(("security", "named"), [
    ({"capabilities": {"add": ["NET_ADMIN"]}}, "adds NET_ADMIN"),
    ({"capabilities": {"add": ["CAP_NET_ADMIN"]}}, "adds NET_ADMIN"),  # the runtime's spelling
    ({"capabilities": {"add": ["all"]}}, "adds ALL"),
    ({"capabilities": {"add": ["SYS_ADMIN"]}}, "adds SYS_ADMIN"),
    ({"privileged": True}, "is privileged"),
])
def test_a_model_container_that_could_undo_the_capture_is_refused(
        security: dict[str, Any], named: str) -> None:
    [finding] = _injection(_pod(securityContext=security))
    assert f"container vllm {named}" in finding and "[injection, Art.14]" in finding
    assert "Pod ai/llm-0 spec.containers[0].securityContext" in finding
    assert "Fix: " in finding


def test_kubectl_debug_netadmin_on_a_running_pod_is_refused() -> None:
    # What `kubectl debug --profile=netadmin` sends: the pod with one more ephemeral container.
    debugged = _pod()
    debugged["spec"]["ephemeralContainers"] = [{
        "name": "debugger-x7k2q", "image": "busybox", "targetContainerName": "vllm",
        "securityContext": {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}}}]
    [finding] = _injection(debugged)
    assert "spec.ephemeralContainers[0].securityContext.capabilities.add" in finding
    # A debug container named like hegui's capture is not hegui's.
    debugged["spec"]["ephemeralContainers"][0]["name"] = "hegui-capture"
    assert len(_injection(debugged)) == 1
    # `kubectl debug --profile=general` (SYS_PTRACE, in the model's processes) stays possible ...
    debugged["spec"]["ephemeralContainers"][0]["securityContext"] = {
        "capabilities": {"add": ["SYS_PTRACE"]}}
    assert _injection(debugged) == []
    # ... but not in the sidecar's: through /proc it would read the sidecar's keys.
    debugged["spec"]["ephemeralContainers"][0]["targetContainerName"] = "hegui-sidecar"
    [finding] = _injection(debugged)
    assert "spec.ephemeralContainers[0].targetContainerName" in finding


def test_an_ephemeral_container_cannot_mount_the_sidecar_s_keys() -> None:
    debugged = _pod()
    debugged["spec"]["ephemeralContainers"] = [{
        "name": "debugger", "image": "busybox",
        "volumeMounts": [{"name": "hegui-keys", "mountPath": "/k"}]}]
    [finding] = _injection(debugged)
    assert "container debugger mounts hegui-keys at /k" in finding


def test_a_shared_process_namespace_is_refused() -> None:
    pod = _pod()
    pod["spec"]["shareProcessNamespace"] = True
    [finding] = _injection(pod)
    assert "spec.shareProcessNamespace" in finding and "/proc" in finding


def test_a_deployment_template_is_judged_before_any_pod_exists() -> None:
    # What `hegui check` sees in a GitOps pipeline: the template, not yet injected.
    template = copy.deepcopy(_pod(securityContext={"capabilities": {"add": ["NET_ADMIN"]}}))
    template["spec"]["initContainers"] = []
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": {"name": "llm", "namespace": "ai"},
                  "spec": {"selector": {"matchLabels": {"app": "chat"}},
                           "template": {"metadata": template["metadata"],
                                        "spec": template["spec"]}}}
    [finding] = _injection(deployment)
    assert "Deployment ai/llm spec.template.spec.containers[0]" in finding


def test_without_a_sidecar_to_protect_nothing_is_asked() -> None:
    assert _injection(_pod(securityContext={"privileged": True}), sidecar=False) == []


def _with_triton_and_store(index_objects: list[dict[str, Any]]) -> None:
    policy = index_objects[0]
    policy["spec"]["defaults"] = {"triton": {"address": "moderation.platform.example.cn:8001",
                                             "model": "moderation"}}
    policy["spec"]["evidence"] = {"store": {"endpoint": "https://worm.example.cn:9000",
                                            "bucket": "hegui-evidence",
                                            "credentialsSecretName": "hegui-evidence-store"}}


@pytest.mark.parametrize("hostname", [
    "triton.hegui-system.svc", "triton.hegui-system.svc.cluster.local",
    "TRITON.hegui-system.svc.cluster.local.",  # case and the root dot change nothing
    "moderation.platform.example.cn",  # the policy's Triton outside the cluster
    "worm.example.cn",  # the evidence store
])
def test_a_host_alias_cannot_send_the_sidecar_s_moderation_or_records_elsewhere(
        hostname: str) -> None:
    objects = [_policy()]
    _with_triton_and_store(objects)
    pod = _pod()
    pod["spec"]["hostAliases"] = [{"ip": "10.1.2.3", "hostnames": ["cache", hostname]}]
    index = ComplianceIndex.from_objects(objects)
    [finding] = [f.render() for f in evaluate(pod, index, now=NOW) if f.rule is Rule.INJECTION]
    assert "spec.hostAliases[0].hostnames" in finding and f"{hostname} is mapped to 10.1.2.3" \
        in finding


def test_an_ordinary_host_alias_passes_and_dns_policy_none_does_not() -> None:
    objects = [_policy()]
    _with_triton_and_store(objects)
    index = ComplianceIndex.from_objects(objects)
    pod = _pod()
    pod["spec"]["hostAliases"] = [{"ip": "10.1.2.3", "hostnames": ["weights-cache.internal"]}]
    assert [f for f in evaluate(pod, index, now=NOW) if f.rule is Rule.INJECTION] == []
    pod["spec"]["dnsPolicy"] = "None"
    pod["spec"]["dnsConfig"] = {"nameservers": ["10.1.2.3"]}
    [finding] = [f.render() for f in evaluate(pod, index, now=NOW) if f.rule is Rule.INJECTION]
    assert "spec.dnsPolicy" in finding


def _service(open_ports: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "hegui.io/v1alpha1", "kind": "GenerativeService",
            "metadata": {"name": "chat", "namespace": "ai"},
            "spec": {"selector": {"matchLabels": {"app": "chat"}},
                     "filing": {"publicOpinion": True,
                                "algorithm": {"number": "网信算备110108823483901230011号"}},
                     "assessment": {"external": {"reportId": "R-1", "assessedOn": "2026-06-01",
                                                 "expiresOn": "2027-06-01", "result": "Pass"}},
                     "labeling": {"modalities": ["text"],
                                  "implicit": {"contentProducer": "Example AI Co."}},
                     "traffic": {"openPorts": open_ports}}}


def test_a_service_cannot_declare_the_sidecar_s_port_open() -> None:
    # Port ranges are how Ray's worker ports are declared; one that spans 8443 opens the
    # sidecar's port to users, around it: refused when the service is applied.
    index = ComplianceIndex.from_objects([_policy()])
    ranged = {"port": 8000, "endPort": 9000, "purpose": "PodToPod", "reason": "Ray workers"}
    [finding] = [f.render() for f in evaluate_service_object(_service([ranged]), index, now=NOW)
                 if f.rule is Rule.INJECTION]
    assert "GenerativeService ai/chat spec.traffic.openPorts[0]" in finding
    assert "8000-9000 open (PodToPod), which includes 8443, the sidecar's port" in finding
    # The model's metrics port is fine; so is any port where no policy injects a sidecar.
    metrics = {"port": 8002, "purpose": "Metrics", "reason": "Triton metrics"}
    assert [f for f in evaluate_service_object(_service([metrics]), index, now=NOW)
            if f.rule is Rule.INJECTION] == []
    bare = ComplianceIndex.from_objects([_policy(sidecar=False)])
    assert [f for f in evaluate_service_object(_service([ranged]), bare, now=NOW)
            if f.rule is Rule.INJECTION] == []


def test_the_node_s_processes_are_refused() -> None:
    """hostPID shows the sidecar's processes: through /proc their files, keys and memory."""
    pod = _pod()
    pod["spec"]["hostPID"] = True
    [finding] = _injection(pod)
    assert "spec.hostPID" in finding and "/proc" in finding


@pytest.mark.parametrize("path", ["/var/lib/kubelet", "/var/lib/kubelet/pods", "/var", "/",
                                  "//var/lib/kubelet/", "/var/lib/../lib/kubelet/pods",
                                  "/proc", "/run", "/run/containerd", "/var/lib/containerd"])
def test_a_host_path_onto_where_the_node_keeps_the_sidecar_s_keys_is_refused(path: str) -> None:
    """The kubelet keeps a pod's projected keys and configuration under /var/lib/kubelet/pods,
    the runtime the containers' files: a model container mounting any of it (or a directory
    above it) reads or rewrites the sidecar's keys from outside its container (Art.11, Art.14)."""
    pod = _pod(volumeMounts=[{"name": "node", "mountPath": "/host"}])
    pod["spec"]["volumes"].append({"name": "node", "hostPath": {"path": path}})
    [finding] = _injection(pod)
    assert "spec.volumes[1].hostPath.path" in finding and f"node's {path}" in finding


def test_model_weights_from_a_host_directory_pass() -> None:
    # How on-premises vLLM and Ollama manifests bring their weights: hostPath, not the kubelet's.
    for path in ("/data/models", "/mnt/nvme/hf-cache", "/var/lib/kube-models", "/root/.ollama"):
        pod = _pod(volumeMounts=[{"name": "weights", "mountPath": "/models"}])
        pod["spec"]["volumes"].append({"name": "weights", "hostPath": {"path": path}})
        assert _injection(pod) == [], path
