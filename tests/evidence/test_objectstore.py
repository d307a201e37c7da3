"""Evidence in a real object store with Object Lock (MinIO built from its Go module): what is
shipped cannot be deleted, overwritten or have its retention shortened before its date, even by
the store's root user; records outlive a killed sidecar process; the store down, the buffer
holds, and recovery loses and duplicates nothing (Art.11, Art.19)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from minio.commonconfig import COMPLIANCE, GOVERNANCE
from minio.error import S3Error
from minio.retention import Retention

from hegui.evidence.cli import export_records
from hegui.evidence.shipper import Shipper
from hegui.evidence.store import AlreadyWritten
from hegui.evidence.verify import verify_store
from hegui.localcluster.objectstore import BUCKET, LocalObjectStore
from hegui.moderation.records import RecordLog, main

pytestmark = pytest.mark.cluster

KEY = b"pseudonymisation-key"
EVIDENCE = b"evidence-key"


def test_a_compliance_locked_version_cannot_be_deleted_overwritten_or_shortened(
        objectstore: LocalObjectStore, access: Any) -> None:
    key = f"records/test/lock/{time.time_ns()}.seg"
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    access.s3().put(key, b"evidence\n", until)  # as a sidecar writes it
    root = access.minio(objectstore.root)
    version = root.stat_object(BUCKET, key).version_id
    assert version
    retention = root.get_object_retention(BUCKET, key, version_id=version)
    assert retention is not None and retention.mode == COMPLIANCE

    with pytest.raises(S3Error) as deleting:  # the root user deletes that very version
        root.remove_object(BUCKET, key, version_id=version)
    assert deleting.value.code in ("AccessDenied", "ObjectLocked", "InvalidRequest")
    with pytest.raises(S3Error):  # shorter, by the root user
        root.set_object_retention(BUCKET, key, Retention(COMPLIANCE, until - timedelta(hours=12)),
                                  version_id=version)
    with pytest.raises(S3Error):  # a weaker mode, by the root user
        root.set_object_retention(BUCKET, key, Retention(GOVERNANCE, until), version_id=version)
    with pytest.raises(S3Error) as sidecar_delete:  # the sidecar's user may not even try
        access.minio(objectstore.sidecar).remove_object(BUCKET, key, version_id=version)
    assert sidecar_delete.value.code == "AccessDenied"
    # Writing the same name again is refused by hegui's client; a raw PUT adds a version and
    # leaves the locked one as it was.
    with pytest.raises(AlreadyWritten):
        access.s3().put(key, b"forged\n", until)
    root.put_object(BUCKET, key, io.BytesIO(b"forged\n"), 7)
    original = root.get_object(BUCKET, key, version_id=version)
    try:
        assert original.read() == b"evidence\n"
    finally:
        original.close()
        original.release_conn()
    versions = list(access.s3(objectstore.root).versions(key))
    assert len(versions) == 2 and versions[0].version_id == version
    # Longer is allowed: retention only ever grows.
    root.set_object_retention(BUCKET, key, Retention(COMPLIANCE, until + timedelta(days=1)),
                              version_id=version)


def test_verify_flags_a_written_over_segment(objectstore: LocalObjectStore,
                                             tmp_path: Path, access: Any) -> None:
    store = access.s3()
    log = RecordLog(tmp_path / "records.jsonl", key=KEY)
    shipper = Shipper(log, store, key=EVIDENCE, service=f"t{time.time_ns()}/chat", pod="chat-0",
                      retention_days=1)
    for n in range(5):
        log.append("block", user="u", reference=f"r{n}")
    assert shipper.ship_once() == 5
    prefix = shipper.stream.split("/")[0] + "/"
    assert verify_store(store, EVIDENCE, stream_prefix=prefix).ok
    segment = f"records/{shipper.stream}/000000000001.seg"
    access.minio(objectstore.root).put_object(BUCKET, segment, io.BytesIO(b"{}\n"), 3)
    report = verify_store(store, EVIDENCE, stream_prefix=prefix)
    assert not report.ok
    assert any("written 2 times" in p for p in report.problems), report.problems
    assert report.records == 5  # the first version, which the lock kept, is what is checked


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from hegui.evidence.shipper import Shipper
    from hegui.evidence.store import S3Store
    from hegui.moderation.records import RecordLog

    path, url, access, secret, start = sys.argv[1:6]
    log = RecordLog(Path(path), key=b"k")
    store = S3Store(url, access_key=access, secret_key=secret, timeout=2.0, retries=0)
    shipper = Shipper(log, store, key=b"evidence-key", service="killed/chat", pod="chat-0",
                      retention_days=1, interval=0.05)
    shipper.start()
    n = int(start)
    while True:
        kind = "label" if n % 4 else "block"
        record = log.append(kind, user="u", reference=f"r{n}")
        if kind == "label":
            log.flush()  # what a response waits for (labels: the next batch)
        print(record["seq"], f"r{n}", flush=True)  # acknowledged
        n += 1
        time.sleep(0.002)
""")


def _run_writer(tmp_path: Path, objectstore: LocalObjectStore, start: int,
                env: dict[str, str]) -> subprocess.Popen[str]:
    who = objectstore.sidecar
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path / "records.jsonl"), objectstore.url,
         who.access_key, who.secret_key, str(start)],
        stdout=subprocess.PIPE, text=True, env=env)


def _acknowledged(process: subprocess.Popen[str], count: int) -> list[str]:
    assert process.stdout is not None
    seen: list[str] = []
    while len(seen) < count:
        line = process.stdout.readline()
        assert line, "the writer died"
        seen.append(line.split()[1])
    return seen


def test_records_outlive_a_killed_process_and_reach_the_store_once(
        objectstore: LocalObjectStore, tmp_path: Path, access: Any) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = _run_writer(tmp_path, objectstore, 0, env)
    acknowledged = _acknowledged(first, 300)
    first.send_signal(signal.SIGKILL)  # no goodbye: whatever was not shipped is in the file
    first.wait()
    second = _run_writer(tmp_path, objectstore, 10_000, env)  # the container restarts
    acknowledged += _acknowledged(second, 100)
    second.terminate()
    second.wait()
    third = _run_writer(tmp_path, objectstore, 20_000, env)
    acknowledged += _acknowledged(third, 1)
    store = access.s3(objectstore.root)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        shipped = [r["reference"] for r in export_records(store, service="killed/chat")]
        if set(acknowledged) <= set(shipped):
            break
        time.sleep(0.2)
    third.send_signal(signal.SIGKILL)
    third.wait()
    assert set(acknowledged) <= set(shipped), sorted(set(acknowledged) - set(shipped))[:5]
    assert len(shipped) == len(set(shipped))  # nothing twice
    report = verify_store(store, EVIDENCE, stream_prefix="killed/")
    assert report.ok, report.problems
    assert len(report.streams) == 1  # one chain across three lives of the process


def test_store_down_then_back_loses_nothing(tmp_path: Path, objectstore: LocalObjectStore,
                                            access: Any) -> None:
    """A second MinIO that we stop and start again, on its own port and data."""
    from hegui.admission.local import free_port

    own = LocalObjectStore(home=tmp_path / "own", port=free_port(),
                           bin_dir=objectstore.binary.parent)
    own.up(timeout=120)
    try:
        store = access.s3(store=own, timeout=2.0, retries=0)
        log = RecordLog(tmp_path / "records.jsonl", key=KEY)
        shipper = Shipper(log, store, key=EVIDENCE, service="down/chat", pod="chat-0",
                          retention_days=1, buffer_bytes=1 << 20)
        for n in range(10):
            log.append("block", user="u", reference=f"a{n}")
        shipper._cycle()
        assert shipper.up and log.shipped_seq == 10
        own.down()
        for n in range(50):
            log.append("block", user="u", reference=f"b{n}")
        shipper._cycle()
        assert not shipper.up and log.shipped_seq == 10 and log.unshipped_bytes > 0
        own.up(timeout=120)
        shipper._cycle()
        assert shipper.up and log.shipped_seq == 60
        report = verify_store(store, EVIDENCE)
        assert report.ok and report.records == 60, report.problems
        references = [r["reference"] for r in export_records(store)]
        assert references == [f"a{n}" for n in range(10)] + [f"b{n}" for n in range(50)]
        key = tmp_path / "evidence.key"
        key.write_bytes(EVIDENCE)
        access.use_root(own)
        assert main(["records", "verify", "--store", own.url, "--key-file", str(key)]) == 0
    finally:
        own.down()


def test_anchors_kept_in_a_configmap_catch_a_truncated_copy(
        objectstore: LocalObjectStore, local_cluster: object, tmp_path: Path, access: Any,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The operator anchors the store's heads into a ConfigMap of its own; an inspector's copy
    of the store (export --raw) with its last segment removed no longer reaches the anchor."""
    from hegui.localcluster.cluster import LocalCluster

    assert isinstance(local_cluster, LocalCluster)
    namespace = f"h4-evidence-{time.time_ns() % 10**8}"
    local_cluster.kubectl("create", "namespace", namespace)
    try:
        service = f"{namespace}/chat"
        log = RecordLog(tmp_path / "records.jsonl", key=KEY)
        shipper = Shipper(log, access.s3(), key=EVIDENCE, service=service, pod="chat-0",
                          retention_days=1, max_records=4)
        for n in range(10):
            log.append("block", user="u", reference=f"r{n}")
        assert shipper.ship_once() == 10  # segments 1-4, 5-8, 9-10
        keys = tmp_path / "keys"
        keys.mkdir()
        (keys / "evidence").write_bytes(EVIDENCE)
        (keys / "anchor").write_bytes(b"the-operators-anchor-key")
        access.use_root()
        kubeconfig = str(local_cluster.kubeconfig)
        configmap = f"{namespace}/hegui-evidence-anchors"
        assert main(["records", "anchor", "--store", objectstore.url, "--anchor-key-file",
                     str(keys / "anchor"), "--configmap", configmap, "--kubeconfig", kubeconfig,
                     "--retention-days", "1"]) == 0
        verify_args = ["--key-file", str(keys / "evidence"), "--anchor-key-file",
                       str(keys / "anchor"), "--anchors-configmap", configmap,
                       "--kubeconfig", kubeconfig, "--service", service]
        assert main(["records", "verify", "--store", objectstore.url, *verify_args]) == 0
        copy = tmp_path / "copy"
        assert main(["records", "export", "--store", objectstore.url, "--service", service,
                     "--raw", str(copy)]) == 0
        last = sorted(copy.rglob("*.seg"))[-1]
        assert last.name == "000000000009.seg"
        last.unlink()
        capsys.readouterr()
        assert main(["records", "verify", "--store", str(copy), *verify_args]) == 1
        out = capsys.readouterr().out
        assert "truncated" in out and "first bad record: 9" in out, out
    finally:
        local_cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_a_deleted_pod_loses_no_acknowledged_record(objectstore: LocalObjectStore,
                                                    tmp_path: Path, access: Any) -> None:
    """The real sidecar process (`python -m hegui.sidecar`) takes complaints, is stopped the
    way Kubernetes deletes a pod (SIGTERM), and its volume is thrown away: every complaint it
    acknowledged is in the store."""
    import shutil
    import urllib.request

    from hegui.admission.local import free_port

    sample = Path(__file__).parents[2] / "samples" / "compliance" / "chat-service.yaml"
    (tmp_path / "evidence.key").write_bytes(EVIDENCE)
    (tmp_path / "pseudonymisation.key").write_bytes(KEY)
    volume = tmp_path / "volume"
    port = free_port()
    pod = f"chat-{time.time_ns() % 10**8}"
    env = access.sidecar_env(pod)
    sidecar = subprocess.Popen(
        [sys.executable, "-m", "hegui.sidecar", "--service", str(sample), "--port", str(port),
         "--records", str(volume / "records.jsonl"), "--key-file",
         str(tmp_path / "pseudonymisation.key"), "--suspension", str(tmp_path / "none.yaml"),
         "--evidence-store", objectstore.url, "--evidence-key-file",
         str(tmp_path / "evidence.key")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
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
        for n in range(40):
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/hegui/complaints", method="POST",
                data=json.dumps({"text": f"complaint {n}"}).encode(),
                headers={"Content-Type": "application/json", "x-hegui-user": f"user{n}"})
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 201
                acknowledged.append(json.load(response)["reference"])
    finally:
        sidecar.send_signal(signal.SIGTERM)
        _, errors = sidecar.communicate(timeout=60)
    assert sidecar.returncode in (0, 128 + signal.SIGTERM), errors
    shutil.rmtree(volume)  # the emptyDir goes with the pod
    store = access.s3(objectstore.root)
    namespace = "hegui-demo"
    shipped = [r["reference"] for r in export_records(store, service=f"{namespace}/chat",
                                                      kinds=frozenset({"complaint"}))
               if r["stream"].split("/")[2].startswith(pod + ".")]
    assert shipped == acknowledged


def test_init_store_adds_a_user_that_writes_but_never_deletes(
        objectstore: LocalObjectStore, monkeypatch: pytest.MonkeyPatch, access: Any) -> None:
    """What the chart's Job runs (`hegui records init-store`), twice: idempotent. The sidecars'
    user writes records, never anchors; the anchor user writes anchors, never records
    (Art.11: no holder of the sidecars' credentials can make anchors fail for everyone)."""
    user = access.new_user("h3-user")
    anchor = access.new_user("h3-anchor")
    monkeypatch.setenv("HEGUI_EVIDENCE_ROOT_ACCESS_KEY", objectstore.root.access_key)
    monkeypatch.setenv("HEGUI_EVIDENCE_ROOT_SECRET_KEY", objectstore.root.secret_key)
    monkeypatch.setenv("HEGUI_EVIDENCE_ANCHOR_ACCESS_KEY", anchor.access_key)
    monkeypatch.setenv("HEGUI_EVIDENCE_ANCHOR_SECRET_KEY", anchor.secret_key)
    for variable, setting in user.env().items():
        monkeypatch.setenv(variable, setting)
    for _ in range(2):
        assert main(["records", "init-store", "--store", objectstore.url, "--wait", "5"]) == 0
    store = access.s3(user)
    key = f"records/test/init/{time.time_ns()}.seg"
    store.put(key, b"evidence\n", datetime.now(UTC) + timedelta(days=1))
    assert store.get(key) == b"evidence\n"
    raw = access.minio(user)
    with pytest.raises(S3Error) as deleting:
        raw.remove_object(BUCKET, key, version_id=raw.stat_object(BUCKET, key).version_id)
    assert deleting.value.code == "AccessDenied"
    until = datetime.now(UTC) + timedelta(days=1)
    written = f"anchors/{time.time_ns()}-init.json"
    access.s3(anchor).put(written, b"{}\n", until)
    for who, where in ((user, f"anchors/{time.time_ns()}-sidecar.json"),
                       (anchor, f"records/test/init/{time.time_ns()}-anchor.seg")):
        with pytest.raises(S3Error) as writing:
            access.minio(who).put_object(BUCKET, where, io.BytesIO(b"{}\n"), 3)
        assert writing.value.code == "AccessDenied", where
    with pytest.raises(S3Error) as deleting:
        access.minio(anchor).remove_object(BUCKET, written)
    assert deleting.value.code == "AccessDenied"
    monkeypatch.delenv("HEGUI_EVIDENCE_ANCHOR_SECRET_KEY")
    assert main(["records", "init-store", "--store", objectstore.url]) == 2  # one of the two
    monkeypatch.delenv("HEGUI_EVIDENCE_ROOT_SECRET_KEY")
    assert main(["records", "init-store", "--store", objectstore.url]) == 2


def test_a_pod_deleted_mid_traffic_loses_no_acknowledged_record(objectstore: LocalObjectStore,
                                                                tmp_path: Path,
                                                                access: Any) -> None:
    """Kubernetes deletes a pod by SIGTERM to its containers: here the real sidecar gets it
    while four clients keep sending complaints. Whatever it acknowledged (201) is in the store
    after its volume is thrown away; requests cut off by the shutdown were never acknowledged."""
    import shutil
    import threading
    import urllib.error
    import urllib.request

    from hegui.admission.local import free_port

    sample = Path(__file__).parents[2] / "samples" / "compliance" / "chat-service.yaml"
    (tmp_path / "evidence.key").write_bytes(EVIDENCE)
    (tmp_path / "pseudonymisation.key").write_bytes(KEY)
    volume = tmp_path / "volume"
    port = free_port()
    pod = f"midtraffic-{time.time_ns() % 10**8}"
    env = access.sidecar_env(pod)
    sidecar = subprocess.Popen(
        [sys.executable, "-m", "hegui.sidecar", "--service", str(sample), "--port", str(port),
         "--records", str(volume / "records.jsonl"), "--key-file",
         str(tmp_path / "pseudonymisation.key"), "--suspension", str(tmp_path / "none.yaml"),
         "--evidence-store", objectstore.url, "--evidence-key-file",
         str(tmp_path / "evidence.key"), "--evidence-interval", "5"],
        env=env, stdout=subprocess.DEVNULL, stderr=(tmp_path / "sidecar.log").open("w"))
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/hegui/healthz", timeout=2)
            break
        except OSError:
            assert sidecar.poll() is None and time.monotonic() < deadline, "no sidecar"
            time.sleep(0.2)
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(number: int) -> None:
        n = 0
        while not stop.is_set():
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/hegui/complaints", method="POST",
                data=json.dumps({"text": f"complaint {number}-{n}"}).encode(),
                headers={"Content-Type": "application/json",
                         "x-hegui-user": f"user{number}-{n}"})
            n += 1
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    reference = json.load(response)["reference"]
                with lock:
                    acknowledged.append(reference)
            except (OSError, ValueError):
                time.sleep(0.01)  # refused, throttled or cut off: not acknowledged

    clients = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for thread in clients:
        thread.start()
    while len(acknowledged) < 30 and time.monotonic() < deadline:
        time.sleep(0.01)
    # With a 5 s shipping interval most of these still wait in the pod when the signal comes.
    sidecar.send_signal(signal.SIGTERM)
    sidecar.wait(timeout=60)
    stop.set()
    for thread in clients:
        thread.join(timeout=30)
    assert sidecar.returncode in (0, 128 + signal.SIGTERM), \
        (tmp_path / "sidecar.log").read_text()[-2000:]
    assert len(acknowledged) >= 30
    shutil.rmtree(volume)  # the emptyDir goes with the pod
    shipped = [r["reference"] for r in export_records(access.s3(objectstore.root),
                                                      service="hegui-demo/chat",
                                                      kinds=frozenset({"complaint"}))
               if r["stream"].split("/")[2].startswith(pod + ".")]
    assert set(acknowledged) <= set(shipped), sorted(set(acknowledged) - set(shipped))[:5]
    assert len(shipped) == len(set(shipped))  # nothing twice
