"""Append-only, hash-chained incident records (Art.11, Art.14).

Every block, mask, flag, fail-open response, strike and suspension is one JSON line. Each record
carries the SHA-256 of the previous record (`prev`) and its own (`hash`, over the canonical JSON of
every other field), and a sequence number; the file's head (last sequence number and hash) is
also kept in `<file>.head`. `verify` then detects an edited, removed, inserted or reordered
record, and a truncated file (the head no longer matches). Anchoring the head outside the pod
(the sidecar exports its sequence number as `hegui_sidecar_records_head_seq`) is what stops
someone who can rewrite both files.

Complaints (Art.15) are records too: `complaint` here, `complaint_closed` in a resolutions file
beside it (hegui.sidecar.complaints).

Records are flushed and fsync'ed before the response that caused them is sent. User ids are
pseudonymised with a keyed hash (HMAC-SHA256, the key from the posture's
`dataProtection.pseudonymisationKeyRef`), so records can be linked per user without naming them.
Retention (`dataProtection.retentionDays`) is applied by `prune`, which drops old records and
starts the file with a `retention` checkpoint that carries the hash of the last dropped record,
so the chain still verifies from there.

`hegui records verify FILE` (wire `add_parser` into hegui.cli), or
`python -m hegui.moderation.records records verify FILE`, checks a file (exit 0 intact,
1 tampered).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import sys
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
RETENTION = "retention"


def _digest(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def pseudonym(key: bytes, user: str) -> str:
    """A stable, keyed pseudonym of a user id (Art.11): linkable, not reversible without the key."""
    return hmac.new(key, user.encode(), hashlib.sha256).hexdigest()[:32]


def _head_path(path: Path) -> Path:
    return path.with_name(path.name + ".head")


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
        self._lock = threading.Lock()
        self.seq, self.head = self._read_head()

    def _read_head(self) -> tuple[int, str]:
        last: dict[str, Any] | None = None
        if self.path.exists():
            with self.path.open("rb") as file:
                for line in file:
                    if line.strip():
                        last = json.loads(line)
        if last is None:
            return 0, GENESIS
        return int(last["seq"]), str(last["hash"])

    def user(self, user: str | None) -> str | None:
        if not user:
            return None
        return pseudonym(self.key, user) if self.pseudonymise else user

    def append(self, kind: str, *, user: str | None = None, now: datetime | None = None,
               **fields: Any) -> dict[str, Any]:
        with self._lock:
            record: dict[str, Any] = {
                "seq": self.seq + 1, "time": (now or datetime.now(UTC)).isoformat(),
                "kind": kind, "user": self.user(user), **fields, "prev": self.head}
            record["hash"] = _digest(record)
            line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as file:
                file.write(line)
                file.flush()
                os.fsync(file.fileno())  # durable before the response is sent (Art.11)
            self.seq, self.head = record["seq"], record["hash"]
            self._write_head()
            return record

    def _write_head(self) -> None:
        head = _head_path(self.path)
        tmp = head.with_name(head.name + ".tmp")
        tmp.write_text(json.dumps({"seq": self.seq, "hash": self.head}) + "\n", encoding="utf-8")
        with tmp.open("rb") as file:
            os.fsync(file.fileno())
        tmp.replace(head)

    def prune(self, now: datetime | None = None) -> int:
        """Drop records older than the retention period; the number dropped."""
        cutoff = (now or datetime.now(UTC)) - timedelta(days=self.retention_days)
        with self._lock:
            if not self.path.exists():
                return 0
            records = [json.loads(line) for line in self.path.read_bytes().splitlines()
                       if line.strip()]
            old = [r for r in records if r["kind"] != RETENTION
                   and datetime.fromisoformat(r["time"]) < cutoff]
            if not old:
                return 0
            last_old = old[-1]
            kept = [r for r in records if r["seq"] > last_old["seq"]]
            checkpoint: dict[str, Any] = {
                "seq": last_old["seq"], "time": (now or datetime.now(UTC)).isoformat(),
                "kind": RETENTION, "user": None, "dropped_through": last_old["seq"],
                "retention_days": self.retention_days, "prev": last_old["prev"],
                "dropped_hash": last_old["hash"]}
            # The checkpoint takes the place of the last dropped record: its hash is the one
            # the first kept record points to.
            checkpoint["hash"] = last_old["hash"]
            tmp = self.path.with_name(self.path.name + ".tmp")
            with tmp.open("w", encoding="utf-8") as file:
                for record in [checkpoint, *kept]:
                    file.write(json.dumps(record, ensure_ascii=False, separators=(",", ":"))
                               + "\n")
                file.flush()
                os.fsync(file.fileno())
            tmp.replace(self.path)
            return len([r for r in old if r["kind"] != RETENTION])


@dataclass
class Verification:
    records: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def verify(path: Path, head: Path | None = None) -> Verification:
    """Check the chain of a record file and its head; every problem, by line."""
    result = Verification()
    prev, seq = GENESIS, 0
    try:
        lines = path.read_bytes().splitlines()
    except OSError as error:
        result.errors.append(f"{path}: {error}")
        return result
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            result.errors.append(f"line {number}: empty line")
            continue
        try:
            record = json.loads(raw)
            if not isinstance(record, dict):
                raise ValueError("not an object")
        except ValueError as error:
            result.errors.append(f"line {number}: not a record ({error})")
            continue
        result.records += 1
        if number == 1 and record.get("kind") == RETENTION:
            # The anchor after a retention prune: it stands for the last dropped record.
            if record.get("hash") != record.get("dropped_hash"):
                result.errors.append(f"line {number}: retention checkpoint altered")
            prev, seq = str(record.get("hash")), int(record.get("seq", 0))
            continue
        if record.get("hash") != _digest(record):
            result.errors.append(f"line {number}: record {record.get('seq')} was altered "
                                 "(hash mismatch)")
        if record.get("prev") != prev:
            result.errors.append(f"line {number}: record {record.get('seq')} does not follow "
                                 "the previous record (removed, inserted or reordered)")
        if record.get("seq") != seq + 1:
            result.errors.append(f"line {number}: sequence {record.get('seq')} after {seq}")
        prev, seq = str(record.get("hash")), int(record.get("seq", seq + 1))
    head_file = head or _head_path(path)
    try:
        anchor = json.loads(head_file.read_text(encoding="utf-8"))
        if (anchor.get("seq"), anchor.get("hash")) != (seq, prev):
            result.errors.append(f"the file ends at record {seq}, its head says "
                                 f"{anchor.get('seq')}: records were removed from the end")
    except (OSError, ValueError) as error:
        result.errors.append(f"{head_file}: the head cannot be read ({error})")
    return result


def add_parser(commands: Any) -> None:
    """`hegui records verify FILE`, on the `hegui` command's subparsers."""
    records = commands.add_parser("records", help="incident records of the sidecars (Art.11)")
    records_commands = records.add_subparsers(dest="records_command", required=True)
    check = records_commands.add_parser(
        "verify", help="check a record file's hash chain; exit 0 intact, 1 tampered")
    check.add_argument("file", type=Path)
    check.add_argument("--head", type=Path, help="the head file (default FILE.head)")
    check.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    result = verify(args.file, args.head)
    for error in result.errors:
        print(f"{args.file}: {error}", file=sys.stderr)
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
