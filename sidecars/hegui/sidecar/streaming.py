"""Streamed answers (SSE): moderated on their way from the model to the client (Art.14), labeled
(Art.12).

Chunks are held and scored in windows of `stream_window_tokens` chunks, each with the tail of what
was already sent so keywords across a window edge are seen; a window is sent as one chunk once it
passes. A violation stops generation and transmission at once (Art.14): the upstream stream is
closed and the client gets a final chunk with `finish_reason: content_filter` and the `hegui`
error, then `[DONE]`. A trailing run that may be the start of a phone, ID, card number or e-mail
is held to the next window so it is masked whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from hegui.api.generativeservice import Direction
from hegui.labeling.metadata import HEADER as AIGC_HEADER
from hegui.labeling.text import StreamLabeler, TextLabel
from hegui.moderation.decision import Outcome
from hegui.moderation.pii import mask
from hegui.sidecar.common import SLI, ModerationDown, error_body, mark_cut, reference_id

if TYPE_CHECKING:
    from hegui.sidecar.app import Sidecar

log = logging.getLogger("hegui.sidecar")

# A trailing run that may be personal information cut by the window edge.
_HOLD = re.compile(r"(?:[0-9+]+[ -])*[0-9A-Za-z._%+@-]+$")
_MAX_HOLD = 64


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


async def sse_events(upstream: aiohttp.ClientResponse) -> AsyncGenerator[str]:
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

async def stream(sidecar: Sidecar, route: str, request: web.Request,
                 upstream: aiohttp.ClientResponse, headers: dict[str, str],
                 user: str | None) -> web.StreamResponse:
    stream_headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                      **headers}
    response: web.StreamResponse
    if aigc := await sidecar._new_label(user, route):
        assert sidecar.config.labeling is not None
        stream_headers[AIGC_HEADER] = aigc.header_value()
        labeler = StreamLabeler(TextLabel.from_posture(sidecar.config.labeling.explicit), aigc)
        response = LabeledStream(labeler, status=200, headers=stream_headers)
    else:
        response = web.StreamResponse(status=200, headers=stream_headers)
    await response.prepare(request)
    window = _Window(user=user)
    size = sidecar.config.moderation.output.stream_window_tokens
    hold = sidecar.config.stream_max_hold_seconds
    loop = asyncio.get_running_loop()
    events = sse_events(upstream)
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
                if not await _flush(sidecar, route, response, window, final=False):
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
                if not await _flush(sidecar, route, response, window, final=False):
                    return response
                due = loop.time() + hold if window.text else None
        if await _flush(sidecar, route, response, window, final=True):
            await response.write(b"data: [DONE]\n\n")
    except ModerationDown as down:
        mark_cut()
        await _cut(sidecar, response, last, "hegui.moderation_unavailable",
                        f"content moderation became unavailable ({down})", "Art.14",
                        reason="moderator", user=user)
    except (TimeoutError, aiohttp.ServerTimeoutError):
        mark_cut()
        await _cut(sidecar, response, last, "hegui.upstream_timeout",
                        "the model server stopped answering", "Art.14", reason="timeout",
                        user=user)
    except (ValueError, aiohttp.ClientPayloadError):  # JSON, UTF-8 and line-length errors
        mark_cut()
        await _cut(sidecar, response, last, "hegui.upstream_malformed",
                        "the model server sent a malformed stream", "Art.14",
                        reason="malformed", user=user)
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        log.info("client went away during a stream")  # upstream is closed by the caller
        return response
    except aiohttp.ClientError:
        mark_cut()
        await _cut(sidecar, response, last, "hegui.upstream_unavailable",
                        "the model server failed", "Art.14", reason="upstream", user=user)
    finally:
        if pending is not None:  # the read in flight must end before the reader is closed
            pending.cancel()
            await asyncio.wait({pending})
        await events.aclose()
        if window.first_token is not None and (facts := SLI.get()) is not None:
            facts.first_token = window.first_token
    await response.write_eof()
    return response

async def _flush(sidecar: Sidecar, route: str, response: web.StreamResponse, window: _Window, *,
                 final: bool) -> bool:
    """Moderate and send the held window; False when the stream was cut (Art.14)."""
    text = window.text
    held = ""
    if not final:
        match = _HOLD.search(text)
        if match and len(text) - match.start() <= _MAX_HOLD:
            text, held = text[:match.start()], text[match.start():]
    context = window.sent[-sidecar.config.stream_overlap_chars:]
    if text:
        decisions = await sidecar.moderate([context + text], Direction.OUTPUT)
        if decisions:
            decision = decisions[0]
            if decision.outcome == Outcome.BLOCK:
                categories = sorted({h.category for h in decision.blocking})
                await _cut(sidecar, response, window.chunks[-1] if window.chunks else {},
                                "hegui.output_blocked", "generation was stopped by content "
                                "moderation", decision.article, reason="violation",
                                user=window.user, categories=categories)
                return False
            spans = [(s.start - len(context), s.end - len(context))
                     for s in decision.mask_spans if s.end > len(context)]
            if spans:
                text = mask(text, spans)
                await sidecar.record("mask", user=window.user,
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
    window.sent = (window.sent + text)[-sidecar.config.stream_overlap_chars:]
    window.text, window.tokens = held, (1 if held else 0)
    window.chunks = window.chunks[-1:] if held else []
    window.finish_reason = None
    return True

async def _cut(sidecar: Sidecar, response: web.StreamResponse, template: dict[str, Any], code: str,
               message: str, article: str, *, reason: str, user: str | None,
               categories: list[str] | None = None) -> None:
    """Stop the stream with a final event that says why (Art.14)."""
    sidecar.metrics.stream_cuts.labels(reason).inc()
    reference = reference_id()
    log.info("stream cut: %s %s (%s) ref %s", code, categories or "", article, reference)
    await sidecar.record("block" if categories else "stream_cut",
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


__all__ = ["LabeledStream", "sse_events", "stream"]
