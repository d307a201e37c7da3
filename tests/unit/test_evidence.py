"""Evidence shipped off the pod: segments, the tampering suite, the bounded buffer and its fail
modes, torn tails, group commit (Art.11, Art.14, Art.19).

These use a DirectoryStore (what `hegui records export --raw` writes and inspectors verify
offline) and, for an unreachable store, a real S3 client aimed at a closed loopback port. The
real object store with Object Lock is tested in tests/evidence (marker `objectstore`).
"""

from __future__ import annotations

import json
import socket
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hegui.evidence import segments
from hegui.evidence.anchor import checkpoint
from hegui.evidence.cli import export_records
from hegui.evidence.shipper import Shipper
from hegui.evidence.store import DirectoryStore, S3Store
from hegui.evidence.verify import verify_store
from hegui.moderation.records import (
    LOSS,
    REPAIR,
    SHIPPED,
    BufferFull,
    RecordLog,
    digest,
    main,
    verify,
)

KEY = b"pseudonymisation-key"
EVIDENCE = b"evidence-key-from-a-secret"
ANCHOR = b"the-operators-anchor-key"
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def shipped(tmp_path: Path, count: int = 30, per_segment: int = 10,
            ) -> tuple[RecordLog, DirectoryStore, Shipper]:
    log = RecordLog(tmp_path / "pod" / "records.jsonl", key=KEY)
    store = DirectoryStore(tmp_path / "store")
    shipper = Shipper(log, store, key=EVIDENCE, service="shop/chat", pod="chat-0",
                      retention_days=180, max_records=per_segment)
    for n in range(count):
        log.append("block" if n % 3 else "label", user=f"u{n % 4}",
                   now=T0 + timedelta(minutes=n), reference=f"r{n}")
        if n % per_segment == per_segment - 1:
            shipper.ship_once(now=T0 + timedelta(minutes=n))
    shipper.ship_once(now=T0 + timedelta(minutes=count))
    return log, store, shipper


def seg_files(store: DirectoryStore) -> list[Path]:
    return sorted((store.root / "records").rglob("*.seg"))


def rewrite(path: Path, edit: object, *, reseal: bool = False) -> None:
    """Change a segment's records with `edit(list of dicts)`; `reseal`: as someone holding the
    evidence key would, re-hashing the records and re-sealing the header."""
    data = path.read_bytes()
    header = json.loads(data.split(b"\n", 1)[0])
    records = [json.loads(r) for r in data.split(b"\n", 1)[1].splitlines()]
    records = edit(records)  # type: ignore[operator]
    if reseal:
        prev = header["prev"]
        for record in records:
            record["prev"] = prev
            record["hash"] = digest(record)
            prev = record["hash"]
    body = b"".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
                    for r in records)
    if reseal:
        import hashlib

        header.update(body_sha256=hashlib.sha256(body).hexdigest(), count=len(records),
                      head=records[-1]["hash"], last=records[-1]["seq"])
        header["mac"] = segments.mac(EVIDENCE, header)
    path.chmod(0o600)
    path.write_bytes(segments.canonical(header) + b"\n" + body)


def anchored(store: DirectoryStore) -> None:
    checkpoint(store, ANCHOR, writer="operator", retention_days=180, now=T0 + timedelta(days=1))


def check(store: DirectoryStore) -> tuple[bool, list[str], dict[str, int | None]]:
    report = verify_store(store, EVIDENCE, anchor_key=ANCHOR)
    return report.ok, report.problems, {s: r.first_bad for s, r in report.streams.items()}


def test_shipped_history_verifies_and_exports(tmp_path: Path) -> None:
    log, store, shipper = shipped(tmp_path)
    assert [p.name for p in seg_files(store)] == ["000000000001.seg", "000000000011.seg",
                                                   "000000000021.seg"]
    anchored(store)
    ok, problems, first_bad = check(store)
    assert ok, problems
    assert first_bad == {shipper.stream: None}
    assert shipper.stream.startswith("shop/chat/chat-0.")
    assert log.shipped_seq == log.seq == 30
    blocks = list(export_records(store, service="shop/chat", kinds=frozenset({"block"}),
                                 since=T0 + timedelta(minutes=10),
                                 until=T0 + timedelta(minutes=20)))
    assert [r["reference"] for r in blocks] == [f"r{n}" for n in range(10, 20) if n % 3]
    assert all(r["stream"] == shipper.stream for r in blocks)
    assert list(export_records(store, service="other/svc")) == []
    assert main(["records", "verify", "--store", str(store.root), "--key-file",
                 str(_file(tmp_path, EVIDENCE)), "--anchor-key-file",
                 str(_file(tmp_path, ANCHOR, "a"))]) == 0


def _file(tmp_path: Path, data: bytes, name: str = "k") -> Path:
    path = tmp_path / f"{name}.key"
    path.write_bytes(data)
    return path


def _reorder(records: list[dict[str, object]]) -> list[dict[str, object]]:
    return [records[0], records[2], records[1], *records[3:]]


def _delete_one(records: list[dict[str, object]]) -> list[dict[str, object]]:
    return records[:4] + records[5:]


def _edit(records: list[dict[str, object]]) -> list[dict[str, object]]:
    records[3]["kind"] = "label"
    return records


@pytest.mark.parametrize(("edit", "reseal", "first_bad", "message"), [
    (_edit, False, 11, "body hash mismatch"),  # edit a record in segment 2 (records 11..20)
    (_edit, True, 14, "altered"),  # with the key: re-sealed, yet the record's hash is off
    (_delete_one, False, 11, "body hash mismatch"),
    (_delete_one, True, 15, "record 16 where 15 belongs"),  # resealed: the numbering shows it
    (_reorder, True, 12, "where 12 belongs"),
])
def test_tampered_segments_are_named(tmp_path: Path, edit: object, reseal: bool,
                                     first_bad: int, message: str) -> None:
    _, store, shipper = shipped(tmp_path)
    anchored(store)
    if reseal and edit is _edit:
        # An insider with the evidence key edits record 14 and re-hashes it but not its chain.
        def edit_one(records: list[dict[str, object]]) -> list[dict[str, object]]:
            records[3]["kind"] = "label"
            return records
        path = seg_files(store)[1]
        data = path.read_bytes()
        header = json.loads(data.split(b"\n", 1)[0])
        records = [json.loads(r) for r in data.split(b"\n", 1)[1].splitlines()]
        records = edit_one(records)
        records[3]["hash"] = digest(records[3])
        body = b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)
        import hashlib
        header["body_sha256"] = hashlib.sha256(body).hexdigest()
        header["mac"] = segments.mac(EVIDENCE, header)
        path.write_bytes(segments.canonical(header) + b"\n" + body)
        message = "does not follow record 14"
        first_bad = 15
    else:
        rewrite(seg_files(store)[1], edit, reseal=reseal)
    ok, problems, bad = check(store)
    assert not ok
    assert any(message in p for p in problems), problems
    assert bad[shipper.stream] == first_bad, problems
    assert main(["records", "verify", "--store", str(store.root), "--key-file",
                 str(_file(tmp_path, EVIDENCE))]) == 1


def test_a_deleted_segment_is_a_gap(tmp_path: Path) -> None:
    _, store, shipper = shipped(tmp_path)
    seg_files(store)[1].unlink()
    ok, problems, bad = check(store)
    assert not ok and bad[shipper.stream] == 11
    assert any("records 11..20 are missing" in p for p in problems), problems


def test_truncation_is_caught_by_the_anchor(tmp_path: Path) -> None:
    _, store, shipper = shipped(tmp_path)
    anchored(store)
    seg_files(store)[-1].unlink()  # the last segment: no gap left behind it
    ok, problems, bad = check(store)
    assert not ok and bad[shipper.stream] == 21
    assert any("removed from the end (truncated)" in p for p in problems), problems


def test_a_rewrite_from_genesis_is_caught_by_the_anchor(tmp_path: Path) -> None:
    """An insider with the evidence key replaces the whole stream with a consistent,
    sealed history of their own: every segment verifies; the operator's anchor does not."""
    _, store, shipper = shipped(tmp_path)
    anchored(store)
    for path in seg_files(store):
        rewrite(path, lambda rs: [{**r, "kind": "label"} for r in rs], reseal=True)
    # re-chain across segments as well, so only the anchor can tell
    prev = segments.GENESIS if hasattr(segments, "GENESIS") else "0" * 64
    for path in seg_files(store):
        data = path.read_bytes()
        header = json.loads(data.split(b"\n", 1)[0])
        header["prev"] = prev
        records = [json.loads(r) for r in data.split(b"\n", 1)[1].splitlines()]
        for record in records:
            record["prev"] = prev
            record["hash"] = digest(record)
            prev = record["hash"]
        body = b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)
        import hashlib
        header.update(body_sha256=hashlib.sha256(body).hexdigest(), head=prev)
        header["mac"] = segments.mac(EVIDENCE, header)
        path.write_bytes(segments.canonical(header) + b"\n" + body)
    without_anchors = verify_store(store, EVIDENCE, anchor_key=b"not-the-key")
    assert not any("rewritten" in p for p in without_anchors.problems)
    ok, problems, bad = check(store)
    assert not ok and bad[shipper.stream] == 30
    assert any("is not the one anchored" in p and "rewritten" in p for p in problems), problems


def test_a_forged_anchor_is_reported(tmp_path: Path) -> None:
    _, store, _ = shipped(tmp_path)
    anchored(store)
    # A pod holds the evidence key, not the operator's anchor key.
    checkpoint(store, EVIDENCE, writer="pod", retention_days=1, now=T0 + timedelta(days=2))
    ok, problems, _ = check(store)
    assert not ok
    assert [p for p in problems if "forged anchor" in p and "-pod.json" in p], problems


def test_a_foreign_segment_is_reported(tmp_path: Path) -> None:
    """Written without the evidence key (e.g. by whoever holds only store credentials)."""
    _, store, shipper = shipped(tmp_path)
    _, data = segments.build(b"wrong key", stream=shipper.stream,
                                  lines=[seg_files(store)[0].read_bytes().split(b"\n")[1]
                                         + b"\n"], prev="0" * 64, written=T0, retain_until=T0)
    (store.root / segments.segment_key(shipper.stream, 31)).write_bytes(data)
    ok, problems, _ = check(store)
    assert not ok and any("MAC does not verify" in p for p in problems), problems


def test_store_down_buffers_then_recovers_without_loss_or_duplicates(tmp_path: Path) -> None:
    log = RecordLog(tmp_path / "records.jsonl", key=KEY)
    with socket.socket() as sock:  # a loopback port nothing listens on: a real refusal
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = S3Store(f"http://127.0.0.1:{port}/evidence", access_key="a", secret_key="b",
                   timeout=1.0, retries=0)
    shipper = Shipper(log, down, key=EVIDENCE, service="shop/chat", pod="chat-0",
                      retention_days=30, buffer_bytes=64 << 10)
    for n in range(20):
        log.append("label", user="u", reference=f"r{n}")
    shipper._cycle()
    assert not shipper.up and log.unshipped_bytes > 0 and log.shipped_seq == 0
    # The same log and chain, now with a store that answers.
    shipper.store = DirectoryStore(tmp_path / "store")
    shipper._cycle()
    assert shipper.up and log.shipped_seq == 20
    report = verify_store(shipper.store, EVIDENCE)
    assert report.ok and report.records == 20, report.problems
    # A restarted sidecar that died after writing a segment but before noting it ships nothing
    # twice: the store's last segment says where the stream stands.
    log.append("label", user="u", reference="r20")
    again_log = RecordLog(log.path, key=KEY)
    again = Shipper(again_log, shipper.store, key=EVIDENCE, service="shop/chat", pod="chat-0",
                    retention_days=30)
    assert again.stream == shipper.stream
    again.ship_once()
    report = verify_store(shipper.store, EVIDENCE)
    assert report.ok and report.records == 21, report.problems
    assert len(seg_files(shipper.store)) == 2


def test_full_buffer_refuses_when_closed_and_counts_losses_when_open(tmp_path: Path) -> None:
    log = RecordLog(tmp_path / "records.jsonl", key=KEY)
    log.buffer_limit = 4096  # as a Shipper sets it; the store is unreachable meanwhile
    with pytest.raises(BufferFull, match="buffer is full"):
        for n in range(100):
            log.append("label", user="u", reference=f"r{n}")
    kept = log.seq
    assert 5 < kept < 100
    log.fail_open = True
    for n in range(5):
        assert log.append("label", user="u", reference=f"x{n}")["kept"] is False
    assert log.lost == 5 and log.seq == kept  # counted, and nothing written
    log.flush()
    log.mark_shipped(log.seq, log.head, log.synced_end)  # the store came back
    written = log.append("label", user="u", reference="after")
    rows = [json.loads(r) for r in log.path.read_text().splitlines()]
    loss = rows[-2]
    assert loss["kind"] == LOSS and loss["lost"] == 5 and loss["kinds"] == {"label": 5}
    assert written["seq"] == loss["seq"] + 1 and written.get("kept", True)
    assert verify(log.path).ok


def test_torn_tail_is_repaired_and_reported(tmp_path: Path) -> None:
    log = RecordLog(tmp_path / "records.jsonl", key=KEY)
    for n in range(3):
        log.append("label", user="u", reference=f"r{n}")
    log.close()
    with log.path.open("ab") as file:
        file.write(b'{"seq":4,"time":"2026-')  # the crash came mid-write
    again = RecordLog(log.path, key=KEY)
    assert again.repairs and "cut off 22 bytes" in again.repairs[0]
    rows = [json.loads(r) for r in log.path.read_text().splitlines()]
    assert [r["kind"] for r in rows] == ["label"] * 3 + [REPAIR]
    assert verify(log.path).ok
    again.append("label", user="u")
    assert verify(log.path).ok


def test_unreadable_file_is_moved_aside_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_bytes(b"\x00" * 5000)
    log = RecordLog(path, key=KEY)
    assert log.new_chain and "moved to" in log.repairs[0]
    assert list(tmp_path.glob("records.jsonl.unreadable-*"))
    assert verify(path).ok


def test_start_up_reads_the_tail_only(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    log = RecordLog(path, key=KEY)
    for n in range(2000):
        log.append("label", user="u", reference=f"r{n}")
    log.close()
    size = path.stat().st_size
    reads: list[int] = []
    real_open = Path.open

    def counting_open(self: Path, *args: object, **kwargs: object) -> object:
        file = real_open(self, *args, **kwargs)  # type: ignore[call-overload]
        if self == path:
            read = file.read

            def counted(n: int = -1) -> bytes:
                data: bytes = read(n)
                reads.append(len(data))
                return data
            file.read = counted
        return file

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Path, "open", counting_open)
        again = RecordLog(path, key=KEY)
    assert again.seq == 2000
    assert sum(reads) <= 1 << 16 < size


def test_compaction_keeps_the_chain_and_restarts_continue_it(tmp_path: Path) -> None:
    log = RecordLog(tmp_path / "pod" / "records.jsonl", key=KEY)
    store = DirectoryStore(tmp_path / "store")
    shipper = Shipper(log, store, key=EVIDENCE, service="shop/chat", pod="chat-0",
                      retention_days=30)
    for n in range(50):
        log.append("label", user="u", reference=f"r{n}")
    shipper.ship_once()
    log.mark_shipped(log.shipped_seq, log.shipped_hash, log.shipped_offset, compact_at=0)
    first = json.loads(log.path.read_text().splitlines()[0])
    assert first["kind"] == SHIPPED and first["seq"] == 50
    assert log.path.stat().st_size < 300
    log.append("label", user="u", reference="r50")
    restarted = RecordLog(log.path, key=KEY)
    assert (restarted.seq, restarted.shipped_seq) == (51, 50)
    result = verify(log.path)
    assert result.ok and "records 1..50 are no longer in this file" in result.notes[0]
    again = Shipper(restarted, store, key=EVIDENCE, service="shop/chat", pod="chat-0",
                    retention_days=30)
    assert again.stream == shipper.stream
    assert again.ship_once() == 1
    report = verify_store(store, EVIDENCE)
    assert report.ok and report.records == 51, report.problems


def test_concurrent_appends_share_fsyncs(tmp_path: Path) -> None:
    log = RecordLog(tmp_path / "records.jsonl", key=KEY)

    def work(n: int) -> None:
        for i in range(50):
            log.append("label", user=f"u{n}", reference=f"{n}-{i}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert log.seq == 400 and verify(log.path).ok
    assert log.fsyncs < 400  # several records per fsync under concurrency


def test_records_pruned_before_shipping_began_show_as_a_gap_not_a_forgery(
        tmp_path: Path) -> None:
    log = RecordLog(tmp_path / "records.jsonl", key=KEY, retention_days=30)
    for n in range(5):
        log.append("block", user="u", now=T0 + timedelta(days=n), reference=f"r{n}")
    assert log.prune(now=T0 + timedelta(days=32, hours=12)) == 3  # records 1..3 dropped
    restarted = RecordLog(log.path, key=KEY)
    store = DirectoryStore(tmp_path / "store")
    shipper = Shipper(restarted, store, key=EVIDENCE, service="shop/chat", pod="chat-0",
                      retention_days=30)
    assert shipper.ship_once() == 2
    report = verify_store(store, EVIDENCE)
    assert report.problems == [f"{shipper.stream}: records/{shipper.stream}/000000000004.seg: "
                               "records 1..3 are missing before it (a gap between segments: a "
                               "segment was deleted or never shipped)"]


def test_worker_processes_find_what_one_process_finds(tmp_path: Path) -> None:
    _, store, shipper = shipped(tmp_path, count=100, per_segment=10)
    anchored(store)
    rewrite(seg_files(store)[4], _reorder, reseal=True)
    seg_files(store)[7].unlink()
    alone = verify_store(store, EVIDENCE, anchor_key=ANCHOR, workers=1)
    pooled = verify_store(store, EVIDENCE, anchor_key=ANCHOR, workers=2)
    assert not alone.ok and alone.problems == pooled.problems
    assert alone.streams[shipper.stream].first_bad == pooled.streams[shipper.stream].first_bad == 42
    assert alone.records == pooled.records == 90
