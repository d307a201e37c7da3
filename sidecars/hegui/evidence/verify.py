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
import os
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from hegui.evidence import segments
from hegui.evidence.config import stream_key
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
                 anchor_key: bytes | None = None, workers: int | None = None,
                 derive: bool = False) -> Report:
    """Check every stream under `records/<stream_prefix>` against the anchors (sealed with
    `anchor_key`, the operator's, which pods do not hold; by default the evidence key).
    With `derive`, `key` is the cluster's evidence key and each stream is checked with its
    service's key derived from it (hegui.evidence.config.service_key).
    Segments are checked in `workers` processes (default: one per CPU) when there are many."""
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
    segments_found = sum(len(found) for found in streams.values())
    workers = (os.cpu_count() or 1) if workers is None else workers
    pool = ProcessPoolExecutor(workers) if workers > 1 and segments_found >= 8 else None
    try:
        for stream in sorted(set(streams) | set(wanted)):
            found = sorted(streams[stream], key=lambda p: p[0])
            sealing = stream_key(key, stream) if derive and key is not None else key
            report.streams[stream] = _check_stream(store, sealing, stream, found,
                                                   wanted.get(stream, {}), report.problems,
                                                   pool)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return report


@dataclass
class _Checked:
    """One segment checked on its own, from what its header claims."""

    problems: list[tuple[int, str]] = field(default_factory=list)  # (first bad record, what)
    unreadable: bool = False
    first: int = 0
    sealed_prev: str = GENESIS
    records: int = 0
    last: int = 0
    head: str = GENESIS
    mismatched_anchors: list[int] = field(default_factory=list)


def check_segment(key: bytes | None, data: bytes, where: str, stream: str, first: int,
                  anchored: dict[int, str]) -> _Checked:
    """A segment's seal, and each record's hash, link and number, starting from the record
    before `first` as the header seals it. Runs in a worker process for large stores."""
    out = _Checked(first=first)
    try:
        segment = segments.read(key, data)
    except (segments.SegmentError, ValueError) as error:
        out.unreadable = True
        out.problems.append((first, f"{where}: unreadable ({error})"))
        return out
    for problem in segment.problems:
        out.problems.append((first, f"{where}: {problem}"))
    if segment.header.get("stream") != stream or segment.first != first:
        out.problems.append((first, f"{where}: its header says stream "
                                    f"{segment.header.get('stream')!r} from record "
                                    f"{segment.first}: moved or renamed"))
    seq, prev = first - 1, str(segment.header.get("prev"))
    out.sealed_prev = prev
    count = 0
    for raw in segment.body.splitlines():
        count += 1
        record = parse(raw)
        number = seq + 1
        if record is None:
            out.problems.append((number, f"{where}: record {number}: not a record"))
            seq += 1
            continue
        if not hash_matches(record):
            out.problems.append((number, f"{where}: record {record.get('seq')} was altered "
                                         "(hash mismatch)"))
        elif record.get("prev") != prev:
            out.problems.append((number, f"{where}: record {record.get('seq')} does not follow "
                                         f"record {seq} (removed, inserted or reordered)"))
        if record.get("seq") != number:
            out.problems.append((number, f"{where}: record {record.get('seq')} where {number} "
                                         "belongs"))
        seq = record["seq"] if isinstance(record.get("seq"), int) else number
        prev = str(record.get("hash"))
        if seq in anchored and anchored[seq] != prev:
            out.mismatched_anchors.append(seq)
    if count != segment.header.get("count") or seq != segment.last \
            or prev != segment.header.get("head"):
        out.problems.append((min(seq, segment.last) + 1 if segment.last >= 0 else seq,
                             f"{where}: holds records up to {seq} ({count}), its header sealed "
                             f"{segment.header.get('first')}..{segment.last} "
                             f"({segment.header.get('count')})"))
    out.records, out.last, out.head = count, seq, prev
    return out


def _checked(store: Store, key: bytes | None, stream: str, found: list[tuple[int, Version]],
             wanted: dict[int, tuple[str, str]], pool: Executor | None) -> Iterator[_Checked]:
    """Each segment checked, in order; in the pool when there is one (a bounded window of
    segments in flight, so memory stays a few segments' worth)."""
    anchored = {seq: value[0] for seq, value in wanted.items()}

    def job(first: int, version: Version) -> tuple[Any, ...]:
        return (key, store.get(version.key, version.version_id or None),
                f"{stream}: {version.key}", stream, first,
                {n: h for n, h in anchored.items() if n >= first})

    if pool is None:
        for first, version in found:
            try:
                yield check_segment(*job(first, version))
            except StoreError as error:
                yield _Checked([(first, f"{stream}: {version.key}: unreadable ({error})")],
                               unreadable=True, first=first)
        return
    window: deque[tuple[int, Future[_Checked] | StoreError]] = deque()
    todo = iter(found)
    while True:
        while len(window) < 8 and (item := next(todo, None)) is not None:
            try:
                window.append((item[0], pool.submit(check_segment, *job(*item))))
            except StoreError as error:
                window.append((item[0], error))
        if not window:
            return
        first, done = window.popleft()
        if isinstance(done, StoreError):
            yield _Checked([(first, f"{stream}: unreadable ({done})")], unreadable=True,
                           first=first)
        else:
            yield done.result()


def _check_stream(store: Store, key: bytes | None, stream: str,
                  found: list[tuple[int, Version]], wanted: dict[int, tuple[str, str]],
                  problems: list[str], pool: Executor | None = None) -> StreamReport:
    result = StreamReport(stream)
    seq, prev = 0, GENESIS

    def bad(at: int, message: str) -> None:
        if result.first_bad is None:
            result.first_bad = at
        problems.append(message)

    for checked, (first, version) in zip(_checked(store, key, stream, found, wanted, pool),
                                         found, strict=True):
        where = f"{stream}: {version.key}"
        if first > seq + 1:
            bad(seq + 1, f"{where}: records {seq + 1}..{first - 1} are missing before it "
                         "(a gap between segments: a segment was deleted or never shipped)")
        elif first <= seq:
            bad(first, f"{where}: starts at record {first}, which the stream already has "
                       "(a duplicate or overlapping segment)")
        elif not checked.unreadable and checked.sealed_prev != prev:
            bad(first, f"{where}: does not follow the segment before it (prev hash)")
        for at, message in checked.problems:
            bad(at, message)
        if checked.unreadable:
            bad(first, f"{where}: records from {first} on cannot be checked")
            return result
        result.segments += 1
        result.records += checked.records
        for number in checked.mismatched_anchors:
            bad(number, f"{stream}: record {number} is not the one anchored in "
                        f"{wanted[number][1]}: the stream was rewritten")
        seq, prev = max(seq, checked.last), checked.head
    result.last, result.head = seq, prev
    beyond = [n for n in wanted if n > seq]
    if beyond:
        bad(seq + 1, f"{stream}: ends at record {seq}, but {wanted[max(beyond)][1]} anchored "
                     f"record {max(beyond)}: records were removed from the end (truncated)")
    return result
