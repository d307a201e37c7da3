"""The strike feed reads what other replicas shipped, once, and only what the evidence key sealed
(Art.14): a segment written with another key, or a second version of a name, adds no strikes.
The store is hegui's directory store (the same format MinIO holds; the two-process test against
MinIO is tests/evidence/test_shared_strikes.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry

from hegui.evidence import segments
from hegui.evidence.store import DirectoryStore
from hegui.moderation.strikes import Level, StrikeBook, Thresholds
from hegui.sidecar.shared_strikes import StrikeFeed, strikes_in

KEY = b"evidence-key"
NOW = datetime.now(UTC)


def _segment(stream: str, first: int, subjects: list[str], key: bytes = KEY,
             kind: str = "strike") -> tuple[str, bytes]:
    lines = [json.dumps({"seq": first + n, "kind": kind, "subject": subject,
                         "time": (NOW - timedelta(minutes=5)).isoformat(), "hash": f"h{n}",
                         "prev": "p"}).encode() + b"\n" for n, subject in enumerate(subjects)]
    _, data = segments.build(key, stream=stream, lines=lines, prev="genesis", written=NOW,
                             retain_until=NOW + timedelta(days=1))
    return segments.segment_key(stream, first), data


def test_other_replicas_strikes_count_once_and_forged_ones_never(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "store")
    retain = NOW + timedelta(days=1)
    for stream, first, subjects, key in (
            ("ai/chat/chat-a.c1", 1, ["mallory", "mallory", "mallory"], KEY),
            ("ai/chat/chat-b.c2", 1, ["mallory"], KEY),
            ("ai/chat/chat-c.c3", 1, ["mallory"] * 5, b"the team's own key"),  # forged
            ("ai/search/search-a.c4", 1, ["mallory"] * 5, KEY),  # another service
            ("ai/chat/own.c9", 1, ["mallory"] * 5, KEY)):  # this replica's own stream
        store.put(*_segment(stream, first, subjects, key), retain_until=retain)
    book = StrikeBook(tmp_path / "strikes.json", Thresholds(warn_at=1, limit_at=3,
                                                             suspend_at=5))
    registry = CollectorRegistry()
    feed = StrikeFeed(store, KEY, service="ai/chat", own_stream="ai/chat/own.c9", book=book,
                      registry=registry)
    assert feed.poll_once() == 4
    # The forged segment, logged and counted for an alert.
    assert registry.get_sample_value("hegui_sidecar_strike_segments_rejected_total") == 1
    assert registry.get_sample_value("hegui_sidecar_strikes_shared_total") == 4
    assert book.level("mallory") is Level.LIMIT  # 3 + 1: not the forged five, not its own
    assert feed.poll_once() == 0  # each segment is read once
    store.put(*_segment("ai/chat/chat-a.c1", 4, ["mallory"]), retain_until=retain)
    assert feed.poll_once() == 1 and book.level("mallory") is Level.SUSPEND
    # A new replica (a pod deleted with its volume) reads the whole history back.
    fresh = StrikeBook(tmp_path / "fresh.json", book.thresholds)
    StrikeFeed(store, KEY, service="ai/chat", own_stream="ai/chat/new.c10",
               book=fresh).poll_once()
    assert fresh.level("mallory") is Level.SUSPEND


def test_only_strike_records_with_a_subject_are_read() -> None:
    body = b"".join([
        b'{"kind":"block","subject":"x","time":"2026-12-01T00:00:00+00:00"}\n',
        b'{"kind":"strike","time":"2026-12-01T00:00:00+00:00"}\n',  # no subject
        b'{"kind":"strike","subject":"x","time":"yesterday"}\n',
        b"not json\n",
        b'{"kind":"strike","subject":"x","time":"2026-12-01T00:00:00+00:00"}\n'])
    assert [s for s, _ in strikes_in(body)] == ["x"]
