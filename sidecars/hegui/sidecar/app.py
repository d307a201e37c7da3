"""The moderation proxy: aiohttp in front of a model server (Art.4, Art.14).

Routes: the sidecar's own (`/metrics`, `/hegui/healthz`, the complaint desk), then the route
table (`hegui.sidecar.routes`): an allow-list matched on the raw request target, canonical paths
only, methods per route, the upstream URL built from the route. Generation routes are moderated
both ways as their API family (`hegui.sidecar.families`: OpenAI chat, completions, responses,
Anthropic messages, TGI, Ollama, Triton, SageMaker, images), streamed or not (streams:
`hegui.sidecar.streaming`); metadata routes are moderated both ways too, every text of what
the client sends and of what the model server answers (`hegui.sidecar.metadata`), unlabeled;
non-generative routes are relayed; anything else is refused with the path and the fix.

- Input (Art.4, Art.14): a blocked input never reaches the model; the answer is a JSON error with
  a stable code (`hegui.input_blocked`), the category, the article and a reference id. Masked
  categories (e.g. personal information, Art.4(4)) are masked before the model sees them.
- Output: every text of every choice is moderated; a blocked answer is withheld
  (`hegui.output_blocked`, HTTP 451), or with several choices only the blocked ones
  (`content_filter`); masked spans are masked; log probabilities and token ids that would spell
  masked or blocked text are dropped and `x-hegui-dropped` says so. Labels (Art.12) go on
  whatever is served.
- Streams: moderated per token in the posture's mode (Hold or StreamThenRetract), see
  `hegui.sidecar.streaming`; a stream no relay moderates is refused, never relayed.
- Moderator unreachable: fail mode Closed answers 503 `hegui.moderation_unavailable`; Open
  serves and flags (`x-hegui-moderation: unavailable` and a metric).
- Bounds: body size (413), texts per request (413), JSON nesting (400, never a 500), header
  size and count (aiohttp), model silence (504 or a final stream event), response size (502),
  malformed JSON or SSE from the model (502 or a final event). Refusals of the client's making
  are 4xx and never count against the service's availability SLI (Art.13).
- Suspension (Art.21): while the operator's notice (`hegui.sidecar.suspension`) says suspended,
  every request that would reach the model gets 503 `hegui.service_suspended` with the reason;
  `/metrics` and `/hegui/healthz` stay up. The SLI metrics the operator's SLO engine reads
  (Art.13) are described in `hegui.sidecar.metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import hashlib
import json
import logging
import re
import time
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hegui.api.generativeservice import Direction
from hegui.labeling.image import header_flags, label_images_response
from hegui.labeling.metadata import AIGC_KEY, AigcLabel, new_label
from hegui.labeling.metadata import HEADER as AIGC_HEADER
from hegui.labeling.text import TextLabel, label_response
from hegui.moderation.client import Moderator, ModeratorUnavailable
from hegui.moderation.decision import Decision, Hit, Outcome, decide
from hegui.moderation.pii import mask
from hegui.moderation.records import BATCHED as BATCHED_RECORDS
from hegui.moderation.records import RecordLog, pseudonym
from hegui.moderation.strikes import Level, StrikeBook
from hegui.sidecar import identity as _identity
from hegui.sidecar import images_moderation as pictures
from hegui.sidecar import json_scan, streaming
from hegui.sidecar import metadata as meta
from hegui.sidecar.common import SLI as _SLI
from hegui.sidecar.common import BadRequest, ModerationDown, error_body, error_response
from hegui.sidecar.common import SliFacts as _SliFacts
from hegui.sidecar.common import dumps as _dumps
from hegui.sidecar.common import mark_cut as _mark_cut
from hegui.sidecar.common import reference_id as _reference
from hegui.sidecar.complaints import add_routes as add_complaint_routes
from hegui.sidecar.config import PostureWatch, SidecarConfig
from hegui.sidecar.families import Family
from hegui.sidecar.families import get as family_of
from hegui.sidecar.families.base import (
    BodyError,
    Slot,
    loads_bounded,
    other_strings,
)
from hegui.sidecar.families.images import IMAGES
from hegui.sidecar.metrics import SidecarMetrics
from hegui.sidecar.original_dst import connection_port
from hegui.sidecar.routes import (
    MODEL_METRICS,
    PROBE_PATHS,
    Kind,
    Match,
    RouteRefused,
    RouteTable,
)
from hegui.sidecar.suspension import SuspensionNotice, SuspensionWatch

log = logging.getLogger("hegui.sidecar")

_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "trailers", "transfer-encoding", "upgrade", "host", "content-length", "content-encoding",
    "accept-encoding",
    # The sidecar read the whole body already: a client's `Expect: 100-continue` sent on would
    # make the upstream request wait for a 100 some model servers never send (a 504 that
    # counted against the service, Art.13).
    "expect", "http2-settings", "proxy-connection"})

# Headers that could make the model server route or act otherwise than the matched route says.
_REROUTING = frozenset({"x-http-method-override", "x-http-method", "x-method-override",
                        "x-original-url", "x-rewrite-url", "x-original-method"})


#: The status recorded (never sent) for a request whose client hung up before its answer's
#: headers: nginx's "client closed request", a 4xx, so the SLIs count it `refused` (Art.13).
_CLIENT_GONE = 499

#: Texts (messages, parts, tool fields...) one request may carry: each is moderated.
MAX_TEXTS = 2048
#: The most of a model server's error answer the sidecar reads, moderates and relays.
MAX_ERROR_BYTES = 1 << 20
_STREAM_TYPES = ("text/event-stream", "application/x-ndjson")


def _connection_named(headers: Any) -> set[str]:
    """The headers a request's `Connection` names: hop-by-hop too (RFC 9110 7.6.1)."""
    return {token.strip().lower() for value in headers.getall("Connection", ())
            for token in value.split(",")}


#: Headers whose values are credentials: moderated (a prohibited text there is refused, a model
#: server could read a prompt from any header), never masked (a digit run in a token is no
#: phone number, and a masked token would not authenticate).
_CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "cookie"})


def forwarded_headers(headers: Any) -> list[list[str]]:
    """The client's headers the model server is sent: not hop-by-hop, not the ones that could
    reroute the request, not the ones `Connection` names."""
    named = _connection_named(headers)
    pairs = [[k, v] for k, v in headers.items() if k.lower() not in _HOP_BY_HOP
             and k.lower() not in _REROUTING and k.lower() not in named]
    for name, value in pairs:
        if _UNDECODED.search(value):
            # Bytes that are not UTF-8 (Latin-1, GBK...): aiohttp keeps them as escapes, so
            # moderation would read other text than a model server that decodes them in its
            # charset (Art.14); and they were not forwarded as sent.
            raise BadRequest("hegui.header_encoding", f"the value of the header {name} is not "
                             "UTF-8: the sidecar moderates text it can read as the model server "
                             "may; send it in UTF-8 (or ASCII, RFC 8187 for other text)")
    return pairs


#: What aiohttp makes of a header byte that is not UTF-8 (surrogateescape).
_UNDECODED = re.compile("[\udc80-\udcff]")


def header_slots(pairs: list[list[str]]) -> list[Slot]:
    """The forwarded header values of a generation request, as texts to moderate; masks land
    in the forwarded values, except in credentials (moderated on a copy)."""
    return [Slot(pair if pair[0].lower() not in _CREDENTIAL_HEADERS else list(pair), 1,
                 "header") for pair in pairs if pair[1]]


def query_slots(query: str) -> tuple[list[list[str]], list[Slot]]:
    """The decoded names and values of a generation route's query string, as texts to moderate
    (a model server may read a prompt from it as well as from the body); the upstream query
    is re-encoded from them, masked where the decisions say (Art.14)."""
    pairs = [[name, value] for name, value in parse_qsl(query, keep_blank_values=True)]
    return pairs, [Slot(pair, i, "query") for pair in pairs for i in (0, 1) if pair[i]]


def _bad_body(error: BodyError, status: int = 400) -> BadRequest:
    return BadRequest(error.code, error.message, status)


def label_slots(answer: Any, slots: list[Slot], label: TextLabel, aigc: AigcLabel) -> Any:
    """The explicit label on each choice's text (first and last content slot), the implicit one
    as the top-level `AIGC` field of an object (Art.12): for the families other than OpenAI chat
    and completions, which `label_response` labels."""
    by_choice: dict[int, list[Slot]] = {}
    for slot in slots:
        by_choice.setdefault(slot.choice, []).append(slot)
    for group in by_choice.values():
        if label.prefix:
            group[0].set(label.prefix + group[0].text)
        if label.suffix:
            group[-1].set(group[-1].text + label.suffix)
    if isinstance(answer, dict):
        answer[AIGC_KEY] = aigc.to_dict()
    return answer


def _json_type(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


def _scan_failure(failure: Exception) -> BadRequest:
    """What the client gets when a scanned answer fails before any of it was sent."""
    if isinstance(failure, ModerationDown):
        raise failure
    if isinstance(failure, json_scan.Malformed):
        return BadRequest("hegui.upstream_malformed", f"the model server's answer is not JSON "
                          f"the sidecar can moderate ({failure}); not relayed", 502)
    if isinstance(failure, TimeoutError | aiohttp.ServerTimeoutError):
        return BadRequest("hegui.upstream_timeout", "the model server stopped answering", 504)
    return BadRequest("hegui.upstream_unavailable", f"the model server failed: {failure}", 502)


def _answer(body: bytes, status: int, relayed: list[list[str]], extra: dict[str, str]
            ) -> web.Response:
    """A response with the model server's headers (as moderated) and the sidecar's."""
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in relayed:
        headers.add(name, value)
    headers.update(extra)
    return web.Response(body=body, status=status, headers=headers)


def _moderation_unavailable(down: ModerationDown) -> web.Response:
    """The answer while the moderator is down in fail mode Closed (Art.14)."""
    return error_response(
        503, "hegui.moderation_unavailable",
        f"content moderation is unavailable ({down}); the fail mode is Closed, so nothing "
        "unmoderated is served", headers={"Retry-After": "5"})


class _ThrottledError:
    """An error that repeats with every request while it lasts (records that cannot be
    written, at the request rate): logged at once, then at most every `every` seconds with the
    count in between, so the log stays readable and small."""

    def __init__(self, what: str, every: float = 10.0) -> None:
        self.what, self.every = what, every
        self.last = -every
        self.since = 0

    def report(self, error: object) -> None:
        now = time.monotonic()
        if now - self.last < self.every:
            self.since += 1
            return
        more = f" ({self.since} more since the last report)" if self.since else ""
        log.error("%s: %s%s", self.what, error, more)
        self.last, self.since = now, 0


class Sidecar:
    def __init__(self, config: SidecarConfig, moderator: Moderator,
                 metrics: SidecarMetrics | None = None, *, records: RecordLog | None = None,
                 strikes: StrikeBook | None = None,
                 image_classifiers: pictures.ImageClassifiers | None = None) -> None:
        self.config = config
        self.moderator = moderator
        # The posture's image classifier (spec.moderation.images), followed as it changes.
        self.image_classifiers = image_classifiers or pictures.ImageClassifiers()
        self._record_failures = _ThrottledError("cannot write a record")
        self.metrics = metrics or SidecarMetrics(service=config.service,
                                                 latency_threshold=config.latency_threshold)
        self.records = records
        self.strikes = strikes
        self._session: aiohttp.ClientSession | None = None
        self.suspension: SuspensionWatch | None = None
        self.posture = PostureWatch(config.service_file) if config.service_file else None
        self._watching: asyncio.Task[None] | None = None
        self._errors_counted = 0
        self._routes: tuple[Any, RouteTable] | None = None
        if config.suspension_file is not None:
            # Read before the first request: a pod that starts while suspended never serves.
            self.suspension = SuspensionWatch(config.suspension_file,
                                              config.suspension_poll_seconds,
                                              required=config.suspension_required)
            self.suspension.check()
            self._suspension_checked()

    # --- suspension (Art.21) ---------------------------------------------------------------------

    def _suspension_checked(self) -> None:
        assert self.suspension is not None
        if self.posture is not None and (posture := self.posture.check(self.config)):
            self.config = posture  # hegui's operator changed the posture (config.PostureWatch)
        self.metrics.suspended.labels(self.config.service).set(
            1 if self.suspension.notice.suspended else 0)
        errors = self.suspension.errors - self._errors_counted
        if errors > 0:
            self.metrics.suspension_file_errors.inc(errors)
            self._errors_counted += errors

    def start_watching(self) -> None:
        if self.suspension is not None and self._watching is None:
            self._watching = asyncio.get_running_loop().create_task(
                self.suspension.run(self._suspension_checked))

    @property
    def suspended(self) -> SuspensionNotice | None:
        """The notice in force while the service is suspended, else None."""
        if self.suspension is not None and self.suspension.notice.suspended:
            return self.suspension.notice
        return None

    def suspended_response(self, notice: SuspensionNotice) -> web.Response:
        """503 with the notice: the model is not called (Art.21)."""
        reference = _reference()
        body = error_body("hegui.service_suspended",
                          "this service is suspended (Art.21): "
                          + (notice.reason or "suspended by the provider"),
                          article="Art.21", reference=reference)
        body.update(notice.body())
        return web.json_response({"error": body}, status=503, dumps=_dumps,
                                 headers={"x-hegui-reference": reference, "Retry-After": "60"})

    # --- users and records (Art.11, Art.14) ------------------------------------------------------

    def user_of(self, request: web.Request) -> str | None:
        """The user the posture's identity source names (hegui.sidecar.identity, Art.14)."""
        return self.identity_of(request).user

    def identity_of(self, request: web.Request) -> _identity.Resolved:
        """The user, or why the request proves none under a JWT source (then it is refused)."""
        key = self.config.user_jwt_key
        source = _identity.source_of(self.config.moderation.users.identity,
                                     header=self.config.user_header,
                                     claim=self.config.user_jwt_claim, key=key)
        return _identity.resolve(request.headers, source, key)

    def _strike_key(self, user: str) -> str:
        if self.config.pseudonymisation_key:
            return pseudonym(self.config.pseudonymisation_key, user)
        return hashlib.sha256(user.encode()).hexdigest()[:32]

    async def record(self, kind: str, *, user: str | None, **fields: Any) -> None:
        """Write one record, durable before the response goes out (Art.11)."""
        if self.records is not None:
            try:
                if kind in BATCHED_RECORDS:  # no fsync to wait for: cheaper on the loop than
                    # a hand-off to a thread and back (hegui.moderation.records, bench/records.py)
                    written = self.records.append(kind, user=user, service=self.config.service,
                                                  **fields)
                else:
                    written = await asyncio.to_thread(self.records.append, kind, user=user,
                                                      service=self.config.service, **fields)
            except OSError as failure:
                # Nothing is served that cannot be recorded.
                self._record_failures.report(failure)
                raise BadRequest("hegui.records_unavailable",
                                 "the incident record could not be written (Art.11)",
                                 503) from failure
            self.metrics.records_head.set(written["seq"])

    async def strike(self, user: str | None, reference: str) -> Level | None:
        if self.strikes is None or not user:
            return None
        level = await asyncio.to_thread(self.strikes.strike, self._strike_key(user))
        self.metrics.strikes.labels(level.value).inc()
        # `subject` is the strike book's key: the other replicas fold this strike into their
        # books from the evidence store (hegui.sidecar.shared_strikes).
        await self.record("strike", user=user, subject=self._strike_key(user), level=level.value,
                          reference=reference, article="Art.14")
        if level == Level.SUSPEND:
            await self.record("suspension", user=user, reference=reference, article="Art.14")
        return level

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=None,
                                            sock_connect=self.config.upstream_connect_timeout,
                                            sock_read=self.config.upstream_read_timeout)
            # No pool limit (aiohttp's default is 100): a connection is held for a whole
            # stream, so the 101st concurrent stream waited for one to end before its request
            # even reached the model. The model server queues what it cannot batch yet.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0), timeout=timeout, auto_decompress=True,
                read_bufsize=1 << 16, max_line_size=self.config.max_sse_line_bytes,
                max_field_size=self.config.max_header_bytes)
        return self._session

    async def close(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watching
            self._watching = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self.moderator.close()
        await self.image_classifiers.close()

    # --- moderation ----------------------------------------------------------------------------

    async def moderate(self, texts: list[str], direction: Direction) -> list[Decision] | None:
        """A decision per text; None when the moderator is down and the fail mode is Open."""
        if not texts:
            return []
        started = time.perf_counter()
        try:
            found = await self.moderator.moderate(texts)
        except ModeratorUnavailable as failure:
            self.metrics.moderator_errors.labels(direction.value).inc()
            mode = "Open" if self.config.fail_open else "Closed"
            self.metrics.fail_mode.labels(mode, direction.value).inc()
            log.warning("moderator unreachable (%s), fail mode %s (Art.14)", failure, mode)
            if self.config.fail_open:
                return None
            raise ModerationDown(str(failure)) from failure
        finally:
            self.metrics.moderation_latency.labels(direction.value).observe(
                time.perf_counter() - started)
        decisions = [decide(f, self.config.moderation, direction) for f in found]
        for decision in decisions:
            for hit in decision.hits:
                self.metrics.decisions.labels(hit.outcome.value, hit.category,
                                              direction.value).inc()
                if hit.outcome is Outcome.BLOCK:
                    self.metrics.incidents.labels(self.config.service, direction.value).inc()
        return decisions

    # --- routes --------------------------------------------------------------------------------

    @property
    def routes(self) -> RouteTable:
        """The route table: built-in routes and the posture's declared ones (rebuilt when the
        posture changes)."""
        declared = self.config.moderation.routes
        if self._routes is None or self._routes[0] is not declared:
            self._routes = (declared, RouteTable.with_declared(
                (r.path, r.family.value) for r in declared))
        return self._routes[1]

    @web.middleware
    async def metrics_ports(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """A connection sent to a port the posture declares for Metrics (captured like every
        other, hegui.sidecar.capture) gets the model's `GET /metrics` from that port,
        moderated, and nothing else: not a generation API the team's server may also listen
        with there, and not the sidecar's own routes (Art.14)."""
        declared = self.config.metrics_ports
        if not declared:
            return await handler(request)  # type: ignore[no-any-return]
        port = connection_port(request.transport)
        if port is None or not any(first <= port <= last for first, last in declared):
            return await handler(request)  # type: ignore[no-any-return]
        if request.method in ("GET", "HEAD") and request.raw_path.partition("?")[0] == "/metrics":
            return await self.metadata(request, Match(MODEL_METRICS, {}, "",
                                                      upstream=f"http://127.0.0.1:{port}"))
        self.metrics.requests.labels("refused", "404").inc()
        return error_response(
            404, "hegui.metrics_port", f"port {port} is declared for the model's metrics "
            "(spec.traffic.openPorts, purpose Metrics): the sidecar serves only GET /metrics "
            "there (Art.14)")

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        """Every request for the model: matched against the route table from its raw target
        (canonical paths only, methods allow-listed), then moderated or relayed (Art.14)."""
        try:
            return await self._dispatch(request)
        finally:
            # Read whole: the connection's next bytes are a request line, looked at first.
            if request.content.at_eof() and request.transport is not None and isinstance(
                    protocol := request.transport.get_protocol(), _Http1Only):
                protocol.between_requests()

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        if request.version[0] != 1:  # HTTP/0.9 or "HTTP/2.0" in text, later on a connection
            self.metrics.requests.labels("refused", "400").inc()
            response = error_response(400, "hegui.http_version", "the sidecar serves HTTP/1.0 "
                                      "and HTTP/1.1 only; end the request line with HTTP/1.1")
            response.force_close()
            return response
        try:
            match = self.routes.resolve(request.method, request.raw_path)
        except RouteRefused as refused:
            # The client's mistake or attack, not the service's: never in the SLIs (Art.13).
            self.metrics.requests.labels("refused", str(refused.status)).inc()
            return error_response(refused.status, refused.code, refused.message,
                                  headers=refused.headers)
        if match.route.kind is Kind.GENERATION:
            return await self.generation(match, request)
        if match.route.kind is Kind.METADATA:
            return await self.metadata(request, match)
        return await self.passthrough(request, match)

    async def generation(self, match: Match, request: web.Request) -> web.StreamResponse:
        route = match.route.family
        started = time.perf_counter()
        status = 500
        counted = True  # in the SLIs: everything but refusals while suspended
        facts = _SliFacts()
        token = _SLI.set(facts)
        try:
            if notice := self.suspended:
                status, counted = 503, False
                return self.suspended_response(notice)
            response = await self._generation(match, request)
            status = response.status
            return response
        except ModerationDown as down:
            status = 503
            return _moderation_unavailable(down)
        except BadRequest as bad:
            status = bad.status
            facts.client_caused = facts.client_caused or bad.client_caused
            return error_response(bad.status, bad.code, bad.message)
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            # The client hung up before its answer's headers went out: its doing, not a 500.
            status = _CLIENT_GONE
            log.info("client went away before the answer of %s", request.path)
            return web.Response(status=status)
        except asyncio.CancelledError:
            # aiohttp cancels the handler of a client that hung up: its doing, not a 500.
            if request.transport is None or request.transport.is_closing():
                status = _CLIENT_GONE
            raise
        finally:
            ended = time.perf_counter()
            _SLI.reset(token)
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(ended - started)
            if counted:
                # From the request in full: a client that trickles its body is not slow service.
                self.metrics.observe_sli(route, status,
                                         (facts.first_token or ended) - (facts.received
                                                                         or started),
                                         cut=facts.cut, client_caused=facts.client_caused)

    async def _read_json(self, request: web.Request) -> dict[str, Any]:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise BadRequest("hegui.body_too_large",
                             f"the request body exceeds {self.config.max_body_bytes} bytes",
                             413) from None
        if (facts := _SLI.get()) is not None:
            facts.received = time.perf_counter()
        try:
            body = loads_bounded(raw.decode("utf-8").encode())  # deep JSON: a 400, not a 500
        except UnicodeDecodeError:
            raise BadRequest("hegui.invalid_utf8", "the request body is not UTF-8") from None
        except ValueError as bad:
            raise BadRequest("hegui.invalid_json", f"the request body is not JSON: {bad}") from None
        if not isinstance(body, dict):
            raise BadRequest("hegui.invalid_request", "the request body must be a JSON object")
        return body

    async def _generation(self, match: Match, request: web.Request) -> web.StreamResponse:
        route = match.route.family
        family = family_of(route)
        who = self.identity_of(request)
        if who.problem is not None:  # the posture names a verified JWT: no token, no service
            return error_response(401, "hegui.identity_required", who.problem, article="Art.14")
        user = who.user
        headers: dict[str, str] = {}
        if self.strikes is not None and user:
            admitted, level = self.strikes.admit(self._strike_key(user))
            if level == Level.SUSPEND:
                return error_response(403, "hegui.user_suspended", "this user is suspended for "
                                      "repeated prohibited requests", article="Art.14")
            if not admitted:
                return error_response(429, "hegui.user_rate_limited", "this user is limited for "
                                      "repeated prohibited requests", article="Art.14",
                                      headers={"Retry-After": "60"})
            if level == Level.WARN:
                headers["x-hegui-warning"] = "prohibited requests lead to limits (Art.14)"
        body = await self._read_json(request)
        moderation = self.config.moderation
        unmoderated = False
        try:
            slots = family.input_slots(body)  # also checks what cannot be moderated (token ids)
            stream = family.wants_stream(body, match.route.action)
        except BodyError as bad:
            raise _bad_body(bad) from None
        pairs: list[list[str]] = []
        if match.query:  # texts too, which a model server may read (Art.14)
            pairs, in_query = query_slots(match.query)
            slots = slots + in_query
        sent_headers = forwarded_headers(request.headers)  # and so are headers
        slots = slots + header_slots(sent_headers)
        if len(slots) > MAX_TEXTS:  # one moderation call stays bounded (and Triton's batch)
            raise BadRequest("hegui.too_many_texts", f"the request carries {len(slots)} texts; "
                             f"at most {MAX_TEXTS} are moderated in one request (Art.14)", 413)
        if moderation.input.enabled:
            decisions = await self.moderate([s.text for s in slots], Direction.INPUT)
            if decisions is None:
                unmoderated = True
            else:
                blocked = [h for d in decisions for h in d.blocking]
                if blocked:
                    # Art.14: stop at once; the model never sees a blocked input.
                    categories, reference = await self._record_block(blocked, "input", route,
                                                                     user)
                    strike_level = await self.strike(user, reference)
                    message = "the request was refused by content moderation"
                    if strike_level is not None and strike_level != Level.OK:
                        message += f"; repeated prohibited requests: {strike_level.value}"
                    return error_response(
                        400, "hegui.input_blocked", message, article=blocked[0].article,
                        direction="input", categories=categories, reference=reference)
                await self._apply_masks(slots, decisions, "input", route, user, headers)
        if unmoderated:
            headers["x-hegui-moderation"] = "unavailable"
            await self.record("unmoderated", user=user, direction="input", route=route,
                              article="Art.14", reason="moderator unavailable, fail mode Open")
        # A stream the relay (hegui.sidecar.streaming) cannot moderate is refused, not relayed.
        if stream and route not in streaming.STREAMED:
            raise BadRequest("hegui.unsupported", f"streamed answers of {route} are not served "
                             "yet: they would not be moderated (Art.14); ask without streaming")
        if stream and family.choices_requested(body) > 1 and not streaming.STREAMS_CHOICES:
            raise BadRequest("hegui.unsupported", "streamed responses with n > 1 are not served: "
                             "they cannot be moderated (Art.14)")
        if match.query:  # the moderated (and masked) names and values, nothing else
            match = dataclasses.replace(match, query=urlencode([(k, v) for k, v in pairs],
                                                                  quote_via=quote))
        if route == "images":  # pictures that could not be moderated: no GPU spent on them
            pictures.check_request(self, body)
        upstream = await self._open_upstream(route, request, json.dumps(body).encode(), match,
                                             sent_headers)
        try:
            if upstream.status >= 400:
                # An error's message is the model server's text too (it may repeat the prompt
                # or carry an answer): moderated like any answer.
                if not moderation.output.enabled:
                    return await self._relay(request, upstream, headers)
                return await self._moderated_error(route, upstream, headers, user)
            if route == "images":
                # Texts and pictures (hegui.sidecar.images_moderation) moderated, unless the
                # posture moderates inputs only.
                if not moderation.output.enabled:
                    headers["x-hegui-output"] = "unmoderated"
                return await self._images_answer(upstream, headers, user,
                                                 moderate=moderation.output.enabled)
            if not moderation.output.enabled and self.config.labeling is None:
                return await self._relay(request, upstream, headers)
            # By what the model sends, not what the request asked: a model server that streams
            # unasked (it read `stream` otherwise) is moderated as a stream, never a 502.
            if upstream.content_type in _STREAM_TYPES and route in streaming.STREAMED:
                # Output moderation off: the stream is still labeled (Art.12), in the relay.
                return await self._stream(route, request, upstream, headers, user,
                                          moderate=moderation.output.enabled)
            # Output moderation off: the answer is still labeled (Art.12), not moderated.
            return await self._moderated_answer(family, upstream, headers, user,
                                                family.choices_requested(body),
                                                moderate=moderation.output.enabled)
        finally:
            upstream.release()

    async def _open_upstream(self, route: str, request: web.Request, data: bytes | None,
                             match: Match, sent: list[list[str]] | None = None
                             ) -> aiohttp.ClientResponse:
        """The request to the model server, on the matched route's path (never the raw one),
        with the client's headers as moderated (`sent`) or as they came (metadata routes)."""
        headers: dict[str, str] = {}
        for name, value in sent if sent is not None else forwarded_headers(request.headers):
            headers[name] = value
        headers["Accept-Encoding"] = "identity"
        if match.route.kind is Kind.GENERATION:
            headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
            headers["Content-Type"] = "application/json"  # the body the sidecar re-encoded
        started = time.perf_counter()
        try:
            return await self.session.request(
                request.method, (match.upstream or self.config.upstream) + match.upstream_path,
                data=data, headers=headers, allow_redirects=False)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise BadRequest("hegui.upstream_timeout", "the model server did not answer in time",
                             504) from None
        except aiohttp.ClientError as failure:
            raise BadRequest("hegui.upstream_unavailable",
                             f"the model server is unreachable: {failure}", 502) from None
        finally:
            self.metrics.model_latency.labels(route).observe(time.perf_counter() - started)

    async def _read_bounded(self, upstream: aiohttp.ClientResponse, limit: int | None = None,
                            what: str = "") -> bytes:
        limit = limit or self.config.max_response_bytes
        data = bytearray()
        try:
            async for chunk in upstream.content.iter_chunked(1 << 16):
                data += chunk
                if len(data) > limit and what:
                    raise BadRequest("hegui.upstream_too_large",
                                     f"the model server's {what} exceeds {limit} bytes, the "
                                     "most the sidecar reads and moderates; not relayed", 502)
                if len(data) > limit:
                    # The client asked for this much (max_tokens, n): its doing (Art.13).
                    raise BadRequest("hegui.upstream_too_large",
                                     f"the model's answer exceeds {limit} bytes, the most the "
                                     "sidecar relays unstreamed; ask for fewer tokens or "
                                     "choices (max_tokens, n), or stream", 502,
                                     client_caused=True)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise BadRequest("hegui.upstream_timeout", "the model server stopped answering",
                             504) from None
        except aiohttp.ClientError as failure:
            raise BadRequest("hegui.upstream_unavailable", f"the model server failed: {failure}",
                             502) from None
        return bytes(data)

    def _response_headers(self, upstream: aiohttp.ClientResponse) -> dict[str, str]:
        return {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}

    async def _relay(self, request: web.Request, upstream: aiohttp.ClientResponse,
                     extra: dict[str, str]) -> web.StreamResponse:
        response = web.StreamResponse(status=upstream.status,
                                      headers={**self._response_headers(upstream), **extra})
        await response.prepare(request)
        try:
            async for chunk in upstream.content.iter_chunked(1 << 16):
                try:
                    await response.write(chunk)
                except ConnectionResetError:  # the client went away: not a service failure
                    log.info("client went away while relaying %s", request.path)
                    return response
        except (TimeoutError, aiohttp.ClientError):
            log.warning("the model server failed while relaying %s", request.path)
            _mark_cut()
            return response  # headers are sent: the client sees a cut response
        await response.write_eof()
        return response

    async def _moderated_answer(self, family: Family, upstream: aiohttp.ClientResponse,
                                headers: dict[str, str], user: str | None,
                                requested: int, *, moderate: bool = True) -> web.Response:
        """A non-streamed answer, every text of every choice moderated (Art.4, Art.14).

        A blocked answer is withheld (451); with several choices, only the blocked ones are
        (content_filter) unless all are. Log probabilities and token ids that would spell what
        was masked or blocked are dropped, and `x-hegui-dropped` says so. Labels (Art.12) go on
        whatever is served."""
        route = family.name
        raw = await self._read_bounded(upstream)
        try:
            answer = loads_bounded(raw)
            dropped = family.answer_scrub(answer)
            slots = family.output_slots(answer)
            extra = other_strings(answer, slots) if moderate else []
        except BodyError as bad:
            raise _bad_body(bad, 502) from None
        except ValueError:  # JSON and UTF-8 errors alike
            raise BadRequest("hegui.upstream_malformed", "the model's answer is not JSON",
                             502) from None
        decisions = await self.moderate([s.text for s in slots + extra], Direction.OUTPUT) \
            if moderate else None
        if decisions is not None and extra:
            # The answer's other strings (ids, model, fields its API does not define): a
            # prohibited one withholds the whole answer, personal information is masked.
            decisions, others = decisions[:len(slots)], decisions[len(slots):]
            hits = [h for d in others for h in d.blocking]
            if hits:
                categories, reference = await self._record_block(hits, "output", route, user)
                return error_response(
                    451, "hegui.output_blocked", "the model's answer was withheld by content "
                    "moderation", article=hits[0].article, direction="output",
                    categories=categories, reference=reference)
            await self._apply_masks(extra, others, "output", route, user, headers)
        if not moderate:
            pass  # the posture moderates inputs only: labeled below, nothing else changes
        elif decisions is None:
            headers["x-hegui-moderation"] = "unavailable"
            await self.record("unmoderated", user=user, direction="output", route=route,
                              article="Art.14", reason="moderator unavailable, fail mode Open")
            dropped += ["logprobs" for s in slots if s.probe and s.drop()][:1]
        else:
            texts = [(s, d) for s, d in zip(slots, decisions, strict=True) if not s.probe]
            blocked_choices = sorted({s.choice for s, d in texts if d.blocking})
            if blocked_choices:
                all_choices = {s.choice for s, _ in texts}
                hits = [h for s, d in texts for h in d.blocking]
                categories, reference = await self._record_block(hits, "output", route, user)
                error = error_body("hegui.output_blocked", "this choice was withheld by content "
                                   "moderation", article=hits[0].article, reference=reference,
                                   direction="output", categories=categories)
                several = max(requested, len(all_choices)) > 1
                if not several or set(blocked_choices) >= all_choices or not all(
                        family.withhold_choice(answer, c, error) for c in blocked_choices):
                    return error_response(
                        451, "hegui.output_blocked", "the model's answer was withheld by content "
                        "moderation", article=hits[0].article, direction="output",
                        categories=categories, reference=reference)
                headers["x-hegui-output"] = "choices-withheld"
                texts = [(s, d) for s, d in texts if s.choice not in blocked_choices]
            await self._apply_masks([s for s, _ in texts], [d for _, d in texts], "output",
                                    route, user, headers)
            masked = {s.choice for s, d in texts if d.mask_spans}
            for slot, decision in zip(slots, decisions, strict=True):
                if slot.probe and (decision.hits or slot.choice in masked) and slot.drop():
                    dropped.append(slot.kind)
        if dropped:
            headers["x-hegui-dropped"] = ", ".join(sorted(set(dropped)))
        if aigc := await self._new_label(user, route):
            assert self.config.labeling is not None
            label = TextLabel.from_posture(self.config.labeling.explicit)
            if route in ("chat", "completions") and isinstance(answer, dict):
                answer = label_response(answer, label, aigc)
            else:
                answer = label_slots(answer, [s for s in family.output_slots(answer)
                                              if s.kind.startswith("content")], label, aigc)
            headers[AIGC_HEADER] = aigc.header_value()
        return web.json_response(answer, status=upstream.status, headers=headers, dumps=_dumps)

    async def _record_block(self, blocked: list[Hit], direction: str, route: str,
                            user: str | None) -> tuple[list[str], str]:
        """Log and record a block (Art.14); the categories and the reference the user sees."""
        categories = sorted({h.category for h in blocked})
        reference = _reference()
        log.info("%s blocked: %s (%s) ref %s", direction, categories, blocked[0].article,
                 reference)
        await self.record("block", user=user, direction=direction, route=route,
                          categories=categories, article=blocked[0].article,
                          reference=reference)
        return categories, reference

    async def _apply_masks(self, slots: list[Slot], decisions: list[Decision], direction: str,
                           route: str, user: str | None, headers: dict[str, str]) -> None:
        """Mask what the decisions say to mask, in place, and record it (Art.4(4), Art.11)."""
        for slot, decision in zip(slots, decisions, strict=True):
            if decision.mask_spans and not slot.probe:
                slot.set(mask(slot.text, [(s.start, s.end) for s in decision.mask_spans]))
                headers[f"x-hegui-{direction}"] = "masked"
                await self.record("mask", user=user, direction=direction, route=route,
                                  kinds=sorted({s.label for s in decision.mask_spans}),
                                  article=decision.article)

    # --- labels (Art.12) ------------------------------------------------------------------------

    async def _new_label(self, user: str | None, route: str) -> AigcLabel | None:
        """A fresh implicit label for one output, recorded so its ProduceID can be traced."""
        labeling = self.config.labeling
        if labeling is None:
            return None
        aigc = new_label(labeling.implicit)
        await self.record("label", user=user, direction="output", route=route,
                          article="Art.12", produce_id=aigc.ProduceID)
        return aigc

    async def _moderated_error(self, route: str, upstream: aiohttp.ClientResponse,
                               headers: dict[str, str], user: str | None) -> web.Response:
        """The model server's error answer (4xx, 5xx), its status kept (Art.13 counts it as
        it was), its texts and headers moderated like an answer's (Art.14): withheld when one
        is prohibited, masked in place, relayed as decoded otherwise."""
        status = upstream.status
        data = bytearray()
        try:
            async for chunk in upstream.content.iter_chunked(1 << 16):
                data += chunk
                if len(data) > MAX_ERROR_BYTES:
                    return error_response(status, "hegui.upstream_error",
                                          f"the model server answered {status} with more than "
                                          f"{MAX_ERROR_BYTES} bytes; not relayed")
        except (TimeoutError, aiohttp.ClientError):
            raise BadRequest("hegui.upstream_unavailable", "the model server failed while "
                             f"answering {status}", 502) from None
        # Its texts as a client reads them (hegui.sidecar.metadata: every JSON string, keys
        # too; text in its declared charset) and its headers.
        relayed = [[k, v] for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP]
        slots = [Slot(pair, 1, "header") for pair in relayed if pair[1]]
        try:
            doc = meta.document(bytes(data), upstream.content_type, upstream.charset) \
                if data else None
        except meta.NotModerable as bad:
            return error_response(status, "hegui.upstream_error", f"the model server answered "
                                  f"{status} with a body that cannot be moderated ({bad}); not "
                                  "relayed")
        texts = [s.text for s in slots] + (doc.texts if doc is not None else [])
        strings = len(texts)
        spelled: list[tuple[str, list[tuple[str, int]]]] = []
        if doc is not None and doc.kind == "json":  # what its strings spell together
            spelled = json_scan.spelled_runs(doc.value)
            texts += [text for text, _ in spelled]
        decisions = await self._moderate_all(texts, Direction.OUTPUT)
        if decisions is None:
            headers["x-hegui-moderation"] = "unavailable"
            return _answer(bytes(data), status, relayed, headers)
        blocked = [h for d in decisions for h in d.blocking]
        if blocked:
            categories, reference = await self._record_block(blocked, "output", route, user)
            return error_response(status, "hegui.output_blocked", f"the model server answered "
                                  f"{status}; its message was withheld by content moderation",
                                  article=blocked[0].article, direction="output",
                                  categories=categories, reference=reference)
        await self._apply_masks(slots, decisions[:len(slots)], "output", route, user, headers)
        body = bytes(data) if doc is None else await self._masked_document(
            doc, decisions[len(slots):strings], "output", route, user, headers,
            spelled=spelled, spelled_decisions=decisions[strings:])
        return _answer(body, status, relayed, headers)

    async def _images_answer(self, upstream: aiohttp.ClientResponse, headers: dict[str, str],
                             user: str | None, *, moderate: bool) -> web.Response:
        """An images answer: its texts moderated (a `revised_prompt`, and whatever a model
        behind a declared route of this family writes), its pictures moderated by the image
        classifier (hegui.sidecar.images_moderation), what is served labeled (Art.12)."""
        raw = await self._read_bounded(upstream)
        try:
            body = loads_bounded(raw)
        except ValueError:
            raise BadRequest("hegui.upstream_malformed", "the model's answer is not JSON",
                             502) from None
        try:
            slots = IMAGES.output_slots(body)
        except BodyError as bad:
            raise _bad_body(bad, 502) from None
        if moderate:
            decisions = await self.moderate([s.text for s in slots], Direction.OUTPUT)
            if decisions is None:
                headers["x-hegui-moderation"] = "unavailable"
            else:
                blocked = [h for d in decisions for h in d.blocking]
                if blocked:
                    categories, reference = await self._record_block(blocked, "output",
                                                                     "images", user)
                    return error_response(
                        451, "hegui.output_blocked", "the model's answer was withheld by "
                        "content moderation", article=blocked[0].article, direction="output",
                        categories=categories, reference=reference)
                await self._apply_masks(slots, decisions, "output", "images", user, headers)
            if refusal := await pictures.moderate_pictures(self, body, headers, user):
                return refusal
        if self.config.labeling is not None:
            return await self._labeled_images(body, upstream.status, headers, user)
        return web.json_response(body, status=upstream.status, headers=headers, dumps=_dumps)

    async def _labeled_images(self, body: dict[str, Any], status: int, headers: dict[str, str],
                              user: str | None) -> web.Response:
        labeling = self.config.labeling
        assert labeling is not None
        produce_ids: list[str] = []

        def fresh() -> AigcLabel:
            aigc = new_label(labeling.implicit)
            produce_ids.append(aigc.ProduceID)
            return aigc

        key = None
        if labeling.watermark is not None and labeling.watermark.enabled:
            key = self.config.watermark_key
        # Decoding, drawing, watermarking and encoding images is CPU (or GPU) work: off the loop.
        labeled, flags = await asyncio.to_thread(label_images_response, body, fresh,
                                                 labeling.explicit, watermark_key=key)
        if key is None and labeling.watermark is not None and labeling.watermark.enabled:
            flags.append("watermark-key-missing")
        if flags:
            headers["x-hegui-label-flags"] = header_flags(flags)
        await self.record("label", user=user, direction="output", route="images",
                          article="Art.12", produce_ids=produce_ids, flags=sorted(set(flags)))
        return web.json_response(labeled, status=status, headers=headers, dumps=_dumps)

    # --- streams -------------------------------------------------------------------------------

    async def _stream(self, route: str, request: web.Request, upstream: aiohttp.ClientResponse,
                      headers: dict[str, str], user: str | None, *,
                      moderate: bool = True) -> web.StreamResponse:
        response: web.StreamResponse = await streaming.stream(self, route, request, upstream,
                                                              headers, user, moderate=moderate)
        return response

    async def passthrough(self, request: web.Request, match: Match) -> web.StreamResponse:
        """Non-generative routes (embeddings, tokenize): relayed on the matched route's
        path."""
        started = time.perf_counter()
        route = match.route.family
        status = 500
        try:
            if notice := self.suspended:  # nothing reaches the model while suspended (Art.21)
                status = 503
                return self.suspended_response(notice)
            try:
                data = await request.read() if request.can_read_body else None
            except web.HTTPRequestEntityTooLarge:
                raise BadRequest("hegui.body_too_large", "the request body is too large",
                                 413) from None
            upstream = await self._open_upstream(route, request, data, match)
            try:
                if not self.config.moderation.output.enabled:
                    response = await self._relay(request, upstream, {})
                elif upstream.status >= 400 or not _json_type(upstream.content_type):
                    # Bounded, as errors are (hegui.sidecar.metadata: every JSON string, or the
                    # text whole).
                    response = await self._moderated_error(route, upstream, {},
                                                           self.user_of(request))
                else:
                    response = await self._scanned_answer(route, request, upstream)
            finally:
                upstream.release()
            status = response.status
            return response
        except BadRequest as bad:
            status = bad.status
            return error_response(bad.status, bad.code, bad.message)
        except ModerationDown as down:
            status = 503
            return _moderation_unavailable(down)
        finally:
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)

    async def _scanned_answer(self, route: str, request: web.Request,
                              upstream: aiohttp.ClientResponse) -> web.StreamResponse:
        """A non-generative JSON answer (embeddings, tokenize) as it arrives, never buffered
        whole (a big embedding batch is over 100 MB): every string, keys too, moderated
        (hegui.sidecar.json_scan), every other byte relayed as it came (numbers stay as the
        model wrote them), its headers moderated with its first bytes (Art.4, Art.14).

        The model server is the team's and could answer with any text. Personal information is
        masked in the string; a prohibited one withholds the answer (451) while nothing was sent,
        and afterwards cuts it (the client reads a truncated body, never the text). A
        base64 `embedding` is packed numbers and passes as numbers do."""
        user = self.user_of(request)
        relayed = [[k, v] for k, v in self._response_headers(upstream).items()]
        slots = [Slot(pair, 1, "header") for pair in relayed if pair[1]]
        scanner = json_scan.Scanner(self.config.max_response_bytes)
        # The text the strings spell, not only each string (json_scan.Runs): Hold whatever
        # the streaming mode, since a JSON client shows nothing before the whole body parses.
        runs = json_scan.Runs(self.config.stream_overlap_chars)
        extra: dict[str, str] = {}
        response: web.StreamResponse | None = None
        unmoderated = False
        while True:
            try:
                data = await upstream.content.readany()
                parts = scanner.feed(data) if data else []
                if not data:
                    scanner.finish()
                batch = runs.take(parts, final=not data)
                parts = batch.parts
                texts = list(dict.fromkeys([s.text for s in slots] + batch.texts))
                decisions = await self._moderate_all(texts, Direction.OUTPUT)
            except (TimeoutError, aiohttp.ClientError, json_scan.Malformed,
                    ModerationDown) as failure:
                if response is None:
                    raise _scan_failure(failure) from None
                log.warning("cut the answer of %s: %s", request.path, failure)
                return self._cut(request, response, upstream)
            if decisions is None:
                if not unmoderated:
                    unmoderated = True
                    extra["x-hegui-moderation"] = "unavailable"
                    await self.record("unmoderated", user=user, direction="output",
                                      route=route, article="Art.14",
                                      reason="moderator unavailable, fail mode Open")
            else:
                verdicts = dict(zip(texts, decisions, strict=True))
                blocked = [h for d in decisions for h in d.blocking]
                if blocked:
                    categories, reference = await self._record_block(blocked, "output", route,
                                                                     user)
                    if response is not None:
                        return self._cut(request, response, upstream)
                    upstream.close()  # the rest is not read: the model stops sending
                    return error_response(
                        451, "hegui.output_blocked", f"the model server's answer on "
                        f"{request.path} was withheld by content moderation",
                        article=blocked[0].article, direction="output", categories=categories,
                        reference=reference)
                if slots:
                    await self._apply_masks(slots, [verdicts[s.text] for s in slots], "output",
                                            route, user, extra)
                masked, late = batch.mask(verdicts)
                if late and response is not None:  # personal information partly sent
                    return self._cut(request, response, upstream)
                if masked:
                    extra["x-hegui-output"] = "masked"
                    await self.record("mask", user=user, direction="output", route=route,
                                      kinds=sorted({m.label for d in masked
                                                    for m in d.mask_spans}),
                                      article=masked[0].article)
            runs.commit(batch)
            slots = []
            out = b"".join([p if isinstance(p, bytes) else p.raw for p in parts])
            if out or not data:
                if response is None:  # not before something may go out (a withheld answer
                    response = web.StreamResponse(status=upstream.status,  # is then a 451)
                                                  headers={**dict(relayed), **extra})
                    await response.prepare(request)
                try:
                    await response.write(out)
                except ConnectionResetError:  # the client went away: not a service failure
                    upstream.close()
                    return response
            if not data:
                break
        assert response is not None
        await response.write_eof()
        return response

    @staticmethod
    def _cut(request: web.Request, response: web.StreamResponse,
             upstream: aiohttp.ClientResponse) -> web.StreamResponse:
        """End an answer whose headers are out without its last chunk: the client reads a
        truncated body (an error in any HTTP client), never what followed (Art.14)."""
        _mark_cut()
        upstream.close()
        response.force_close()
        if request.transport is not None:
            request.transport.close()
        return response

    # --- metadata (hegui.sidecar.metadata) -----------------------------------------------------

    async def metadata(self, request: web.Request, match: Match) -> web.StreamResponse:
        """A metadata route, moderated both ways (Art.4, Art.14): the model server is the
        application team's, and what it answers on `/v1/models/{model}` or `/api/show` reaches
        its clients as surely as a chat answer does."""
        started = time.perf_counter()
        route = match.route.family
        status = 500
        # kubelet's probes on the model's port: a liveness probe failing because moderation is
        # down or the service suspended would restart the model (minutes to load its weights).
        probe = request.method in ("GET", "HEAD") and match.route.pattern in PROBE_PATHS
        try:
            if notice := self.suspended:  # nothing reaches the model while suspended (Art.21)
                if not probe:
                    status = 503
                    return self.suspended_response(notice)
                response: web.StreamResponse = await self._probe_status(
                    match, ("x-hegui-suspended", "true"))
            else:
                try:
                    response = await self._metadata(request, match)
                except ModerationDown as down:
                    if not probe:
                        status = 503
                        return _moderation_unavailable(down)
                    response = await self._probe_status(
                        match, ("x-hegui-moderation", "unavailable"))
            status = response.status
            return response
        except BadRequest as bad:
            status = bad.status
            return error_response(bad.status, bad.code, bad.message)
        finally:
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)

    async def _probe_status(self, match: Match, header: tuple[str, str]) -> web.Response:
        """The model's health as a status alone: nothing of the client's is sent (no headers,
        query or body) and no text comes back, so nothing unmoderated passes either way."""
        url = self.config.upstream + match.route.upstream_path(match.params)
        try:
            async with self.session.get(url, headers={"Accept-Encoding": "identity"},
                                        allow_redirects=False) as upstream:
                status = upstream.status
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise BadRequest("hegui.upstream_timeout", "the model server did not answer in time",
                             504) from None
        except aiohttp.ClientError as failure:
            raise BadRequest("hegui.upstream_unavailable",
                             f"the model server is unreachable: {failure}", 502) from None
        return web.Response(status=status, headers=dict([header]))

    async def _moderate_all(self, texts: list[str], direction: Direction
                            ) -> list[Decision] | None:
        """`moderate` in calls of at most MAX_TEXTS texts (a model card or a metrics page
        carries more strings than one call should)."""
        decisions: list[Decision] = []
        for start in range(0, len(texts), MAX_TEXTS):
            found = await self.moderate(texts[start:start + MAX_TEXTS], direction)
            if found is None:
                return None
            decisions += found
        return decisions

    async def _masked_document(self, doc: meta.Document, decisions: list[Decision],
                               direction: str, route: str, user: str | None,
                               headers: dict[str, str], *,
                               spelled: list[tuple[str, list[tuple[str, int]]]] | None = None,
                               spelled_decisions: list[Decision] | None = None) -> bytes:
        """The document rendered with what the decisions mask, recorded (Art.4(4), Art.11):
        its strings' own, and personal information its strings spell together (`spelled`,
        json_scan.spelled_runs), masked in each string it covers."""
        masked = meta.masks(doc.texts, decisions)
        if spelled and spelled_decisions:
            if not json_scan.spelled_masks(spelled, spelled_decisions, masked):
                raise BadRequest("hegui.output_blocked", "the model server's answer spells "
                                 "personal information that cannot be masked in its strings "
                                 "(token bytes); withheld (Art.4(4))", 451)
            decisions = decisions + spelled_decisions
        if masked:
            headers[f"x-hegui-{direction}"] = "masked"
            await self.record("mask", user=user, direction=direction, route=route,
                              kinds=sorted({s.label for d in decisions for s in d.mask_spans}),
                              article=next(d.article for d in decisions if d.mask_spans))
        # Always the decoded value re-encoded, never the raw bytes: what was moderated is what
        # is sent (a duplicate JSON key read otherwise by another parser carries nothing).
        return doc.render(masked)

    async def _metadata(self, request: web.Request, match: Match) -> web.StreamResponse:
        route = match.route.family
        user = self.identity_of(request).user
        moderation = self.config.moderation
        headers: dict[str, str] = {}
        try:
            data = await request.read() if request.can_read_body else b""
        except web.HTTPRequestEntityTooLarge:
            raise BadRequest("hegui.body_too_large", "the request body is too large",
                             413) from None
        # Input (Art.4, Art.14): the path's parameters, the query, the headers, any body.
        params = [[name, value] for name, value in match.params.items()]
        slots = [Slot(pair, 1, "path") for pair in params]
        pairs: list[list[str]] = []
        if match.query:
            pairs, in_query = query_slots(match.query)
            slots += in_query
        sent_headers = forwarded_headers(request.headers)
        slots += header_slots(sent_headers)
        body = None
        if data:
            try:
                body = meta.document(data, request.content_type, request.charset)
            except meta.NotModerable as bad:
                raise BadRequest("hegui.invalid_request", f"the request body cannot be "
                                 f"moderated: {bad}") from None
        if moderation.input.enabled:
            texts = [s.text for s in slots] + (body.texts if body is not None else [])
            decisions = await self._moderate_all(texts, Direction.INPUT)
            if decisions is None:
                headers["x-hegui-moderation"] = "unavailable"
                await self.record("unmoderated", user=user, direction="input", route=route,
                                  article="Art.14",
                                  reason="moderator unavailable, fail mode Open")
            else:
                blocked = [h for d in decisions for h in d.blocking]
                if blocked:  # Art.14: the model never sees it
                    categories, reference = await self._record_block(blocked, "input", route,
                                                                     user)
                    await self.strike(user, reference)
                    return error_response(
                        400, "hegui.input_blocked", "the request was refused by content "
                        "moderation", article=blocked[0].article, direction="input",
                        categories=categories, reference=reference)
                await self._apply_masks(slots, decisions[:len(slots)], "input", route, user,
                                        headers)
                if body is not None:
                    data = await self._masked_document(body, decisions[len(slots):], "input",
                                                       route, user, headers)
        match = dataclasses.replace(match, params=dict((k, v) for k, v in params), query=(
            urlencode([(k, v) for k, v in pairs], quote_via=quote) if match.query else ""))
        upstream = await self._open_upstream(route, request, data or None, match, sent_headers)
        try:
            raw = await self._read_bounded(upstream, meta.MAX_METADATA_BYTES,
                                           "metadata answer")
            mime, charset = upstream.content_type, upstream.charset
            answer_headers = [[k, v] for k, v in upstream.headers.items()
                              if k.lower() not in _HOP_BY_HOP]
        finally:
            upstream.release()
        status = upstream.status
        if not moderation.output.enabled:
            return _answer(raw, status, answer_headers, headers)
        # Output: the answer's headers and its texts. Not labeled: Art.12 labels generated
        # content, and a model list, a health answer or a metrics page is not.
        slots = [Slot(pair, 1, "header") for pair in answer_headers if pair[1]]
        doc = None
        if raw:
            try:
                doc = meta.document(raw, mime, charset,
                                        exposition=match.route.upstream == "/metrics")
            except meta.NotModerable as bad:
                raise BadRequest("hegui.upstream_malformed", f"the model server's answer on "
                                 f"{match.route.pattern} cannot be moderated ({bad}); not "
                                 "relayed", 502) from None
        texts = [s.text for s in slots] + (doc.texts if doc is not None else [])
        strings = len(texts)
        spelled: list[tuple[str, list[tuple[str, int]]]] = []
        if doc is not None and doc.kind == "json":  # what its strings spell together
            spelled = json_scan.spelled_runs(doc.value)
            texts += [text for text, _ in spelled]
        decisions = await self._moderate_all(texts, Direction.OUTPUT)
        if decisions is None:
            headers["x-hegui-moderation"] = "unavailable"
            await self.record("unmoderated", user=user, direction="output", route=route,
                              article="Art.14", reason="moderator unavailable, fail mode Open")
            return _answer(raw, status, answer_headers, headers)
        blocked = [h for d in decisions for h in d.blocking]
        if blocked:
            categories, reference = await self._record_block(blocked, "output", route, user)
            return error_response(
                status if status >= 400 else 451, "hegui.output_blocked",
                f"the model server's answer on {match.route.pattern} was withheld by content "
                "moderation", article=blocked[0].article, direction="output",
                categories=categories, reference=reference)
        await self._apply_masks(slots, decisions[:len(slots)], "output", route, user, headers)
        if doc is not None:
            raw = await self._masked_document(doc, decisions[len(slots):strings], "output",
                                              route, user, headers, spelled=spelled,
                                              spelled_decisions=decisions[strings:])
        return _answer(raw, status, answer_headers, headers)

    async def metrics_handler(self, request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(self.metrics.registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})


SIDECAR: web.AppKey[Sidecar] = web.AppKey("hegui.sidecar", Sidecar)


def make_app(sidecar: Sidecar) -> web.Application:
    app = web.Application(client_max_size=sidecar.config.max_body_bytes,
                          middlewares=[sidecar.metrics_ports],
                          handler_args={"max_field_size": sidecar.config.max_header_bytes,
                                        "max_headers": sidecar.config.max_headers})
    app[SIDECAR] = sidecar
    app.router.add_get("/metrics", sidecar.metrics_handler)
    app.router.add_get("/hegui/healthz", sidecar.healthz)
    add_complaint_routes(app, sidecar)  # the sidecar's own, before the route table (Art.15)
    # Everything else goes through the route table, matched on the raw path (Art.14): an
    # aiohttp route would match the decoded path, so /v1/chat%2Fcompletions would pass it.
    app.router.add_route("*", "/{tail:.*}", sidecar.dispatch)

    async def close(app: web.Application) -> None:
        await app[SIDECAR].close()

    async def start(app: web.Application) -> None:
        app[SIDECAR].start_watching()

    app.on_startup.append(start)
    app.on_cleanup.append(close)
    return app


#: The client preface of HTTP/2 with prior knowledge (h2c, RFC 9113 3.4).
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_FIX = (b"hegui sidecar: HTTP/1.1 required. The sidecar moderates HTTP/1.1 only; send "
          b"HTTP/1.1 (drop --http2-prior-knowledge, http2=True or h2c) (Art.14)")


def h2_refusal() -> bytes:
    """What an HTTP/2 client gets: the server's SETTINGS, then GOAWAY with HTTP_1_1_REQUIRED
    (0xd) and the fix as debug data, which h2 clients report (RFC 9113 6.8, 7)."""
    settings = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    payload = (0).to_bytes(4, "big") + (0xD).to_bytes(4, "big") + H2_FIX
    goaway = len(payload).to_bytes(3, "big") + b"\x07\x00" + (0).to_bytes(4, "big") + payload
    return settings + goaway


#: The longest request line the first look waits for (aiohttp's own limit, 8190, refuses more).
MAX_REQUEST_LINE = 8192
_HTTP1_LINE = re.compile(rb"[^ ]+ [^ ]+ HTTP/1\.[01]")
_HTTP09_LINE = re.compile(rb"[A-Z]+ /[^ ]*")
_VERSION_FIX = (b"hegui sidecar: HTTP/1.1 required; a request line ends with its version "
                b"(GET /v1/models HTTP/1.1) (Art.14)\n")
HTTP_VERSION_REFUSAL = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
                        b"Connection: close\r\nContent-Length: "
                        + str(len(_VERSION_FIX)).encode() + b"\r\n\r\n" + _VERSION_FIX)


class _Http1Only(asyncio.Protocol):
    """aiohttp's protocol behind a look at a connection's first bytes: an HTTP/2 preface gets
    `h2_refusal` and the connection closes (aiohttp answered with a bare HTTP/1.0 400 an h2
    client cannot read); a first request line that is not HTTP/1.x gets a 400 and the
    connection closes; anything else goes to aiohttp as it came. (Later requests of a
    keep-alive connection are checked by `dispatch`, from their parsed version.)"""

    def __init__(self, inner: asyncio.Protocol) -> None:
        self.inner = inner
        self.head: bytes | None = b""  # None once the connection is known to be HTTP/1
        self.transport: asyncio.Transport | None = None
        # The start of the next request of a keep-alive connection, after `between_requests`
        # (None: not looked at).
        self.next: bytes | None = None

    def between_requests(self) -> None:
        """A request was read whole: the next bytes start a request line. One with no version
        (`GET /v1/models` and nothing more) made aiohttp wait for header lines until the client
        gave up, as on a connection's first line."""
        if self.head is None:
            self.next = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.next is not None:
            pending = self.next + data
            line, found, _ = pending.lstrip(b"\r\n").partition(b"\n")
            if not found and len(pending) < MAX_REQUEST_LINE:
                self.next = pending  # the line so far: wait for its end
                return
            self.next, data = None, pending
            # Only a line that is one (a method and a target, no version): bytes a pipelining
            # client sent before the last answer was done may be part of a request already.
            if found and _HTTP09_LINE.fullmatch(line.rstrip(b"\r")):
                assert self.transport is not None
                self.transport.write(HTTP_VERSION_REFUSAL)
                self.transport.close()
                return
        if self.head is not None:
            head = self.head + data
            assert self.transport is not None
            if H2_PREFACE.startswith(head[:len(H2_PREFACE)]):
                if len(head) < len(H2_PREFACE):
                    self.head = head  # a prefix of the preface so far: wait for the rest
                    return
                self.head = None
                self.transport.write(h2_refusal())
                self.transport.close()
                return
            # The request line: one with no HTTP/1.x version (HTTP/0.9's `GET /path`) made
            # aiohttp read header lines until the client gave up; refused at once instead.
            line, found, _ = head.lstrip(b"\r\n").partition(b"\n")
            if not found and len(head) < MAX_REQUEST_LINE:
                self.head = head  # the line so far: wait for its end
                return
            if found and not _HTTP1_LINE.fullmatch(line.rstrip(b"\r")):
                self.head = None
                self.transport.write(HTTP_VERSION_REFUSAL)
                self.transport.close()
                return
            self.head, data = None, head
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class Http1Site(web.TCPSite):
    """A TCP site whose connections refuse HTTP/2 clearly (`_Http1Only`)."""

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Http1Only(server()), self._host, self._port,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port)


#: Addresses that mean "every address of the pod".
_EVERY_ADDRESS = frozenset({"0.0.0.0", "::", ""})  # noqa: S104


async def serve(sidecar: Sidecar, host: str, port: int) -> web.AppRunner:
    """The sidecar on host:port (port 0: a free one, in `runner.addresses`). Every address
    means both families: bound to 0.0.0.0 alone, the sidecar would leave [::]:port to the
    model container, which could take the pod's IPv6 traffic (the capture's redirect included)
    around it (Art.14). Where the pod has no IPv6, IPv4 alone; a port someone else holds stops
    the sidecar from starting (fail closed)."""
    runner = web.AppRunner(make_app(sidecar), access_log=None)
    await runner.setup()
    if host not in _EVERY_ADDRESS:
        await Http1Site(runner, host, port).start()
        return runner
    await Http1Site(runner, "0.0.0.0", port).start()  # noqa: S104
    port = port or runner.addresses[0][1]
    try:
        await Http1Site(runner, "::", port).start()
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            await runner.cleanup()
            raise
        log.info("no IPv6 in this pod (%s): serving on IPv4 only", error.strerror)
    return runner


__all__ = ["H2_PREFACE", "SIDECAR", "Http1Site", "Sidecar", "error_response", "h2_refusal",
           "make_app", "serve"]
