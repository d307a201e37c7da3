"""The suspension notice (Art.21): the file the operator writes and the sidecar follows.

The operator writes the key `suspension.yaml` into the ConfigMap the sidecar mounts at
`/etc/hegui/`, next to `service.yaml`:

    suspended: true
    since: "2026-05-01T08:00:00Z"
    reason: availability burning its error budget 20x ... (Art.13, Art.21)

While `suspended` is true the sidecar answers every request that would reach the model with 503
and a JSON notice (`hegui.service_suspended`), without calling the model; its health and metrics
endpoints stay up.

Only hegui's operator writes that ConfigMap: a ValidatingAdmissionPolicy the chart installs
refuses every other writer (the team's `edit` included), so the notice is hegui's word, not the
team's. Anything else fails closed: in a pod (`python -m hegui.sidecar`, `required=True`) a
missing notice (the ConfigMap deleted, the key removed, the optional volume empty) and a file
that cannot be read or is not a valid notice both count as *suspended*, until the operator
writes a valid one again; each invalid version is logged and counted once. (A library user
without an operator, `required=False`, reads a missing file as not suspended.)

The sidecar polls the file's identity (mtime, inode, size) every `interval` seconds, which also
sees the kubelet's atomic ConfigMap updates (a new file behind a swapped symlink), and re-reads
it only when that changes.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from hegui.api.common import rfc3339

log = logging.getLogger("hegui.sidecar.suspension")

FILE_NAME = "suspension.yaml"
MAX_FILE_BYTES = 64 << 10
MAX_REASON_CHARS = 1024  # as GenerativeService.status.suspension.reason


class InvalidNotice(ValueError):
    """The suspension file is not a valid notice; the message names the field."""


@dataclass(frozen=True)
class SuspensionNotice:
    suspended: bool = False
    since: datetime | None = None
    reason: str = ""

    def to_yaml(self) -> str:
        """The file's text, as the operator writes it into the ConfigMap."""
        document: dict[str, Any] = {"suspended": self.suspended}
        if self.since is not None:
            document["since"] = rfc3339(self.since)
        document["reason"] = self.reason[:MAX_REASON_CHARS]
        return yaml.safe_dump(document, allow_unicode=True, sort_keys=False)

    @classmethod
    def parse(cls, text: str) -> SuspensionNotice:
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as bad:
            raise InvalidNotice(f"{FILE_NAME} is not YAML: {bad}") from None
        if document is None:
            return cls()
        if not isinstance(document, dict):
            raise InvalidNotice(f"{FILE_NAME} must be a mapping with suspended, since, reason")
        unknown = sorted(str(k) for k in document if k not in ("suspended", "since", "reason"))
        if unknown:
            raise InvalidNotice(f"{FILE_NAME}: unknown fields {unknown}")
        suspended = document.get("suspended", False)
        if not isinstance(suspended, bool):
            raise InvalidNotice(f"{FILE_NAME}: suspended must be true or false, not "
                                f"{type(suspended).__name__}")
        reason = document.get("reason") or ""
        if not isinstance(reason, str):
            raise InvalidNotice(f"{FILE_NAME}: reason must be text")
        return cls(suspended, _timestamp(document.get("since")), reason[:MAX_REASON_CHARS])

    def body(self) -> dict[str, Any]:
        """The fields of the 503 notice clients get."""
        out: dict[str, Any] = {"reason": self.reason or "suspended by the provider"}
        if self.since is not None:
            out["since"] = rfc3339(self.since)
        return out


def _timestamp(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):  # YAML reads unquoted timestamps itself
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidNotice(f"{FILE_NAME}: since must be an RFC 3339 time such as "
                                f"2026-05-01T08:00:00Z, not {value[:40]!r}") from None
    else:
        raise InvalidNotice(f"{FILE_NAME}: since must be an RFC 3339 time")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _missing(path: Path) -> str:
    return (f"no suspension notice from hegui's operator at {path}: requests are refused until "
            "it writes one (Art.21)")


class SuspensionWatch:
    """Follows one suspension file; `notice` is the state in force. With `required`, a missing
    or invalid notice suspends (fail closed)."""

    def __init__(self, path: Path, interval: float = 2.0, *, required: bool = False) -> None:
        self.path = path
        self.interval = interval
        self.required = required
        self.notice = SuspensionNotice(True, None, _missing(path)) if required else \
            SuspensionNotice()
        self.errors = 0
        self._seen: tuple[int, int, int] | None = None
        self._failed: tuple[int, int, int] | None = None  # an invalid version, reported once

    def check(self) -> bool:
        """Re-read the file if it changed; True when the state in force changed."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            identity = None
        except OSError as failure:
            return self._error(None, f"cannot stat {self.path}: {failure}")
        else:
            identity = (stat.st_mtime_ns, stat.st_ino, stat.st_size)
        if identity == self._seen:
            return False
        if identity is None:
            notice = SuspensionNotice(True, None, _missing(self.path)) if self.required else \
                SuspensionNotice()
        else:
            if identity == self._failed:
                return False
            try:
                with self.path.open("rb") as file:
                    raw = file.read(MAX_FILE_BYTES + 1)
                if len(raw) > MAX_FILE_BYTES:
                    raise InvalidNotice(f"{FILE_NAME} is larger than {MAX_FILE_BYTES} bytes")
                notice = SuspensionNotice.parse(raw.decode("utf-8"))
            except (OSError, UnicodeDecodeError, InvalidNotice) as failure:
                return self._error(identity, str(failure))
        self._seen, self._failed = identity, None
        changed = notice != self.notice
        if changed:
            log.warning("service %s (Art.21): %s", "suspended" if notice.suspended else
                        "not suspended", notice.reason or "-")
        self.notice = notice
        return changed

    def _error(self, identity: tuple[int, int, int] | None, message: str) -> bool:
        if identity is None or identity != self._failed:
            self.errors += 1
            log.error("suspension file invalid, %s: %s", "refusing requests" if self.required
                      else "keeping the last valid state", message)
        self._failed = identity
        if not self.required:
            return False
        notice = SuspensionNotice(True, None, (
            f"the suspension notice from hegui's operator is invalid ({message[:200]}): "
            "requests are refused until it writes a valid one (Art.21)"))
        changed, self.notice = notice != self.notice, notice
        self._seen = None  # re-read the next version, whatever its identity
        return changed

    async def run(self, on_check: Callable[[], None] | None = None) -> None:
        """Poll until cancelled; `on_check()` runs after every poll (to update metrics)."""
        while True:
            await asyncio.sleep(self.interval)
            self.check()  # a stat of a small local file: not worth a thread
            if on_check is not None:
                on_check()
