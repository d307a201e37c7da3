"""Strikes against users who keep sending prohibited content: warn → rate-limit → suspend
(Art.14: 采取警示、限制功能、暂停或者终止向其提供服务等处置措施).

A strike is added for each blocked input. The level follows the count: `warn` from `warn_at`,
`limit` from `limit_at` (at most `limited_per_minute` requests a minute), `suspend` from
`suspend_at`. Strikes older than `decay` no longer count, so a warned user can recover; a
suspension lasts `suspension` and then the count starts again. The book is kept by pseudonym
(never the raw user id) in a JSON file replaced atomically on every change, so it survives a
sidecar restart; strikes given by the service's other replicas are merged in from the evidence
store (`merge`, hegui.sidecar.shared_strikes), so the book is the service's, not the pod's.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from hegui.api.common import parse_duration
from hegui.api.generativeservice import UserMeasures


class Level(StrEnum):
    OK = "ok"
    WARN = "warn"
    LIMIT = "limit"
    SUSPEND = "suspend"


@dataclass(frozen=True)
class Thresholds:
    warn_at: int = 1
    limit_at: int = 3
    suspend_at: int = 5
    limited_per_minute: int = 6
    decay: float = 24 * 3600.0  # seconds a strike counts
    suspension: float = 7 * 24 * 3600.0  # seconds a suspension lasts

    @classmethod
    def from_posture(cls, users: UserMeasures) -> Thresholds:
        """The thresholds the service declares (moderation.users, Art.14)."""
        return cls(warn_at=users.warn_at, limit_at=users.limit_at, suspend_at=users.suspend_at,
                   limited_per_minute=users.limited_per_minute,
                   decay=parse_duration(users.strike_decay).total_seconds(),
                   suspension=parse_duration(users.suspension).total_seconds())

    def level(self, count: int) -> Level:
        if count >= self.suspend_at:
            return Level.SUSPEND
        if count >= self.limit_at:
            return Level.LIMIT
        if count >= self.warn_at:
            return Level.WARN
        return Level.OK


@dataclass
class _User:
    strikes: list[float] = field(default_factory=list)
    suspended_until: float = 0.0
    recent: list[float] = field(default_factory=list)  # request times while limited (not saved)


class StrikeBook:
    def __init__(self, path: Path, thresholds: Thresholds | None = None) -> None:
        self.path = path
        self.thresholds = thresholds or Thresholds()
        self._lock = threading.Lock()
        self._users: dict[str, _User] = {}
        if path.exists():
            data = json.loads(path.read_text(encoding="utf-8"))
            for user, state in dict(data.get("users", {})).items():
                self._users[str(user)] = _User([float(t) for t in state.get("strikes", [])],
                                               float(state.get("suspended_until", 0.0)))

    def _save(self) -> None:
        data = {"users": {u: {"strikes": s.strikes, "suspended_until": s.suspended_until}
                          for u, s in self._users.items() if s.strikes or s.suspended_until}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as file:
            json.dump(data, file)
            file.flush()
            os.fsync(file.fileno())
        tmp.replace(self.path)

    def _current(self, user: str, now: float) -> _User:
        state = self._users.setdefault(user, _User())
        state.strikes = [t for t in state.strikes if now - t < self.thresholds.decay]
        if state.suspended_until and now >= state.suspended_until:
            state.suspended_until, state.strikes = 0.0, []  # served its suspension
        return state

    def level(self, user: str, now: float | None = None) -> Level:
        now = time.time() if now is None else now
        with self._lock:
            state = self._current(user, now)
            if state.suspended_until:
                return Level.SUSPEND
            return self.thresholds.level(len(state.strikes))

    def strike(self, user: str, now: float | None = None) -> Level:
        """Add a strike; the user's new level."""
        now = time.time() if now is None else now
        with self._lock:
            state = self._current(user, now)
            state.strikes.append(now)
            level = self.thresholds.level(len(state.strikes))
            if level == Level.SUSPEND and not state.suspended_until:
                state.suspended_until = now + self.thresholds.suspension
            self._save()
            return level

    def merge(self, strikes: list[tuple[str, float]], now: float | None = None) -> int:
        """Add strikes other replicas of the service gave (user, when), as
        hegui.sidecar.shared_strikes reads them from the evidence store; the same level rules
        apply, so a user who spreads requests over replicas is struck once for each. Each
        strike must be given once (the feed reads each shipped segment once). Returns how many
        still counted (younger than the decay)."""
        now = time.time() if now is None else now
        added = 0
        with self._lock:
            for user, at in strikes:
                if now - at >= self.thresholds.decay or at > now + 300:
                    continue  # decayed, or dated in the future: nothing to count
                state = self._current(user, now)
                state.strikes.append(at)
                state.strikes.sort()
                added += 1
                if (self.thresholds.level(len(state.strikes)) == Level.SUSPEND
                        and not state.suspended_until):
                    state.suspended_until = at + self.thresholds.suspension
            if added:
                self._save()
        return added

    def admit(self, user: str, now: float | None = None) -> tuple[bool, Level]:
        """Whether a request of the user may go on now, and the user's level."""
        now = time.time() if now is None else now
        level = self.level(user, now)
        if level == Level.SUSPEND:
            return False, level
        if level != Level.LIMIT:
            return True, level
        with self._lock:
            state = self._users[user]
            state.recent = [t for t in state.recent if now - t < 60.0]
            if len(state.recent) >= self.thresholds.limited_per_minute:
                return False, level
            state.recent.append(now)
            return True, level
