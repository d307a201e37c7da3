"""Shipping off the sidecar's event loop (Art.11): the store's calls in a worker process, and
compaction that lets appends go on while it copies and fsyncs.

What a user notices: records are shipped as before, none lost or twice when the worker dies
mid-traffic, the worker goes away with the shipper, and an answer's `label` record is not held
up by a compaction (which was most of the stalls shipping put on the event loop besides the
S3 client's own work; bench/records.py).
"""

from __future__ import annotations

import functools
import os
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hegui.evidence.shipper import Shipper
from hegui.evidence.store import AlreadyWritten, DirectoryStore, S3Store, StoreError
from hegui.evidence.verify import verify_store
from hegui.evidence.worker import ProcessStore
from hegui.moderation.records import SHIPPED, RecordLog, verify

KEY = b"pseudonymisation-key"
EVIDENCE = b"evidence-key-from-a-secret"
LATER = datetime.now(UTC) + timedelta(days=1)


def test_the_worker_answers_as_the_store_does(tmp_path: Path) -> None:
    store = ProcessStore(functools.partial(DirectoryStore, tmp_path / "store"), "dir")
    try:
        store.put("records/a/b/c.1/000000000001.seg", b"one\n", LATER)
        assert store.exists("records/a/b/c.1/000000000001.seg")
        assert not store.exists("records/a/b/c.1/000000000099.seg")
        assert store.get("records/a/b/c.1/000000000001.seg", length=3) == b"one"
        assert [v.key for v in store.versions("records/a/")] == [
            "records/a/b/c.1/000000000001.seg"]
        # Evidence is never written over, through the worker as in the store (Art.11).
        with pytest.raises(AlreadyWritten, match="already written"):
            store.put("records/a/b/c.1/000000000001.seg", b"two\n", LATER)
        assert (tmp_path / "store" / "records/a/b/c.1/000000000001.seg").read_bytes() == b"one\n"
    finally:
        store.close()


def test_a_store_that_cannot_open_says_why_at_each_call(tmp_path: Path) -> None:
    store = ProcessStore(functools.partial(S3Store, "ftp://nowhere/bucket", access_key="a",
                                           secret_key="b"), "ftp://nowhere/bucket")
    try:
        with pytest.raises(StoreError, match=r"could not be opened.*http"):
            store.exists("records/x")
    finally:
        store.close()


def test_a_dead_worker_loses_nothing_and_ships_nothing_twice(tmp_path: Path) -> None:
    log = RecordLog(tmp_path / "pod" / "records.jsonl", key=KEY)
    store = ProcessStore(functools.partial(DirectoryStore, tmp_path / "store"), "dir")
    shipper = Shipper(log, store, key=EVIDENCE, service="shop/chat", pod="chat-0",
                      retention_days=30, interval=0.05)
    shipper.start()
    try:
        for n in range(30):
            log.append("label", user="u", reference=f"r{n}")
        assert shipper.drain(20.0)
        assert store._process is not None
        os.kill(store._process.pid, signal.SIGKILL)  # the worker dies between cycles
        store._process.wait()
        for n in range(30, 60):
            log.append("block", user="u", reference=f"r{n}")
        assert shipper.drain(20.0)  # a new worker ships what waited
    finally:
        shipper.stop()
    report = verify_store(DirectoryStore(tmp_path / "store"), EVIDENCE)
    assert report.ok and report.records == 60, report.problems
    assert store._process is None  # stopping the shipper stopped its worker


def test_a_compaction_does_not_hold_up_appends(tmp_path: Path) -> None:
    """A `label` record is appended on the event loop: it must not wait for a compaction's
    copy and fsync (before: every append waited for both, 2-20 ms an fsync here)."""
    log = RecordLog(tmp_path / "records.jsonl", key=KEY)
    filler = "x" * 4000
    for n in range(12_000):  # about 48 MB after the shipped prefix, to copy
        log.append("label", user="u", reference=f"r{n}", note=filler)
    log.flush()
    shipped_seq, shipped_hash = 10, ""
    offset = 0
    with log.path.open("rb") as file:
        for _ in range(shipped_seq):
            line = file.readline()
            offset += len(line)
            shipped_hash = line.split(b'"hash":"')[1][:64].decode()
    compacting = threading.Thread(target=log.mark_shipped,
                                  args=(shipped_seq, shipped_hash, offset),
                                  kwargs={"compact_at": 0})
    tmp = log.path.with_name(log.path.name + ".tmp")
    compacting.start()
    deadline = time.monotonic() + 10
    while not tmp.exists() and compacting.is_alive() and time.monotonic() < deadline:
        time.sleep(0.0005)
    during = [log.append("label", user="u", reference=f"during-{n}") for n in range(5)]
    still_copying = compacting.is_alive()
    compacting.join()
    assert still_copying, "the appends waited for the whole compaction"
    log.flush()
    result = verify(log.path)
    assert result.ok, result.errors[:3]
    first = log.path.read_bytes().split(b"\n", 1)[0]
    assert b'"kind":"%s"' % SHIPPED.encode() in first
    assert log.seq == 12_005 == during[-1]["seq"]
    # What was appended during the copy is in the new file, waiting to be shipped.
    unshipped = log.read_unshipped(1 << 30)
    assert len(unshipped) == 12_005 - shipped_seq
    assert b"during-4" in unshipped[-1][0]
    assert RecordLog(log.path, key=KEY).seq == 12_005
