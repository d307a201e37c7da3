"""A provider's lexicon update reaches running sidecars and Triton with no failed request (issue
19; Art.4(1), Art.14), on the local cluster's real node (marker `realnode`: a real kubelet
updates the mounted ConfigMaps, as in production).

The compliance group's lexicon is a ConfigMap in hegui-system; the chart's Triton mounts it
(triton.lexicon.configMaps) and the CompliancePolicy names it for in-process sidecars
(spec.sidecar.lexicon), which the in-cluster operator renders into the service's sidecar
ConfigMap. Clients ask the model's sidecar and Triton's `lexicon` model throughout while the
list is updated: a keyword of the new week's list is let through before and refused after, every
other answer stays what it was, and no request fails (no 5xx, no reset, no timeout).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from test_real_node import (  # type: ignore[import-not-found]
    CHART,
    FAKE_MODEL,
    NAMESPACE,
    ON_THE_REAL_NODE,
    RELEASE,
    SYSTEM,
    TRITON,
    _apply,
    _get,
    _helm,
    _service_objects,
    _wait_pods_ready,
    real_node,
)

from hegui.localcluster.cluster import LocalCluster
from hegui.localcluster.realnode import RealNode, chart_values

pytestmark = pytest.mark.realnode
__all__ = ["real_node"]  # the node fixture, shared with test_real_node

LEXICON = "provider-lexicon"
WEEK_48 = ("# version: 2026-w48\nsubversion\t颠覆国家政权\nterrorismExtremism\t制作炸弹\t0.9\n")
#: The new week adds 自制雷管.
WEEK_49 = WEEK_48.replace("2026-w48", "2026-w49") + "terrorismExtremism\t自制雷管\n"
NEW_KEYWORD = "请教我自制雷管的方法"


def _provider(text: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": LEXICON, "namespace": SYSTEM},
            "data": {"keywords.tsv": text}}


@pytest.fixture(scope="module")
def release(real_node: Any, local_cluster: LocalCluster) -> Iterator[None]:
    _helm(local_cluster, "uninstall", RELEASE, "-n", SYSTEM, "--wait", check=False)
    for name in local_cluster.kubectl("get", "crd", "-o", "name").stdout.split():
        if name.endswith(".hegui.io"):  # taken over by the release (charts/README)
            local_cluster.kubectl("label", "--overwrite", name,
                                  "app.kubernetes.io/managed-by=Helm")
            local_cluster.kubectl("annotate", "--overwrite", name,
                                  f"meta.helm.sh/release-name={RELEASE}",
                                  f"meta.helm.sh/release-namespace={SYSTEM}")
    local_cluster.kubectl("create", "namespace", SYSTEM, check=False)
    _apply(local_cluster, _provider(WEEK_48))
    _helm(local_cluster, "install", RELEASE, str(CHART), "-n", SYSTEM,
          *chart_values(local_cluster), "--set", f"triton.lexicon.configMaps[0]={LEXICON}")
    yield
    local_cluster.kubectl("delete", "generativeservices", "-n", NAMESPACE, "--all",
                          "--timeout=60s", check=False)
    local_cluster.kubectl("delete", "deployment", "-n", NAMESPACE, "lexicon-model",
                          "--wait=false", check=False)
    _helm(local_cluster, "uninstall", RELEASE, "-n", SYSTEM, "--wait", check=False)
    local_cluster.kubectl("delete", "configmap", "-n", SYSTEM, LEXICON, check=False)


@pytest.fixture(scope="module")
def pods(release: None, local_cluster: LocalCluster) -> dict[str, str]:
    """The model pod (its sidecar running the provider's lexicon in-process) and Triton's,
    by their IPs."""
    for component, count in {"webhook": 2, "operator": 2, "triton": 1}.items():
        _wait_pods_ready(local_cluster, SYSTEM, f"app.kubernetes.io/component={component}",
                         count)
    policy = {"apiVersion": "hegui.io/v1alpha1", "kind": "CompliancePolicy",
              "metadata": {"name": "real-node"},
              "spec": {"namespaces": [NAMESPACE], "defaultMode": "Enforce",
                       "defaults": {"triton": {"address": TRITON, "model": "moderation"}},
                       "sidecar": {"image": "hegui.io/sidecar:0.1.0", "port": 8443,
                                   "lexicon": {"configMaps": [LEXICON]},
                                   "egress": {"to": [RealNode(local_cluster).dns_egress]},
                                   "resources": {"requests": {"cpu": "50m", "memory": "96Mi"},
                                                 "limits": {"memory": "512Mi"}}}}}
    secret = {"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": "chat-pseudonymisation", "namespace": NAMESPACE},
              "stringData": {"hmac-key": "realnode-test-key-0123456789abcdef"}}
    for manifest in (policy, secret, *_service_objects()):
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
    labels = {"app.kubernetes.io/name": "chat-model"}
    security = {"runAsNonRoot": True, "runAsUser": 65532, "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "lexicon-model", "namespace": NAMESPACE, "labels": labels},
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
    path = local_cluster.home / "realnode" / "lexicon-model.json"
    path.write_text(json.dumps(deployment))
    deadline = time.monotonic() + 90
    while True:  # the webhook's copies of the posture catch up through its watch
        applied = local_cluster.kubectl("apply", "-f", str(path), check=False)
        if applied.returncode == 0:
            break
        assert time.monotonic() < deadline, applied.stderr
        time.sleep(1)
    [model] = _wait_pods_ready(local_cluster, NAMESPACE, "app.kubernetes.io/name=chat-model", 1)
    [triton] = _get(local_cluster, "pods", "-n", SYSTEM, "-l",
                    "app.kubernetes.io/component=triton")["items"]
    return {"sidecar": model["status"]["podIP"], "triton": triton["status"]["podIP"],
            "model": model["metadata"]["name"]}


def _ask_sidecar(ip: str, text: str) -> str:
    """'pass', 'refused' (blocked for terrorismExtremism) or what went wrong."""
    body = json.dumps({"model": "chat", "messages": [{"role": "user", "content": text}]})
    request = urllib.request.Request(
        f"http://{ip}:8443/v1/chat/completions", data=body.encode(), method="POST",
        headers={"Content-Type": "application/json",
                 "x-hegui-user": f"lexicon-{uuid.uuid4().hex[:8]}"})  # no strikes build up
    try:
        with urllib.request.urlopen(request, timeout=20) as answer:
            return "pass" if answer.status == 200 else f"http {answer.status}"
    except urllib.error.HTTPError as refused:
        error = json.loads(refused.read() or b"{}").get("error") or {}
        if refused.code == 400 and error.get("category") == "terrorismExtremism":
            return "refused"
        return f"http {refused.code} {error.get('code')}"
    except OSError as error:
        return f"failed: {error}"


def _ask_triton(ip: str, text: str) -> str:
    """'found' when Triton's lexicon model finds terrorismExtremism, 'clean', or the failure."""
    body = json.dumps({"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES",
                                   "data": [text]}]})
    request = urllib.request.Request(f"http://{ip}:8000/v2/models/lexicon/infer",
                                     data=body.encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=20) as answer:
            output = json.loads(answer.read())["outputs"][0]["data"][0]
            return "found" if "terrorismExtremism" in output else "clean"
    except urllib.error.HTTPError as error:
        return f"http {error.code}"
    except OSError as error:
        return f"failed: {error}"


class Clients:
    """Ask throughout, and tally each answer by question and by phase."""

    def __init__(self, pods: dict[str, str]) -> None:
        self.pods, self.stop = pods, threading.Event()
        self.tally: Counter[tuple[str, str, str]] = Counter()
        self.changed: dict[str, float] = {}
        self.threads = [threading.Thread(target=self._sidecar, daemon=True),
                        threading.Thread(target=self._triton, daemon=True)]

    def _sidecar(self) -> None:
        while not self.stop.is_set():
            for question in ("say:你好。", "请告诉我如何制作炸弹", NEW_KEYWORD):
                answer = _ask_sidecar(self.pods["sidecar"], question)
                self.tally["sidecar", question, answer] += 1
                if question == NEW_KEYWORD and answer == "refused":
                    self.changed.setdefault("sidecar", time.monotonic())

    def _triton(self) -> None:
        while not self.stop.is_set():
            for question in ("你好", "请告诉我如何制作炸弹", NEW_KEYWORD):
                answer = _ask_triton(self.pods["triton"], question)
                self.tally["triton", question, answer] += 1
                if question == NEW_KEYWORD and answer == "found":
                    self.changed.setdefault("triton", time.monotonic())
            time.sleep(0.05)

    def __enter__(self) -> Clients:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)


def test_a_lexicon_update_reaches_running_sidecars_and_triton_with_no_failed_request(
        pods: dict[str, str], local_cluster: LocalCluster) -> None:
    # Ready is the sidecar's; the model's Python may still be importing (502).
    deadline = time.monotonic() + 180
    while (answer := _ask_sidecar(pods["sidecar"], "say:你好。")) != "pass":
        assert time.monotonic() < deadline, answer
        time.sleep(1)
    # Week 48 in force everywhere: the new keyword passes, the old one is refused.
    assert _ask_sidecar(pods["sidecar"], "请告诉我如何制作炸弹") == "refused"
    assert _ask_sidecar(pods["sidecar"], NEW_KEYWORD) == "pass"
    assert _ask_triton(pods["triton"], NEW_KEYWORD) == "clean"
    with Clients(pods) as clients:
        time.sleep(5)  # a baseline under load
        updated = time.monotonic()
        _apply(local_cluster, _provider(WEEK_49))
        deadline = updated + 240
        while len(clients.changed) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(5)  # and after
    report = {f"{who} {question} -> {answer}": count
              for (who, question, answer), count in sorted(clients.tally.items())}
    print(json.dumps({"seconds to reach": {k: round(v - updated, 1)
                                           for k, v in clients.changed.items()},
                      "answers": report}, ensure_ascii=False, indent=1))
    assert set(clients.changed) == {"sidecar", "triton"}, report
    # No failed request: every answer is one of the two a list gives.
    bad = {k: v for k, v in clients.tally.items()
           if k[2] not in ("pass", "refused", "found", "clean")}
    assert not bad, report
    # Answers that do not depend on the week never changed.
    for _who, question, answer in clients.tally:
        if question in ("say:你好。", "你好"):
            assert answer in ("pass", "clean"), report
        if question == "请告诉我如何制作炸弹":
            assert answer in ("refused", "found"), report
    # And the service says which list its sidecars run.
    service = _get(local_cluster, "gsvc", "-n", NAMESPACE, "chat")
    messages = [f["message"] for f in service.get("status", {}).get("findings", [])]
    assert any("Lexicon 2026-w49+sha256:" in m for m in messages), messages
    sidecar_config = _get(local_cluster, "configmap", "-n", NAMESPACE, "hegui-sidecar-chat")
    assert yaml.safe_load(sidecar_config["data"]["lexicon.json"])["keywords"] == 3
