"""Checking shipped evidence (Art.11, Art.19): `hegui records verify --store URL`.

Every stream (one sidecar's chain) is read segment by segment, oldest version of each object
first, and checked:

- each segment's MAC (the evidence key) and body hash: an edited or forged segment;
- each record's hash and its link to the one before, inside and across segments, and the
  sequence numbers: an edited, deleted, inserted or reordered record, a gap between segments
  (a deleted segment), a stream that does not start at record 1 from the genesis hash;
- a second version of any object: someone wrote over a segment (the store kept the first,
  which is what is checked);
- the anchors: every checkpoint the operator wrote (locked in the store, and any given with
  `--anchors`, e.g. from the hegui-owned ConfigMap) must carry a valid MAC, and each stream must
  reach the anchored record with the anchored hash: a truncated stream, or one rewritten from
  its genesis, no longer does.

Each problem names the stream, the object and the first bad record.
"""

from __future__ import annotations

import hmac
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hegui.evidence import segments
from hegui.evidence.store import Store, StoreError, Version
from hegui.moderation.records import GENESIS, hash_matches, parse


@dataclass
class StreamReport:
    stream: str
    segments: int = 0
    records: int = 0
    last: int = 0
    head: str = GENESIS
    first_bad: int | None = None  # the sequence number of the first bad record


@dataclass
class Report:
    streams: dict[str, StreamReport] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    anchors: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def records(self) -> int:
        return sum(s.records for s in self.streams.values())


def oldest_versions(versions: Iterable[Version], report: Report) -> dict[str, Version]:
    by_key: dict[str, list[Version]] = defaultdict(list)
    for version in versions:
        by_key[version.key].append(version)
    for key, found in by_key.items():
        if len(found) > 1:
            report.problems.append(f"{key}: written {len(found)} times: a locked object was "
                                   "written over (the first version is checked)")
    return {key: found[0] for key, found in by_key.items()}


def read_anchor(key: bytes | None, data: bytes, where: str) -> tuple[dict[str, Any] | None,
                                                                      str | None]:
    """An anchor document and what is wrong with it."""
    doc = parse(data.strip())
    if doc is None or not isinstance(doc.get("streams"), dict):
        return None, f"{where}: not a hegui anchor"
    if key is not None and not hmac.compare_digest(str(doc.get("mac", "")),
                                                   segments.mac(key, doc)):
        return None, f"{where}: a forged anchor (its MAC does not verify)"
    return doc, None


def verify_store(store: Store, key: bytes | None, *, stream_prefix: str = "",
                 anchors: Iterable[tuple[str, bytes]] = (),
                 anchor_key: bytes | None = None) -> Report:
    """Check every stream under `records/<stream_prefix>` against the anchors (sealed with
    `anchor_key`, the operator's, which pods do not hold; by default the evidence key)."""
    report = Report()
    wanted: dict[str, dict[int, tuple[str, str]]] = defaultdict(dict)  # stream: seq -> hash, where
    stored = list(store.versions(segments.ANCHORS))
    sources = [(f"{store.url}/{v.key}", store.get(v.key, v.version_id or None))
               for v in oldest_versions(stored, report).values()]
    for where, data in [*sources, *anchors]:
        doc, problem = read_anchor(anchor_key or key, data, where)
        if problem:
            report.problems.append(problem)
        if doc is None:
            continue
        report.anchors += 1
        for stream, head in doc["streams"].items():
            if isinstance(head, dict) and isinstance(head.get("seq"), int) \
                    and str(stream).startswith(stream_prefix):
                wanted[str(stream)][head["seq"]] = (str(head.get("hash")), where)
    objects = oldest_versions(store.versions(segments.RECORDS + stream_prefix), report)
    streams: dict[str, list[tuple[int, Version]]] = defaultdict(list)
    for object_key, version in objects.items():
        parsed = segments.parse_key(object_key)
        if parsed is None:
            report.problems.append(f"{object_key}: not a segment name")
            continue
        streams[parsed[0]].append((parsed[1], version))
    for stream in sorted(set(streams) | set(wanted)):
        report.streams[stream] = _check_stream(store, key, stream, sorted(streams[stream],
                                                                             key=lambda p: p[0]),
                                               wanted.get(stream, {}), report.problems)
    return report


def _check_stream(store: Store, key: bytes | None, stream: str,
                  found: list[tuple[int, Version]], wanted: dict[int, tuple[str, str]],
                  problems: list[str]) -> StreamReport:
    result = StreamReport(stream)
    seq, prev = 0, GENESIS

    def bad(at: int, message: str) -> None:
        if result.first_bad is None:
            result.first_bad = at
        problems.append(message)

    for first, version in found:
        where = f"{stream}: {version.key}"
        try:
            segment = segments.read(key, store.get(version.key, version.version_id or None))
        except (segments.SegmentError, StoreError, ValueError) as error:
            bad(seq + 1, f"{where}: unreadable ({error}); records from {seq + 1} on cannot be "
                         "checked")
            return result
        result.segments += 1
        for problem in segment.problems:
            bad(first, f"{where}: {problem}")
        if segment.header.get("stream") != stream or segment.first != first:
            bad(first, f"{where}: its header says stream {segment.header.get('stream')!r} from "
                       f"record {segment.first}: moved or renamed")
        sealed_prev = str(segment.header.get("prev"))
        if first > seq + 1:
            bad(seq + 1, f"{where}: records {seq + 1}..{first - 1} are missing before it "
                         "(a gap between segments: a segment was deleted or never shipped)")
            seq, prev = first - 1, sealed_prev  # check the rest from here: one fault, one report
        elif first <= seq:
            bad(first, f"{where}: starts at record {first}, which the stream already has "
                       "(a duplicate or overlapping segment)")
        elif sealed_prev != prev:
            bad(first, f"{where}: does not follow the segment before it (prev hash)")
        count = 0
        for raw in segment.body.splitlines():
            count += 1
            record = parse(raw)
            number = seq + 1
            if record is None:
                bad(number, f"{where}: record {number}: not a record")
                seq += 1
                continue
            if not hash_matches(record):
                bad(number, f"{where}: record {record.get('seq')} was altered (hash mismatch)")
            elif record.get("prev") != prev:
                bad(number, f"{where}: record {record.get('seq')} does not follow record {seq} "
                            "(removed, inserted or reordered)")
            if record.get("seq") != number and first <= number:
                bad(number, f"{where}: record {record.get('seq')} where {number} belongs")
            seq = record["seq"] if isinstance(record.get("seq"), int) else number
            prev = str(record.get("hash"))
            result.records += 1
            if seq in wanted and wanted[seq][0] != prev:
                bad(seq, f"{stream}: record {seq} is not the one anchored in {wanted[seq][1]}: "
                         "the stream was rewritten")
        if count != segment.header.get("count") or seq != segment.last \
                or prev != segment.header.get("head"):
            bad(min(seq, segment.last) + 1 if segment.last >= 0 else seq,
                f"{where}: holds records up to {seq} ({count}), its header sealed "
                f"{segment.header.get('first')}..{segment.last} ({segment.header.get('count')})")
    result.last, result.head = seq, prev
    beyond = [n for n in wanted if n > seq]
    if beyond:
        bad(seq + 1, f"{stream}: ends at record {seq}, but {wanted[max(beyond)][1]} anchored "
                     f"record {max(beyond)}: records were removed from the end (truncated)")
    return result
