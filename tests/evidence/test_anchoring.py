"""The operator's evidence duties against the real apiserver and a real MinIO (Art.11, Art.19):
a covered service's sidecars get the store's credentials as a hegui-owned Secret, the real
sidecar ships with them, and the operator's anchor (locked in the store and kept in a ConfigMap
teams cannot write) lets `hegui records verify` check the whole history.

The CompliancePolicy is built in memory and handed to the operator's functions: a cluster-scoped
policy would change what every other test on the shared cluster sees."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hegui.api.policy import CompliancePolicy
from hegui.evidence import config
from hegui.evidence.cli import export_records
from hegui.localcluster.cluster import LocalCluster
from hegui.localcluster.objectstore import LocalObjectStore
from hegui.moderation.records import main
from hegui.operator import anchoring

pytestmark = pytest.mark.cluster

SAMPLES = Path(__file__).parents[2] / "samples" / "compliance"
MASTER = b"the-clusters-evidence-key"
ANCHOR = b"the-operators-anchor-key"


@pytest.fixture
def namespaces(local_cluster: LocalCluster, api_client: Any,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """A team's namespace and a stand-in for hegui's (the operator's, where the store's Secret
    and the anchors live), both this test's own."""
    from kubernetes import client

    # hegui's CRDs, established (on a fresh cluster this test may run before any other applies
    # them, and a GenerativeService would then be a 404).
    local_cluster.kubectl("apply", "--server-side", "-f", str(SAMPLES.parents[1] / "crds"))
    local_cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd",
                          "generativeservices.hegui.io", "compliancepolicies.hegui.io")
    suffix = time.time_ns() % 10**8
    team, ops = f"h3-team-{suffix}", f"h3-ops-{suffix}"
    core = client.CoreV1Api(api_client)
    for name in (team, ops):
        core.create_namespace({"metadata": {"name": name, "labels": {"h3-evidence": "on"}}})
    monkeypatch.setattr(anchoring, "NAMESPACE", ops)
    try:
        yield team, ops
    finally:
        for name in (team, ops):
            local_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _policy(url: str, secret: str, days: int = 1) -> CompliancePolicy:
    doc = yaml.safe_load((SAMPLES / "policy.yaml").read_text(encoding="utf-8"))
    endpoint, _, bucket = url.rpartition("/")
    doc["spec"].pop("namespaces", None)
    doc["spec"]["namespaceSelector"] = {"matchLabels": {"h3-evidence": "on"}}
    doc["spec"]["evidence"] = {"store": {"endpoint": endpoint, "bucket": bucket,
                                         "credentialsSecretName": secret,
                                         "retentionDays": days}}
    return CompliancePolicy.from_dict(doc)


def test_a_service_ships_with_the_copied_secret_and_the_anchor_vouches_for_it(
        objectstore: LocalObjectStore, namespaces: tuple[str, str], api_client: Any,
        local_cluster: LocalCluster, tmp_path: Path, own_bucket: tuple[str, str, str],
        access: Any) -> None:
    from kubernetes import client

    team, ops = namespaces
    core = client.CoreV1Api(api_client)
    url, access_key, secret_key = own_bucket
    core.create_namespaced_secret(ops, {"metadata": {"name": "evidence-store"}, "stringData": {
        "accessKey": access_key, "secretKey": secret_key,
        "evidenceKey": MASTER.decode(), "anchorKey": ANCHOR.decode()}})
    posture = yaml.safe_load((SAMPLES / "chat-service.yaml").read_text(encoding="utf-8"))
    posture["metadata"]["namespace"] = team
    posture["spec"]["dataProtection"]["evidenceFailureMode"] = "Closed"
    created = client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        "hegui.io", "v1alpha1", team, "generativeservices", posture)
    policy = _policy(url, "evidence-store")

    # The operator's side: the service's Secret, applied twice (idempotent, no read needed).
    assert anchoring.sync_service(api_client, created, [policy]) == "hegui-evidence-chat"
    anchoring._APPLIED.clear()  # as after REAPPLY_SECONDS: applied again over itself
    assert anchoring.sync_service(api_client, created, [policy]) == "hegui-evidence-chat"
    secret = core.read_namespaced_secret("hegui-evidence-chat", team)
    files = {k: base64.b64decode(v) for k, v in secret.data.items()}
    assert set(files) == {"access-key", "secret-key", "evidence.key", "evidence.yaml"}
    assert MASTER not in files.values() and ANCHOR not in files.values()
    assert files["evidence.key"] == config.service_key(MASTER, team, "chat")
    assert secret.metadata.owner_references[0].uid == created["metadata"]["uid"]
    assert secret.metadata.labels["app.kubernetes.io/managed-by"] == "hegui"
    # A namespace no policy selects gets nothing.
    core.patch_namespace(team, {"metadata": {"labels": {"h3-evidence": "off"}}})
    assert anchoring.sync_service(api_client, created, [policy]) is None
    core.patch_namespace(team, {"metadata": {"labels": {"h3-evidence": "on"}}})

    # The sidecar's side: the Secret's keys as the injector projects them, nothing on the
    # command line but the usual flags.
    projected = tmp_path / "hegui-evidence"
    projected.mkdir()
    for name, value in files.items():
        (projected / name).write_bytes(value)
    (tmp_path / "etc").mkdir()
    service_file = tmp_path / "etc" / "service.yaml"
    service_file.write_text(yaml.safe_dump(posture, allow_unicode=True), encoding="utf-8")
    (tmp_path / "pseudonymisation.key").write_bytes(b"pseudonymisation-key")
    from hegui.admission.local import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEGUI_EVIDENCE_")}
    sidecar = subprocess.Popen(
        [sys.executable, "-m", "hegui.sidecar", "--service", str(service_file),
         "--port", str(port), "--records", str(tmp_path / "volume" / "records.jsonl"),
         "--key-file", str(tmp_path / "pseudonymisation.key"),
         "--suspension", str(tmp_path / "none.yaml"),
         "--evidence-credentials-dir", str(projected)],
        env={**env, "POD_NAME": "chat-0"}, stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "sidecar.log").open("w"), text=True)

    def said() -> str:
        return (tmp_path / "sidecar.log").read_text(encoding="utf-8")[-3000:]

    acknowledged = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/hegui/healthz", timeout=2)
                break
            except OSError:
                assert sidecar.poll() is None and time.monotonic() < deadline, "no sidecar"
                time.sleep(0.2)
        for n in range(5):
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/hegui/complaints", method="POST",
                data=json.dumps({"text": f"complaint {n}"}).encode(),
                headers={"Content-Type": "application/json", "x-hegui-user": f"user{n}"})
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    acknowledged.append(json.load(response)["reference"])
            except OSError as error:
                raise AssertionError(f"{error}: {said()}") from None
    finally:
        sidecar.send_signal(signal.SIGTERM)
        sidecar.wait(timeout=60)
    assert sidecar.returncode in (0, 128 + signal.SIGTERM), said()
    store = access.s3(objectstore.root, url=url)
    shipped = [r["reference"] for r in export_records(store, service=f"{team}/chat",
                                                      kinds=frozenset({"complaint"}))]
    assert shipped == acknowledged

    # The operator anchors: locked in the store and kept in its ConfigMap.
    name, streams = anchoring.anchor_once(api_client, policy)
    assert name.startswith("anchors/") and streams >= 1
    kept = core.read_namespaced_config_map(anchoring.ANCHORS_CONFIGMAP, ops)
    assert name.rsplit("/", 1)[-1] in kept.data
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "master").write_bytes(MASTER)
    (keys / "anchor").write_bytes(ANCHOR)
    access.use_root()
    assert main(["records", "verify", "--store", url, "--service",
                 f"{team}/chat", "--master-key-file", str(keys / "master"),
                 "--anchor-key-file", str(keys / "anchor"), "--anchors-configmap",
                 f"{ops}/{anchoring.ANCHORS_CONFIGMAP}", "--kubeconfig",
                 str(local_cluster.kubeconfig)]) == 0
    # Verified with the wrong cluster key, every segment of the service is flagged.
    (keys / "wrong").write_bytes(b"not-the-key")
    assert main(["records", "verify", "--store", url, "--service",
                 f"{team}/chat", "--master-key-file", str(keys / "wrong"),
                 "--anchor-key-file", str(keys / "anchor")]) == 1


def test_a_store_secret_without_the_anchor_key_is_named(
        objectstore: LocalObjectStore, namespaces: tuple[str, str], api_client: Any) -> None:
    from kubernetes import client

    _, ops = namespaces
    client.CoreV1Api(api_client).create_namespaced_secret(
        ops, {"metadata": {"name": "no-anchor"}, "stringData": {
            "accessKey": "a", "secretKey": "s", "evidenceKey": "e"}})
    with pytest.raises(config.EvidenceConfigError, match="lacks anchorKey"):
        anchoring.anchor_once(api_client, _policy(objectstore.url, "no-anchor"))
    with pytest.raises(config.EvidenceConfigError, match=r"credentialsSecretName.*404"):
        anchoring.anchor_once(api_client, _policy(objectstore.url, "missing"))
