"""Streamed answers (server-sent events), moderated on their way to the user (Art.14) and labeled
(Art.12), chunk by chunk as the model sends them.

Two modes, declared in the posture (`spec.moderation.output.streaming.mode`):

- `Hold`: nothing leaves the sidecar before it is moderated. Chunks are held in windows that start
  at `firstWindowTokens` and double up to `streamWindowTokens`, so only the first window's
  generation time is added to the first token; a window not full after `stream_max_hold_seconds`
  is moderated and sent anyway (a slow model).
- `StreamThenRetract`: chunks go out as they arrive and the same windows are moderated alongside.
  On a violation generation and transmission stop at once (the model's stream is closed) and the
  client gets a final event telling it to withdraw what it showed (停止生成、停止传输、消除).

Each window is scored with the tail of what was already moderated, so a keyword across a window
edge is seen. In both modes a chunk keeps the model's shape, one token a chunk (unless
`mergeTokens`), and `[DONE]` comes only after the last window passed. Personal information is
masked before it is sent in both modes: only a trailing run that may be the start of a number or
an address is held back, until the next characters decide it (`pii.pending_start`).

Labels (Art.12) are put in by the relay, whatever moderation does (also when the posture
moderates inputs only), in every family's own shape: the start label in each choice's first
content chunk, the end label in the chunk that finishes the choice when it carries text, else
in a copy of the choice's last content chunk sent just before the event that closes its text
(or before the stream's end); the implicit label (`AIGC`) on the first event and on the label
copies.

The final event of a stream that is stopped (README, "Streaming modes") is one chunk with
`finish_reason: "content_filter"` for every choice and `error`, hegui's error body with
`withdraw: true` when the client must remove what it showed of this answer, then `data: [DONE]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import re
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from hegui.api.generativeservice import Direction, StreamingMode
from hegui.labeling.metadata import AIGC_KEY, AigcLabel
from hegui.labeling.metadata import HEADER as AIGC_HEADER
from hegui.labeling.text import TextLabel
from hegui.moderation import pii
from hegui.moderation.client import may_contain_pii, personal_information
from hegui.moderation.decision import Decision, Outcome, decide
from hegui.moderation.pii import mask
from hegui.sidecar import families
from hegui.sidecar.common import (
    SLI,
    ModerationDown,
    error_body,
    mark_client_caused,
    mark_cut,
    reference_id,
)
from hegui.sidecar.families.base import Family, Slot, other_strings_at

if TYPE_CHECKING:
    from hegui.sidecar.app import Sidecar

log = logging.getLogger("hegui.sidecar")

# JSON of every chunk: orjson when installed (bench/streaming.py measures what it earns), else
# the standard library. Both refuse invalid UTF-8 and malformed JSON with a ValueError.
_loads: Callable[[bytes], Any]
_dumps: Callable[[Any], bytes]
try:
    import orjson

    _loads = orjson.loads
    _dumps = orjson.dumps
except ImportError:  # pragma: no cover - the sidecar extra installs orjson
    _loads = json.loads

    def _dumps(value: Any) -> bytes:
        return json.dumps(value, ensure_ascii=False).encode()


# --- personal information still being written ----------------------------------------------------

_MAX_HOLD = 64  # a longer run is no personal information hegui masks: it is scanned as it is
#: Paths of other strings a stream keeps a run of (`_Relay._others`); a stream whose events
#: carry more is cut: sharing one run, their values would interleave and hide what each spells.
_MAX_RUNS = 256
_MAX_QUEUE = 1024  # chunks held behind a run that may be personal information, at most
# ASCII and full-width digits, Chinese numerals
_DIGITS = frozenset("0123456789" + "".join(chr(0xFF10 + i) for i in range(10))
                    + "\u3007一二三四五六七八九零")
_RUN = _DIGITS | frozenset(string.ascii_letters + "._%+@-\uff20")  # and the full-width @


def _pending_start_fallback(text: str) -> int:
    """Where a trailing run begins that may be the start of a number or an e-mail address (a
    space may separate digit groups); len(text) when none. Bounded: at most _MAX_HOLD
    characters are looked at, whatever the text's length."""
    end = index = len(text)
    floor = max(0, end - _MAX_HOLD)
    while index > floor:
        char = text[index - 1]
        if char in _RUN or (char == " " and index - 2 >= floor and text[index - 2] in _DIGITS):
            index -= 1
            continue
        return index
    return end if floor > 0 and index == floor else index


# pii.py knows its detectors best; it offers pending_start once it handles every written form
# (/tmp contract with issue 19); until then the fallback above.
pending_start: Callable[[str], int] = getattr(pii, "pending_start", _pending_start_fallback)


# --- the chunks of a stream ---------------------------------------------------------------------

SlotKey = tuple[int, str]  # (choice, kind): content, reasoning, tool_arguments.0, content.1...

#: The families whose streams are moderated here (app.py refuses a stream of any other).
STREAMED = frozenset({"chat", "completions", "responses", "messages", "tgi", "ollama_chat",
                      "ollama_generate", "triton_generate"})
#: Streams of n > 1 choices are moderated choice by choice.
STREAMS_CHOICES = True
#: The events' other strings are moderated (`_Relay._others`); off only to measure its cost.
OTHERS = True


@dataclass(eq=False, slots=True)
class Piece:
    """One text of a chunk (a family's Slot) and the chunk it is in."""

    key: SlotKey
    slot: Slot
    chunk: _Chunk


@dataclass(eq=False, slots=True)
class _Chunk:
    raw: bytes  # the event as the model sent it (SSE: without its blank line), sent as is
    decoded: Any  # the decoded value (`value`); None until first used for a `_Shape` event
    event: str | None  # the SSE `event:` name
    pieces: list[Piece] = field(default_factory=list)
    aggregates: list[Slot] = field(default_factory=list)  # repeat what was streamed
    changed: bool = False
    shape: _Shape | None = None  # an event of a learned shape, not decoded yet
    of: _Shape | None = None  # the learned shape of this event (kept once decoded)
    data: bytes = b""  # (a `_Shape` event) its JSON

    @property
    def value(self) -> Any:
        """The decoded event. One of a learned shape is parsed only when something asks (labels,
        a merge, the check of another shape in its batch), its text's container put in."""
        if self.shape is not None:
            shape, self.shape = self.shape, None
            value = _loads(self.data)
            leaf = self.pieces[0].slot.container if self.pieces else None
            if leaf is not None and shape.path:
                parent = value
                for key in shape.path[:-1]:
                    parent = parent[key]
                parent[shape.path[-1]] = leaf
            elif leaf is not None:
                value = leaf
            self.decoded = value
        return self.decoded


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({k for k, _ in pairs}) != len(pairs):
        raise ValueError("a duplicate key")  # parsers differ on which one counts
    return dict(pairs)


def _string_end(data: bytes, start: int) -> int:
    """The end (exclusive) of the JSON string literal that starts at `start`; -1 if none."""
    index = start + 1
    while True:
        index = data.find(b'"', index)
        if index < 0:
            return -1
        backslashes = 0
        while data[index - 1 - backslashes] == 0x5C:  # an escaped quote: inside the string
            backslashes += 1
        if backslashes % 2 == 0:
            return index + 1
        index += 1


def _path_to(value: Any, target: Any, depth: int = 0) -> tuple[Any, ...] | None:
    """The keys from `value` to the container `target` (by identity), shallow and bounded."""
    if value is target:
        return ()
    if depth > 6:
        return None
    items = value.items() if type(value) is dict else enumerate(value) \
        if type(value) is list else ()
    for key, child in items:
        if type(child) is dict or type(child) is list:
            found = _path_to(child, target, depth + 1)
            if found is not None:
                return (key, *found)
    return None


@dataclass(eq=False, slots=True)
class _Shape:
    """A stream's token event as bytes around its one text: the model sends the same id, model
    and fields in every token event, so an event that is `prefix`, then one JSON string, then
    `suffix`, is the event this was learned from with another text. Learned (`_Relay._learn`)
    only from an event whose other strings passed moderation (`_others`), that nothing changed
    (no log probabilities dropped, no mask), that does not end the text or the stream, and
    whose bytes repeat no key (parsers differ on which of two counts). Such an event needs no
    parse, no slot walk and no check of its other strings: only its text is decoded, and it is
    moderated like any other (bench/streaming.py)."""

    prefix: bytes
    suffix: bytes
    event: str | None
    path: tuple[Any, ...]  # keys from the event to the text's container
    container: Any  # the learned event's container of the text (a template, never sent)
    key: str
    slot_key: SlotKey
    # Learned from the first event of a batch whose other strings are being checked: its
    # events are checked with it (`_others`), and the shape serves later batches once it passed.
    source: _Chunk | None = None
    verified: bool = True
    strings: tuple[tuple[Any, str], ...] = ()  # its other strings' runs, values (`_others`)

    def match(self, raw: bytes, data: bytes, event: str | None) -> _Chunk | None:
        prefix, suffix = self.prefix, self.suffix
        if (event != self.event or len(data) < len(prefix) + len(suffix) + 2
                or not data.startswith(prefix) or not data.endswith(suffix)):
            return None
        middle = data[len(prefix):len(data) - len(suffix)]
        if middle[0] != 0x22:  # one string literal, nothing before it
            return None
        try:
            text = _loads(middle)  # more than one string literal is no JSON: a ValueError
        except ValueError:
            return None
        if type(text) is not str:
            return None
        container = dict(self.container)
        container[self.key] = text
        chunk = _Chunk(raw, None, event, [], [], shape=self, of=self, data=data)
        if text:
            chunk.pieces.append(Piece(self.slot_key, Slot(container, self.key,
                                                          self.slot_key[1], self.slot_key[0]),
                                      chunk))
        return chunk


def _decode(family: Family, raw: bytes, data: bytes, event: str | None) -> _Chunk:
    value = _loads(data)
    chunk = _Chunk(raw, value, event, [], [])
    for slot in family.chunk_slots(value):
        if slot.aggregate:
            chunk.aggregates.append(slot)
        elif slot.owner is not None:  # a probe, made up for moderation only: streams drop
            chunk.changed = slot.drop() or chunk.changed  # what it stands for
        elif slot.container[slot.key]:
            chunk.pieces.append(Piece((slot.choice, slot.kind), slot, chunk))
    if family.scrub(value):  # per-token log probabilities would spell out what is masked
        chunk.changed = True
    return chunk


def _mask_back(earlier: list[tuple[_Chunk, Slot]], slot: Slot, reach: int,
               masked_forms: dict[tuple[Any, str], str], run: Any) -> bool:
    """Mask the last `reach` characters of the values of `slot`'s run before it in this batch
    (personal information the run spells across them, `_Relay._others`); False when it reaches
    into a value of an earlier batch (sent, or about to be)."""
    position = next(i for i, (_, s) in enumerate(earlier) if s is slot)
    for chunk, before in reversed(earlier[:position]):
        value = before.text
        before.set(mask(value, [(max(len(value) - reach, 0), len(value))]))
        masked_forms[(run, value)] = before.text
        chunk.changed = True
        reach -= len(value)
        if reach <= 0:
            return True
    return False


class _Labels:
    """The explicit and implicit labels of one stream (Art.12), put into the family's own
    chunks as they go out: no second parse of what the relay already decoded."""

    def __init__(self, family: Family, label: TextLabel, aigc: AigcLabel) -> None:
        self.family, self.label, self.aigc = family, label, aigc.to_dict()
        self.started: set[int] = set()  # choices whose first content went out
        self.last: dict[int, tuple[_Chunk, SlotKey]] = {}  # content went out, no end label yet
        self.aigc_sent = False

    @staticmethod
    def _content(piece: Piece) -> bool:
        return piece.key[1].startswith("content")

    def apply(self, chunks: list[_Chunk]) -> list[_Chunk]:
        """The chunks to send, labeled: end-label copies inserted where a choice's text
        closes."""
        out: list[_Chunk] = []
        for chunk in chunks:
            closes = self._closes(chunk)
            if closes:
                ending = [c for c in self.last if closes is True or c in closes]
                for choice in ending:
                    finishing = next((p for p in chunk.pieces if self._content(p)
                                      and p.key[0] == choice and p.slot.text), None)
                    if finishing is not None:
                        continue  # labeled below, after its own text
                    if (copy_ := self._end_copy(choice)) is not None:
                        out.append(copy_)
            for piece in chunk.pieces:
                if not self._content(piece):
                    continue
                choice = piece.key[0]
                if choice not in self.started:
                    self.started.add(choice)
                    if self.label.prefix:
                        piece.slot.set(self.label.prefix + piece.slot.text)
                        chunk.changed = True
                self.last[choice] = (chunk, piece.key)
            if closes:
                for piece in chunk.pieces:
                    choice = piece.key[0]
                    if (self._content(piece) and piece.slot.text and choice in self.last
                            and (closes is True or choice in closes)):
                        del self.last[choice]
                        if self.label.suffix:
                            piece.slot.set(piece.slot.text + self.label.suffix)
                            chunk.changed = True
                for choice in [c for c in self.last if closes is True or c in closes]:
                    del self.last[choice]
            if not self.aigc_sent and isinstance(chunk.value, dict):
                chunk.value[AIGC_KEY] = self.aigc
                chunk.changed = self.aigc_sent = True
            out.append(chunk)
        return out

    def close(self) -> list[_Chunk]:
        """End-label copies for the choices whose text was never closed (the stream's end)."""
        out = [c for choice in list(self.last) if (c := self._end_copy(choice)) is not None]
        self.last.clear()
        return out

    def _closes(self, chunk: _Chunk) -> bool | set[int]:
        if chunk.shape is not None:
            return set()  # a learned shape closes nothing (`_Shape`): no parse needed
        if self.family.is_final(chunk.value) or self.family.closes_text(chunk.value):
            return True
        return set(self.family.finish_reason(chunk.value))

    def _end_copy(self, choice: int) -> _Chunk | None:
        """The choice's last content chunk again, its text the end label."""
        source, key = self.last.pop(choice)
        if not self.label.suffix:
            return None
        value = copy.deepcopy(source.value)
        found = False
        clone = _Chunk(b"", value, source.event, changed=True)
        for slot in self.family.chunk_slots(value):
            if slot.aggregate or slot.probe:
                continue
            if (slot.choice, slot.kind) == key and not found:
                slot.set(self.label.suffix)
                clone.pieces.append(Piece(key, slot, clone))
                found = True
            else:
                slot.set("")  # another text of the copied chunk: said already
        if isinstance(value, dict):
            value[AIGC_KEY] = self.aigc
        return clone if found else None


#: An SSE event name as the APIs name theirs (content_block_delta, response.output_text.delta).
_EVENT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")


class EventTooLarge(ValueError):
    """A stream event longer than the relay reads: most often an aggregate (the Responses
    API's final event repeats the whole answer) as long as the client asked for."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"a stream event longer than {limit} bytes")
        self.limit = limit


class EventReader:
    """The events of a stream as they arrive: all that one read brings (a loaded stream is
    handled in batches), each as (raw event, data, SSE event name). SSE (blank-line separated,
    `data:` lines joined) or NDJSON (one JSON a line). Bounded: an event longer than `limit`
    bytes is a ValueError. Cancelling `next` loses nothing."""

    def __init__(self, content: aiohttp.StreamReader, limit: int, framing: str) -> None:
        self.content, self.limit = content, limit
        self.separator = b"\n" if framing == "ndjson" else b"\n\n"
        self.buffer = b""

    async def next(self) -> list[tuple[bytes, bytes, str | None]] | None:
        """The events that arrived (at least one); None at the end of the stream."""
        while True:
            data = await self.content.readany()
            if not data:
                rest, self.buffer = self.buffer.replace(b"\r\n", b"\n"), b""
                last = self._event(rest.strip(b"\n")) if rest.strip() else None
                return [last] if last is not None else None
            buffer = self.buffer + data
            if b"\r" in buffer:  # CRLF or CR line ends; a CR at the end may be half a CRLF
                keep = buffer.endswith(b"\r")
                body = buffer[:-1] if keep else buffer
                buffer = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + (
                    b"\r" if keep else b"")
            events = buffer.split(self.separator)
            self.buffer = events.pop()
            if len(self.buffer) > self.limit or (
                    len(buffer) > self.limit and max(map(len, events), default=0) > self.limit):
                raise EventTooLarge(self.limit)
            found = [e for raw in events if (e := self._event(raw)) is not None]
            if found:
                return found

    def _event(self, raw: bytes) -> tuple[bytes, bytes, str | None] | None:
        if self.separator == b"\n":
            return (raw, raw, None) if raw.strip() else None
        if raw.startswith(b"data: ") and b"\n" not in raw:
            return raw, raw[6:], None
        data: list[bytes] = []
        event = None
        for line in raw.split(b"\n"):
            if line.startswith(b"data:"):
                data.append(line[5:].removeprefix(b" "))
            elif line.startswith(b"event:"):
                event = line[6:].strip().decode("utf-8")
                if not _EVENT_NAME.fullmatch(event):
                    raise ValueError(f"an SSE event name that is no API's: {event[:40]!r}")
        if not data:
            return None
        # Sent on: the event's name and data, nothing else. Comments, `id` (a browser's
        # lastEventId), `retry` and unknown fields are text a front end can read that the
        # relay does not moderate, so they are dropped (Art.14).
        rebuilt = b"\n".join(b"data: " + line for line in data)
        if event is not None:
            rebuilt = b"event: " + event.encode() + b"\n" + rebuilt
        return rebuilt, b"\n".join(data), event


class _Stopped(Exception):
    """The stream was cut: the final event is sent."""


@dataclass
class _Relay:
    sidecar: Sidecar
    family: Family
    response: web.StreamResponse
    user: str | None
    retract: bool
    merge: bool
    window: int  # the current window, in tokens
    max_window: int
    overlap: int
    hold: float
    keep: int  # the most characters of sent text kept per slot for aggregates
    queue: list[_Chunk] = field(default_factory=list)  # received, not sent
    unmoderated: dict[SlotKey, list[str]] = field(default_factory=dict)  # text of the window
    tokens: int = 0  # tokens in the window
    opened: float | None = None  # when the window got its first token (loop time)
    context: dict[SlotKey, str] = field(default_factory=dict)  # moderated text, last characters
    lookbehind: dict[SlotKey, str] = field(default_factory=dict)  # sent text, last characters
    sent: dict[SlotKey, list[str]] = field(default_factory=dict)  # for aggregates
    kept: int = 0
    template: dict[str, Any] = field(default_factory=dict)
    shown: bool = False  # text went out that a withdrawal must remove
    ended: bool = False  # the model's last event came
    first_token: float | None = None
    checking: asyncio.Task[list[Decision] | None] | None = None  # StreamThenRetract
    checked: list[tuple[SlotKey, str]] = field(default_factory=list)  # what `checking` scores
    task: asyncio.Task[Any] | None = None  # the relay's, interrupted by `_wake`
    reading: bool = False  # awaiting the model's next events
    woken: bool = False  # a window is due or a verdict came
    timer: asyncio.TimerHandle | None = None
    timer_due: float | None = None
    labels: _Labels | None = None  # Art.12, whatever moderation does
    moderated: bool = True  # False: the posture moderates inputs only; relayed and labeled
    # The events' other strings (ids, model, fields no API defines) that passed moderation, and
    # the last one-text event's shape without its text (`_others`).
    passed: set[str] = field(default_factory=set)
    skeleton: bytes = b""
    # Each path's run of other strings (`_others`): its last value and the run's last
    # characters, and the masked form of a last value that was masked.
    runs: dict[Any, tuple[str, str]] = field(default_factory=dict)
    run_masks: dict[Any, tuple[str, str]] = field(default_factory=dict)
    shape: _Shape | None = None  # the token event's bytes around its text (`_Shape`)
    learned: int = 0  # shapes learned (bounded: a model that changes its shape every event)

    # --- reading ---------------------------------------------------------------------------------

    async def run(self, reader: EventReader) -> None:
        loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        try:
            await self._run(reader, loop)
        finally:
            if self.timer is not None:
                self.timer.cancel()

    async def _run(self, reader: EventReader, loop: asyncio.AbstractEventLoop) -> None:
        family = self.family
        while not self.ended:
            due = None if self.opened is None else self.opened + self.hold
            if due != self.timer_due:  # one timer a window, not a timeout a read (bench)
                if self.timer is not None:
                    self.timer.cancel()
                self.timer = loop.call_at(due, self._wake) if due is not None else None
                self.timer_due = due
            if self.checking is not None and self.checking.done():
                await self._verdict()
            batch = await self._read(reader)
            if batch is None:
                break
            if not batch:  # woken: a window is due or a verdict came
                if due is not None and loop.time() >= due:
                    await self._window_due()
                continue
            unknown: list[_Chunk] | None = None  # from the first of another shape (_others)
            check = self.moderated and OTHERS
            shape = self.shape
            for raw, data, event in batch:
                if len(data) < 16 and family.is_done(data.decode("utf-8", "replace")):
                    self.ended = True
                    break
                if shape is not None and (chunk := shape.match(raw, data, event)) is not None:
                    self.queue.append(chunk)  # `_receive`: the shape ends nothing, sets nothing
                    if chunk.pieces:
                        self._received(chunk)
                    if unknown is not None:
                        unknown.append(chunk)
                    continue
                chunk = _decode(family, raw, data, event)
                self._receive(chunk)
                if unknown is not None:
                    unknown.append(chunk)
                elif check and not self._known_shape(chunk):
                    unknown = [chunk]
                    # The rest of the batch is likely of its shape: decoded as such, checked
                    # with it.
                    if self.learned < 8 and (found := self._learn(chunk, data)) is not None:
                        found.source, found.verified, shape = chunk, False, found
                elif self.learned < 8 and (found := self._learn(chunk, data)) is not None:
                    # Its other strings are the runs' last values (the skeleton's): recorded,
                    # so that a run moving on drops the shape (`_others`) and the next event
                    # that repeats them is read with the run again.
                    known = [p.slot for p in chunk.pieces] + chunk.aggregates
                    found.strings = tuple((path, slot.text) for path, slot
                                          in other_strings_at(chunk.value, known))
                    shape = self.shape = found
                if self.ended:
                    break
            if unknown:
                await self._others(unknown)
            if self.retract:
                await self._stream_out()
            else:
                while self.tokens >= self.window and await self._hold_out(final=False):
                    pass
        await self._finish()

    async def _read(self, reader: EventReader) -> list[tuple[bytes, bytes, str | None]] | None:
        """The next events, or [] when woken (a window due, a verdict): `_wake` interrupts the
        read by cancelling it, which loses nothing (EventReader)."""
        if self.woken:
            self.woken = False
            return []
        self.reading = True
        try:
            return await reader.next()
        except asyncio.CancelledError:
            task = self.task
            if not self.woken or task is None or task.uncancel() > 0:
                raise  # cancelled by someone else: the client went away, the server stops
            return []
        finally:
            self.reading = False
            self.woken = False
    def _receive(self, chunk: _Chunk) -> None:
        if isinstance(chunk.value, dict):
            self.template = chunk.value
        self.queue.append(chunk)
        self.ended = self.family.is_final(chunk.value)
        if chunk.pieces:
            self._received(chunk)

    def _received(self, chunk: _Chunk) -> None:
        if self.opened is None:
            self.opened = asyncio.get_running_loop().time()
        if not self.retract:
            self.tokens += 1
            for piece in chunk.pieces:
                self.unmoderated.setdefault(piece.key, []).append(piece.slot.text)

    def _learn(self, chunk: _Chunk, data: bytes) -> _Shape | None:
        """The `_Shape` of a token event of a known shape (`_known_shape` said so: its other
        strings passed), or None when it cannot be one."""
        family, value = self.family, chunk.value
        if (chunk.changed or chunk.shape is not None or len(chunk.pieces) != 1
                or family.is_final(value) or family.closes_text(value)
                or family.finish_reason(value)):
            return None
        self.learned += 1
        piece = chunk.pieces[0]
        slot = piece.slot
        if type(slot.key) is not str or type(slot.container) is not dict:
            return None
        path = _path_to(value, slot.container)
        if path is None:
            return None
        text, needle = slot.text, _dumps(slot.key)
        at = data.find(needle)
        while at >= 0:
            start = at + len(needle)
            while data[start:start + 1] in (b" ", b"\t", b"\n", b"\r"):
                start += 1
            if data[start:start + 1] == b":":
                start += 1
                while data[start:start + 1] in (b" ", b"\t", b"\n", b"\r"):
                    start += 1
                end = _string_end(data, start) if data[start:start + 1] == b'"' else -1
                if end > 0 and self._same(value, slot, data[:start], data[end:],
                                          data[start:end], text):
                    return _Shape(data[:start], data[end:], chunk.event, path,
                                  dict(slot.container), slot.key, piece.key)
            at = data.find(needle, at + 1)
        return None

    @staticmethod
    def _same(value: Any, slot: Slot, prefix: bytes, suffix: bytes, literal: bytes,
              text: str) -> bool:
        """Whether `prefix + literal + suffix` is the event `value` with the text of `slot` at
        `literal`, repeating no key."""
        try:
            if _loads(literal) != text:
                return False
            bare = json.loads(prefix + b'""' + suffix, object_pairs_hook=_unique_keys)
        except (ValueError, RecursionError):
            return False
        slot.set("")
        try:
            return bool(bare == value)
        finally:
            slot.set(text)

    def _known_shape(self, chunk: _Chunk) -> bool:
        """Whether an event is one text in the shape last checked by `_others` (the common
        token event): a dumps and a compare, no walk."""
        pieces = chunk.pieces
        if len(pieces) != 1 or chunk.aggregates:
            return False
        slot = pieces[0].slot
        container, key = slot.container, slot.key
        text = container[key]
        container[key] = ""
        shape = _dumps(chunk.value)
        container[key] = text
        return shape == self.skeleton

    async def _others(self, chunks: list[_Chunk]) -> None:
        """Moderate the strings of the events that are not their texts (ids, model, role, fields
        no API defines: a client reads them too, the openai client keeps unknown ones) before
        they go out: prohibited stops the stream, personal information is masked (Art.4,
        Art.14). They are moderated as the runs they spell (`runs`): the values at one path
        in event order, a value the next event that carries the path repeats counted once (a
        stream's id and model repeat in every event), each scored with the tail of its run, so
        a text a model spells across events' fields is read whole, as json_scan.Runs reads one
        spelled across an answer's strings. What passed is not moderated again, and an event
        whose strings are the runs' last values and whose shape was checked (the common token
        event: `skeleton`, a verified `_Shape`) is not walked at all."""
        # chunk, slot, run, the value scored with its run's tail, the tail's length, and the
        # value alone where a tail precedes it: a number right after a digit of the tail reads
        # as part of a longer one there ("id 2024" then "13800138000"), so it is read alone too
        found: list[tuple[_Chunk, Slot, Any, str, int, str | None]] = []
        repeats: list[tuple[_Chunk, Slot, Any]] = []
        in_batch: dict[Any, list[tuple[_Chunk, Slot]]] = {}  # each run's values in this batch
        strings: dict[int, list[tuple[Any, str]]] = {}  # id(chunk): its runs and values
        candidate: tuple[_Chunk, bytes] | None = None  # the last one-text event (`skeleton`)
        runs = self.runs
        for chunk in chunks:
            if len(chunk.pieces) == 1 and not chunk.aggregates:
                slot = chunk.pieces[0].slot
                text = slot.text
                slot.set("")
                candidate = (chunk, _dumps(chunk.value))
                slot.set(text)
            known = [p.slot for p in chunk.pieces] + chunk.aggregates
            mine = strings[id(chunk)] = []
            for path, slot in other_strings_at(chunk.value, known):
                if path not in runs and len(runs) >= _MAX_RUNS:
                    mark_cut()
                    await self.cut("hegui.upstream_malformed", "the model server's events carry "
                                   f"more than {_MAX_RUNS} distinct string fields besides their "
                                   "text, more than the sidecar reads as the texts they spell",
                                   "Art.14", reason="malformed", withdraw=self.shown)
                    raise _Stopped
                run = path
                value = slot.text
                mine.append((run, value))
                last, tail = runs.get(run, ("", ""))
                if value == last:
                    repeats.append((chunk, slot, run))
                    continue
                scored = tail + value
                runs[run] = (value, scored[-self.overlap:])
                in_batch.setdefault(run, []).append((chunk, slot))
                alone = value if tail else None
                if scored not in self.passed or (alone is not None and alone not in self.passed):
                    found.append((chunk, slot, run, scored, len(tail), alone))
        masked_forms = {(run, value): masked for run, (value, masked) in self.run_masks.items()}
        if found:
            texts = list(dict.fromkeys(
                text for _, _, _, scored, _, alone in found
                for text in (scored, alone) if text is not None))
            decisions = await self.sidecar.moderate(texts, Direction.OUTPUT)
            if decisions is None:
                await self._unmoderated()
                return
            await self._judge({(-1, f"field.{i}"): d for i, d in enumerate(decisions)},
                              withdraw=True)
            verdicts = dict(zip(texts, decisions, strict=True))
            self.passed.update(t for t, d in verdicts.items() if not d.mask_spans)
            kinds: set[str] = set()
            for chunk, slot, run, scored, offset, alone in found:
                # Personal information in the tail alone was masked with its own value.
                spans = [m for m in verdicts[scored].mask_spans if m.end > offset]
                own = verdicts[alone].mask_spans if alone is not None else []
                if not spans and not own:
                    continue
                kinds.update(m.label for m in [*spans, *own])
                value = slot.text
                slot.set(mask(value, [(max(m.start - offset, 0), m.end - offset)
                                      for m in spans] + [(m.start, m.end) for m in own]))
                masked_forms[(run, value)] = slot.text
                chunk.changed = True
                reach = offset - min((m.start for m in spans), default=offset)
                if reach > 0 and not _mask_back(in_batch[run], slot, reach, masked_forms, run):
                    # Its first part went out with an earlier event: what was sent cannot be
                    # masked any more (json_scan cuts an answer alike).
                    await self.cut("hegui.output_blocked", "personal information spelled "
                                   "across the events' fields, part of it already sent",
                                   "Art.4(4)", reason="violation", categories=sorted(kinds),
                                   withdraw=self.shown)
                    raise _Stopped
            if kinds:
                await self.sidecar.record("mask", user=self.user, direction="output",
                                          route=self.family.name, kinds=sorted(kinds),
                                          article="Art.4(4)")
            if len(self.passed) > 4096:  # a model that sends new ids forever: bounded
                self.passed.clear()
        for chunk, slot, run in repeats:  # the same value as before it: masked the same
            if (form := masked_forms.get((run, slot.text))) is not None:
                slot.set(form)
                chunk.changed = True
        self.run_masks = {run: (value, masked_forms[(run, value)])
                          for run, (value, _) in runs.items() if (run, value) in masked_forms}

        def current(chunk: _Chunk) -> bool:  # its strings are the runs' last values
            return not chunk.changed and all(runs[run][0] == value
                                             for run, value in strings.get(id(chunk), []))

        masking = bool(masked_forms)
        self.skeleton = candidate[1] if candidate is not None and not masking and current(
            candidate[0]) else b""
        if self.shape is not None and (masking or any(
                runs.get(run, ("",))[0] != value for run, value in self.shape.strings)):
            self.shape = None  # its events' strings are no longer the runs' last ones
        for chunk in chunks:  # a shape learned in this batch serves later ones once it passed
            of = chunk.of
            if (of is not None and not of.verified and of.source is not None
                    and not masking and id(of.source) in strings and current(of.source)):
                of.strings = tuple(strings[id(of.source)])
                of.verified, of.source, self.shape = True, None, of

    def _wake(self, _: object = None) -> None:
        if self.woken:
            return
        self.woken = True
        if self.reading and self.task is not None:
            self.task.cancel()

    # --- what may go out -------------------------------------------------------------------------

    def _releasable(self, final: bool, tokens: int | None = None) -> int:
        """How many queued chunks may go out (at most `tokens` text-bearing ones): all but those
        from a trailing run that may still become personal information (in any field)."""
        limit = len(self.queue)
        if tokens is not None:
            for position, chunk in enumerate(self.queue):
                if chunk.pieces:
                    tokens -= 1
                    if tokens == 0:
                        limit = position + 1
                        break
        if final or not self.queue or len(self.queue) > _MAX_QUEUE:
            return limit  # a model that sends on and on behind a held run: scanned as it is
        if limit == 1 and len(self.queue[0].pieces) == 1:  # one token: the common case
            piece = self.queue[0].pieces[0]
            before = self.lookbehind.get(piece.key, "")
            text = before + piece.slot.text
            return 1 if pending_start(text) >= len(text) else 0
        texts: dict[SlotKey, list[tuple[int, str]]] = {}
        for position, chunk in enumerate(self.queue[:limit]):
            for piece in chunk.pieces:
                texts.setdefault(piece.key, []).append((position, piece.slot.text))
        for key, parts in texts.items():
            before = self.lookbehind.get(key, "")
            text = before + "".join(t for _, t in parts)
            start = pending_start(text) - len(before)
            if start >= len(text) - len(before):
                continue
            offset = 0
            for position, part in parts:
                offset += len(part)
                if offset > start:
                    limit = min(limit, position)
                    break
        return limit

    @staticmethod
    def _by_slot(chunks: list[_Chunk]) -> dict[SlotKey, list[Piece]]:
        slots: dict[SlotKey, list[Piece]] = {}
        for chunk in chunks:
            for piece in chunk.pieces:
                slots.setdefault(piece.key, []).append(piece)
        return slots

    async def _masked(self, chunks: list[_Chunk], decisions: dict[SlotKey, Decision],
                      contexts: dict[SlotKey, int]) -> None:
        """Mask, in the chunks' own fields, what the decisions say to mask (Art.4(4))."""
        slots = self._by_slot(chunks)
        kinds: set[str] = set()
        article = "Art.4(4)"
        for key, decision in decisions.items():
            shift = contexts.get(key, 0)
            spans = [(s.start - shift, s.end - shift) for s in decision.mask_spans
                     if s.end > shift]
            if not spans:
                continue
            kinds.update(s.label for s in decision.mask_spans)
            article = decision.article
            offset = 0
            for piece in slots.get(key, []):
                text = piece.slot.text
                local = [(a - offset, b - offset) for a, b in spans
                         if b > offset and a < offset + len(text)]
                if local:
                    piece.slot.set(mask(text, local))
                    piece.chunk.changed = True
                offset += len(text)
        if kinds:
            await self.sidecar.record("mask", user=self.user, direction="output",
                                      route=self.family.name, kinds=sorted(kinds),
                                      article=article)

    async def _send(self, chunks: list[_Chunk]) -> None:
        if not chunks:
            return
        if self.merge:
            chunks = _merged(self.family, chunks)
        if self.labels is not None:
            chunks = self.labels.apply(chunks)
        out: list[bytes] = []
        text = False
        for chunk in chunks:
            for piece in chunk.pieces:
                piece_text = piece.slot.text
                self.lookbehind[piece.key] = (self.lookbehind.get(piece.key, "")
                                              + piece_text)[-16:]
                if self.kept < self.keep:
                    self.sent.setdefault(piece.key, []).append(piece_text)
                    self.kept += len(piece_text)
                text = True
            for slot in chunk.aggregates:  # what was sent (moderated), never the model's own
                slot.set("" if self.kept >= self.keep else
                         "".join(self.sent.get((slot.choice, slot.kind), [])))
                chunk.changed = True
            out.append(self._encode(chunk))
        await self.response.write(b"".join(out))
        if text:
            self.shown = True
            if self.first_token is None:
                self.first_token = time.perf_counter()

    def _encode(self, chunk: _Chunk) -> bytes:
        # As the model sent it only when it is of a learned shape (`_Shape`: no key twice);
        # any other event as it was decoded and moderated: a key sent twice is read otherwise
        # by parsers that take the first (Art.14). (Rare: the first events of a stream.)
        if not chunk.changed and chunk.of is not None:
            return chunk.raw + (b"\n" if self.family.framing == "ndjson" else b"\n\n")
        if self.family.framing == "ndjson":
            return _dumps(chunk.value) + b"\n"
        head = f"event: {chunk.event}\n".encode() if chunk.event else b""
        return head + b"data: " + _dumps(chunk.value) + b"\n\n"

    # --- Hold ------------------------------------------------------------------------------------

    async def _hold_out(self, *, final: bool) -> int:
        """Moderate the held window (all but a pending run) and send it if it passes; how many
        chunks went out."""
        limit = self._releasable(final, None if final else self.window)
        chunks, self.queue = self.queue[:limit], self.queue[limit:]
        slots = self._by_slot(chunks)
        keys = list(slots)
        texts = {k: "".join(p.slot.text for p in slots[k]) for k in keys}
        contexts = {k: self.context.get(k, "") for k in keys}
        decisions = await self.sidecar.moderate([contexts[k] + texts[k] for k in keys],
                                                Direction.OUTPUT)
        if decisions is None:
            if keys:
                await self._unmoderated()
        else:
            by_slot = dict(zip(keys, decisions, strict=True))
            await self._judge(by_slot, withdraw=False)
            await self._masked(chunks, by_slot, {k: len(v) for k, v in contexts.items()})
        for key in keys:
            self.context[key] = (contexts[key] + texts[key])[-self.overlap:]
        await self._send(chunks)
        # what stays held starts the next window
        self.unmoderated = {k: [p.slot.text for p in v]
                            for k, v in self._by_slot(self.queue).items()}
        self.tokens = sum(1 for c in self.queue if c.pieces)
        self.opened = asyncio.get_running_loop().time() if self.tokens else None
        if chunks:
            self.window = min(self.window * 2, self.max_window)
        return len(chunks)

    # --- StreamThenRetract -----------------------------------------------------------------------

    async def _stream_out(self, *, final: bool = False) -> None:
        """Send what may go out now (personal information masked first) and moderate the
        window alongside."""
        if not self.moderated:  # inputs-only posture: relayed as it comes, labeled in _send
            chunks, self.queue = self.queue, []
            await self._send(chunks)
            return
        if not final and await self._one_token_out():
            return
        limit = self._releasable(final)
        chunks, self.queue = self.queue[:limit], self.queue[limit:]
        if chunks:
            slots = self._by_slot(chunks)
            decisions: dict[SlotKey, Decision] = {}
            contexts: dict[SlotKey, int] = {}
            moderation = self.sidecar.config.moderation
            for key, pieces in slots.items():
                text = "".join([p.slot.text for p in pieces])
                self.unmoderated.setdefault(key, []).append(text)
                before = self.lookbehind.get(key, "")
                found = personal_information(before + text)
                if found.scores:
                    decision = decide(found, moderation, Direction.OUTPUT)
                    if decision.hits:
                        _count(self.sidecar, decision)
                        decisions[key], contexts[key] = decision, len(before)
            if decisions:
                await self._judge(decisions, withdraw=True)
                await self._masked(chunks, decisions, contexts)
                for key in decisions:  # the window scores what was sent: masked
                    self.unmoderated[key][-1] = "".join([p.slot.text for p in slots[key]])
            self.tokens += sum(1 for c in chunks if c.pieces)
            await self._send(chunks)
        if self.checking is None and self.tokens and (final or self.tokens >= self.window):
            self._check()

    async def _one_token_out(self) -> bool:
        """The common case on its own (bench/streaming.py): chunks of one text each, all of one
        slot, nothing in them or before them that may be personal information. Sent as
        `_stream_out` would send them (labels and merging by `_send`); False (nothing done) for
        any other case."""
        queue = self.queue
        if not queue:
            return False
        key: SlotKey | None = None
        texts: list[str] = []
        for chunk in queue:
            if len(chunk.pieces) != 1 or chunk.aggregates:
                return False
            piece = chunk.pieces[0]
            if key is None:
                key = piece.key
            elif piece.key != key:
                return False
            texts.append(piece.slot.text)
        assert key is not None
        text = "".join(texts)
        joined = self.lookbehind.get(key, "") + text
        if pending_start(joined) < len(joined) or may_contain_pii(joined):
            return False  # the general path holds or masks it
        self.queue = []
        if (window := self.unmoderated.get(key)) is None:
            self.unmoderated[key] = [text]
        else:
            window.append(text)
        self.tokens += len(queue)
        if self.labels is not None or self.merge:  # (every posture that labels, Art.12)
            await self._send(queue)
        else:
            await self._write_plain(queue, key, text, joined)
        if self.checking is None and self.tokens >= self.window:
            self._check()
        return True

    async def _write_plain(self, queue: list[_Chunk], key: SlotKey, text: str,
                           joined: str) -> None:
        """`_send` for chunks of one slot with nothing to label or merge."""
        self.lookbehind[key] = joined[-16:]
        if self.kept < self.keep:
            self.sent.setdefault(key, []).append(text)
            self.kept += len(text)
        encode = self._encode
        await self.response.write(encode(queue[0]) if len(queue) == 1
                                  else b"".join([encode(c) for c in queue]))
        self.shown = True
        if self.first_token is None:
            self.first_token = time.perf_counter()

    def _check(self) -> None:
        """Moderate the window in the background; the verdict wakes the reader."""
        self.checked = [(k, "".join(v)) for k, v in self.unmoderated.items() if v]
        self.unmoderated, self.tokens, self.opened = {}, 0, None
        texts = [self.context.get(k, "") + t for k, t in self.checked]
        self.checking = asyncio.ensure_future(self.sidecar.moderate(texts, Direction.OUTPUT))
        self.checking.add_done_callback(self._wake)
        self.window = min(self.window * 2, self.max_window)

    async def _verdict(self) -> None:
        assert self.checking is not None
        task, self.checking = self.checking, None
        decisions = await task  # ModerationDown: fail mode Closed, the caller cuts
        if decisions is None:
            await self._unmoderated()
        else:
            await self._judge({k: d for (k, _), d in zip(self.checked, decisions, strict=True)},
                              withdraw=True)
        for key, text in self.checked:
            self.context[key] = (self.context.get(key, "") + text)[-self.overlap:]
        self.checked = []

    async def _window_due(self) -> None:
        if self.retract:
            await self._stream_out()
            if self.checking is None and self.tokens:
                self._check()
            self.opened = None  # the clock restarts with the next token
        else:
            await self._hold_out(final=False)

    # --- the end ---------------------------------------------------------------------------------

    async def _finish(self) -> None:
        if self.retract:
            await self._stream_out(final=True)
            while self.checking is not None:
                await asyncio.wait({self.checking})
                await self._verdict()
                if self.tokens:
                    self._check()
        else:
            await self._hold_out(final=True)
        if self.labels is not None and (ends := self.labels.close()):
            await self._send(ends)
        if self.family.done_marker:
            await self.response.write(self.family.done_marker)

    async def _unmoderated(self) -> None:
        await self.sidecar.record("unmoderated", user=self.user, direction="output",
                                  route=self.family.name, article="Art.14",
                                  reason="moderator unavailable, fail mode Open")

    async def _judge(self, decisions: dict[SlotKey, Decision], *, withdraw: bool) -> None:
        blocking = [d for d in decisions.values() if d.outcome == Outcome.BLOCK]
        if blocking:
            categories = sorted({h.category for d in blocking for h in d.blocking})
            await self.cut("hegui.output_blocked", "generation was stopped by content moderation",
                           blocking[0].article, reason="violation", categories=categories,
                           withdraw=withdraw and self.shown)
            raise _Stopped

    async def cut(self, code: str, message: str, article: str, *, reason: str,
                  categories: list[str] | None = None, withdraw: bool = False) -> None:
        """Stop the stream with a final event that says why (Art.14)."""
        self.sidecar.metrics.stream_cuts.labels(reason).inc()
        reference = reference_id()
        log.info("stream cut: %s %s (%s) ref %s", code, categories or "", article, reference)
        await self.sidecar.record("block" if categories else "stream_cut", user=self.user,
                                  direction="output", route=self.family.name,
                                  categories=categories or [], article=article,
                                  reference=reference, code=code, withdraw=withdraw)
        body = error_body(code, message, article=article, reference=reference,
                          direction="output", categories=categories)
        body["withdraw"] = withdraw
        # The client may be gone already; the upstream is closed by the caller either way.
        with contextlib.suppress(ConnectionResetError, aiohttp.ClientConnectionResetError):
            # What was shown and stays shown is generated content: labeled (Art.12).
            ends = self.labels.close() if self.labels is not None and not withdraw else []
            await self.response.write(b"".join(self._encode(c) for c in ends)
                                      + self.family.cut_event(self.template, body))

    async def close(self) -> None:
        if self.checking is not None:
            self.checking.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.checking


def _merged(family: Family, chunks: list[_Chunk]) -> list[_Chunk]:
    """Consecutive chunks that carry only one text of the same slot, merged (mergeTokens)."""
    out: list[_Chunk] = []
    for chunk in chunks:
        previous = out[-1] if out else None
        if (previous is not None and _mergeable(family, chunk) and _mergeable(family, previous)
                and previous.pieces[0].key == chunk.pieces[0].key):
            piece = previous.pieces[0]
            piece.slot.set(piece.slot.text + chunk.pieces[0].slot.text)
            previous.changed = True
            continue
        out.append(chunk)
    return out


def _mergeable(family: Family, chunk: _Chunk) -> bool:
    return (len(chunk.pieces) == 1 and not chunk.aggregates
            and not family.finish_reason(chunk.value) and not family.is_final(chunk.value))


def _count(sidecar: Sidecar, decision: Decision) -> None:
    for hit in decision.hits:
        sidecar.metrics.decisions.labels(hit.outcome.value, hit.category, "output").inc()
        if hit.outcome is Outcome.BLOCK:
            sidecar.metrics.incidents.labels(sidecar.config.service, "output").inc()


async def stream(sidecar: Sidecar, route: str, request: web.Request,
                 upstream: aiohttp.ClientResponse, headers: dict[str, str],
                 user: str | None, *, moderate: bool = True) -> web.StreamResponse:
    """Relay the model's stream (family `route`) to the client, moderated as the posture's
    streaming mode says (`moderate` False: the posture moderates inputs only), labeled
    (Art.12) either way."""
    config = sidecar.config
    family = families.get(route)
    output = config.moderation.output
    retract = output.streaming.mode == StreamingMode.STREAM_THEN_RETRACT
    stream_headers = {"Content-Type": "application/x-ndjson" if family.framing == "ndjson"
                      else "text/event-stream", "Cache-Control": "no-cache", **headers,
                      "x-hegui-streaming": output.streaming.mode.value}
    labels = None
    if aigc := await sidecar._new_label(user, route):
        assert config.labeling is not None
        stream_headers[AIGC_HEADER] = aigc.header_value()
        labels = _Labels(family, TextLabel.from_posture(config.labeling.explicit), aigc)
    response = web.StreamResponse(status=200, headers=stream_headers)
    await response.prepare(request)
    relay = _Relay(sidecar, family, response, user, retract=retract or not moderate,
                   merge=output.streaming.merge_tokens,
                   window=min(output.streaming.first_window_tokens, output.stream_window_tokens),
                   max_window=output.stream_window_tokens, overlap=config.stream_overlap_chars,
                   hold=config.stream_max_hold_seconds, keep=config.max_response_bytes,
                   labels=labels, moderated=moderate)
    finished = False
    try:
        await relay.run(EventReader(upstream.content, config.max_sse_line_bytes, family.framing))
        finished = True
    except _Stopped:
        pass
    except ModerationDown as down:
        mark_cut()
        await relay.cut("hegui.moderation_unavailable",
                        f"content moderation became unavailable ({down})", "Art.14",
                        reason="moderator", withdraw=retract and relay.shown)
    except (TimeoutError, aiohttp.ServerTimeoutError):
        mark_cut()
        await relay.cut("hegui.upstream_timeout", "the model server stopped answering",
                        "Art.14", reason="timeout", withdraw=retract and relay.shown)
    except EventTooLarge as large:
        mark_cut()
        mark_client_caused()  # the client's doing (a long answer asked for): `refused`
        await relay.cut("hegui.upstream_too_large",
                        f"the model sent a stream event larger than {large.limit} bytes, the "
                        "most the sidecar relays; ask for fewer tokens (max_tokens)", "Art.14",
                        reason="too_large", withdraw=retract and relay.shown)
    except (ValueError, RecursionError, aiohttp.ClientPayloadError):  # JSON, UTF-8, length
        mark_cut()
        await relay.cut("hegui.upstream_malformed", "the model server sent a malformed stream",
                        "Art.14", reason="malformed", withdraw=retract and relay.shown)
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        log.info("client went away during a stream")  # upstream is closed below
        return response
    except aiohttp.ClientError:
        mark_cut()
        await relay.cut("hegui.upstream_unavailable", "the model server failed", "Art.14",
                        reason="upstream", withdraw=retract and relay.shown)
    finally:
        await relay.close()
        if not finished:
            # Stop generation (Art.14): the model sees its stream closed and stops.
            upstream.close()
        if relay.first_token is not None and (facts := SLI.get()) is not None:
            facts.first_token = relay.first_token
    await response.write_eof()
    if finished:
        await _drain(upstream)
    return response


async def _drain(upstream: aiohttp.ClientResponse) -> None:
    """Read what the model sends after its last event (the end of the chunked body), briefly and
    boundedly, so its connection is kept for the next request rather than closed."""
    with contextlib.suppress(TimeoutError, ValueError, aiohttp.ClientError):
        async with asyncio.timeout(0.05):
            left = 1 << 16
            while left > 0 and not upstream.content.at_eof():
                data = await upstream.content.readany()
                if not data:
                    return
                left -= len(data)


__all__ = ["STREAMED", "STREAMS_CHOICES", "EventReader", "EventTooLarge", "Piece",
           "pending_start", "stream"]
