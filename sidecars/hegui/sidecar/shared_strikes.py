"""Strikes shared by every replica of a service (Art.14), through the evidence store.

Each sidecar already writes a `strike` record for every strike it gives (with `subject`, the
strike book's key of the user) and ships its records to the evidence store (`hegui.evidence`):
sealed segments under COMPLIANCE Object Lock, one stream per pod and chain,
`records/<namespace>/<service>/<pod>.<chain>/`. A `StrikeFeed` thread in each sidecar lists the
service's streams every `interval` seconds, reads each segment it has not read once, checks its
seal with the evidence key, and merges the strikes of every stream but its own into its
`StrikeBook`. So:

- a user who spreads prohibited prompts over the replicas is struck for each, on every replica,
  within a shipping interval and a poll (about two seconds by default);
- a restarted or rescheduled pod (a new emptyDir, a new chain) reads the service's history back
  at start, including its own earlier strikes: deleting pods resets no one;
- the team cannot reset it: the segments are locked for the posture's retention, which even the
  store's root user cannot shorten, and a segment not sealed with the evidence key (a Secret the
  operator issues) is ignored and logged.

Chosen over the alternatives because the store is already where the evidence must go (issue 17)
and is written by the sidecars alone: writing strikes to an apiserver object would give every
sidecar (whose ServiceAccount token lives in the team's namespace) write rights on it, and an
operator that aggregates them would add a hop and fail with the operator. Without an evidence
store (`--evidence-store` unset) strikes stay per pod, which the sidecar logs at start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter

from hegui.evidence import segments
from hegui.evidence.store import Store, StoreError
from hegui.moderation.records import parse
from hegui.moderation.strikes import StrikeBook

log = logging.getLogger("hegui.sidecar.strikes")

STRIKE = "strike"


def strikes_in(body: bytes) -> Iterable[tuple[str, float]]:
    """(subject, when) of the strike records of a segment's body; other lines are skipped."""
    for line in body.splitlines():
        record = parse(line)
        if record is None or record.get("kind") != STRIKE:
            continue
        subject, when = record.get("subject"), record.get("time")
        if not isinstance(subject, str) or not isinstance(when, str):
            continue
        try:
            yield subject, datetime.fromisoformat(when).timestamp()
        except ValueError:
            continue


class StrikeFeed:
    """Merges the strikes other replicas shipped into `book` (see the module doc)."""

    def __init__(self, store: Store, key: bytes, *, service: str, own_stream: str,
                 book: StrikeBook, interval: float = 1.0,
                 registry: CollectorRegistry | None = None) -> None:
        namespace, _, name = service.partition("/")
        self.prefix = f"{segments.RECORDS}{namespace or 'default'}/{name}/"
        self.store, self.key, self.own, self.book = store, key, own_stream, book
        self.interval = interval
        self._read: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.merged = 0
        self.rejected = 0
        registry = registry or CollectorRegistry()
        self._merged = Counter("hegui_sidecar_strikes_shared",
                               "Strikes other replicas of the service gave, merged into this "
                               "sidecar's book from the evidence store (Art.14).",
                               registry=registry)
        self._rejected = Counter("hegui_sidecar_strike_segments_rejected",
                                 "Shipped segments not read for strikes: not sealed with the "
                                 "evidence key or unreadable; alert on any (tampering).",
                                 registry=registry)

    def poll_once(self) -> int:
        """Read the segments not read yet; the strikes merged. Raises StoreError."""
        found: list[tuple[str, float]] = []
        for version in self.store.versions(self.prefix):
            parsed = segments.parse_key(version.key)
            if parsed is None or parsed[0] == self.own or version.key in self._read:
                continue
            # A name is read once: a second version of it (an overwrite the lock let through
            # as a new version) is the tampering `hegui records verify` reports, not new strikes.
            self._read.add(version.key)
            try:
                segment = segments.read(self.key, self.store.get(version.key,
                                                                 version.version_id or None))
            except (segments.SegmentError, ValueError) as bad:
                self.rejected += 1
                self._rejected.inc()
                log.warning("strikes of %s not read: %s", version.key, bad)
                continue
            if segment.problems:
                self.rejected += 1
                self._rejected.inc()
                log.warning("strikes of %s ignored: %s", version.key, "; ".join(segment.problems))
                continue
            found.extend(strikes_in(segment.body))
        added = self.book.merge(found) if found else 0
        self.merged += added
        self._merged.inc(added)
        return added

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except StoreError as failure:  # the store is down: local strikes still count
                log.warning("shared strikes not read: %s", failure)
            self._stop.wait(self.interval)

    def start(self) -> None:
        try:
            self.poll_once()  # the service's history before the first request
        except StoreError as failure:
            log.warning("shared strikes not read at start: %s", failure)
        self._thread = threading.Thread(target=self._run, name="hegui-strike-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


__all__ = ["StrikeFeed", "strikes_in"]
