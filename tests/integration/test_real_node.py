"""The local cluster's real node (marker `realnode`): a kubelet built from the control plane's
module, Debian's containerd, runc and CNI plugins, and the fake GPU device plugin, running real
pods from hegui's images (built here by images/build.py). Needs root.

The node is tainted so that the other integration tests' pods (kwok's) never land on it; these
pods tolerate the taint. The module stops the node at its end.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from hegui.localcluster.cluster import LocalCluster
from hegui.localcluster.realnode import GPUS, IMAGES, NODE_NAME, TAINT, RealNode, build_images

pytestmark = pytest.mark.realnode

NAMESPACE = "real-node-test"


@pytest.fixture(scope="module")
def real_node(local_cluster: LocalCluster) -> Iterator[RealNode]:
    node = RealNode(local_cluster)
    started = time.monotonic()
    node.up(build_images(local_cluster, list(IMAGES)), timeout=300)
    print(f"real node Ready in {time.monotonic() - started:.0f}s")
    local_cluster.kubectl("create", "namespace", NAMESPACE, check=False)
    yield node
    local_cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)
    node.down()
    local_cluster.kubectl("delete", "node", NODE_NAME, "--wait=false", check=False)


def _apply(cluster: LocalCluster, manifest: dict[str, Any]) -> None:
    path = cluster.home / "realnode" / f"{manifest['metadata']['name']}.json"
    path.write_text(json.dumps(manifest))
    cluster.kubectl("apply", "-f", str(path))


def _pod(cluster: LocalCluster, name: str) -> dict[str, Any]:
    got: dict[str, Any] = json.loads(cluster.kubectl("get", "pod", "-n", NAMESPACE, name,
                                                     "-o", "json").stdout)
    return got


def _wait_ready(cluster: LocalCluster, name: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        pod = _pod(cluster, name)
        conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
        if conditions.get("Ready") == "True":
            return pod
        assert time.monotonic() < deadline, json.dumps(pod["status"], indent=1)
        time.sleep(2)


# The model container: answers GET / with the GPUs the device plugin gave it.
SERVE_GPUS = (
    "import http.server, os\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = os.environ.get('NVIDIA_VISIBLE_DEVICES', '').encode()\n"
    "        self.send_response(200); self.end_headers(); self.wfile.write(body)\n"
    "http.server.ThreadingHTTPServer(('0.0.0.0', 8000), H).serve_forever()\n")


def test_node_advertises_gpus_through_the_device_plugin(real_node: RealNode,
                                                        local_cluster: LocalCluster) -> None:
    node = json.loads(local_cluster.kubectl("get", "node", NODE_NAME, "-o", "json").stdout)
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == str(GPUS)
    assert node["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"
    assert {"key": TAINT, "value": "true", "effect": "NoSchedule"} in node["spec"]["taints"]
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")


def test_gpu_pod_with_a_native_sidecar_runs_and_answers_on_its_ip(
        real_node: RealNode, local_cluster: LocalCluster) -> None:
    security = {"runAsNonRoot": True, "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    tmp = [{"name": "tmp", "mountPath": "/tmp"}]
    _apply(local_cluster, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "gpu-model", "namespace": NAMESPACE},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": NODE_NAME},
            "tolerations": [{"key": TAINT, "operator": "Exists", "effect": "NoSchedule"}],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
            # A native sidecar, as hegui injects its own: started first, Ready before the model.
            "initContainers": [{
                "name": "hegui-sidecar", "image": "hegui.io/sidecar:0.1.0",
                "imagePullPolicy": "Never", "restartPolicy": "Always",
                "command": ["/usr/bin/python3.11", "-m", "http.server", "8443",
                            "--directory", "/tmp"],
                "startupProbe": {"tcpSocket": {"port": 8443}, "periodSeconds": 1,
                                 "failureThreshold": 60},
                "securityContext": security, "volumeMounts": tmp}],
            "containers": [{
                "name": "model", "image": "hegui.io/hegui:0.1.0", "imagePullPolicy": "Never",
                "command": ["/usr/bin/python3.11", "-c", SERVE_GPUS],
                "resources": {"limits": {"nvidia.com/gpu": "1"}},
                "readinessProbe": {"httpGet": {"path": "/", "port": 8000},
                                   "periodSeconds": 1},
                "securityContext": security, "volumeMounts": tmp}]}})
    pod = _wait_ready(local_cluster, "gpu-model")
    statuses = pod["status"]["containerStatuses"] + pod["status"]["initContainerStatuses"]
    assert all(s["ready"] for s in statuses) and len(statuses) == 2
    with urllib.request.urlopen(f"http://{pod['status']['podIP']}:8000/", timeout=10) as answer:
        assert answer.read().decode().startswith("hegui-fake-gpu-")
