"""Shipping a sidecar's records off the pod (Art.11).

The record file (hegui.moderation.records.RecordLog) is the local buffer: every record is durable
in it before its response is sent, and a `Shipper` thread ships what is durable and not yet
shipped, as segments (hegui.evidence.segments) written once to the store under a COMPLIANCE
retention of the posture's `retentionDays`. Shipped records are then compacted out of the file.

- At most `max_records` records or about `max_bytes` per segment, at most every `interval`
  seconds; at least once a minute something is shipped if something is waiting.
- Store unreachable: nothing is lost, the buffer grows up to its bound (`buffer_bytes`); when it is
  full the posture's fail mode applies (RecordLog: refuse with 503, or serve, count and record
  the loss). `hegui_evidence_store_up`, `hegui_evidence_buffer_bytes` and
  `hegui_evidence_records_lost` say so.
- No duplicates: segment names are the stream and the first record's sequence number, and a
  restarted shipper asks the store for the stream's last segment before it ships again; a name
  already written is never written again (the store keeps both versions, and `verify` flags a
  second one).
- The stream is one chain: `<namespace>/<service>/<pod>.<chain id>`, the chain id kept in
  `<records>.stream` and renewed when the file starts a new chain (a new emptyDir).
- Someone else's segment in the stream: the store's user and the service's sealing key are in
  the service's Secret, which anyone with `edit` in the namespace can read, and any holder of
  the store user can write the next segment name first. A name already written counts as this
  pod's only when the store's last segment ends on a record of this file with that record's
  hash; otherwise nothing is marked shipped (the acknowledged records stay in the pod), the
  shipper goes on in a new stream that continues the chain (a new chain id: `verify` then
  reports the new stream's gap), writes an `evidence_conflict` record naming the planted
  segment into it, logs an error and counts `hegui_evidence_stream_conflicts`: never a silent
  loss.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

from hegui.evidence import segments
from hegui.evidence.store import AlreadyWritten, Store, StoreError
from hegui.moderation.records import GENESIS, RecordLog, parse

log = logging.getLogger("hegui.evidence.shipper")

DEFAULT_BUFFER_BYTES = 64 << 20
CONFLICT = "evidence_conflict"  # the kind of the record that names a planted segment


class PlantedSegment(StoreError):
    """The stream's next segment name was written by someone else (Art.11)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key} was not written by this pod: {message}")
        self.key = key


def chain_id(records: RecordLog, *, renew: bool = False) -> str:
    """The id of the record file's chain, kept beside it; new for a new chain (or `renew`)."""
    path = records.path.with_name(records.path.name + ".stream")
    if not records.new_chain and not renew:
        try:
            found = json.loads(path.read_text(encoding="utf-8")).get("chain")
            if isinstance(found, str) and found.isalnum():
                return found
        except (OSError, ValueError, AttributeError):
            pass
    chain = secrets.token_hex(6)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"chain": chain}) + "\n", encoding="utf-8")
    tmp.replace(path)
    return chain


class Shipper:
    def __init__(self, records: RecordLog, store: Store, *, key: bytes, service: str, pod: str,
                 retention_days: int, buffer_bytes: int = DEFAULT_BUFFER_BYTES,
                 fail_open: bool = False, interval: float = 1.0, max_records: int = 10_000,
                 max_bytes: int = 4 << 20, registry: CollectorRegistry | None = None) -> None:
        if not key:
            raise ValueError("shipping evidence needs the evidence key (a Secret, Art.11)")
        if retention_days <= 0:
            raise ValueError("records kept for 0 days are not shipped")
        self.records, self.store, self.key = records, store, key
        self.retention = timedelta(days=retention_days)
        self.interval, self.max_records, self.max_bytes = interval, max_records, max_bytes
        records.buffer_limit = buffer_bytes
        records.fail_open = fail_open
        self.service, self.pod = service, pod
        self.stream = segments.stream_name(service, pod, chain_id(records))
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = False  # the store told us where the stream stands
        self.up = False
        self.last_error: str | None = None
        registry = registry or CollectorRegistry()
        self.shipped = Counter("hegui_evidence_records_shipped",
                               "Records shipped off the pod to the evidence store (Art.11).",
                               registry=registry)
        self.failures = Counter("hegui_evidence_ship_failures",
                                "Attempts to ship records that the store refused or did not "
                                "answer (Art.11).", registry=registry)
        self.conflicts = Counter("hegui_evidence_stream_conflicts",
                                 "Segments found in this pod's stream that it did not write "
                                 "(someone holding the store's credentials); the pod ships on "
                                 "in a new stream (Art.11): alert on any.", registry=registry)
        Gauge("hegui_evidence_store_up", "1 when the last call to the evidence store worked.",
              registry=registry).set_function(lambda: 1.0 if self.up else 0.0)
        Gauge("hegui_evidence_buffer_bytes", "Bytes of records waiting in the pod to be shipped.",
              registry=registry).set_function(lambda: float(records.unshipped_bytes))
        Gauge("hegui_evidence_buffer_limit_bytes", "The bound of that buffer; when it is full "
              "the fail mode applies.", registry=registry).set_function(lambda: buffer_bytes)
        Gauge("hegui_evidence_records_lost", "Records not kept because the buffer was full and "
              "the fail mode is Open (Art.11): alert on any.",
              registry=registry).set_function(lambda: float(records.lost))
        Gauge("hegui_evidence_shipped_seq", "The last record in the store.",
              registry=registry).set_function(lambda: float(records.shipped_seq))

    # --- where the stream stands ----------------------------------------------------------------

    def _resume(self) -> None:
        """Skip what the store already holds (a shipper that died after writing a segment)."""
        last: tuple[int, str] | None = None
        for version in self.store.versions(f"{segments.RECORDS}{self.stream}/"):
            parsed = segments.parse_key(version.key)
            if parsed is not None and (last is None or parsed[1] > last[0]):
                last = (parsed[1], version.key)
        if last is not None:
            data = self.store.get(last[1], length=1 << 16)  # the store down: StoreError
            try:
                header = segments.read_header(data)
                seq, head = int(header["last"]), str(header["head"])
            except (KeyError, TypeError, ValueError) as error:  # SegmentError is a ValueError
                self._rotate(PlantedSegment(last[1], f"not a segment this pod wrote ({error})"))
            else:
                try:
                    self._skip_through(last[1], seq, head)
                except PlantedSegment as planted:
                    self._rotate(planted)
        self._ready = True

    def _skip_through(self, key: str, seq: int, head: str) -> None:
        """The store's stream ends at record `seq` with hash `head` (segment `key`): mark this
        file's records through `seq` shipped if, and only if, its record `seq` has that hash
        (the hash chain then vouches for every record before it)."""
        records = self.records
        if records.shipped_seq >= seq:
            if records.shipped_seq == seq and records.shipped_hash != head:
                raise PlantedSegment(key, f"it ends at record {seq} with another hash than "
                                          "this pod's")
            return
        records.flush()
        found = self._find(seq)
        if found is None:
            raise PlantedSegment(key, f"it ends at record {seq}, which this pod never wrote")
        if found[0] != head:
            raise PlantedSegment(key, f"its record {seq} is not this pod's")
        records.mark_shipped(seq, head, found[1])

    def _find(self, seq: int) -> tuple[str, int] | None:
        """This file's record `seq` (hash, offset after it), read from the first unshipped
        record on (streamed); None when the file holds no such record."""
        offset = self.records.shipped_offset
        with self.records.path.open("rb") as file:
            file.seek(offset)
            for raw in file:
                offset += len(raw)
                record = parse(raw)
                if record is None or not isinstance(record.get("seq"), int) \
                        or record["seq"] > seq:
                    return None
                if record["seq"] == seq:
                    return str(record.get("hash")), offset
        return None

    def _rotate(self, planted: PlantedSegment) -> None:
        """Go on in a new stream that continues this file's chain, and say why in it."""
        old = self.stream
        self.stream = segments.stream_name(self.service, self.pod,
                                           chain_id(self.records, renew=True))
        self.conflicts.inc()
        log.error("evidence stream %s: %s; the records it would have covered stay in the pod "
                  "and are shipped as stream %s (Art.11)", old, planted, self.stream)
        try:
            self.records.append(CONFLICT, user=None, previous_stream=old, segment=planted.key,
                                reason=str(planted), continued_as=self.stream,
                                article="Art.11")
        except OSError as error:  # the buffer is full: the fail mode already applies
            log.error("cannot record the conflict in %s: %s", self.records.path, error)

    # --- shipping -------------------------------------------------------------------------------

    def ship_once(self, now: datetime | None = None) -> int:
        """Ship what is waiting, segment by segment; the number of records shipped. Raises
        StoreError when the store fails (what was shipped before stays shipped)."""
        if not self._ready:
            self._resume()
        self.records.flush()  # batched records (labels) go out with this cycle
        shipped = 0
        while batch := self.records.read_unshipped(self.max_bytes):
            batch = batch[:self.max_records]
            lines = [raw for raw, _ in batch]
            first = parse(lines[0])
            if first is None:
                raise StoreError(f"{self.records.path}: an unreadable record at offset "
                                 f"{self.records.shipped_offset}")
            when = now or datetime.now(UTC)
            header, data = segments.build(
                self.key, stream=self.stream, lines=lines,
                prev=self.records.shipped_hash if self.records.shipped_seq else GENESIS,
                written=when, retain_until=when + self.retention)
            key = segments.segment_key(self.stream, int(header["first"]))
            try:
                self.store.put(key, data, when + self.retention)
            except AlreadyWritten:
                # Written by an earlier life of this shipper (resume from what the store has),
                # or by someone else (`_resume` moves to a new stream): never written over.
                before = (self.stream, self.records.shipped_seq)
                self._ready = False
                self._resume()
                if (self.stream, self.records.shipped_seq) == before:
                    raise StoreError(f"{key} exists but the stream's last segment does not "
                                     "cover it: not writing over evidence") from None
                continue
            self.records.mark_shipped(int(header["last"]), str(header["head"]), batch[-1][1])
            self.shipped.inc(len(batch))
            shipped += len(batch)
        return shipped

    def _cycle(self) -> None:
        try:
            self.ship_once()
            self.up, self.last_error = True, None
        except (StoreError, OSError, ValueError) as error:
            self.failures.inc()
            if self.up or self.last_error != str(error):
                log.warning("cannot ship records (%s); %d bytes wait in the buffer", error,
                            self.records.unshipped_bytes)
            self.up, self.last_error = False, str(error)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._cycle()
            self._wake.wait(self.interval if self.up else min(5.0, self.interval * 2))
            self._wake.clear()
        self._cycle()  # a last try on the way out

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="hegui-evidence-shipper",
                                            daemon=True)
            self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after a last attempt to ship what is waiting."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return  # still in a call to the store: leave it its worker
            self._thread = None
        close = getattr(self.store, "close", None)
        if close is not None:
            close()  # the store's worker process (hegui.evidence.worker)

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until nothing waits to be shipped (tests, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.records.shipped_seq >= self.records.seq and self._ready:
                return True
            self.wake()
            time.sleep(0.05)
        return False


def chain_file(records_path: Path) -> Path:
    return records_path.with_name(records_path.name + ".stream")
