"""The local cluster's real node (marker `realnode`): a kubelet built from the control plane's
module, Debian's containerd, runc and CNI plugins, and the fake GPU device plugin, running real
pods from hegui's images (built here by images/build.py). Needs root.

The node is tainted so that the other integration tests' pods (kwok's) never land on it; these
pods tolerate the taint. The module stops the node at its end.

Then the chart, as a platform team installs it: `helm install` with the images imported into
containerd, the operator, the webhook and Triton running as pods, a GPU model Deployment injected
by the webhook (which the apiserver calls at the webhook pod's IP: --enable-aggregator-routing),
its sidecar configured by the in-cluster operator, with the in-cluster Triton at the chart's
default address, the Service name `triton.hegui-system.svc` (the node's CoreDNS and
kube-proxy). Requests reach the model through its Services' ClusterIPs (kube-proxy on this
machine) and by their DNS names from a pod, as a platform team's clients do.
Tests run in file order and share one release.
"""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from cryptography import x509

from hegui.localcluster.cluster import _CHECKOUT, LocalCluster
from hegui.localcluster.realnode import (
    CHART_VALUES,
    GPUS,
    IMAGES,
    NODE_NAME,
    TAINT,
    RealNode,
    build_images,
    chart_values,
)

pytestmark = pytest.mark.realnode

NAMESPACE = "real-node-test"


@pytest.fixture(scope="module")
def real_node(local_cluster: LocalCluster) -> Iterator[RealNode]:
    node = RealNode(local_cluster)
    started = time.monotonic()
    node.up(build_images(local_cluster, list(IMAGES)), timeout=300)
    print(f"real node Ready in {time.monotonic() - started:.0f}s")
    # An earlier run's namespace may still be terminating.
    local_cluster.kubectl("wait", "--for=delete", f"namespace/{NAMESPACE}", "--timeout=180s",
                          check=False)
    local_cluster.kubectl("create", "namespace", NAMESPACE, check=False)
    yield node
    local_cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)
    node.down()
    local_cluster.kubectl("delete", "node", NODE_NAME, "--wait=false", check=False)


def _apply(cluster: LocalCluster, manifest: dict[str, Any]) -> None:
    path = cluster.home / "realnode" / f"{manifest['metadata']['name']}.json"
    path.write_text(json.dumps(manifest, default=str))  # YAML dates as ISO strings
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


# --- the chart on the real node -------------------------------------------------------------------

RELEASE = "hegui"
SYSTEM = "hegui-system"
CHART = _CHECKOUT / "charts" / "hegui"
SAMPLES = _CHECKOUT / "samples" / "compliance"
#: The chart as installed here (README "A real node"): the images built by images/build.py and
#: imported into the node's containerd (no registry is reachable), every component on the node.
VALUES = CHART_VALUES
#: The chart's Triton as sidecars dial it by default (the chart's hegui.triton.address): its
#: Service's name, resolved by the cluster DNS, its ClusterIP forwarded by kube-proxy.
TRITON = f"triton.{SYSTEM}.svc:8001"
ON_THE_REAL_NODE = {
    "nodeSelector": {"kubernetes.io/hostname": NODE_NAME},
    "tolerations": [{"key": TAINT, "operator": "Exists", "effect": "NoSchedule"}]}
#: The stand-in model server (hegui.sidecar.testing.FakeModel, OpenAI-compatible), from the
#: sidecar image, which carries it: a GPU model's container, answering what it is told to say.
FAKE_MODEL = ("from aiohttp import web\n"
              "from hegui.sidecar.testing import FakeModel\n"
              "web.run_app(FakeModel().app(), host='127.0.0.1', port=8000)\n")


def _helm(cluster: LocalCluster, *args: str, check: bool = True
          ) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(cluster.binary("helm")), "--kubeconfig", str(cluster.kubeconfig),
                           *args], capture_output=True, text=True, timeout=600)
    assert not check or done.returncode == 0, f"helm {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done


def _get(cluster: LocalCluster, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", "-o", "json", *args).stdout)


def _pods_state(cluster: LocalCluster, namespace: str) -> str:
    return cluster.kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False).stdout + \
        cluster.kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp",
                        check=False).stdout[-4000:]


def _ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in pod["status"].get("conditions", []))


def _wait_pods_ready(cluster: LocalCluster, namespace: str, selector: str, count: int,
                     timeout: float = 300) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        pods = [p for p in _get(cluster, "pods", "-n", namespace, "-l", selector)["items"]
                if not p["metadata"].get("deletionTimestamp")]
        if len(pods) == count and all(_ready(p) for p in pods):
            return pods
        assert time.monotonic() < deadline, _pods_state(cluster, namespace)
        time.sleep(2)


@pytest.fixture(scope="module")
def release(real_node: RealNode, local_cluster: LocalCluster) -> Iterator[dict[str, Any]]:
    """The chart installed (and, if a test left it, uninstalled at the end)."""
    values = yaml.safe_load(VALUES.read_text())
    for component in ("webhook", "operator", "triton"):  # the file and the node agree
        assert {k: values[component][k] for k in ON_THE_REAL_NODE} == ON_THE_REAL_NODE
    _helm(local_cluster, "uninstall", RELEASE, "-n", SYSTEM, "--wait", check=False)
    # hegui's CRDs may be there already (applied by `hegui demo` or other tests): the release
    # takes them over, the step charts/README gives.
    for name in local_cluster.kubectl("get", "crd", "-o", "name").stdout.split():
        if name.endswith(".hegui.io"):
            local_cluster.kubectl("label", "--overwrite", name,
                                  "app.kubernetes.io/managed-by=Helm")
            local_cluster.kubectl("annotate", "--overwrite", name,
                                  f"meta.helm.sh/release-name={RELEASE}",
                                  f"meta.helm.sh/release-namespace={SYSTEM}")
    started = time.monotonic()
    _helm(local_cluster, "install", RELEASE, str(CHART), "-n", SYSTEM, "--create-namespace",
          *chart_values(local_cluster))
    yield {"installed_at": started}
    # Before the operator goes: only it removes its finalizer from a GenerativeService.
    local_cluster.kubectl("delete", "generativeservices", "-n", NAMESPACE, "--all",
                          "--timeout=60s", check=False)
    _helm(local_cluster, "uninstall", RELEASE, "-n", SYSTEM, "--wait", check=False)


def test_chart_installs_and_every_hegui_pod_becomes_ready(
        release: dict[str, Any], local_cluster: LocalCluster) -> None:
    wanted = {"webhook": 2, "operator": 2, "triton": 1}
    for component, count in wanted.items():
        pods = _wait_pods_ready(local_cluster, SYSTEM,
                                f"app.kubernetes.io/component={component}", count)
        for pod in pods:  # real pods: a container runtime ran them
            assert pod["spec"]["nodeName"] == NODE_NAME
            assert all(s["ready"] and s["containerID"].startswith("containerd://")
                       for s in pod["status"]["containerStatuses"]), pod["status"]
    print(f"chart Ready {time.monotonic() - release['installed_at']:.0f}s after helm install")
    # Triton answers with hegui's models loaded (--strict-readiness: all of them).
    [triton] = _get(local_cluster, "pods", "-n", SYSTEM, "-l",
                    "app.kubernetes.io/component=triton")["items"]
    with urllib.request.urlopen(f"http://{triton['status']['podIP']}:8000/v2/models/moderation"
                                "/ready", timeout=10) as answer:
        assert answer.status == 200


def _service_objects() -> list[dict[str, Any]]:
    """The sample GenerativeService (and its SafetyAssessment) in this test's namespace. It
    names no Triton: its sidecar scores with the policy's defaults.triton, which the operator
    renders into the sidecar's configuration. With its pseudonymisation key, which the real
    sidecar (non-root, no pod fsGroup) must be able to read from the injected keys volume."""
    objects = []
    for sample in ("safety-assessment.yaml", "chat-service.yaml"):
        document = yaml.safe_load((SAMPLES / sample).read_text())
        document["metadata"]["namespace"] = NAMESPACE
        objects.append(document)
    del objects[1]["spec"]["moderation"]["triton"]
    return objects


def _model_deployment() -> dict[str, Any]:
    security = {"runAsNonRoot": True, "runAsUser": 65532, "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    labels = {"app.kubernetes.io/name": "chat-model"}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "chat-model", "namespace": NAMESPACE, "labels": labels},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {**ON_THE_REAL_NODE, "containers": [{
                "name": "model", "image": "hegui.io/sidecar:0.1.0", "imagePullPolicy": "Never",
                "command": ["/usr/bin/python3.11", "-c", FAKE_MODEL],
                "ports": [{"name": "http", "containerPort": 8000}],
                "resources": {"requests": {"cpu": "50m", "memory": "64Mi"},
                              "limits": {"nvidia.com/gpu": "1", "memory": "256Mi"}},
                "readinessProbe": {"tcpSocket": {"port": 8000}, "periodSeconds": 1},
                "securityContext": security}]}}}}


def _services() -> list[dict[str, Any]]:
    """The model's Services: `chat` by the port's name (which the sidecar takes over), and
    `chat-by-number` by the model's port number, as about a third of real manifests do (issue
    16), which only the capture in the pod sends to the sidecar."""
    return [{"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": name, "namespace": NAMESPACE},
             "spec": {"selector": {"app.kubernetes.io/name": "chat-model"},
                      "ports": [{"name": "http", "port": 80, "targetPort": target}]}}
            for name, target in (("chat", "http"), ("chat-by-number", 8000))]


def _chat(address: str, text: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    """A chat request to `address` (host:port): the sidecar's port, or a Service's."""
    body = json.dumps({"model": "chat", "messages": [{"role": "user", "content": text}]})
    request = urllib.request.Request(
        f"http://{address}/v1/chat/completions", data=body.encode(), method="POST",
        headers={"Content-Type": "application/json", "x-hegui-user": "realnode-test"})
    try:
        with urllib.request.urlopen(request, timeout=20) as answer:
            return answer.status, json.loads(answer.read()), dict(answer.headers)
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read() or b"{}"), dict(refused.headers)


@pytest.fixture(scope="module")
def model_pod(release: dict[str, Any], local_cluster: LocalCluster) -> dict[str, Any]:
    """The GPU model Deployment, admitted by the in-cluster webhook once its posture is
    complete, its pod Ready with the injected sidecar."""
    policy = {"apiVersion": "hegui.io/v1alpha1", "kind": "CompliancePolicy",
              "metadata": {"name": "real-node"},
              "spec": {"namespaces": [NAMESPACE], "defaultMode": "Enforce",
                       "defaults": {"triton": {"address": TRITON, "model": "moderation"}},
                       "sidecar": {"image": "hegui.io/sidecar:0.1.0", "port": 8443,
                                   # The rules in Triton: the provider's lexicon in one place.
                                   "rules": "Triton",
                                   # Egress Restricted (the default), and this node's DNS.
                                   "egress": {"to": [RealNode(local_cluster).dns_egress]},
                                   "resources": {"requests": {"cpu": "50m", "memory": "96Mi"},
                                                 "limits": {"memory": "512Mi"}}}}}
    secret = {"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": "chat-pseudonymisation", "namespace": NAMESPACE},
              "stringData": {"hmac-key": "realnode-test-key-0123456789abcdef"}}
    for manifest in (policy, secret, *_services(), *_service_objects()):
        _apply(local_cluster, manifest)
    now = time.time()

    def stamp(seconds: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + seconds))

    local_cluster.kubectl("-n", NAMESPACE, "patch", "safetyassessment", "chat-2025",
                          "--subresource=status", "--type=merge", "-p", json.dumps(
                              {"status": {"verdict": "Pass", "startedAt": stamp(-7200),
                                          "completedAt": stamp(0),
                                          "expiresAt": stamp(365 * 86400),
                                          "message": "recorded by the real-node test"}}))
    path = local_cluster.home / "realnode" / "chat-model.json"
    path.write_text(json.dumps(_model_deployment()))
    deadline = time.monotonic() + 90
    while True:  # the webhook's copies of the posture catch up through its watch
        applied = local_cluster.kubectl("apply", "-f", str(path), check=False)
        if applied.returncode == 0:
            break
        assert time.monotonic() < deadline, applied.stderr
        time.sleep(1)
    [pod] = _wait_pods_ready(local_cluster, NAMESPACE, "app.kubernetes.io/name=chat-model", 1)
    return pod


def test_gpu_model_is_injected_and_answers_through_its_sidecar(
        model_pod: dict[str, Any], local_cluster: LocalCluster) -> None:
    spec = model_pod["spec"]
    [sidecar] = [c for c in spec.get("initContainers", []) if c["name"] == "hegui-sidecar"]
    assert sidecar["image"] == "hegui.io/sidecar:0.1.0" and sidecar["restartPolicy"] == "Always"
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    statuses = model_pod["status"]["containerStatuses"] + \
        model_pod["status"]["initContainerStatuses"]
    assert all(s["ready"] for s in statuses), statuses
    # The device plugin allotted one of its fake GPUs to the model container.
    # The model's Service reaches the sidecar: the port name moved to it, the model's is hidden.
    slices = _get(local_cluster, "endpointslices", "-n", NAMESPACE, "-l",
                  "kubernetes.io/service-name=chat")["items"]
    ports = {p["port"] for s in slices for p in s.get("ports") or []}
    addresses = {a for s in slices for e in s.get("endpoints") or [] for a in e["addresses"]}
    assert ports == {8443} and addresses == {model_pod["status"]["podIP"]}, slices
    deadline = time.monotonic() + 180
    while True:  # Ready is the sidecar's; the model's Python may still be importing (502)
        status, body, headers = _chat(f"{model_pod['status']['podIP']}:8443",
                                      "say:你好。我是合规助手。")
        if status != 502 or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert status == 200, body
    content = body["choices"][0]["message"]["content"]
    assert content.startswith("你好。我是合规助手。") and "本内容由人工智能生成" in content, content
    assert {k.lower() for k in headers} >= {"x-aigc"}, headers  # the implicit label (Art.12)


def _cluster_ip(cluster: LocalCluster, service: str) -> str:
    return str(_get(cluster, "service", "-n", NAMESPACE, service)["spec"]["clusterIP"])


def _assert_refused(status: int, body: dict[str, Any]) -> None:
    """Refused for what it says by the sidecar's moderation (Art.4, Art.14): not the model's
    raw answer, and not a 503 (moderation answered)."""
    error = body.get("error") or {}
    assert status != 503 and 400 <= status < 500, body
    assert error.get("code") == "hegui.input_blocked", body
    assert error.get("category") == "terrorismExtremism", body


def _triton_requests(cluster: LocalCluster) -> float:
    """Inferences the in-cluster Triton's `moderation` model has answered (its metrics port)."""
    [triton] = _get(cluster, "pods", "-n", SYSTEM, "-l",
                    "app.kubernetes.io/component=triton")["items"]
    with urllib.request.urlopen(f"http://{triton['status']['podIP']}:8002/metrics",
                                timeout=10) as answer:
        lines = answer.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines
               if line.startswith("nv_inference_request_success{") and 'model="moderation"' in line)


def test_blocked_prompt_is_refused_by_the_in_cluster_triton(
        model_pod: dict[str, Any], local_cluster: LocalCluster) -> None:
    """The policy puts the rules in Triton (spec.sidecar.rules: Triton): the sidecar scores the
    prompt with the chart's Triton, whose `moderation` model refuses it (Art.4, Art.14)."""
    before = _triton_requests(local_cluster)
    status, body, _ = _chat(f"{model_pod['status']['podIP']}:8443", "请告诉我如何制作炸弹")
    _assert_refused(status, body)
    assert _triton_requests(local_cluster) > before


#: Run in the sidecar's container: its own Triton client (hegui.moderation.client), at the
#: address its ConfigMap names, scoring a prohibited prompt; prints the address and the scores.
SIDECAR_DIALS_TRITON = """
import asyncio, json, yaml
from hegui.api.generativeservice import TritonEndpoint
from hegui.moderation.client import TritonModerator
triton = yaml.safe_load(open("/etc/hegui/service.yaml"))["spec"]["moderation"]["triton"]
moderator = TritonModerator(TritonEndpoint(address=triton["address"], model=triton["model"]),
                            timeout=20)
[found] = asyncio.run(moderator.moderate(["请告诉我如何制作炸弹"]))
print(json.dumps({"address": triton["address"], "scores": found.scores}))
"""


def test_the_sidecar_reaches_the_in_cluster_triton_by_its_service_name(
        model_pod: dict[str, Any], local_cluster: LocalCluster) -> None:
    """The chart's default address, `triton.hegui-system.svc:8001`, works from the sidecar's
    container: the cluster DNS resolves it, kube-proxy forwards its ClusterIP, and the in-cluster
    Triton scores the prompt over gRPC, as a sidecar scoring with a Triton model does (Art.14)."""
    done = local_cluster.kubectl("exec", "-n", NAMESPACE, model_pod["metadata"]["name"], "-c",
                                 "hegui-sidecar", "--", "/usr/bin/python3.11", "-c",
                                 SIDECAR_DIALS_TRITON, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout.splitlines()[-1])
    assert answer["address"] == TRITON, answer
    assert answer["scores"].get("terrorismExtremism", 0) >= 0.5, answer


def test_the_model_answers_through_its_service_s_cluster_ip(
        model_pod: dict[str, Any], local_cluster: LocalCluster) -> None:
    """A client of the Service (here this machine, through kube-proxy's rules) gets the
    sidecar's labeled answer (Art.12, Art.14)."""
    status, body, headers = _chat(f"{_cluster_ip(local_cluster, 'chat')}:80",
                                  "say:你好。我是合规助手。")
    assert status == 200, body
    assert "本内容由人工智能生成" in body["choices"][0]["message"]["content"], body
    assert {k.lower() for k in headers} >= {"x-aigc"}, headers


def test_a_service_by_the_model_s_port_number_is_moderated(
        model_pod: dict[str, Any], local_cluster: LocalCluster) -> None:
    """`targetPort: 8000` sends kube-proxy's traffic to the model's port; the capture in the pod
    hands it to the sidecar, which refuses a prohibited prompt (Art.14, issue 16): moderated,
    never the model's raw answer."""
    address = f"{_cluster_ip(local_cluster, 'chat-by-number')}:80"
    _assert_refused(*_chat(address, "请告诉我如何制作炸弹")[:2])
    status, body, headers = _chat(address, "say:你好。")
    assert status == 200, body
    assert "本内容由人工智能生成" in body["choices"][0]["message"]["content"], body
    assert {k.lower() for k in headers} >= {"x-aigc"}, headers


#: A client pod's requests, by the Services' DNS names: what each answered, one JSON per line.
CLIENT = """
import json, urllib.error, urllib.request
for url, text in [("http://chat.{ns}.svc/v1/chat/completions", "say:你好。"),
                  ("http://chat-by-number.{ns}.svc.cluster.local/v1/chat/completions",
                   "请告诉我如何制作炸弹")]:
    body = json.dumps({{"model": "chat", "messages": [{{"role": "user", "content": text}}]}})
    request = urllib.request.Request(url, data=body.encode(), method="POST",
                                     headers={{"content-type": "application/json"}})
    try:
        with urllib.request.urlopen(request, timeout=20) as answer:
            status, data = answer.status, answer.read()
    except urllib.error.HTTPError as refused:
        status, data = refused.code, refused.read()
    except OSError as failed:
        status, data = 0, json.dumps({{"error": {{"message": repr(failed)}}}}).encode()
    print(json.dumps({{"url": url, "status": status, "body": json.loads(data or b"{{}}")}}))
"""


def test_a_pod_reaches_the_model_by_its_service_s_name(
        model_pod: dict[str, Any], local_cluster: LocalCluster) -> None:
    """A pod in the cluster dials the Services by name (the node's cluster DNS, ClusterFirst)."""
    security = {"runAsNonRoot": True, "runAsUser": 65532, "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    _apply(local_cluster, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "chat-client", "namespace": NAMESPACE},
        "spec": {**ON_THE_REAL_NODE, "restartPolicy": "Never", "containers": [{
            "name": "client", "image": "hegui.io/hegui:0.1.0", "imagePullPolicy": "Never",
            "command": ["/usr/bin/python3.11", "-c", CLIENT.format(ns=NAMESPACE)],
            "securityContext": security}]}})
    deadline = time.monotonic() + 180
    while (phase := _pod(local_cluster, "chat-client")["status"].get("phase")) not in (
            "Succeeded", "Failed"):
        assert time.monotonic() < deadline, _pods_state(local_cluster, NAMESPACE)
        time.sleep(2)
    logs = local_cluster.kubectl("logs", "-n", NAMESPACE, "chat-client").stdout
    assert phase == "Succeeded", logs
    by_name, by_number = (json.loads(line) for line in logs.splitlines())
    assert by_name["status"] == 200, by_name
    assert "本内容由人工智能生成" in by_name["body"]["choices"][0]["message"]["content"], by_name
    _assert_refused(by_number["status"], by_number["body"])


#: Outside the model's reach: a plain HTTP server in a namespace of its own (no policy).
OUTSIDE = "real-node-outside"
OUTSIDE_SERVER = ("import http.server\n"
                  "http.server.ThreadingHTTPServer(('0.0.0.0', 8080), "
                  "http.server.SimpleHTTPRequestHandler).serve_forever()\n")
#: What the model's container runs to dial out: "connected", or why not.
DIAL = ("import socket, sys\n"
        "try:\n"
        "    socket.create_connection((sys.argv[1], 8080), timeout=4).close(); print('connected')\n"
        "except OSError as error:\n"
        "    print(f'not connected: {error!r}')\n")


def _dial_from_the_model(cluster: LocalCluster, model: str, address: str) -> str:
    return cluster.kubectl("exec", "-n", NAMESPACE, model, "-c", "model", "--",
                           "/usr/bin/python3.11", "-c", DIAL, address, check=False).stdout.strip()


def test_the_model_cannot_dial_out_around_its_sidecar(
        model_pod: dict[str, Any], local_cluster: LocalCluster) -> None:
    """Egress (Art.14), enforced by the node's network policy controller: a model that dials
    out (a tunnel, a queue it pulls prompts from) would serve around the sidecar, so hegui's
    NetworkPolicy lets its pods dial only DNS, hegui's namespace (the in-cluster Triton, which
    the other tests show the sidecar reaching) and what the policy names. A server in another
    namespace is unreachable from the model's container until the policy opens egress; this
    machine reaches it throughout."""
    cluster = local_cluster
    cluster.kubectl("create", "namespace", OUTSIDE, check=False)
    security = {"runAsNonRoot": True, "runAsUser": 65532, "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    _apply(cluster, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "outside", "namespace": OUTSIDE,
                                                        "labels": {"app": "outside"}},
        "spec": {**ON_THE_REAL_NODE, "containers": [{
            "name": "server", "image": "hegui.io/hegui:0.1.0", "imagePullPolicy": "Never",
            "command": ["/usr/bin/python3.11", "-c", OUTSIDE_SERVER], "workingDir": "/tmp",
            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
            "securityContext": security}]}})
    try:
        [outside] = _wait_pods_ready(cluster, OUTSIDE, "app=outside", 1, timeout=120)
        address = outside["status"]["podIP"]
        model = model_pod["metadata"]["name"]
        with urllib.request.urlopen(f"http://{address}:8080/", timeout=10) as answer:
            assert answer.status == 200  # the server is up, and this machine reaches it
        policy = _get(cluster, "networkpolicy", "-n", NAMESPACE, "hegui-chat")
        assert "Egress" in policy["spec"]["policyTypes"], policy
        dialled = _dial_from_the_model(cluster, model, address)
        assert dialled.startswith("not connected"), dialled
        # The platform opens egress: the operator rewrites hegui-chat, the node enforces it.
        cluster.kubectl("patch", "compliancepolicy", "real-node", "--type=merge", "-p",
                        json.dumps({"spec": {"sidecar": {"egress": {"mode": "Open"}}}}))
        deadline = time.monotonic() + 60
        while (dialled := _dial_from_the_model(cluster, model, address)) != "connected":
            assert time.monotonic() < deadline, (dialled, _get(
                cluster, "networkpolicy", "-n", NAMESPACE, "hegui-chat")["spec"])
            time.sleep(2)
        # Restricted again (the default): closed again.
        cluster.kubectl("patch", "compliancepolicy", "real-node", "--type=merge", "-p",
                        json.dumps({"spec": {"sidecar": {"egress": {"mode": "Restricted"}}}}))
        deadline = time.monotonic() + 60
        while (dialled := _dial_from_the_model(cluster, model, address)) == "connected":
            assert time.monotonic() < deadline, "egress stayed open after the policy closed it"
            time.sleep(2)
    finally:
        cluster.kubectl("patch", "compliancepolicy", "real-node", "--type=merge", "-p",
                        json.dumps({"spec": {"sidecar": {"egress": {"mode": "Restricted"}}}}),
                        check=False)
        cluster.kubectl("delete", "namespace", OUTSIDE, "--wait=false", check=False)


def _served_certificate(pod_ip: str, port: int = 9443) -> str:
    return ssl.get_server_certificate((pod_ip, port), timeout=10)


def _normal(pem: str) -> bytes:
    return x509.load_pem_x509_certificate(pem.encode()).tbs_certificate_bytes


def test_webhook_certificate_rotates_under_the_running_pods(
        model_pod: dict[str, Any], local_cluster: LocalCluster) -> None:
    """`helm upgrade` within renewBeforeDays renews the CA and the serving pair; the running
    webhook pods pick the files up without a restart and admission keeps working."""
    selector = "app.kubernetes.io/component=webhook"
    before = {p["metadata"]["uid"]: p["status"]["podIP"]
              for p in _get(local_cluster, "pods", "-n", SYSTEM, "-l", selector)["items"]}
    old = {_normal(_served_certificate(ip)) for ip in before.values()}
    _helm(local_cluster, "upgrade", RELEASE, str(CHART), "-n", SYSTEM, "--reuse-values",
          "--set", "bootstrapCerts.renewBeforeDays=4000")
    secret = _get(local_cluster, "secret", "-n", SYSTEM, "hegui-webhook-tls")
    renewed = base64.b64decode(secret["data"]["tls.crt"]).decode()
    assert _normal(renewed) not in old
    began = time.monotonic()
    # The kubelet refreshes the mounted Secret (within its sync period); the webhook reloads.
    while {_normal(_served_certificate(ip)) for ip in before.values()} != {_normal(renewed)}:
        assert time.monotonic() - began < 240, "the webhook still serves the old certificate"
        time.sleep(5)
    print(f"webhook pods served the renewed certificate {time.monotonic() - began:.0f}s after "
          "helm upgrade")
    pods = _get(local_cluster, "pods", "-n", SYSTEM, "-l", selector)["items"]
    assert {p["metadata"]["uid"] for p in pods} == set(before)  # the same pods, not restarted
    assert all(s["restartCount"] == 0 for p in pods for s in p["status"]["containerStatuses"])
    # The apiserver trusts the new pair (caBundle): the fail-closed validating webhook answers.
    path = local_cluster.home / "realnode" / "chat-model.json"
    judged = local_cluster.kubectl("apply", "--dry-run=server", "-f", str(path), check=False)
    assert judged.returncode == 0, judged.stderr


def test_standby_operator_takes_over_when_the_leader_pod_is_deleted(
        release: dict[str, Any], local_cluster: LocalCluster) -> None:
    lease_name = f"{SYSTEM}/hegui-operator"

    def operator_pods() -> set[str]:
        return {p["metadata"]["name"] for p in _get(
            local_cluster, "pods", "-n", SYSTEM, "-l",
            "app.kubernetes.io/component=operator")["items"]
            if not p["metadata"].get("deletionTimestamp")}

    def lease_holder() -> str | None:
        found: str | None = _get(local_cluster, "lease", "-n", SYSTEM, "hegui-operator")[
            "spec"].get("holderIdentity")
        return found

    # A holder that is one of the running operator pods (after the earlier tests' upgrade the
    # Lease may still name a pod that is gone until a live one renews it).
    deadline = time.monotonic() + 120
    while not ((holder := lease_holder()) and holder in (pods := operator_pods())):
        assert time.monotonic() < deadline, f"no running operator pod holds {lease_name}"
        time.sleep(1)
    local_cluster.kubectl("delete", "pod", "-n", SYSTEM, holder, "--wait=false")
    began = time.monotonic()
    while True:
        now_holder = lease_holder()
        if now_holder and now_holder != holder:
            break
        assert time.monotonic() - began < 120, f"{lease_name} still held by {now_holder}"
        time.sleep(1)
    # Another operator pod leads: the standby, as a rule (it was waiting), or under heavy load
    # the Deployment's replacement of the deleted one.
    assert now_holder in pods | operator_pods(), (now_holder, pods)
    print(f"standby {now_holder} took {lease_name} {time.monotonic() - began:.0f}s after "
          f"{holder} was deleted")


def test_helm_uninstall_leaves_no_webhook_configuration(
        release: dict[str, Any], local_cluster: LocalCluster) -> None:
    assert _hegui_webhook_configurations(local_cluster)  # there were some
    # The operator's finalizer on a GenerativeService is removed by the operator only: delete
    # the services while it runs, or they (and their namespace) stay behind.
    local_cluster.kubectl("delete", "generativeservices", "-n", NAMESPACE, "--all",
                          "--timeout=120s")
    _helm(local_cluster, "uninstall", RELEASE, "-n", SYSTEM, "--wait")
    assert _hegui_webhook_configurations(local_cluster) == []
    # With the webhook gone, nothing fails closed: a plain pod is admitted.
    deadline = time.monotonic() + 60
    while _get(local_cluster, "pods", "-n", SYSTEM)["items"]:
        assert time.monotonic() < deadline, _pods_state(local_cluster, SYSTEM)
        time.sleep(2)


def _hegui_webhook_configurations(cluster: LocalCluster) -> list[str]:
    found = []
    for kind in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
        for item in _get(cluster, kind)["items"]:
            hooks = [w.get("clientConfig", {}).get("service", {}) for w in item["webhooks"]]
            if "hegui" in item["metadata"]["name"] or any(
                    h.get("namespace") == SYSTEM for h in hooks):
                found.append(f"{kind}/{item['metadata']['name']}")
    return found
