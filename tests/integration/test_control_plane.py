"""The whole chain of the local control plane works, as a GPU workload sees it."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from kubernetes import client as k8s

from hegui.localcluster.cluster import LocalCluster
from hegui.localcluster.nodes import GPU_PRESENT_LABEL, GPU_RESOURCE

pytestmark = pytest.mark.cluster


def _gpu_deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{
                    "name": "model",
                    "image": "example.invalid/model:1",
                    "resources": {"limits": {GPU_RESOURCE: "1"}},
                }]},
            },
        },
    }


@pytest.fixture
def namespace(api_client: k8s.ApiClient) -> Any:
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = k8s.CoreV1Api(api_client)
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


def test_apiserver_serves_tls_with_rbac_and_webhook_admission(api_client: k8s.ApiClient) -> None:
    version = k8s.VersionApi(api_client).get_code()
    assert (int(version.major), int(version.minor.rstrip("+"))) >= (1, 34)
    groups = {g.name for g in k8s.ApisApi(api_client).get_api_versions().groups}
    assert {"admissionregistration.k8s.io", "rbac.authorization.k8s.io"} <= groups
    # RBAC is on: a user with no bindings is refused.
    review = k8s.AuthorizationV1Api(api_client).create_subject_access_review({
        "spec": {"user": "nobody", "resourceAttributes": {"verb": "list", "resource": "pods"}}})
    assert review.status.allowed is False


def test_nodes_include_one_cpu_and_two_gpu_nodes(api_client: k8s.ApiClient) -> None:
    node_list = k8s.CoreV1Api(api_client).list_node().items
    gpu = [n for n in node_list if n.metadata.labels.get(GPU_PRESENT_LABEL) == "true"]
    cpu = [n for n in node_list if n not in gpu]
    assert len(gpu) >= 2 and len(cpu) >= 1
    for node in gpu:
        assert int(node.status.allocatable[GPU_RESOURCE]) > 0
    for node in node_list:
        ready = {c.type: c.status for c in node.status.conditions}
        assert ready.get("Ready") == "True", node.metadata.name


def test_gpu_deployment_becomes_running_pods_on_gpu_nodes(
    local_cluster: LocalCluster, api_client: k8s.ApiClient, namespace: str
) -> None:
    k8s.AppsV1Api(api_client).create_namespaced_deployment(namespace, _gpu_deployment("llm", 3))
    core = k8s.CoreV1Api(api_client)
    gpu_nodes = {n.metadata.name for n in core.list_node(
        label_selector=f"{GPU_PRESENT_LABEL}=true").items}

    deadline = time.monotonic() + 90
    pods: list[Any] = []
    while time.monotonic() < deadline:
        pods = core.list_namespaced_pod(namespace, label_selector="app=llm").items
        if len(pods) == 3 and all(p.status.phase == "Running" for p in pods):
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"pods did not all run: {[(p.metadata.name, p.status.phase) for p in pods]}")

    # kube-controller-manager made a ReplicaSet that owns the pods...
    owners = {ref.kind for p in pods for ref in p.metadata.owner_references}
    assert owners == {"ReplicaSet"}
    # ...kube-scheduler put every pod on a GPU node, and kwok reports them Running with an IP.
    assert {p.spec.node_name for p in pods} <= gpu_nodes
    assert all(p.status.pod_ip for p in pods)

    wide = local_cluster.kubectl("-n", namespace, "get", "pods", "-o", "wide").stdout
    for pod in pods:
        line = next(row for row in wide.splitlines() if row.startswith(pod.metadata.name))
        assert "Running" in line and pod.spec.node_name in line


def test_gpu_pods_beyond_capacity_stay_pending(
    api_client: k8s.ApiClient, namespace: str
) -> None:
    """The scheduler really accounts for nvidia.com/gpu: 2 nodes x 4 GPUs leave no room for 9."""
    core = k8s.CoreV1Api(api_client)
    capacity = sum(int(n.status.allocatable.get(GPU_RESOURCE, 0)) for n in core.list_node().items)
    deployment = _gpu_deployment("greedy", 1)
    deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"][
        GPU_RESOURCE] = str(capacity + 1)
    k8s.AppsV1Api(api_client).create_namespaced_deployment(namespace, deployment)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pods = core.list_namespaced_pod(namespace).items
        conditions = [c for p in pods for c in (p.status.conditions or [])
                      if c.type == "PodScheduled" and c.status == "False"]
        if conditions:
            assert "Insufficient nvidia.com/gpu" in conditions[0].message
            return
        time.sleep(0.5)
    pytest.fail("the pod was neither refused by the scheduler nor reported unschedulable")
