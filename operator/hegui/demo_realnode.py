"""`hegui demo` on real pods (issue 18): hegui's chart on the local cluster's real node, and the
demo's second half served by a real model pod there.

- the real node (hegui.localcluster.realnode: kubelet, containerd, runc, two fake GPUs) joins
  the cluster beside kwok's nodes, with hegui's images (images/build.py) imported;
- `helm install` of charts/hegui with tests/integration/realnode-values.yaml: the webhook, the
  operator and Triton run as pods on the real node; the first half's Deployment is admitted by
  that webhook and its pods run on kwok's GPU nodes (scale);
- a GPU model Deployment on the real node (the stand-in model of hegui.sidecar.testing, from the
  sidecar image): the in-cluster webhook injects the sidecar, the in-cluster operator renders its
  ConfigMap and the kubelet projects it, suspension notice included (Art.21);
- Prometheus (Debian's binary) runs on this machine, listening on the node's bridge gateway,
  where pods reach the host: it scrapes the sidecar at its pod's IP and the in-cluster operator
  reads it (CompliancePolicy spec.prometheus.url).

The node runs kube-proxy and CoreDNS (realnode.py): the demo's requests go to the model's
Service at its ClusterIP, and the sidecar dials Triton by the chart's default address, its
Service's name `triton.hegui-system.svc`, as the sample service and policy name it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from hegui.admission.injection import sidecar_config_map
from hegui.localcluster.cluster import _CHECKOUT, ClusterError, LocalCluster
from hegui.localcluster.prometheus import LocalPrometheus
from hegui.localcluster.realnode import (
    BINARIES,
    IMAGES,
    NODE_NAME,
    TAINT,
    RealNode,
    RealNodeError,
    build_images,
    chart_values,
    missing_host_binaries,
)

NAMESPACE = "hegui-demo"
SYSTEM = "hegui-system"
RELEASE = "hegui"
CHART = _CHECKOUT / "charts" / "hegui"
SIDECAR_IMAGE = "hegui.io/sidecar:0.1.0"
#: The sidecar's ConfigMap for the sample service `chat`, which the operator renders.
CONFIG_MAP = sidecar_config_map("chat")
#: The demo's model on the real node, beside the sample's replicas on kwok's nodes.
DEPLOYMENT = "chat-model-real"
ON_THE_REAL_NODE: dict[str, Any] = {
    "nodeSelector": {"kubernetes.io/hostname": NODE_NAME},
    "tolerations": [{"key": TAINT, "operator": "Exists", "effect": "NoSchedule"}]}
#: The stand-in model (OpenAI-compatible; answers what it is told to `say:`). It fails every
#: request while /tmp/mode says "error": the demo writes that file with `kubectl exec`, as a bad
#: release would make the model fail.
MODEL = (
    "from aiohttp import web\n"
    "from hegui.sidecar.testing import FakeModel\n"
    "class Model(FakeModel):\n"
    "    async def handle(self, request):\n"
    "        try:\n"
    "            with open('/tmp/mode') as f:\n"
    "                self.mode = f.read().strip() or 'normal'\n"
    "        except OSError:\n"
    "            self.mode = 'normal'\n"
    "        return await super().handle(request)\n"
    "web.run_app(Model().app(), host='127.0.0.1', port=8000, print=None)\n")


def _step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def blocker(cluster: LocalCluster) -> str | None:
    """Why the real node cannot run on this machine, with the fix; None when it can."""
    if os.geteuid() != 0:
        return ("the real node needs root (containerd, iptables on its bridge, the kubelet's "
                "cgroups): run `make demo` as root")
    missing = missing_host_binaries() + [
        str(path) for path in (*map(cluster.binary, BINARIES), cluster.binary("helm"))
        if not os.access(path, os.X_OK)]
    if shutil.which("mmdebstrap") is None:
        missing.append("mmdebstrap")
    if missing:
        return (f"missing {', '.join(missing)}: run dev/bootstrap (Debian's containerd, runc, "
                "containernetworking-plugins and mmdebstrap; kubelet, kube-proxy, coredns and "
                "helm from dev/controlplane/build)")
    if other := RealNode(cluster).other_real_node():
        return (f"another local cluster's real node runs on this machine (kubelet --root-dir="
                f"{other}), and one machine runs one at a time: stop it with `hegui cluster "
                "down` under that cluster's HEGUI_CACHE_DIR and HEGUI_CLUSTER_PORT_BASE")
    return None


class Platform:
    """The real node and hegui's chart on it, started and stopped together."""

    def __init__(self, cluster: LocalCluster, directory: Path) -> None:
        self.cluster, self.directory = cluster, directory
        self.node = RealNode(cluster)

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(self.cluster.binary("helm")), "--kubeconfig",
                               str(self.cluster.kubeconfig), *args],
                              capture_output=True, text=True, timeout=600, check=False)
        if check and done.returncode != 0:
            raise ClusterError(f"helm {' '.join(args)}:\n{done.stdout}{done.stderr}")
        return done

    def up(self) -> None:
        _step(f"adding the real node {NODE_NAME} beside kwok's GPU nodes: a kubelet, "
              "containerd and runc, two nvidia.com/gpu devices from a device plugin; hegui's "
              "images (built here by images/build.py) imported")
        began = time.monotonic()
        self.node.up(build_images(self.cluster, list(IMAGES)), timeout=300)
        print(f"node {NODE_NAME} Ready in {time.monotonic() - began:.0f}s")
        print(self.cluster.kubectl("get", "nodes", "-L", "nvidia.com/gpu.present").stdout)

        _step("helm install hegui: the admission webhook, the operator and Triton with hegui's "
              "moderation models run as pods on the real node")
        self.helm("uninstall", RELEASE, "-n", SYSTEM, "--wait", check=False)  # an earlier run's
        began = time.monotonic()
        # The CRDs are the demo's (applied above, from this checkout), not the release's.
        self.helm("install", RELEASE, str(CHART), "-n", SYSTEM, "--create-namespace",
                  *chart_values(self.cluster), "--set", "crds.enabled=false",
                  "--set", "operator.reconcileSeconds=2")
        for component, count in {"webhook": 2, "operator": 2, "triton": 1}.items():
            _wait_ready(self.cluster, SYSTEM, f"app.kubernetes.io/component={component}", count,
                        timeout=300)
        print(f"every hegui pod Ready {time.monotonic() - began:.0f}s after helm install")
        print(self.cluster.kubectl("get", "pods", "-n", SYSTEM, "-o", "wide").stdout)

    def point_policy_at_the_pods(self) -> Path:
        """The policy's sidecar image (the one imported here); returns the sample
        GenerativeService, whose Triton is the chart's by its Service's name, for the story."""
        print(f"\nthe policy's sidecar image is {SIDECAR_IMAGE} (imported into the node's "
              "containerd); its Triton is the chart's, triton.hegui-system.svc:8001 (the "
              "node's cluster DNS and kube-proxy)")
        # Egress stays Restricted (the default); this node's DNS is CoreDNS on its bridge.
        self.cluster.kubectl("patch", "compliancepolicy", "default", "--type=merge", "-p",
                             json.dumps({"spec": {"sidecar": {
                                 "image": SIDECAR_IMAGE,
                                 "egress": {"to": [self.node.dns_egress]}}}}))
        service = yaml.safe_load((_CHECKOUT / "samples" / "compliance" / "chat-service.yaml")
                                 .read_text())
        path = self.directory / "chat-service.yaml"
        path.write_text(json.dumps(service, default=str))  # YAML dates as ISO strings
        return path

    def down(self) -> None:
        _step("removing hegui (helm uninstall) and stopping the real node")
        began = time.monotonic()
        self.cluster.kubectl("-n", NAMESPACE, "delete", "deployment", DEPLOYMENT,
                             "--ignore-not-found", "--wait=false", check=False)
        # Without --wait: the webhook configurations go at once, and the node's teardown below
        # deletes the pods with a short grace period.
        done = self.helm("uninstall", RELEASE, "-n", SYSTEM, check=False)
        print(done.stdout.strip() if done.returncode == 0 else "(hegui was not installed)")
        stopped = self.node.down()
        self.cluster.kubectl("delete", "node", NODE_NAME, "--wait=false", check=False)
        print(f"stopped {', '.join(stopped) or 'nothing'} of {NODE_NAME} in "
              f"{time.monotonic() - began:.0f}s")


class BridgePrometheus(LocalPrometheus):
    """A LocalPrometheus listening on the real node's bridge gateway (this machine as the pods
    see it) instead of loopback, so that the in-cluster operator can query it."""

    def __init__(self, targets: list[str], host: str, directory: Path) -> None:
        super().__init__(targets, directory=directory)
        self.host = host

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self, binary: str, config_file: Path) -> list[str]:
        return [part.replace(f"127.0.0.1:{self.port}", f"{self.host}:{self.port}")
                for part in super().command(binary, config_file)]


class PodServing:
    """The demo's second half on the real node: the model pod with its injected sidecar, and
    the Prometheus scraping it. The same interface as demo_serving.Serving."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.cluster = platform.cluster
        self.pod: dict[str, Any] = {}
        self.url = ""
        self.prometheus: LocalPrometheus | None = None

    @property
    def prometheus_url(self) -> str:
        assert self.prometheus is not None
        return self.prometheus.url

    def start(self) -> None:
        cluster = self.cluster
        # The pseudonymisation key (Art.11) the service's posture names.
        secret = {"apiVersion": "v1", "kind": "Secret",
                  "metadata": {"name": "chat-pseudonymisation", "namespace": NAMESPACE},
                  "stringData": {"hmac-key": secrets.token_hex(32)}}
        _apply(cluster, self.platform.directory, secret)
        # The sidecar reads its posture (service.yaml) at start, from the ConfigMap the in-cluster
        # operator renders; a pod started before that finds the optional volume empty, its
        # sidecar exits and the kubelet's back-off (10 s, 20 s, ... 160 s) delays it for minutes:
        # the likely cause of the 5 restarts seen under load average 9 (the sidecar exited within
        # seconds each time, far inside its startupProbe's 120 s; the kubelet's log shows it).
        began = time.monotonic()
        while cluster.kubectl("-n", NAMESPACE, "get", "configmap", CONFIG_MAP,
                              check=False).returncode != 0:
            if time.monotonic() - began > 180:
                raise RealNodeError(f"the in-cluster operator did not render {CONFIG_MAP} "
                                    "within 180s:\n" + cluster.kubectl(
                                        "-n", SYSTEM, "logs", "-l",
                                        "app.kubernetes.io/component=operator", "--tail=30",
                                        check=False).stdout)
            time.sleep(1)
        _step(f"a GPU model Deployment on the real node, {DEPLOYMENT} (the stand-in model "
              f"server, from {SIDECAR_IMAGE}): admitted and injected by the in-cluster webhook, "
              "a GPU from the device plugin, the sidecar in front of the model (Art.14)")
        print(_apply(cluster, self.platform.directory, _deployment()), end="")
        [self.pod] = _wait_ready(cluster, NAMESPACE, f"hegui.io/demo={DEPLOYMENT}", 1,
                                 timeout=240)
        ip = self.pod["status"]["podIP"]
        # The model's Service, as its clients reach it: the ClusterIP, through kube-proxy.
        print(_apply(cluster, self.platform.directory, _service()), end="")
        cluster_ip = json.loads(cluster.kubectl("-n", NAMESPACE, "get", "service", DEPLOYMENT,
                                                "-o", "json").stdout)["spec"]["clusterIP"]
        self.url = f"http://{cluster_ip}"
        print(cluster.kubectl("-n", NAMESPACE, "get", "pods", "-l", f"hegui.io/demo={DEPLOYMENT}",
                              "-o", "custom-columns=POD:.metadata.name,NODE:.spec.nodeName,"
                              "IP:.status.podIP,INIT:.spec.initContainers[*].name,"
                              "CONTAINERS:.spec.containers[*].name,"
                              "GPU:.spec.containers[0].resources.limits.nvidia\\.com/gpu,"
                              "READY:.status.containerStatuses[*].ready").stdout)
        deadline = time.monotonic() + 120
        while self.chat("say:ping")[0] in (502, 599) and time.monotonic() < deadline:
            time.sleep(1)  # Ready is the sidecar's; the model's Python may still be importing
        print(f"  hegui's sidecar behind Service {DEPLOYMENT} at {self.url} (its ClusterIP), "
              f"configured from ConfigMap {CONFIG_MAP}, which the kubelet projects into it")
        self.prometheus = BridgePrometheus([f"{ip}:8443"], self.platform.node.gateway,
                                           self.platform.directory / "prometheus")
        self.prometheus.start()
        self.prometheus.wait_for_targets()
        print(f"  Prometheus at {self.prometheus.url} (this machine, on the node's bridge), "
              "scraping the sidecar every second")

    def stop(self) -> None:
        if self.prometheus is not None:
            self.prometheus.stop()

    def set_model_mode(self, mode: str) -> None:
        """Make the model pod fail (`error`) or answer again (`normal`)."""
        name = self.pod["metadata"]["name"]
        self.cluster.kubectl("-n", NAMESPACE, "exec", name, "-c", "model", "--",
                             "/usr/bin/python3.11", "-c",
                             f"open('/tmp/mode', 'w').write({mode!r})")
        print(f"(kubectl exec {name} -c model: the model answers "
              f"{'503 to every request' if mode == 'error' else 'again'})")

    def operator_metrics(self, *names: str) -> str:
        """The leading operator pod's samples of these metrics, as Prometheus scrapes them."""
        try:
            holder = json.loads(self.cluster.kubectl(
                "-n", SYSTEM, "get", "lease", "hegui-operator", "-o", "json").stdout)[
                "spec"]["holderIdentity"]
            ip = json.loads(self.cluster.kubectl("-n", SYSTEM, "get", "pod", holder, "-o",
                                                 "json").stdout)["status"]["podIP"]
            with urllib.request.urlopen(f"http://{ip}:8080/metrics", timeout=5) as response:
                text = response.read().decode()
        except (OSError, KeyError, ClusterError) as error:
            return f"(operator metrics unavailable: {error})"
        return "\n".join(line for line in text.splitlines()
                         if line.startswith(names) and 'service="chat"' in line)

    def chat(self, text: str, user: str = "demo-user") -> tuple[int, dict[str, Any],
                                                                 dict[str, str]]:
        body = json.dumps({"model": "chat", "messages": [{"role": "user", "content": text}]})
        request = urllib.request.Request(  # noqa: S310 - the pod's sidecar
            f"{self.url}/v1/chat/completions", data=body.encode(), method="POST",
            headers={"Content-Type": "application/json", "x-hegui-user": user})
        try:
            with urllib.request.urlopen(request, timeout=20) as response:  # noqa: S310
                return (int(response.status), json.loads(response.read()),
                        dict(response.headers))
        except urllib.error.HTTPError as refused:
            with contextlib.suppress(ValueError):
                return int(refused.code), json.loads(refused.read() or b"{}"), \
                    dict(refused.headers)
            return int(refused.code), {}, dict(refused.headers)
        except OSError:
            return 599, {}, {}  # the pod is not reachable (yet)


def _deployment() -> dict[str, Any]:
    security = {"runAsNonRoot": True, "runAsUser": 65532, "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    labels = {"app.kubernetes.io/name": "chat-model", "hegui.io/demo": DEPLOYMENT}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": DEPLOYMENT, "namespace": NAMESPACE, "labels": labels},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {**ON_THE_REAL_NODE,
                     "volumes": [{"name": "tmp", "emptyDir": {}}],
                     "containers": [{
                         "name": "model", "image": SIDECAR_IMAGE, "imagePullPolicy": "Never",
                         "command": ["/usr/bin/python3.11", "-c", MODEL],
                         "ports": [{"name": "http", "containerPort": 8000}],
                         "resources": {"requests": {"cpu": "50m", "memory": "64Mi"},
                                       "limits": {"nvidia.com/gpu": "1", "memory": "256Mi"}},
                         "readinessProbe": {"tcpSocket": {"port": 8000}, "periodSeconds": 1},
                         "securityContext": security,
                         # the container's own /tmp (an emptyDir): where /tmp/mode is written
                         "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}]}}}}  # noqa: S108


def _service() -> dict[str, Any]:
    """The model's Service by its port's name, which the injected sidecar takes over."""
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": DEPLOYMENT, "namespace": NAMESPACE},
            "spec": {"selector": {"hegui.io/demo": DEPLOYMENT},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}


def _apply(cluster: LocalCluster, directory: Path, manifest: dict[str, Any]) -> str:
    path = directory / f"{manifest['kind'].lower()}-{manifest['metadata']['name']}.json"
    path.write_text(json.dumps(manifest))
    deadline = time.monotonic() + 60
    while True:  # the webhook's copies of the posture catch up through its watch
        applied = cluster.kubectl("apply", "-f", str(path), check=False)
        if applied.returncode == 0:
            return applied.stdout
        if time.monotonic() > deadline:
            raise ClusterError(f"{path.name} was refused:\n{applied.stderr}")
        time.sleep(1)


def _pods(cluster: LocalCluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(cluster.kubectl(
        "get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def _wait_ready(cluster: LocalCluster, namespace: str, selector: str, count: int,
                timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        pods = _pods(cluster, namespace, selector)
        if len(pods) == count and all(
                any(c["type"] == "Ready" and c["status"] == "True"
                    for c in p["status"].get("conditions", [])) for p in pods):
            return pods
        if time.monotonic() > deadline:
            state = cluster.kubectl("get", "pods", "-n", namespace, "-o", "wide",
                                    check=False).stdout
            events = cluster.kubectl("get", "events", "-n", namespace,
                                     "--sort-by=.lastTimestamp", check=False).stdout[-3000:]
            # What the containers said, the last run of a restarted one included.
            logs = "".join(
                done.stdout[-3000:] + done.stderr[-500:] for done in (
                    cluster.kubectl("logs", "-n", namespace, "-l", selector, "--all-containers",
                                    "--prefix", "--tail=30", *previous, check=False)
                    for previous in ((), ("--previous",))))
            raise RealNodeError(f"pods {selector} in {namespace} not Ready within "
                                f"{timeout:.0f}s:\n{state}{events}\n{logs}")
        time.sleep(1)
