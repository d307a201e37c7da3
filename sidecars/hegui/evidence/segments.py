"""Segments: batches of records as they are shipped and kept (Art.11).

A segment is one object: a header line, then the records' lines exactly as the sidecar wrote
them. The header names the stream (one sidecar's chain: `<namespace>/<service>/<pod>.<id>`), the
first and last sequence numbers, `prev` (the hash of the record before the first, the genesis
hash for the first segment) and `head` (the hash of the last record), the body's SHA-256, when it
was written and until when it is retained, and `mac`: HMAC-SHA256 with the evidence key over the
canonical JSON of everything else. The records inside still chain to each other, so a segment
cannot be edited, cut or re-ordered without the MAC or the chain saying so, and segments chain to
each other through `prev`.

Objects are named `records/<stream>/<first:012d>.seg`; the operator's anchors are
`anchors/<time>-<writer>.json`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hegui.moderation.records import parse

FORMAT = 1
RECORDS = "records/"
ANCHORS = "anchors/"
SUFFIX = ".seg"
_STREAM_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")


class SegmentError(ValueError):
    """A segment that cannot be read or whose MAC does not verify."""


def canonical(value: dict[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def mac(key: bytes, header: dict[str, Any]) -> str:
    body = {k: v for k, v in header.items() if k != "mac"}
    return hmac.new(key, canonical(body), hashlib.sha256).hexdigest()


def stream_name(service: str, pod: str, chain_id: str) -> str:
    """`<namespace>/<name>/<pod>.<chain id>`: one chain of one sidecar."""
    namespace, _, name = service.partition("/")
    parts = [namespace or "default", name or "unknown", f"{pod}.{chain_id}"]
    for part in parts:
        if not _STREAM_PART.fullmatch(part):
            raise ValueError(f"{part!r} cannot be part of an evidence object name")
    return "/".join(parts)


def segment_key(stream: str, first: int) -> str:
    return f"{RECORDS}{stream}/{first:012d}{SUFFIX}"


def parse_key(key: str) -> tuple[str, int] | None:
    """(stream, first) of a segment's object name; None for anything else."""
    if not key.startswith(RECORDS) or not key.endswith(SUFFIX):
        return None
    stream, _, number = key[len(RECORDS):-len(SUFFIX)].rpartition("/")
    if not stream or not number.isdigit():
        return None
    return stream, int(number)


def build(key: bytes, *, stream: str, lines: list[bytes], prev: str, written: datetime,
          retain_until: datetime) -> tuple[dict[str, Any], bytes]:
    """The header and the bytes of a segment holding `lines` (whole record lines)."""
    if not lines:
        raise ValueError("a segment holds at least one record")
    first, last = parse(lines[0]), parse(lines[-1])
    if first is None or last is None:
        raise ValueError("a segment's lines must be records")
    body = b"".join(lines)
    header: dict[str, Any] = {
        "hegui_segment": FORMAT, "stream": stream, "first": first["seq"], "last": last["seq"],
        "count": len(lines), "prev": prev, "head": last["hash"],
        "body_sha256": hashlib.sha256(body).hexdigest(), "written": written.isoformat(),
        "retain_until": retain_until.isoformat()}
    header["mac"] = mac(key, header)
    return header, canonical(header) + b"\n" + body


@dataclass
class Segment:
    header: dict[str, Any]
    body: bytes
    problems: list[str]  # MAC, body hash; empty when the segment is what the sidecar wrote

    @property
    def first(self) -> int:
        value = self.header.get("first")
        return value if isinstance(value, int) else -1

    @property
    def last(self) -> int:
        value = self.header.get("last")
        return value if isinstance(value, int) else -1


def read_header(data: bytes) -> dict[str, Any]:
    line, _, _ = data.partition(b"\n")
    header = parse(line)
    if header is None or header.get("hegui_segment") != FORMAT:
        raise SegmentError("not a hegui segment (no header line)")
    return header


def read(key: bytes | None, data: bytes) -> Segment:
    """A segment and what is wrong with its header; the records are checked by the caller."""
    header = read_header(data)
    body = data[data.index(b"\n") + 1:]
    problems = []
    if key is not None and not hmac.compare_digest(str(header.get("mac", "")), mac(key, header)):
        problems.append("its MAC does not verify (written without the evidence key, or the "
                        "header was edited)")
    if hashlib.sha256(body).hexdigest() != header.get("body_sha256"):
        problems.append("its records are not the ones its header sealed (body hash mismatch)")
    return Segment(header, body, problems)
