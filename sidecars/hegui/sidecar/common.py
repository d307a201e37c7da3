"""What the sidecar's request handlers and its stream relay share: errors, the SLI facts of the
request being served (Art.13)."""

from __future__ import annotations

import contextvars
import gc
import json
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web


@dataclass
class SliFacts:
    """What the SLIs (Art.13) need to know of one request beyond its status code."""

    received: float | None = None  # when the request's body was read in full
    first_token: float | None = None  # when the first token of a stream reached the client
    cut: bool = False  # a model or moderator failure cut a response whose headers were sent
    # The client provoked the failure (an answer larger than the sidecar relays, asked for by
    # the client; a client gone before the answer): `refused`, never the provider's (Art.13).
    client_caused: bool = False


# Set by the generation handler for the request it serves (requests on one connection are served
# one after the other, in one task: the handler resets it when done).
SLI: contextvars.ContextVar[SliFacts | None] = contextvars.ContextVar("hegui_sli", default=None)


def mark_cut() -> None:
    if (facts := SLI.get()) is not None:
        facts.cut = True


def mark_client_caused() -> None:
    if (facts := SLI.get()) is not None:
        facts.client_caused = True


class ModerationDown(Exception):
    """The moderator is unreachable and the fail mode is Closed."""


class BadRequest(Exception):
    """A refusal with its status; `client_caused` marks a 5xx the client provoked, which the
    SLIs count as `refused`, never as the provider's failure (Art.13)."""

    def __init__(self, code: str, message: str, status: int = 400, *,
                 client_caused: bool = False) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status
        self.client_caused = client_caused


#: The cyclic collector's thresholds once serving: every token allocates a few small objects, and
#: at the default (700) a young collection ran every couple hundred tokens, a full one often
#: enough to be a sixth of the relay's CPU at 128 streams (bench/streaming.py: 1.16-1.21x chunks
#: a CPU second). The relay makes few cycles; what it makes is still collected, less often.
GC_THRESHOLDS = (10_000, 20, 100)


def tune_gc() -> None:
    """Once serving: what was loaded (lexicons, pinyin, rule tables: ~270k objects) lives as
    long as the process, kept out of the collector's scans; the collector runs less often."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)  # Chinese text stays readable and short


def reference_id() -> str:
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
    reference = reference or reference_id()
    body = error_body(code, message, article=article, reference=reference, direction=direction,
                      categories=categories)
    return web.json_response({"error": body}, status=status, dumps=dumps,
                             headers={"x-hegui-reference": reference, **(headers or {})})


__all__ = ["GC_THRESHOLDS", "SLI", "BadRequest", "ModerationDown", "SliFacts", "dumps",
           "error_body", "error_response", "mark_client_caused", "mark_cut", "reference_id",
           "tune_gc"]
