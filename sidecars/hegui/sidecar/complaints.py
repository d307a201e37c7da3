"""Complaints and reports (投诉、举报) taken in by the sidecar and tracked against the published
deadline (Art.15).

The sidecar serves, when the posture declares `spec.complaints`:

- `GET /hegui/complaints`: the published process: channels, the process page and the response
  deadline (Art.15 asks that both be published).
- `POST /hegui/complaints`, and `POST` on the path of `complaints.url` when that is a path of this
  service (e.g. `/report`): a complaint as JSON or a web form with `text` (required), `category`,
  `about` (the reference or ProduceID of the answer complained about) and `contact`. The answer
  (201) carries a reference id and the deadline. Intake is throttled per source (the gateway's
  user id, else the peer address) and overall: a flood gets 429 with Retry-After and the other
  channels, and leaves a bounded number of records (see PER_SOURCE_BURST).

Each complaint is a `complaint` record in the sidecar's hash-chained record file
(`hegui.moderation.records`), with its deadline (received + `responseDeadline`). Under Art.11 the
complainant's contact is kept only as a keyed pseudonym and personal information in the text is
masked when the records are pseudonymised; with `dataProtection.pseudonymise: false` they are kept
as given. A complaint is closed by a `complaint_closed` record in `complaint-resolutions.jsonl`
beside the record file (`hegui complaints close`): the sidecar's own chain is only ever written by
the sidecar. `hegui_sidecar_complaints_overdue` counts open complaints past their deadline;
`count_overdue` does the same over a records directory for the operator.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from aiohttp import web
from prometheus_client import Counter, Gauge

from hegui.api.common import EMAIL, parse_duration
from hegui.api.generativeservice import Complaints
from hegui.moderation.pii import find_pii, mask
from hegui.moderation.records import RecordLog, pseudonym

if TYPE_CHECKING:  # the app imports this module; a runtime import would be circular
    from hegui.sidecar.app import Sidecar

log = logging.getLogger("hegui.sidecar.complaints")

ARTICLE = "Art.15"
COMPLAINT = "complaint"
COMPLAINT_CLOSED = "complaint_closed"
RESOLUTIONS = "complaint-resolutions.jsonl"
INTAKE_PATH = "/hegui/complaints"

MAX_BODY_BYTES = 16 << 10  # a complaint is a few paragraphs, not an upload
MAX_TEXT_CHARS = 4000
MAX_CONTACT_CHARS = 254
CATEGORY = re.compile(r"[a-z][A-Za-z0-9]{0,62}")
ABOUT = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
PHONE = re.compile(r"[0-9+() -]{3,32}")
_EMAIL = re.compile(EMAIL)
# Intake is open to anyone (Art.15 wants it easy), so it is throttled per source, and overall, so
# a flood can neither fill the record buffer nor bury real complaints: a source (the gateway's
# user id, else the peer address) may file PER_SOURCE_BURST at once and one more every
# PER_SOURCE_SECONDS; the sidecar takes at most GLOBAL_PER_MINUTE a minute. A refused complaint
# gets 429 with Retry-After and the other channels (phone, e-mail) it can use instead.
PER_SOURCE_BURST = 5
PER_SOURCE_SECONDS = 600.0
GLOBAL_PER_MINUTE = 60
_MAX_SOURCES = 10_000
# Paths the sidecar serves itself or proxies to the model: never taken over as the intake.
_RESERVED = ("/metrics", "/hegui/", "/v1/")
FIELDS = ("text", "category", "about", "contact")


class ComplaintError(ValueError):
    """A complaint that cannot be taken, naming the field."""

    def __init__(self, field: str, message: str, status: int = 400,
                 retry_after: float | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field, self.message, self.status = field, message, status
        self.retry_after = retry_after


class Throttle:
    """Token buckets per source and one for everyone (see PER_SOURCE_BURST); bounded memory:
    the least recently seen sources are forgotten first (a forgotten source starts full)."""

    def __init__(self, burst: int = PER_SOURCE_BURST, every: float = PER_SOURCE_SECONDS,
                 global_per_minute: int = GLOBAL_PER_MINUTE) -> None:
        self.burst, self.every = burst, every
        self.global_rate = global_per_minute / 60.0
        self.global_burst = float(global_per_minute)
        self._global: tuple[float, float] | None = None
        self._sources: dict[str, tuple[float, float]] = {}

    def _take(self, state: tuple[float, float], burst: float, rate: float,
              now: float) -> tuple[bool, tuple[float, float], float]:
        tokens, then = state
        tokens = min(burst, tokens + max(0.0, now - then) * rate)
        if tokens >= 1.0:
            return True, (tokens - 1.0, now), 0.0
        return False, (tokens, now), (1.0 - tokens) / rate

    def admit(self, source: str, now: float) -> float | None:
        """None when the source may file a complaint now, else the seconds to wait."""
        state = self._sources.pop(source, (float(self.burst), now))
        ok, state, wait = self._take(state, float(self.burst), 1.0 / self.every, now)
        self._sources[source] = state  # most recently seen last
        if len(self._sources) > _MAX_SOURCES:
            del self._sources[next(iter(self._sources))]
        if not ok:
            return wait
        ok, self._global, wait = self._take(self._global or (self.global_burst, now),
                                            self.global_burst, self.global_rate, now)
        if not ok:
            tokens, then = self._sources[source]
            self._sources[source] = (tokens + 1.0, then)  # not this source's fault: give back
            return wait
        return None


# --- reading complaints back from record files ---------------------------------------------------

@dataclass
class Complaint:
    """One complaint and, once closed, its outcome."""

    reference: str
    service: str
    received: datetime
    deadline: datetime
    category: str
    text: str
    source: Path
    about: str | None = None
    contact: str | None = None  # as given, or a pseudonym (see contact_pseudonymised)
    contact_pseudonymised: bool = False
    user: str | None = None
    closed_at: datetime | None = None
    resolution: str | None = None
    closed_by: str | None = None

    def state(self, now: datetime) -> str:
        """open, overdue (open past the deadline) or closed."""
        if self.closed_at is not None:
            return "closed"
        return "overdue" if now > self.deadline else "open"

    @property
    def closed_late(self) -> bool:
        return self.closed_at is not None and self.closed_at > self.deadline


@dataclass
class ComplaintBook:
    """The complaints found in some record files, with the lines that could not be read."""

    complaints: list[Complaint]
    problems: list[str]
    files: list[Path]

    def find(self, reference: str) -> Complaint | None:
        return next((c for c in self.complaints if c.reference == reference), None)

    def overdue(self, now: datetime) -> list[Complaint]:
        return [c for c in self.complaints if c.state(now) == "overdue"]


def record_files(where: Path) -> list[Path]:
    """The record files of a records directory (`*.jsonl`, any depth), or the file itself."""
    if where.is_file():
        return [where]
    if not where.is_dir():
        raise FileNotFoundError(f"{where}: no such records file or directory")
    return sorted(p for p in where.rglob("*.jsonl") if p.is_file())


def iter_records(path: Path, problems: list[str]) -> Iterator[dict[str, Any]]:
    """The records of one file; lines that are not records are added to `problems`."""
    try:
        with path.open("rb") as file:
            for number, raw in enumerate(file, start=1):
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                except ValueError:
                    problems.append(f"{path}:{number}: not a record (not JSON)")
                    continue
                if isinstance(record, dict):
                    yield record
                else:
                    problems.append(f"{path}:{number}: not a record (not an object)")
    except OSError as error:
        problems.append(f"{path}: {error}")


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def load(where: Path | Iterable[Path]) -> ComplaintBook:
    """Every complaint in a records directory (or the given files), closures applied.

    Malformed lines are reported, never fatal: the files may be copies of hostile pods' volumes.
    """
    files = record_files(where) if isinstance(where, Path) else list(where)
    problems: list[str] = []
    complaints: dict[str, Complaint] = {}
    closures: list[tuple[Path, dict[str, Any]]] = []
    for path in files:
        for record in iter_records(path, problems):
            kind = record.get("kind")
            if kind == COMPLAINT:
                reference = _text(record.get("reference"))
                received, deadline = _time(record.get("time")), _time(record.get("deadline"))
                if not reference or received is None or deadline is None:
                    problems.append(f"{path}: record {record.get('seq')}: a complaint without "
                                    "reference, time or deadline")
                    continue
                contact = _text(record.get("contact"))
                hidden = _text(record.get("contact_pseudonym"))
                complaints[reference] = Complaint(
                    reference=reference, service=_text(record.get("service")) or "",
                    received=received, deadline=deadline,
                    category=_text(record.get("category")) or "other",
                    text=_text(record.get("text")) or "", source=path,
                    about=_text(record.get("about")), contact=contact or hidden,
                    contact_pseudonymised=contact is None and hidden is not None,
                    user=_text(record.get("user")))
            elif kind == COMPLAINT_CLOSED:
                closures.append((path, record))
    for path, record in closures:
        found = complaints.get(_text(record.get("reference")) or "")
        closed_at = _time(record.get("time"))
        if found is None or closed_at is None:
            problems.append(f"{path}: record {record.get('seq')}: closes unknown complaint "
                            f"{record.get('reference')!r}")
            continue
        if found.closed_at is None or closed_at < found.closed_at:  # the first closure counts
            found.closed_at = closed_at
            found.resolution = _text(record.get("resolution"))
            found.closed_by = _text(record.get("closed_by"))
    ordered = sorted(complaints.values(), key=lambda c: c.received)
    return ComplaintBook(ordered, problems, files)


def count_overdue(where: Path, now: datetime | None = None) -> int:
    """Open complaints past their deadline in a records directory (Art.15): what the operator
    turns into a finding and a metric."""
    return len(load(where).overdue(now or datetime.now(UTC)))


def close(book: ComplaintBook, reference: str, resolution: str, *, closed_by: str,
          now: datetime | None = None) -> dict[str, Any]:
    """Append the closure of one complaint to the resolutions file beside its record file.

    Never an edit: the closure is a new record in its own hash chain, and the sidecar's chain
    stays written by the sidecar alone.
    """
    complaint = book.find(reference)
    if complaint is None:
        raise ComplaintError("reference", f"no complaint {reference!r} in "
                                          f"{len(book.files)} record files")
    if complaint.closed_at is not None:
        raise ComplaintError("reference", f"complaint {reference} was already closed at "
                                          f"{complaint.closed_at.isoformat()} by "
                                          f"{complaint.closed_by or 'unknown'}")
    resolution = resolution.strip()
    if not resolution:
        raise ComplaintError("resolution", "give the outcome fed back to the complainant "
                                           "(Art.15)")
    if len(resolution) > MAX_TEXT_CHARS:
        raise ComplaintError("resolution", f"longer than {MAX_TEXT_CHARS} characters")
    when = now or datetime.now(UTC)
    resolutions = RecordLog(complaint.source.parent / RESOLUTIONS, pseudonymise=False)
    return resolutions.append(
        COMPLAINT_CLOSED, now=when, reference=reference, service=complaint.service,
        resolution=resolution, closed_by=closed_by[:256], late=when > complaint.deadline,
        deadline=complaint.deadline.isoformat(), article=ARTICLE)


# --- the sidecar's intake ------------------------------------------------------------------------

class _Desk:
    """One sidecar's open complaints, for the overdue gauge: loaded from its record file at
    start, added to on intake, closures read incrementally from the resolutions file."""

    def __init__(self, sidecar: Sidecar, complaints: Complaints) -> None:
        self.sidecar = sidecar
        self.complaints = complaints
        self.deadline = parse_duration(complaints.response_deadline)
        self.open: dict[str, datetime] = {}
        self.closed: set[str] = set()
        self._offset = 0
        records = sidecar.records
        if records is not None and records.path.exists():
            book = load([records.path])
            self.open = {c.reference: c.deadline for c in book.complaints}
        registry = sidecar.metrics.registry
        self.received = Counter("hegui_sidecar_complaints_received",
                                "Complaints taken in by the sidecar (Art.15).", registry=registry)
        self.throttle = Throttle()
        self.throttled = Counter("hegui_sidecar_complaints_throttled",
                                 "Complaints refused because their source (or everyone) sent "
                                 "too many (Art.15).", registry=registry)
        overdue = Gauge("hegui_sidecar_complaints_overdue",
                        "Open complaints past the published response deadline (Art.15).",
                        registry=registry)
        overdue.set_function(self.overdue)
        opened = Gauge("hegui_sidecar_complaints_open",
                       "Complaints not yet closed (Art.15).", registry=registry)
        opened.set_function(lambda: len(self._refresh()))

    @property
    def resolutions(self) -> Path | None:
        records = self.sidecar.records
        return records.path.parent / RESOLUTIONS if records is not None else None

    def _refresh(self) -> dict[str, datetime]:
        path = self.resolutions
        try:
            if path is not None and path.exists() and path.stat().st_size > self._offset:
                with path.open("rb") as file:
                    file.seek(self._offset)
                    chunk = file.read()
                complete = chunk[: chunk.rfind(b"\n") + 1]  # a line being written waits
                self._offset += len(complete)
                for raw in complete.splitlines():
                    try:
                        record = json.loads(raw)
                    except ValueError:
                        continue
                    if isinstance(record, dict) and record.get("kind") == COMPLAINT_CLOSED:
                        self.open.pop(str(record.get("reference")), None)
        except OSError as error:  # a scrape must not fail because the volume hiccups
            log.warning("cannot read %s: %s", path, error)
        return self.open

    def overdue(self) -> float:
        now = datetime.now(UTC)
        return float(sum(1 for deadline in self._refresh().values() if deadline < now))

    def published(self) -> dict[str, Any]:
        c = self.complaints
        channels = {k: v for k, v in (("url", c.url), ("email", c.email), ("phone", c.phone)) if v}
        return {"service": self.sidecar.config.service, "channels": channels,
                "intake": INTAKE_PATH, "processUrl": c.process_url,
                "responseDeadline": c.response_deadline, "article": ARTICLE,
                "fields": {"text": f"required, at most {MAX_TEXT_CHARS} characters",
                           "category": "optional, e.g. illegalContent, personalInformation",
                           "about": "optional, the reference or ProduceID of the answer",
                           "contact": "optional, an e-mail address or a phone number"}}

    async def info(self, request: web.Request) -> web.Response:
        return web.json_response(self.published(), dumps=_dumps)

    def source_of(self, request: web.Request) -> str:
        """Who is throttled: the user the gateway vouches for, else the peer address."""
        user = self.sidecar.user_of(request)
        return f"user:{user}" if user else f"peer:{request.remote or 'unknown'}"

    async def take(self, request: web.Request) -> web.Response:
        try:
            wait = self.throttle.admit(self.source_of(request), time.monotonic())
            if wait is not None:
                self.throttled.inc()
                raise ComplaintError("", "too many complaints from this source; try again "
                                         f"in {int(wait) + 1} seconds or use {self._channel()} "
                                         "(Art.15)", 429, retry_after=wait)
            fields = _fields(await _read(request), request.content_type)
            complaint = _validated(fields)
            record = await self._record(request, complaint)
        except ComplaintError as bad:
            code = {400: "hegui.complaint_invalid", 429: "hegui.complaint_rate_limited"}.get(
                bad.status, "hegui.complaint_not_recorded")
            body = {"type": "hegui_error", "code": code, "message": bad.message,
                    "article": ARTICLE}
            if bad.field:
                body["field"] = bad.field
            headers = ({"Retry-After": str(int(bad.retry_after) + 1)}
                       if bad.retry_after is not None else None)
            return web.json_response({"error": body}, status=bad.status, dumps=_dumps,
                                     headers=headers)
        self.received.inc()
        self.open[record["reference"]] = datetime.fromisoformat(record["deadline"])
        c = self.complaints
        return web.json_response(
            {"reference": record["reference"], "receivedAt": record["time"],
             "deadline": record["deadline"], "responseDeadline": c.response_deadline,
             "processUrl": c.process_url, "article": ARTICLE,
             "message": f"your complaint is recorded as {record['reference']}; it will be "
                        f"answered within {c.response_deadline} (Art.15)"},
            status=201, dumps=_dumps, headers={"x-hegui-reference": record["reference"]})

    async def _record(self, request: web.Request, complaint: dict[str, str]) -> dict[str, Any]:
        records = self.sidecar.records
        if records is None:
            raise ComplaintError("", "complaints cannot be recorded here: the sidecar keeps no "
                                     "records (dataProtection.retentionDays is 0 or --records "
                                     f"is unset); use {self._channel()} (Art.15)", 503)
        now = datetime.now(UTC)
        fields: dict[str, Any] = {
            "reference": uuid.uuid4().hex, "deadline": (now + self.deadline).isoformat(),
            "category": complaint.get("category", "other"), "article": ARTICLE,
            "service": self.sidecar.config.service}
        if "about" in complaint:
            fields["about"] = complaint["about"]
        text, contact = complaint["text"], complaint.get("contact")
        if records.pseudonymise:
            # Art.11: no personal information beyond what handling needs; the pseudonym still
            # links a complainant's complaints together.
            text = mask(text, find_pii(text))
            if contact:
                fields["contact_pseudonym"] = pseudonym(records.key, contact)
        elif contact:
            fields["contact"] = contact
        fields["text"] = text
        try:
            written = await asyncio.to_thread(records.append, COMPLAINT,
                                              user=self.sidecar.user_of(request), now=now,
                                              **fields)
        except OSError as failure:
            log.error("cannot record a complaint: %s", failure)
            raise ComplaintError("", "the complaint could not be recorded; try again or use "
                                     f"{self._channel()} (Art.15)", 503) from failure
        self.sidecar.metrics.records_head.set(written["seq"])
        return written

    def _channel(self) -> str:
        c = self.complaints
        return str(c.url or c.email or c.phone)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


async def _read(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise ComplaintError("", f"the complaint exceeds {MAX_BODY_BYTES} bytes", 413)
    body = bytearray()
    while chunk := await request.content.readany():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ComplaintError("", f"the complaint exceeds {MAX_BODY_BYTES} bytes", 413)
    return bytes(body)


def _fields(raw: bytes, content_type: str) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ComplaintError("", "the complaint is not UTF-8") from None
    if content_type == "application/x-www-form-urlencoded":
        return dict(parse_qsl(text, keep_blank_values=False, max_num_fields=32))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as bad:
        raise ComplaintError("", f"the complaint is not JSON or a web form: {bad}") from None
    if not isinstance(data, dict):
        raise ComplaintError("", "the complaint must be a JSON object with a text field")
    return data


def _validated(fields: dict[str, Any]) -> dict[str, str]:
    """The known fields, checked; unknown ones (a form's submit button) are ignored."""
    out: dict[str, str] = {}
    for name in FIELDS:
        value = fields.get(name)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise ComplaintError(name, "must be a string")
        out[name] = value.strip()
    text = out.get("text", "")
    if not text:
        raise ComplaintError("text", "required: what the complaint is about")
    if len(text) > MAX_TEXT_CHARS:
        raise ComplaintError("text", f"longer than {MAX_TEXT_CHARS} characters")
    if "category" in out and not CATEGORY.fullmatch(out["category"]):
        raise ComplaintError("category", "must be a camelCase word such as illegalContent")
    if "about" in out and not ABOUT.fullmatch(out["about"]):
        raise ComplaintError("about", "must be a reference id or ProduceID (letters, digits, "
                                      "_ . : -, at most 128)")
    contact = out.get("contact")
    if contact is not None and (len(contact) > MAX_CONTACT_CHARS or not (
            _EMAIL.fullmatch(contact) or PHONE.fullmatch(contact))):
        raise ComplaintError("contact", "must be an e-mail address or a phone number")
    return out


_DESKS: weakref.WeakKeyDictionary[Sidecar, _Desk] = weakref.WeakKeyDictionary()


def intake_paths(complaints: Complaints) -> list[str]:
    """Where complaints are taken: INTAKE_PATH, and the declared url's path if it is free."""
    paths = [INTAKE_PATH]
    if complaints.url:
        path = urlsplit(complaints.url).path
        if (path.startswith("/") and path != "/" and path not in paths
                and not any(path == r.rstrip("/") or path.startswith(r) for r in _RESERVED)):
            paths.append(path)
    return paths


def add_routes(app: web.Application, sidecar: Sidecar) -> None:
    """Serve the complaint intake of the sidecar's posture; nothing if it declares none."""
    complaints = sidecar.config.complaints
    if complaints is None:
        return
    desk = _DESKS.get(sidecar)
    if desk is None:  # one desk (and one set of metrics) per sidecar, however many apps
        desk = _DESKS[sidecar] = _Desk(sidecar, complaints)
    app.router.add_get(INTAKE_PATH, desk.info)
    for path in intake_paths(complaints):
        app.router.add_post(path, desk.take)


__all__ = ["COMPLAINT", "COMPLAINT_CLOSED", "INTAKE_PATH", "RESOLUTIONS", "Complaint",
           "ComplaintBook", "ComplaintError", "add_routes", "close", "count_overdue",
           "iter_records", "load", "record_files"]
