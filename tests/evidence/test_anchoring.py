"""The operator's evidence duties against the real apiserver and a real MinIO (Art.11, Art.19):
a covered service's sidecars get a store session of their own as a hegui-owned Secret, the
real sidecar ships with it, and the operator's anchor (written as its own store user, locked in
the store and kept in a ConfigMap teams cannot write) lets `hegui records verify` check the
whole history. A team that reads its Secret reaches its own service's records and nothing else:
not another tenant's records, not the anchors, not a delete.

The CompliancePolicy is built in memory and handed to the operator's functions: a cluster-scoped
policy would change what every other test on the shared cluster sees."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from hegui.api.policy import CompliancePolicy
from hegui.evidence import config, segments
from hegui.evidence.cli import export_records
from hegui.evidence.shipper import Shipper
from hegui.evidence.store import S3Store, StoreError
from hegui.localcluster.cluster import LocalCluster
from hegui.localcluster.objectstore import Credentials, LocalObjectStore
from hegui.moderation.records import RecordLog, main
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


def _store_secret(core: Any, namespace: str, bucket: Any, name: str = "evidence-store") -> None:
    """The policy's Secret in hegui's namespace: the store's users and the keys."""
    core.create_namespaced_secret(namespace, {"metadata": {"name": name}, "stringData": {
        "accessKey": bucket.sidecar.access_key, "secretKey": bucket.sidecar.secret_key,
        "anchorAccessKey": bucket.anchor.access_key,
        "anchorSecretKey": bucket.anchor.secret_key,
        "evidenceKey": MASTER.decode(), "anchorKey": ANCHOR.decode()}})


def _service(api_client: Any, namespace: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The sample GenerativeService `chat` in `namespace`: its posture and what was created."""
    from kubernetes import client

    posture = yaml.safe_load((SAMPLES / "chat-service.yaml").read_text(encoding="utf-8"))
    posture["metadata"]["namespace"] = namespace
    posture["spec"]["dataProtection"]["evidenceFailureMode"] = "Closed"
    created = client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        "hegui.io", "v1alpha1", namespace, "generativeservices", posture)
    return posture, created


def test_a_service_ships_with_the_copied_secret_and_the_anchor_vouches_for_it(
        objectstore: LocalObjectStore, namespaces: tuple[str, str], api_client: Any,
        local_cluster: LocalCluster, tmp_path: Path, own_bucket: Any, access: Any) -> None:
    from kubernetes import client

    team, ops = namespaces
    core = client.CoreV1Api(api_client)
    url = own_bucket.url
    _store_secret(core, ops, own_bucket)
    posture, created = _service(api_client, team)
    policy = _policy(url, "evidence-store")

    # The operator's side: the service's Secret, applied twice (idempotent, no read needed).
    assert anchoring.sync_service(api_client, created, [policy]) == "hegui-evidence-chat"
    anchoring._APPLIED.clear()  # as after REAPPLY_SECONDS: applied again over itself
    assert anchoring.sync_service(api_client, created, [policy]) == "hegui-evidence-chat"
    secret = core.read_namespaced_secret("hegui-evidence-chat", team)
    files = {k: base64.b64decode(v) for k, v in secret.data.items()}
    assert set(files) == {"access-key", "secret-key", "evidence.key", "evidence.yaml"}
    assert MASTER not in files.values() and ANCHOR not in files.values()
    # A session of the service's own, never the store's long-lived users (Art.11).
    for user in (own_bucket.sidecar, own_bucket.anchor):
        assert files["access-key"].decode() != user.access_key
        assert user.secret_key.encode() not in files["secret-key"]
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


def test_a_store_secret_without_the_anchor_user_is_named(
        objectstore: LocalObjectStore, namespaces: tuple[str, str], api_client: Any) -> None:
    """A Secret from before the anchor user (accessKey, secretKey, evidenceKey, anchorKey): the
    operator does not fall back on the sidecars' user, which may not write anchors; it says
    which Secret lacks which keys (the status and log path of anchor_heads)."""
    from kubernetes import client

    _, ops = namespaces
    client.CoreV1Api(api_client).create_namespaced_secret(
        ops, {"metadata": {"name": "no-anchor-user"}, "stringData": {
            "accessKey": objectstore.sidecar.access_key,
            "secretKey": objectstore.sidecar.secret_key,
            "evidenceKey": "e", "anchorKey": "a"}})
    with pytest.raises(config.EvidenceConfigError) as lacking:
        anchoring.anchor_once(api_client, _policy(objectstore.url, "no-anchor-user"))
    said = str(lacking.value)
    assert f"Secret {ops}/no-anchor-user lacks anchorAccessKey, anchorSecretKey" in said, said
    assert "Art.11" in said
    client.CoreV1Api(api_client).create_namespaced_secret(
        ops, {"metadata": {"name": "no-anchor"}, "stringData": {
            "accessKey": "a", "secretKey": "s", "evidenceKey": "e"}})
    with pytest.raises(config.EvidenceConfigError, match="lacks anchorKey"):
        anchoring.anchor_once(api_client, _policy(objectstore.url, "no-anchor"))
    with pytest.raises(config.EvidenceConfigError, match=r"credentialsSecretName.*404"):
        anchoring.anchor_once(api_client, _policy(objectstore.url, "missing"))


def _refused(attempt: Any) -> str:
    """The store's error code for an attempt it must refuse."""
    from minio.error import S3Error

    try:
        attempt()
    except S3Error as error:
        return str(error.code)
    except StoreError as error:
        return str(error)
    raise AssertionError("the store allowed it")


def test_a_teams_secret_reaches_its_own_services_records_and_nothing_else(
        objectstore: LocalObjectStore, namespaces: tuple[str, str], api_client: Any,
        local_cluster: LocalCluster, tmp_path: Path, own_bucket: Any, access: Any) -> None:
    """Two tenants' services `chat`, in namespaces A and B. With what A's team reads from its
    Secret (Kubernetes `edit`), the store refuses: reading, listing or writing B's records
    (user input, Art.11), another service's prefix in A's own namespace, writing anchors, and
    deleting or shortening A's own locked segment. A's and B's sidecars still ship, the
    operator anchors as its own user, and `verify` with the anchors passes."""
    from kubernetes import client
    from minio.commonconfig import COMPLIANCE
    from minio.retention import Retention

    team_a, ops = namespaces
    team_b = f"{team_a}-b"
    core = client.CoreV1Api(api_client)
    core.create_namespace({"metadata": {"name": team_b, "labels": {"h3-evidence": "on"}}})
    try:
        url = own_bucket.url
        bucket = url.rpartition("/")[2]
        _store_secret(core, ops, own_bucket)
        policy = _policy(url, "evidence-store")
        stores: dict[str, S3Store] = {}
        raw: dict[str, Any] = {}
        shippers: dict[str, Shipper] = {}
        for team in (team_a, team_b):
            _, created = _service(api_client, team)
            assert anchoring.sync_service(api_client, created, [policy]) == "hegui-evidence-chat"
            secret = core.read_namespaced_secret("hegui-evidence-chat", team)
            projected = tmp_path / team
            projected.mkdir()
            for name, value in secret.data.items():  # as the injector projects it
                (projected / name).write_bytes(base64.b64decode(value))
            found = config.read_credentials(projected, env={})
            stores[team] = S3Store(url, source=found.source)
            raw[team] = access.minio(Credentials(found.access_key, found.secret_key,
                                                 found.session_token))
            log = RecordLog(tmp_path / f"{team}.jsonl", key=b"k")
            shippers[team] = Shipper(log, stores[team], key=found.key, service=f"{team}/chat",
                                     pod="chat-0", retention_days=1)
            for n in range(3):
                log.append("complaint", user="u", reference=f"{team}-{n}", text="user input")
            assert shippers[team].ship_once() == 3  # each sidecar ships with its session
        theirs = segments.segment_key(shippers[team_b].stream, 1)
        mine = segments.segment_key(shippers[team_a].stream, 1)
        until = datetime.now(UTC) + timedelta(days=1)
        a, a_raw = stores[team_a], raw[team_a]

        # B's records: not readable, not listable, not even by listing the whole bucket.
        assert "AccessDenied" in _refused(lambda: a.get(theirs))
        assert "AccessDenied" in _refused(lambda: list(a.versions(f"records/{team_b}/")))
        assert "AccessDenied" in _refused(lambda: list(a.versions("records/")))
        assert "AccessDenied" in _refused(lambda: list(a.versions("")))
        # Nothing written into B's stream, another service's prefix or the anchors.
        for key in (segments.segment_key(shippers[team_b].stream, 4),
                    f"records/{team_a}/chat-other/p.1/000000000001.seg",
                    f"records/{team_a}/chat2/p.1/000000000001.seg",
                    f"anchors/{until:%Y%m%dT%H%M%S}-forged.json"):
            assert _refused(lambda k=key: a_raw.put_object(
                bucket, k, io.BytesIO(b"{}\n"), 3,
                retention=Retention(COMPLIANCE, until))) == "AccessDenied", key
        # Its own segment: no delete (that version or a delete marker), no shorter lock.
        version = a_raw.stat_object(bucket, mine).version_id
        assert _refused(lambda: a_raw.remove_object(bucket, mine,
                                                    version_id=version)) == "AccessDenied"
        assert _refused(lambda: a_raw.remove_object(bucket, mine)) == "AccessDenied"
        _refused(lambda: a_raw.set_object_retention(
            bucket, mine, Retention(COMPLIANCE, until - timedelta(hours=23)),
            version_id=version))
        assert a.get(mine)  # its own records it reads (the shared strike book needs them)

        # The operator anchors as its own user; the sidecars' user may not write anchors,
        # the anchor user may not write records.
        name, streams = anchoring.anchor_once(api_client, policy)
        assert name.startswith("anchors/") and streams == 2
        assert _refused(lambda: access.minio(own_bucket.sidecar).put_object(
            bucket, "anchors/by-the-sidecars-user.json", io.BytesIO(b"{}\n"), 3)) \
            == "AccessDenied"
        assert _refused(lambda: access.minio(own_bucket.anchor).put_object(
            bucket, f"records/{team_a}/chat/p.9/000000000001.seg", io.BytesIO(b"{}\n"),
            3)) == "AccessDenied"
        keys = tmp_path / "keys"
        keys.mkdir()
        (keys / "master").write_bytes(MASTER)
        (keys / "anchor").write_bytes(ANCHOR)
        access.use_root()
        for team in (team_a, team_b):
            assert main(["records", "verify", "--store", url, "--service", f"{team}/chat",
                         "--master-key-file", str(keys / "master"), "--anchor-key-file",
                         str(keys / "anchor"), "--anchors-configmap",
                         f"{ops}/{anchoring.ANCHORS_CONFIGMAP}", "--kubeconfig",
                         str(local_cluster.kubeconfig)]) == 0
    finally:
        local_cluster.kubectl("delete", "namespace", team_b, "--wait=false", check=False)
