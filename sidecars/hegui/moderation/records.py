"""Append-only, hash-chained incident records (Art.11, Art.14).

Every block, mask, flag, fail-open response, strike, suspension and complaint is one JSON line.
Each record carries the SHA-256 of the previous record (`prev`) and its own (`hash`, over the
canonical JSON of every other field), and a sequence number. `verify` detects an edited, removed,
inserted or reordered record; the head (`<file>.head`, last sequence number and hash, rewritten
after each durable batch) lets it notice a truncated tail.

This file lives in the pod, where anything that can mount its volume can rewrite it whole, head
included. What makes the records evidence is shipping them off the pod (hegui.evidence): keyed,
hash-chained segments in an object store under Object Lock, anchored by the operator. With a
shipper attached the file is only a small, bounded buffer: shipped records are compacted away
(the file then starts with a `shipped` checkpoint), and when unshipped records fill the buffer the
posture's fail mode applies (`BufferFull`: refuse service; or serve, count every record not kept
and write a `loss` record once there is room again; never a silent loss).

Complaints (Art.15) are records too: `complaint` here, `complaint_closed` in a resolutions file
beside it (hegui.sidecar.complaints).

Records are durable (fsync'ed) before the response that caused them is sent. Appends from
concurrent requests share one fsync (group commit): a request waits for the fsync that covers its
record, and whoever runs it covers everyone's records written so far. User ids are pseudonymised
with a keyed hash (HMAC-SHA256, the key from the posture's `dataProtection.pseudonymisationKeyRef`),
so records can be linked per user without naming them. Without a shipper, retention
(`dataProtection.retentionDays`) is applied by `prune`, which drops old records and starts the
file with a `retention` checkpoint that carries the hash of the last dropped record.

Start-up and pruning stream the file (the head is read from its tail, never the whole file into
memory). A torn last record (a crash mid-write, a full disk) is cut off and reported with a
`repair` record, not fatal; a file with no readable record near its end is moved aside and a new
chain begins, also reported.

`hegui records verify FILE` checks a file (exit 0 intact, 1 tampered); `hegui records verify
--store URL` checks the shipped history against its anchors (hegui.evidence.cli).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("hegui.moderation.records")

GENESIS = "0" * 64
RETENTION = "retention"  # checkpoint: records before it were dropped after retentionDays
SHIPPED = "shipped"  # checkpoint: records before it were shipped off the pod (hegui.evidence)
REPAIR = "repair"  # a torn tail was cut off at start-up
LOSS = "loss"  # records not kept while the buffer was full and the fail mode was Open
CHECKPOINTS = frozenset({RETENTION, SHIPPED})
# Kinds written to the file at once but fsync'ed in batches, at most SYNC_INTERVAL later: the
# `label` record of every ordinary answer (Art.12). An fsync costs 2-20 ms on the machines we
# measured (bench/records.py); a record per answer cannot wait for one. A killed process loses
# nothing (the page cache is written out by the kernel); only a crash of the node within the
# interval can. Incidents (blocks, masks, strikes, complaints...) wait for their fsync.
BATCHED = frozenset({"label"})
SYNC_INTERVAL = 0.05
_TAIL_SCAN = 1 << 20  # how far back start-up looks for the last whole record


def digest(record: dict[str, Any]) -> str:
    """The SHA-256 of a record's canonical JSON, its `hash` field left out."""
    body = {k: v for k, v in record.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


_digest = digest  # the name older callers use

try:  # verify checks a million records in seconds with it; the sidecar extra installs it
    import orjson

    def _fast_canonical(body: dict[str, Any]) -> bytes | None:
        try:
            return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        except (TypeError, orjson.JSONEncodeError):
            return None

    def _fast_loads(raw: bytes) -> Any:
        return orjson.loads(raw)
except ImportError:  # pragma: no cover
    def _fast_canonical(body: dict[str, Any]) -> bytes | None:
        return None

    def _fast_loads(raw: bytes) -> Any:
        return json.loads(raw)


def hash_matches(record: dict[str, Any]) -> bool:
    """Whether the record's `hash` is its digest. The fast encoder's bytes are tried first:
    if they hash to `hash` they are the canonical bytes (barring a SHA-256 collision);
    otherwise the canonical encoder decides."""
    want = record.get("hash")
    fast = _fast_canonical({k: v for k, v in record.items() if k != "hash"})
    if fast is not None and hashlib.sha256(fast).hexdigest() == want:
        return True
    return digest(record) == want


def dumps(record: dict[str, Any]) -> bytes:
    """One record as its line in a record file or a segment."""
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def pseudonym(key: bytes, user: str) -> str:
    """A stable, keyed pseudonym of a user id (Art.11): linkable, not reversible without the key."""
    return hmac.new(key, user.encode(), hashlib.sha256).hexdigest()[:32]


def _head_path(path: Path) -> Path:
    return path.with_name(path.name + ".head")


class BufferFull(OSError):
    """The local buffer of unshipped records is full and the fail mode is Closed: nothing is
    served that cannot be recorded (Art.11)."""


def reverse_lines(file: IO[bytes], end: int, block: int = 1 << 16,
                  limit: int | None = None) -> Iterator[tuple[int, bytes]]:
    """(offset, line) of a file's lines from the last one back, each with its newline if it has
    one; reads `block` bytes at a time and stops after `limit` bytes."""
    pos, rest = end, b""
    while pos > 0 and (limit is None or end - pos < limit):
        step = min(block, pos)
        pos -= step
        file.seek(pos)
        rest = file.read(step) + rest
        while (cut := rest.rfind(b"\n", 0, len(rest) - 1)) >= 0:
            yield pos + cut + 1, rest[cut + 1:]
            rest = rest[:cut + 1]
    if rest and pos == 0:
        yield 0, rest


def parse(raw: bytes) -> dict[str, Any] | None:
    """A record line as a dict, or None when it is not one."""
    try:
        record = _fast_loads(raw)
    except ValueError:  # orjson.JSONDecodeError is one
        try:
            record = json.loads(raw)  # what orjson refuses (integers beyond 64 bits)
        except ValueError:
            return None
    return record if isinstance(record, dict) else None


class RecordLog:
    """One sidecar's record file. Appends are serialised; each is durable when it returns."""

    def __init__(self, path: Path, *, key: bytes | None = None, retention_days: int = 180,
                 pseudonymise: bool = True) -> None:
        if pseudonymise and not key:
            raise ValueError("pseudonymised records need a key (dataProtection."
                             "pseudonymisationKeyRef, Art.11)")
        self.path = path
        self.key = key or b""
        self.retention_days = retention_days
        self.pseudonymise = pseudonymise
        self._lock = threading.Lock()  # the order of records; taken after _sync_lock
        self._sync_lock = threading.Lock()  # one fsync at a time
        self._fd: int | None = None
        self._appended = 0  # bytes appended since start (monotonic, for group commit)
        self._synced = 0
        self.fsyncs = 0
        self._flush_wanted = threading.Event()  # batched records wait for the flusher
        self._flusher: threading.Thread | None = None
        self._closing = False
        self.repairs: list[str] = []  # what start-up had to repair, reported
        # Shipping (hegui.evidence): where unshipped records start in the file, what was shipped.
        self.buffer_limit: int | None = None  # bytes of unshipped records the file may hold
        self.fail_open = False  # when the buffer is full: serve and count (True) or refuse
        self.shipped_seq, self.shipped_hash, self.shipped_offset = 0, GENESIS, 0
        self.lost = 0  # records not kept while the buffer was full (fail mode Open)
        self._lost_pending: Counter[str] = Counter()
        self._lost_since: str | None = None
        self.seq, self.head, self._end = self._recover()
        self.new_chain = self.seq == 0  # this file starts a chain (no file, or one moved aside)
        self._synced_end = self._end
        for problem in self.repairs:
            self.append(REPAIR, problem=problem, article="Art.11")

    # --- start-up -------------------------------------------------------------------------------

    def _recover(self) -> tuple[int, str, int]:
        """The head (seq, hash) and the file's end, from its tail; repairs a torn tail."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return 0, GENESIS, 0
        with self.path.open("r+b") as file:
            first = file.readline(1 << 16)
            start = parse(first)
            # Whatever came before a checkpoint is not in this file: shipping starts after it.
            if start is not None and start.get("kind") in CHECKPOINTS:
                self.shipped_seq = int(start.get("seq", 0))
                self.shipped_hash = str(start.get("hash", GENESIS))
                self.shipped_offset = len(first)
            dropped = 0
            for offset, raw in reverse_lines(file, size, limit=_TAIL_SCAN):
                record = parse(raw)
                if record is not None and isinstance(record.get("seq"), int) \
                        and isinstance(record.get("hash"), str):
                    end = offset + len(raw)
                    if not raw.endswith(b"\n"):  # whole but unterminated: terminate it
                        file.seek(end)
                        file.write(b"\n")
                        end += 1
                    elif dropped:
                        file.truncate(end)
                    if dropped:
                        self._report(f"cut off {dropped} bytes of a torn or unreadable tail "
                                     f"after record {record['seq']}")
                        file.flush()
                        os.fsync(file.fileno())
                    return int(record["seq"]), str(record["hash"]), end
                dropped += len(raw)
        if size == 0:
            return 0, GENESIS, 0
        aside = self.path.with_name(f"{self.path.name}.unreadable-"
                                    f"{datetime.now(UTC):%Y%m%dT%H%M%S}")
        self.path.replace(aside)
        self.shipped_seq, self.shipped_hash, self.shipped_offset = 0, GENESIS, 0
        self._report(f"no readable record in the last {min(size, _TAIL_SCAN)} bytes; the file "
                     f"was moved to {aside.name} and a new chain begins")
        return 0, GENESIS, 0

    def _report(self, problem: str) -> None:
        log.warning("%s: %s", self.path, problem)
        self.repairs.append(problem)

    # --- appending ------------------------------------------------------------------------------

    def user(self, user: str | None) -> str | None:
        if not user:
            return None
        return pseudonym(self.key, user) if self.pseudonymise else user

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return self._fd

    def close(self) -> None:
        self.flush()
        self._closing = True
        self._flush_wanted.set()
        with self._sync_lock, self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _write(self, record: dict[str, Any]) -> int:
        """Append one record (the lock held); the bytes appended so far."""
        data = dumps(record)
        fd = self._open()
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except OSError:
            os.ftruncate(fd, self._end)  # no torn line for the next append to follow
            raise
        self._end += len(data)
        self._appended += len(data)
        self.seq, self.head = record["seq"], record["hash"]
        return self._appended

    def _record(self, kind: str, user: str | None, now: datetime | None,
                fields: dict[str, Any]) -> dict[str, Any]:
        record: dict[str, Any] = {
            "seq": self.seq + 1, "time": (now or datetime.now(UTC)).isoformat(),
            "kind": kind, "user": self.user(user), **fields, "prev": self.head}
        record["hash"] = digest(record)
        return record

    def _room(self, size: int) -> bool:
        return (self.buffer_limit is None
                or self._end - self.shipped_offset + size <= self.buffer_limit)

    def append(self, kind: str, *, user: str | None = None, now: datetime | None = None,
               **fields: Any) -> dict[str, Any]:
        """Append a record and return it once it is durable.

        With a bounded buffer that is full: `BufferFull` (fail mode Closed), or the record is
        counted as lost and returned unwritten, `"kept": False` (fail mode Open)."""
        with self._lock:
            record = self._record(kind, user, now, fields)
            if not self._room(len(dumps(record)) + 512):
                if not self.fail_open:
                    raise BufferFull(f"{self.path}: {self._end - self.shipped_offset} bytes of "
                                     "records are waiting to be shipped and the buffer is full "
                                     "(Art.11)")
                self.lost += 1
                self._lost_pending[kind] += 1
                self._lost_since = self._lost_since or record["time"]
                return {**record, "seq": self.seq, "kept": False}
            if self._lost_pending:
                # What could not be kept is said in the chain itself: never a silent loss.
                self._write(self._record(
                    LOSS, None, now, {"lost": sum(self._lost_pending.values()),
                                      "kinds": dict(sorted(self._lost_pending.items())),
                                      "since": self._lost_since, "article": "Art.11"}))
                self._lost_pending.clear()
                self._lost_since = None
                record = self._record(kind, user, now, fields)
            mine = self._write(record)
            if kind in BATCHED:
                if self._flusher is None:  # one thread for the log's life, started once
                    self._flusher = threading.Thread(target=self._flush_batches, daemon=True,
                                                     name="hegui-records-flusher")
                    self._flusher.start()
                self._flush_wanted.set()  # cheap: the request does not wait for the fsync
                return record
        self._sync(mine)
        return record

    def _flush_batches(self) -> None:
        while not self._closing:
            self._flush_wanted.wait()
            time.sleep(SYNC_INTERVAL)  # let the batch gather
            self._flush_wanted.clear()
            with self._lock:
                upto = self._appended
            try:
                self._sync(upto)
            except OSError as error:  # the next incident's own fsync will report it
                log.error("%s: cannot make batched records durable: %s", self.path, error)

    def flush(self) -> None:
        """Make every record appended so far durable (batched ones included)."""
        with self._lock:
            upto = self._appended
        self._sync(upto)

    def _sync(self, upto: int) -> None:
        """Make everything appended up to `upto` durable; one fsync covers every record
        appended before it started (group commit)."""
        with self._sync_lock:
            if self._synced >= upto:
                return
            with self._lock:
                target, end, seq, head, fd = (self._appended, self._end, self.seq, self.head,
                                              self._fd)
            if fd is not None:
                os.fsync(fd)  # durable before the response is sent (Art.11)
                self.fsyncs += 1
            self._synced, self._synced_end = target, end
            self._write_head(seq, head)

    def _write_head(self, seq: int, head: str) -> None:
        # Not fsync'ed: the head beside the file is a convenience for `verify`, not evidence
        # (whatever can rewrite the file can rewrite it too); the anchors are off the pod.
        path = _head_path(self.path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"seq": seq, "hash": head}) + "\n", encoding="utf-8")
        tmp.replace(path)

    # --- shipping (hegui.evidence) --------------------------------------------------------------

    @property
    def synced_end(self) -> int:
        """The file offset up to which records are durable."""
        return self._synced_end

    @property
    def unshipped_bytes(self) -> int:
        return self._end - self.shipped_offset

    def read_unshipped(self, max_bytes: int) -> list[tuple[bytes, int]]:
        """Durable records not yet shipped, as (line, offset after it), at most about
        `max_bytes` (at least one record)."""
        out: list[tuple[bytes, int]] = []
        end = self._synced_end
        offset = self.shipped_offset
        if offset >= end:
            return out
        with self.path.open("rb") as file:
            file.seek(offset)
            total = 0
            while offset < end and (not out or total < max_bytes):
                raw = file.readline()
                if not raw:
                    break
                offset += len(raw)
                total += len(raw)
                out.append((raw, offset))
        return out

    def mark_shipped(self, seq: int, head: str, offset: int, *, compact_at: int = 1 << 20) -> None:
        """Records through `seq` (ending at file offset `offset`) are in the store. Once the
        shipped prefix passes `compact_at` bytes the file is rewritten without it, starting with
        a `shipped` checkpoint (streamed, never read whole).

        The copy and its fsync run without the append lock, so appends (the event loop's
        `label` records) go on meanwhile, into the old file; this holds the sync lock, so none of
        what they add is fsync'ed or acknowledged as durable in the old file. Under the append
        lock only that small rest is copied, the copy renamed over and opened for the next
        fsync, which makes the rest durable in the new file."""
        with self._sync_lock:
            with self._lock:
                self.shipped_seq, self.shipped_hash, self.shipped_offset = seq, head, offset
                if offset < compact_at:
                    return
                copied = self._end
            checkpoint = dumps({"seq": seq, "time": datetime.now(UTC).isoformat(),
                                "kind": SHIPPED, "user": None, "hash": head})
            tmp = self.path.with_name(self.path.name + ".tmp")
            with self.path.open("rb") as source, tmp.open("wb") as target:
                target.write(checkpoint)
                source.seek(offset)
                left = copied - offset
                while left > 0 and (chunk := source.read(min(left, 1 << 16))):
                    target.write(chunk)
                    left -= len(chunk)
                target.flush()
                os.fsync(target.fileno())
                with self._lock:
                    source.seek(copied)
                    while chunk := source.read(1 << 16):  # appended during the copy
                        target.write(chunk)
                    target.flush()
                    tmp.replace(self.path)
                    if self._fd is not None:
                        os.close(self._fd)
                        self._fd = None
                    self._open()  # the next fsync covers the rest, in the new file
                    delta = offset - len(checkpoint)
                    self._end -= delta
                    self._synced_end -= delta
                    self.shipped_offset = len(checkpoint)

    def _rewrite(self, first_line: bytes, keep_from: int) -> None:
        """Replace the file by `first_line` and what follows byte `keep_from`, streamed through
        a synced temporary file and renamed over (never read whole); the caller holds the locks."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        with self.path.open("rb") as source, tmp.open("wb") as target:
            target.write(first_line)
            source.seek(keep_from)
            while chunk := source.read(1 << 16):
                target.write(chunk)
            target.flush()
            os.fsync(target.fileno())
        tmp.replace(self.path)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # --- retention without a shipper ------------------------------------------------------------

    def prune(self, now: datetime | None = None) -> int:
        """Drop records older than the retention period; the number dropped. Streams the file.
        With a shipper the store keeps the records for the retention period and the file holds
        only unshipped ones: nothing to do here."""
        if self.buffer_limit is not None:
            return 0
        cutoff = (now or datetime.now(UTC)) - timedelta(days=self.retention_days)
        with self._sync_lock, self._lock:
            if not self.path.exists():
                return 0
            last_old: dict[str, Any] | None = None
            dropped = 0
            keep_from = 0
            with self.path.open("rb") as file:
                for raw in file:
                    record = parse(raw)
                    if record is None:
                        break
                    try:
                        old = datetime.fromisoformat(str(record.get("time"))) < cutoff
                    except ValueError:
                        old = False
                    if not old:
                        break
                    keep_from += len(raw)
                    if record.get("kind") not in CHECKPOINTS:
                        dropped += 1
                        last_old = record
            if last_old is None or keep_from == 0:
                return 0
            checkpoint: dict[str, Any] = {
                "seq": last_old["seq"], "time": (now or datetime.now(UTC)).isoformat(),
                "kind": RETENTION, "user": None, "dropped_through": last_old["seq"],
                "retention_days": self.retention_days, "prev": last_old["prev"],
                "dropped_hash": last_old["hash"]}
            # The checkpoint takes the place of the last dropped record: its hash is the one
            # the first kept record points to.
            checkpoint["hash"] = last_old["hash"]
            line = dumps(checkpoint)
            self._rewrite(line, keep_from)
            self._end = self._synced_end = self.path.stat().st_size
            return dropped


@dataclass
class Verification:
    records: int = 0
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def verify(path: Path, head: Path | None = None) -> Verification:
    """Check the chain of a record file and its head; every problem, by line. Streams the file.

    A file that starts with a checkpoint (`retention` or `shipped`) is checked from there: what
    came before is no longer in the pod, and only the store's copy can show it was not forged."""
    result = Verification()
    head_file = head or _head_path(path)
    anchor: dict[str, Any] | None = None
    try:
        anchor = parse(head_file.read_bytes())
        if anchor is None:
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        result.notes.append(f"{head_file}: no head beside the file; a cut-off tail cannot be "
                            "seen here (the store's anchors can)")
    except (OSError, ValueError) as error:
        result.errors.append(f"{head_file}: the head cannot be read ({error})")
    anchored_hash: str | None = None
    prev, seq = GENESIS, 0
    try:
        file = path.open("rb")
    except OSError as error:
        result.errors.append(f"{path}: {error}")
        return result
    with file:
        for number, raw in enumerate(file, start=1):
            if not raw.strip():
                result.errors.append(f"line {number}: empty line")
                continue
            record = parse(raw)
            if record is None:
                result.errors.append(f"line {number}: not a record (not a JSON object)")
                continue
            result.records += 1
            kind = record.get("kind")
            if number == 1 and kind in CHECKPOINTS:
                # It stands for the last record no longer in the file.
                if kind == RETENTION and record.get("hash") != record.get("dropped_hash"):
                    result.errors.append(f"line {number}: retention checkpoint altered")
                prev, seq = str(record.get("hash")), int(record.get("seq", 0))
                result.notes.append(f"records 1..{seq} are no longer in this file ({kind}); "
                                    "verify them in the store (hegui records verify --store)")
                continue
            if record.get("hash") != digest(record):
                result.errors.append(f"line {number}: record {record.get('seq')} was altered "
                                     "(hash mismatch)")
            if record.get("prev") != prev:
                result.errors.append(f"line {number}: record {record.get('seq')} does not "
                                     "follow the previous record (removed, inserted or "
                                     "reordered)")
            if record.get("seq") != seq + 1:
                result.errors.append(f"line {number}: sequence {record.get('seq')} after {seq}")
            prev = str(record.get("hash"))
            seq = record["seq"] if isinstance(record.get("seq"), int) else seq + 1
            if anchor is not None and seq == anchor.get("seq"):
                anchored_hash = prev
    if anchor is not None:
        if not isinstance(anchor.get("seq"), int) or anchor["seq"] > seq:
            result.errors.append(f"the file ends at record {seq}, its head says "
                                 f"{anchor.get('seq')}: records were removed from the end")
        elif anchor["seq"] > 0 and anchored_hash is not None \
                and anchored_hash != anchor.get("hash"):
            result.errors.append(f"record {anchor['seq']} is not the one the head names: the "
                                 "chain was rewritten")
    return result


def add_parser(commands: Any) -> None:
    """`hegui records verify|export|anchor`, on the `hegui` command's subparsers."""
    from hegui.evidence.cli import add_arguments

    records = commands.add_parser("records", help="incident records of the sidecars (Art.11)")
    records_commands = records.add_subparsers(dest="records_command", required=True)
    add_arguments(records_commands, run)


def run(args: argparse.Namespace) -> int:
    """`hegui records verify FILE`: a record file as found in a pod's volume."""
    result = verify(args.file, args.head)
    for error in result.errors:
        print(f"{args.file}: {error}", file=sys.stderr)
    for note in result.notes:
        print(f"{args.file}: {note}", file=sys.stderr)
    print(f"{args.file}: {result.records} records, "
          f"{'intact' if result.ok else f'{len(result.errors)} problems'}")
    return 0 if result.ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hegui.moderation")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
