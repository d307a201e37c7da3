"""The moderation proxy: aiohttp in front of an OpenAI-compatible model server (Art.4, Art.14).

Routes: `POST /v1/chat/completions`, `POST /v1/completions` (input and output moderated, streamed
or not), `POST /v1/images/generations` (the prompt moderated), `/metrics` (Prometheus) and
`/hegui/healthz`; any other path is passed through unchanged.

- Input (Art.4, Art.14): a blocked input never reaches the model; the answer is a JSON error with
  a stable code (`hegui.input_blocked`), the category, the article and a reference id. Masked
  categories (e.g. personal information, Art.4(4)) are masked before the model sees them.
- Output: a blocked answer is withheld (`hegui.output_blocked`, HTTP 451); masked spans are masked.
- Streams (SSE): chunks are held and scored in windows of `stream_window_tokens` chunks, each
  with the tail of what was already sent so keywords across a window edge are seen; a window is
  sent as one chunk once it passes. A violation stops generation and transmission at once
  (Art.14): the upstream stream is closed and the client gets a final chunk with
  `finish_reason: content_filter` and the `hegui` error, then `[DONE]`. A trailing run that may be
  the start of a phone, ID, card number or e-mail is held to the next window so it is masked
  whole.
- Moderator unreachable: fail mode Closed answers 503 `hegui.moderation_unavailable`; Open
  serves and flags (`x-hegui-moderation: unavailable` and a metric).
- Bounds: body size (413), header size and count (aiohttp), model silence (504 or a final
  stream event), response size (502), malformed JSON or SSE from the model (502 or a final event).
- Suspension (Art.21): while the operator's notice (`hegui.sidecar.suspension`) says suspended,
  every request that would reach the model gets 503 `hegui.service_suspended` with the reason;
  `/metrics` and `/hegui/healthz` stay up. The SLI metrics the operator's SLO engine reads
  (Art.13) are described in `hegui.sidecar.metrics`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import contextvars
import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hegui.api.generativeservice import Direction
from hegui.labeling.image import header_flags, label_images_response
from hegui.labeling.metadata import HEADER as AIGC_HEADER
from hegui.labeling.metadata import AigcLabel, new_label
from hegui.labeling.text import StreamLabeler, TextLabel, label_response
from hegui.moderation.client import Moderator, ModeratorUnavailable
from hegui.moderation.decision import Decision, Hit, Outcome, decide
from hegui.moderation.pii import mask
from hegui.moderation.records import RecordLog, pseudonym
from hegui.moderation.strikes import Level, StrikeBook
from hegui.sidecar.complaints import add_routes as add_complaint_routes
from hegui.sidecar.config import SidecarConfig
from hegui.sidecar.metrics import SidecarMetrics
from hegui.sidecar.suspension import SuspensionNotice, SuspensionWatch

log = logging.getLogger("hegui.sidecar")

_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "trailers", "transfer-encoding", "upgrade", "host", "content-length", "content-encoding",
    "accept-encoding"})
# A trailing run that may be personal information cut by the window edge.
_HOLD = re.compile(r"(?:[0-9+]+[ -])*[0-9A-Za-z._%+@-]+$")
_MAX_HOLD = 64

Slot = tuple[dict[str, Any], str]  # container[key] is a text to moderate (and maybe mask)


@dataclass
class _SliFacts:
    """What the SLIs (Art.13) need to know of one request beyond its status code."""

    first_token: float | None = None  # when the first token of a stream reached the client
    cut: bool = False  # a model or moderator failure cut a response whose headers were sent


# Set by the generation handler for the request it serves (requests on one connection are served
# one after the other, in one task: the handler resets it when done).
_SLI: contextvars.ContextVar[_SliFacts | None] = contextvars.ContextVar("hegui_sli",
                                                                        default=None)


def _mark_cut() -> None:
    if (facts := _SLI.get()) is not None:
        facts.cut = True


class ModerationDown(Exception):
    """The moderator is unreachable and the fail mode is Closed."""


class BadRequest(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)  # Chinese text stays readable and short


def _reference() -> str:
    return uuid.uuid4().hex


def error_body(code: str, message: str, *, article: str, reference: str,
               direction: str | None = None, categories: list[str] | None = None,
               ) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "hegui_moderation" if categories else "hegui_error",
                            "code": code, "message": message, "article": article,
                            "reference": reference}
    if direction:
        body["direction"] = direction
    if categories:
        body["category"] = categories[0]
        body["categories"] = categories
    return body


def error_response(status: int, code: str, message: str, *, article: str = "Art.14",
                   direction: str | None = None, categories: list[str] | None = None,
                   headers: dict[str, str] | None = None,
                   reference: str | None = None) -> web.Response:
    reference = reference or _reference()
    body = error_body(code, message, article=article, reference=reference, direction=direction,
                      categories=categories)
    return web.json_response({"error": body}, status=status, dumps=_dumps,
                             headers={"x-hegui-reference": reference, **(headers or {})})


def _text_slots(value: Any, container: dict[str, Any], key: str) -> list[Slot]:
    """The text slots of a message `content`: a string, or a list of parts of type text."""
    if isinstance(value, str):
        return [(container, key)]
    if isinstance(value, list):
        return [(part, "text") for part in value
                if isinstance(part, dict) and isinstance(part.get("text"), str)]
    return []


def input_slots(route: str, body: dict[str, Any]) -> list[Slot]:
    if route == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list):
            raise BadRequest("hegui.invalid_request", "messages must be a list")
        return [slot for m in messages if isinstance(m, dict)
                for slot in _text_slots(m.get("content"), m, "content")]
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        holder = {str(i): p for i, p in enumerate(prompt) if isinstance(p, str)}
        body["prompt"] = holder  # masked in place, turned back into a list by the caller
        return [(holder, k) for k in holder]
    if isinstance(prompt, str):
        return [(body, "prompt")]
    raise BadRequest("hegui.invalid_request", "prompt must be a string or a list of strings")


def output_slots(route: str, body: Any) -> list[Slot]:
    if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
        raise BadRequest("hegui.upstream_malformed", "the model's answer has no choices", 502)
    slots: list[Slot] = []
    for choice in body["choices"]:
        if not isinstance(choice, dict):
            continue
        if route == "chat" and isinstance(choice.get("message"), dict):
            message = choice["message"]
            slots.extend(_text_slots(message.get("content"), message, "content"))
        elif route == "completions" and isinstance(choice.get("text"), str):
            slots.append((choice, "text"))
    return slots


def _stream_text(route: str, chunk: Any) -> tuple[str, dict[str, Any] | None]:
    """The text of one streamed chunk and the dict that holds it (choice 0 only)."""
    if not isinstance(chunk, dict) or not isinstance(chunk.get("choices"), list):
        raise ValueError("a chunk without choices")
    if not chunk["choices"]:
        return "", None
    choice = chunk["choices"][0]
    if not isinstance(choice, dict):
        raise ValueError("a choice that is not an object")
    if route == "chat":
        delta = choice.get("delta")
        if isinstance(delta, dict) and isinstance(delta.get("content"), str):
            return delta["content"], delta
        return "", None
    text = choice.get("text")
    return (text, choice) if isinstance(text, str) else ("", None)


@dataclass
class _Window:
    """Chunks held back until their text is moderated."""

    chunks: list[dict[str, Any]] = field(default_factory=list)
    text: str = ""
    tokens: int = 0
    sent: str = ""  # the tail of what was sent, re-scored with the next window
    finish_reason: Any = None
    user: str | None = None
    first_token: float | None = None  # when the first text went out (latency SLI, Art.13)


class LabeledStream(web.StreamResponse):
    """A streamed response whose bytes pass through a StreamLabeler on their way out (Art.12):
    the explicit label goes into the first and last content chunks, the implicit one rides
    along as `AIGC`."""

    def __init__(self, labeler: StreamLabeler, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.labeler = labeler

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        if labeled := self.labeler.feed(bytes(data)):
            await super().write(labeled)

    async def write_eof(self, data: bytes = b"") -> None:
        if tail := self.labeler.feed(data) + self.labeler.close():
            await super().write(tail)
        await super().write_eof()


class Sidecar:
    def __init__(self, config: SidecarConfig, moderator: Moderator,
                 metrics: SidecarMetrics | None = None, *, records: RecordLog | None = None,
                 strikes: StrikeBook | None = None) -> None:
        self.config = config
        self.moderator = moderator
        self.metrics = metrics or SidecarMetrics(service=config.service,
                                                 latency_threshold=config.latency_threshold)
        self.records = records
        self.strikes = strikes
        self._session: aiohttp.ClientSession | None = None
        self.suspension: SuspensionWatch | None = None
        self._watching: asyncio.Task[None] | None = None
        self._errors_counted = 0
        if config.suspension_file is not None:
            # Read before the first request: a pod that starts while suspended never serves.
            self.suspension = SuspensionWatch(config.suspension_file,
                                              config.suspension_poll_seconds)
            self.suspension.check()
            self._suspension_checked()

    # --- suspension (Art.21) ---------------------------------------------------------------------

    def _suspension_checked(self) -> None:
        assert self.suspension is not None
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
        user = request.headers.get(self.config.user_header)
        if user:
            return user[:256]
        claim = self.config.user_jwt_claim
        auth = request.headers.get("Authorization", "")
        if claim and auth.startswith("Bearer ") and auth.count(".") == 2:
            try:
                payload = auth.split(".")[1]
                data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            except (ValueError, binascii.Error):
                return None
            value = data.get(claim) if isinstance(data, dict) else None
            return str(value)[:256] if value is not None else None
        return None

    def _strike_key(self, user: str) -> str:
        if self.config.pseudonymisation_key:
            return pseudonym(self.config.pseudonymisation_key, user)
        return hashlib.sha256(user.encode()).hexdigest()[:32]

    async def record(self, kind: str, *, user: str | None, **fields: Any) -> None:
        """Write one record, durable before the response goes out (Art.11)."""
        if self.records is not None:
            try:
                written = await asyncio.to_thread(self.records.append, kind, user=user,
                                                  service=self.config.service, **fields)
            except OSError as failure:
                # Nothing is served that cannot be recorded.
                log.error("cannot write a record: %s", failure)
                raise BadRequest("hegui.records_unavailable",
                                 "the incident record could not be written (Art.11)",
                                 503) from failure
            self.metrics.records_head.set(written["seq"])

    async def strike(self, user: str | None, reference: str) -> Level | None:
        if self.strikes is None or not user:
            return None
        level = await asyncio.to_thread(self.strikes.strike, self._strike_key(user))
        self.metrics.strikes.labels(level.value).inc()
        await self.record("strike", user=user, level=level.value, reference=reference,
                          article="Art.14")
        if level == Level.SUSPEND:
            await self.record("suspension", user=user, reference=reference, article="Art.14")
        return level

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=None,
                                            sock_connect=self.config.upstream_connect_timeout,
                                            sock_read=self.config.upstream_read_timeout)
            self._session = aiohttp.ClientSession(
                timeout=timeout, auto_decompress=True,
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

    def generation(self, route: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            started = time.perf_counter()
            status = 500
            counted = True  # in the SLIs: everything but refusals while suspended
            facts = _SliFacts()
            token = _SLI.set(facts)
            try:
                if notice := self.suspended:
                    status, counted = 503, False
                    return self.suspended_response(notice)
                response = await self._generation(route, request)
                status = response.status
                return response
            except ModerationDown as down:
                status = 503
                return error_response(
                    503, "hegui.moderation_unavailable",
                    f"content moderation is unavailable ({down}); the fail mode is Closed, so "
                    "nothing unmoderated is served", headers={"Retry-After": "5"})
            except BadRequest as bad:
                status = bad.status
                return error_response(bad.status, bad.code, bad.message)
            finally:
                ended = time.perf_counter()
                _SLI.reset(token)
                self.metrics.requests.labels(route, str(status)).inc()
                self.metrics.latency.labels(route).observe(ended - started)
                if counted:
                    self.metrics.observe_sli(route, status,
                                             (facts.first_token or ended) - started,
                                             cut=facts.cut)
        return handler

    async def _read_json(self, request: web.Request) -> dict[str, Any]:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise BadRequest("hegui.body_too_large",
                             f"the request body exceeds {self.config.max_body_bytes} bytes",
                             413) from None
        try:
            body = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise BadRequest("hegui.invalid_utf8", "the request body is not UTF-8") from None
        except json.JSONDecodeError as bad:
            raise BadRequest("hegui.invalid_json", f"the request body is not JSON: {bad}") from None
        if not isinstance(body, dict):
            raise BadRequest("hegui.invalid_request", "the request body must be a JSON object")
        return body

    async def _generation(self, route: str, request: web.Request) -> web.StreamResponse:
        user = self.user_of(request)
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
        if moderation.input.enabled:
            slots = input_slots(route, body)
            decisions = await self.moderate([c[k] for c, k in slots], Direction.INPUT)
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
        if isinstance(body.get("prompt"), dict):
            body["prompt"] = list(body["prompt"].values())
        if unmoderated:
            headers["x-hegui-moderation"] = "unavailable"
            await self.record("unmoderated", user=user, direction="input", route=route,
                              article="Art.14", reason="moderator unavailable, fail mode Open")
        stream = body.get("stream") is True
        if stream and route != "images" and body.get("n", 1) not in (1, None):
            raise BadRequest("hegui.unsupported", "streamed responses with n > 1 are not served: "
                             "they cannot be moderated (Art.14)")
        upstream = await self._open_upstream(route, request, json.dumps(body).encode())
        try:
            if route == "images" or not moderation.output.enabled:
                if route == "images":
                    # Image outputs need an image classifier (the neural slot), not yet served.
                    headers["x-hegui-output"] = "unmoderated"
                    if self.config.labeling is not None and upstream.status < 400:
                        return await self._labeled_images(upstream, headers, user)
                return await self._relay(request, upstream, headers)
            if upstream.status >= 400:
                return await self._relay(request, upstream, headers)
            if stream and upstream.content_type == "text/event-stream":
                return await self._stream(route, request, upstream, headers, user)
            return await self._moderated_answer(route, upstream, headers, user)
        finally:
            upstream.release()

    async def _open_upstream(self, route: str, request: web.Request,
                             data: bytes | None) -> aiohttp.ClientResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers["Accept-Encoding"] = "identity"
        started = time.perf_counter()
        try:
            return await self.session.request(
                request.method, self.config.upstream + request.rel_url.raw_path_qs,
                data=data, headers=headers, allow_redirects=False)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise BadRequest("hegui.upstream_timeout", "the model server did not answer in time",
                             504) from None
        except aiohttp.ClientError as failure:
            raise BadRequest("hegui.upstream_unavailable",
                             f"the model server is unreachable: {failure}", 502) from None
        finally:
            self.metrics.model_latency.labels(route).observe(time.perf_counter() - started)

    async def _read_bounded(self, upstream: aiohttp.ClientResponse) -> bytes:
        limit = self.config.max_response_bytes
        data = bytearray()
        try:
            async for chunk in upstream.content.iter_chunked(1 << 16):
                data += chunk
                if len(data) > limit:
                    raise BadRequest("hegui.upstream_too_large",
                                     f"the model's answer exceeds {limit} bytes", 502)
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
                await response.write(chunk)
        except (TimeoutError, aiohttp.ClientError):
            log.warning("the model server failed while relaying %s", request.path)
            _mark_cut()
            return response  # headers are sent: the client sees a cut response
        await response.write_eof()
        return response

    async def _moderated_answer(self, route: str, upstream: aiohttp.ClientResponse,
                                headers: dict[str, str], user: str | None) -> web.Response:
        raw = await self._read_bounded(upstream)
        try:
            answer = json.loads(raw)
        except ValueError:  # JSON and UTF-8 errors alike
            raise BadRequest("hegui.upstream_malformed", "the model's answer is not JSON",
                             502) from None
        slots = output_slots(route, answer)
        decisions = await self.moderate([c[k] for c, k in slots], Direction.OUTPUT)
        if decisions is None:
            headers["x-hegui-moderation"] = "unavailable"
            await self.record("unmoderated", user=user, direction="output", route=route,
                              article="Art.14", reason="moderator unavailable, fail mode Open")
        else:
            blocked = [h for d in decisions for h in d.blocking]
            if blocked:
                categories, reference = await self._record_block(blocked, "output", route, user)
                return error_response(
                    451, "hegui.output_blocked", "the model's answer was withheld by content "
                    "moderation", article=blocked[0].article, direction="output",
                    categories=categories, reference=reference)
            await self._apply_masks(slots, decisions, "output", route, user, headers)
        if isinstance(answer, dict) and (aigc := await self._new_label(user, route)):
            assert self.config.labeling is not None
            answer = label_response(answer, TextLabel.from_posture(self.config.labeling.explicit),
                                    aigc)
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
        for (container, key), decision in zip(slots, decisions, strict=True):
            if decision.mask_spans:
                container[key] = mask(container[key],
                                      [(s.start, s.end) for s in decision.mask_spans])
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

    async def _labeled_images(self, upstream: aiohttp.ClientResponse, headers: dict[str, str],
                              user: str | None) -> web.Response:
        labeling = self.config.labeling
        assert labeling is not None
        raw = await self._read_bounded(upstream)
        try:
            body = json.loads(raw)
        except ValueError:
            raise BadRequest("hegui.upstream_malformed", "the model's answer is not JSON",
                             502) from None
        if not isinstance(body, dict):
            raise BadRequest("hegui.upstream_malformed", "the model's answer is not an object",
                             502)
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
        return web.json_response(labeled, status=upstream.status, headers=headers,
                                 dumps=_dumps)

    # --- streams -------------------------------------------------------------------------------

    async def _events(self, upstream: aiohttp.ClientResponse) -> AsyncGenerator[str]:
        """The `data` of each server-sent event, as text."""
        data: list[str] = []
        while True:
            line_bytes = await upstream.content.readline()
            if not line_bytes:
                if data:
                    yield "\n".join(data)
                return
            line = line_bytes.decode("utf-8").rstrip("\r\n")
            if not line:
                if data:
                    yield "\n".join(data)
                    data = []
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
            # comments (":") and other fields (event, id, retry) carry no text

    async def _stream(self, route: str, request: web.Request, upstream: aiohttp.ClientResponse,
                      headers: dict[str, str], user: str | None) -> web.StreamResponse:
        stream_headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                          **headers}
        response: web.StreamResponse
        if aigc := await self._new_label(user, route):
            assert self.config.labeling is not None
            stream_headers[AIGC_HEADER] = aigc.header_value()
            labeler = StreamLabeler(TextLabel.from_posture(self.config.labeling.explicit), aigc)
            response = LabeledStream(labeler, status=200, headers=stream_headers)
        else:
            response = web.StreamResponse(status=200, headers=stream_headers)
        await response.prepare(request)
        window = _Window(user=user)
        size = self.config.moderation.output.stream_window_tokens
        hold = self.config.stream_max_hold_seconds
        loop = asyncio.get_running_loop()
        events = self._events(upstream)
        pending: asyncio.Future[str] | None = None
        due: float | None = None  # when the held window goes out even if not full
        last: dict[str, Any] = {}
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(anext(events))
                timeout = None if due is None else max(0.0, due - loop.time())
                done, _ = await asyncio.wait({pending}, timeout=timeout)
                if not done:
                    # A slow model: what is held is moderated and sent now, so users do not
                    # wait for a full window (the read goes on meanwhile).
                    if not await self._flush(route, response, window, final=False):
                        return response
                    due = loop.time() + hold if window.text else None
                    continue
                future, pending = pending, None
                try:
                    data = future.result()
                except StopAsyncIteration:
                    break
                if data.strip() == "[DONE]":
                    break
                chunk = json.loads(data)
                text, _ = _stream_text(route, chunk)
                last = chunk
                if chunk.get("choices") and isinstance(chunk["choices"][0], dict):
                    window.finish_reason = (chunk["choices"][0].get("finish_reason")
                                            or window.finish_reason)
                window.chunks.append(chunk)
                if text:
                    window.text += text
                    window.tokens += 1
                    due = due or loop.time() + hold
                if window.tokens >= size:
                    if not await self._flush(route, response, window, final=False):
                        return response
                    due = loop.time() + hold if window.text else None
            if await self._flush(route, response, window, final=True):
                await response.write(b"data: [DONE]\n\n")
        except ModerationDown as down:
            _mark_cut()
            await self._cut(response, last, "hegui.moderation_unavailable",
                            f"content moderation became unavailable ({down})", "Art.14",
                            reason="moderator", user=user)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            _mark_cut()
            await self._cut(response, last, "hegui.upstream_timeout",
                            "the model server stopped answering", "Art.14", reason="timeout",
                            user=user)
        except (ValueError, aiohttp.ClientPayloadError):  # JSON, UTF-8 and line-length errors
            _mark_cut()
            await self._cut(response, last, "hegui.upstream_malformed",
                            "the model server sent a malformed stream", "Art.14",
                            reason="malformed", user=user)
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            log.info("client went away during a stream")  # upstream is closed by the caller
            return response
        except aiohttp.ClientError:
            _mark_cut()
            await self._cut(response, last, "hegui.upstream_unavailable",
                            "the model server failed", "Art.14", reason="upstream", user=user)
        finally:
            if pending is not None:  # the read in flight must end before the reader is closed
                pending.cancel()
                await asyncio.wait({pending})
            await events.aclose()
            if window.first_token is not None and (facts := _SLI.get()) is not None:
                facts.first_token = window.first_token
        await response.write_eof()
        return response

    async def _flush(self, route: str, response: web.StreamResponse, window: _Window, *,
                     final: bool) -> bool:
        """Moderate and send the held window; False when the stream was cut (Art.14)."""
        text = window.text
        held = ""
        if not final:
            match = _HOLD.search(text)
            if match and len(text) - match.start() <= _MAX_HOLD:
                text, held = text[:match.start()], text[match.start():]
        context = window.sent[-self.config.stream_overlap_chars:]
        if text:
            decisions = await self.moderate([context + text], Direction.OUTPUT)
            if decisions:
                decision = decisions[0]
                if decision.outcome == Outcome.BLOCK:
                    categories = sorted({h.category for h in decision.blocking})
                    await self._cut(response, window.chunks[-1] if window.chunks else {},
                                    "hegui.output_blocked", "generation was stopped by content "
                                    "moderation", decision.article, reason="violation",
                                    user=window.user, categories=categories)
                    return False
                spans = [(s.start - len(context), s.end - len(context))
                         for s in decision.mask_spans if s.end > len(context)]
                if spans:
                    text = mask(text, spans)
                    await self.record("mask", user=window.user,
                                      direction="output", route=route,
                                      kinds=sorted({s.label for s in decision.mask_spans}),
                                      article=decision.article)
        if text or (final and window.chunks):
            template = window.chunks[0] if window.chunks else {}
            out = _rechunk(route, template, text,
                           window.finish_reason if final else None)
            await response.write(b"data: " + json.dumps(out, ensure_ascii=False).encode()
                                 + b"\n\n")
            if text and window.first_token is None:
                window.first_token = time.perf_counter()
        window.sent = (window.sent + text)[-self.config.stream_overlap_chars:]
        window.text, window.tokens = held, (1 if held else 0)
        window.chunks = window.chunks[-1:] if held else []
        window.finish_reason = None
        return True

    async def _cut(self, response: web.StreamResponse, template: dict[str, Any], code: str,
                   message: str, article: str, *, reason: str, user: str | None,
                   categories: list[str] | None = None) -> None:
        """Stop the stream with a final event that says why (Art.14)."""
        self.metrics.stream_cuts.labels(reason).inc()
        reference = _reference()
        log.info("stream cut: %s %s (%s) ref %s", code, categories or "", article, reference)
        await self.record("block" if categories else "stream_cut",
                          user=user, direction="output", route="stream",
                          categories=categories or [], article=article, reference=reference,
                          code=code)
        final = {k: template[k] for k in ("id", "object", "created", "model") if k in template}
        final["choices"] = [{"index": 0, "delta": {}, "text": "",
                             "finish_reason": "content_filter"}]
        final["error"] = error_body(code, message, article=article, reference=reference,
                                    direction="output", categories=categories)
        # The client may be gone already; the upstream is closed by the caller either way.
        with contextlib.suppress(ConnectionResetError, aiohttp.ClientConnectionResetError):
            await response.write(b"data: " + json.dumps(final, ensure_ascii=False).encode()
                                 + b"\n\ndata: [DONE]\n\n")

    async def passthrough(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
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
            upstream = await self._open_upstream("other", request, data)
            try:
                response = await self._relay(request, upstream, {})
            finally:
                upstream.release()
            status = response.status
            return response
        except BadRequest as bad:
            status = bad.status
            return error_response(bad.status, bad.code, bad.message)
        finally:
            self.metrics.requests.labels("other", str(status)).inc()
            self.metrics.latency.labels("other").observe(time.perf_counter() - started)

    async def metrics_handler(self, request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(self.metrics.registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})


def _rechunk(route: str, template: dict[str, Any], text: str, finish: Any) -> dict[str, Any]:
    """One chunk carrying a whole moderated window, shaped like the model's own chunks."""
    out = {k: v for k, v in template.items() if k != "choices"}
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
    if route == "chat":
        choice["delta"] = {"content": text} if text else {}
    else:
        choice["text"] = text
    out["choices"] = [choice]
    return out


SIDECAR: web.AppKey[Sidecar] = web.AppKey("hegui.sidecar", Sidecar)


def make_app(sidecar: Sidecar) -> web.Application:
    app = web.Application(client_max_size=sidecar.config.max_body_bytes,
                          handler_args={"max_field_size": sidecar.config.max_header_bytes,
                                        "max_headers": sidecar.config.max_headers})
    app[SIDECAR] = sidecar
    app.router.add_get("/metrics", sidecar.metrics_handler)
    app.router.add_get("/hegui/healthz", sidecar.healthz)
    app.router.add_post("/v1/chat/completions", sidecar.generation("chat"))
    app.router.add_post("/v1/completions", sidecar.generation("completions"))
    app.router.add_post("/v1/images/generations", sidecar.generation("images"))
    add_complaint_routes(app, sidecar)  # before the catch-all passthrough (Art.15)
    app.router.add_route("*", "/{tail:.*}", sidecar.passthrough)

    async def close(app: web.Application) -> None:
        await app[SIDECAR].close()

    async def start(app: web.Application) -> None:
        app[SIDECAR].start_watching()

    app.on_startup.append(start)
    app.on_cleanup.append(close)
    return app


async def serve(sidecar: Sidecar, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(make_app(sidecar), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


__all__ = ["SIDECAR", "Sidecar", "error_response", "make_app", "serve"]
