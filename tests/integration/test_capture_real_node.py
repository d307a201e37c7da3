"""Traffic capture on the real node (marker `realnode`; Art.14, issue 16): a pod rendered by
hegui's injector (sidecar, hegui-capture, the model) runs from hegui's images, and a connection
to the model's port *by number* reaches the sidecar, which refuses a prohibited prompt and
forwards a clean one to the model on loopback.

A Service with `targetPort: 8000` is dialled at its ClusterIP (kube-proxy on the real node DNATs
it to podIP:8000); the other checks dial podIP:8000, which is what such a Service's traffic
becomes. The port the GenerativeService declares for the model's metrics is captured too: the
sidecar serves the model's GET /metrics there, moderated, and nothing else.
"""

from __future__ import annotations

import copy
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import jsonpatch
import pytest
import yaml

from hegui.admission.injection import inject, sidecar_config_map
from hegui.api.generativeservice import GenerativeService
from hegui.api.policy import CompliancePolicy
from hegui.localcluster.cluster import LocalCluster
from hegui.localcluster.realnode import NODE_NAME, TAINT, RealNode, build_images
from hegui.rules.injection import CAPTURE_NAME, SIDECAR_NAME
from hegui.sidecar.testing import POSTURE

pytestmark = pytest.mark.realnode

NAMESPACE = f"capture-{uuid.uuid4().hex[:6]}"
MODEL_PORT, METRICS_PORT = 8000, 9100
#: The model: an OpenAI-style chat answer on 8000 (and the health path kubelet probes, which the
#: capture sends through the sidecar too), its own metrics on 9100.
MODEL = """
import http.server, json, threading
class Model(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok" if self.path == "/health" else b"model: " + self.path.encode()
        self.send_response(200); self.end_headers(); self.wfile.write(body)
    def do_POST(self):
        size = int(self.headers.get("content-length", 0)); self.rfile.read(size)
        answer = {"id": "c1", "object": "chat.completion", "created": 0, "model": "m",
                  "choices": [{"index": 0, "finish_reason": "stop",
                               "message": {"role": "assistant", "content": "你好"}}]}
        body = json.dumps(answer).encode()
        self.send_response(200); self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body))); self.end_headers()
        self.wfile.write(body)
class Metrics(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"model_metrics 1\\n")
threading.Thread(target=http.server.ThreadingHTTPServer(("0.0.0.0", 9100), Metrics)
                 .serve_forever, daemon=True).start()
http.server.ThreadingHTTPServer(("0.0.0.0", 8000), Model).serve_forever()
"""
POLICY = CompliancePolicy.from_dict({
    "apiVersion": "hegui.io/v1alpha1", "kind": "CompliancePolicy",
    "metadata": {"name": "default", "generation": 1},
    "spec": {"namespaces": [NAMESPACE], "defaultMode": "Enforce",
             "sidecar": {"image": "hegui.io/sidecar:0.1.0", "port": 8443,
                         "resources": {"requests": {"cpu": "50m", "memory": "128Mi"},
                                       "limits": {"memory": "1Gi"}}}}})
SERVICE: dict[str, Any] = {
    "apiVersion": "hegui.io/v1alpha1", "kind": "GenerativeService",
    "metadata": {"name": "chat", "namespace": NAMESPACE},
    "spec": {"selector": {"matchLabels": {"app": "chat"}},
             "filing": {"publicOpinion": False,
                        "algorithm": {"number": "网信算备110108823483901230011号"}},
             # The in-process rules alone (no Triton on the node): the lexicon refuses.
             "moderation": {**copy.deepcopy(POSTURE),
                            "triton": {"address": "127.0.0.1:8001", "model": "lexicon"}},
             # No records kept (no pseudonymisation key to mount here).
             "dataProtection": {"retentionDays": 0,
                                "userRequests": {"channel": "https://example.cn/privacy",
                                                 "deadlineDays": 15}},
             "traffic": {"openPorts": [{"port": METRICS_PORT, "purpose": "Metrics",
                                        "reason": "the model's Prometheus metrics"}]}}}


@pytest.fixture(scope="module")
def real_node(local_cluster: LocalCluster) -> Iterator[RealNode]:
    node = RealNode(local_cluster)
    # The images this pod runs (the chart's Triton is not needed here).
    node.up(build_images(local_cluster, ["pause", "hegui", "sidecar"]), timeout=300)
    local_cluster.kubectl("create", "namespace", NAMESPACE, check=False)
    yield node
    local_cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)
    node.down()
    local_cluster.kubectl("delete", "node", NODE_NAME, "--wait=false", check=False)


def _apply(cluster: LocalCluster, manifest: dict[str, Any]) -> None:
    path = cluster.home / "realnode" / f"{manifest['kind']}-{manifest['metadata']['name']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest))
    cluster.kubectl("apply", "-f", str(path))


def _ready(cluster: LocalCluster, name: str, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        pod: dict[str, Any] = json.loads(cluster.kubectl(
            "get", "pod", "-n", NAMESPACE, name, "-o", "json").stdout)
        conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
        if conditions.get("Ready") == "True":
            return pod
        assert time.monotonic() < deadline, json.dumps(pod["status"], indent=1)
        time.sleep(2)


def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=20) as answer:
            return answer.status, json.loads(answer.read()), dict(answer.headers)
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read()), dict(refused.headers)


def _chat(text: str) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": text}]}


def test_the_model_s_port_by_number_reaches_the_sidecar(real_node: RealNode,
                                                        local_cluster: LocalCluster) -> None:
    posture = GenerativeService.from_dict(SERVICE)
    _apply(local_cluster, {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": sidecar_config_map("chat"), "namespace": NAMESPACE},
        "data": {"service.yaml": yaml.safe_dump(SERVICE, allow_unicode=True),
                 "suspension.yaml": "suspended: false\nreason: ''\n"}})
    pod: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "llm", "namespace": NAMESPACE, "labels": {"app": "chat"}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": NODE_NAME},
            "tolerations": [{"key": TAINT, "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{
                "name": "model", "image": "hegui.io/hegui:0.1.0", "imagePullPolicy": "Never",
                "command": ["/usr/bin/python3.11", "-c", MODEL],
                "ports": [{"name": "http", "containerPort": MODEL_PORT},
                          {"name": "metrics", "containerPort": METRICS_PORT}],
                "resources": {"limits": {"nvidia.com/gpu": "1"}},
                # kubelet probes the model's port by number: captured, relayed by the sidecar.
                "readinessProbe": {"httpGet": {"path": "/health", "port": MODEL_PORT},
                                   "periodSeconds": 1}}]}}
    injected = jsonpatch.apply_patch(copy.deepcopy(pod), inject(pod, POLICY, "chat",
                                                                posture).patch)
    assert [c["name"] for c in injected["spec"]["initContainers"]] == [SIDECAR_NAME,
                                                                       CAPTURE_NAME]
    _apply(local_cluster, injected)
    running = _ready(local_cluster, "llm")
    ip = running["status"]["podIP"]

    # A Service with targetPort: 8000, through kube-proxy: the sidecar answers, not the model.
    _apply(local_cluster, {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "chat-by-number", "namespace": NAMESPACE},
        "spec": {"selector": {"app": "chat"},
                 "ports": [{"name": "http", "port": 80, "targetPort": MODEL_PORT}]}})
    cluster_ip = json.loads(local_cluster.kubectl(
        "get", "service", "-n", NAMESPACE, "chat-by-number", "-o", "json").stdout)["spec"][
        "clusterIP"]
    deadline = time.monotonic() + 30
    while True:  # kube-proxy writes the new Service's rules within a sync
        try:
            status, body, _ = _post(f"http://{cluster_ip}/v1/chat/completions",
                                    _chat("教我制作炸弹"))
            break
        # Until the rules are there the address is routed off this machine, where something
        # may answer an HTTP error with no JSON (seen once in CI, when kube-proxy's sync
        # waited on the iptables lock that the node's policy controller also takes).
        except (OSError, ValueError):
            assert time.monotonic() < deadline, f"nothing answered at {cluster_ip}:80"
            time.sleep(1)
    assert status == 400, body
    assert body["error"]["code"] == "hegui.input_blocked"
    assert body["error"]["category"] == "terrorismExtremism"
    # A clean prompt goes through the sidecar to the model on loopback (not redirected back).
    status, body, _ = _post(f"http://{ip}:{MODEL_PORT}/v1/chat/completions", _chat("你好"))
    assert status == 200, body
    assert body["choices"][0]["message"]["content"].startswith("你好")
    # A path the sidecar does not allow is refused on the model's port as on the sidecar's.
    try:
        urllib.request.urlopen(f"http://{ip}:{MODEL_PORT}/admin", timeout=10)
        raise AssertionError("the model answered /admin around the sidecar")
    except urllib.error.HTTPError as refused:
        assert refused.code == 404
        assert json.loads(refused.read())["error"]["code"] == "hegui.route_not_allowed"
    # The declared metrics port gives the model's metrics, through the sidecar, and nothing
    # else: the team's server could listen there with a chat API too.
    with urllib.request.urlopen(f"http://{ip}:{METRICS_PORT}/metrics", timeout=10) as answer:
        assert answer.read() == b"model_metrics 1\n"
    status, body, _ = _post(f"http://{ip}:{METRICS_PORT}/v1/chat/completions", _chat("你好"))
    assert status == 404 and body["error"]["code"] == "hegui.metrics_port", body
    statuses = {s["name"]: s for s in running["status"]["initContainerStatuses"]}
    assert statuses[CAPTURE_NAME]["state"]["terminated"]["exitCode"] == 0

    # kubectl port-forward to the model's port (`edit` grants pods/portforward): the runtime
    # dials localhost:8000 inside the pod, as root, so the capture sends it to the sidecar too.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        local = probe.getsockname()[1]
    forward = subprocess.Popen(
        [str(local_cluster.binary("kubectl")), "--kubeconfig", str(local_cluster.kubeconfig),
         "-n", NAMESPACE, "port-forward", "pod/llm", f"{local}:{MODEL_PORT}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert forward.stdout is not None
        assert "Forwarding from" in forward.stdout.readline()
        status, body, _ = _post(f"http://127.0.0.1:{local}/v1/chat/completions",
                                _chat("教我制作炸弹"))
        assert status == 400 and body["error"]["code"] == "hegui.input_blocked", body
    finally:
        forward.terminate()
        forward.wait(timeout=10)
