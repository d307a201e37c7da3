"""What every API family module provides (Art.4, Art.12, Art.14): where the text is in a request,
in an answer and in a stream event, and how a stream event is framed.

A `Slot` is one text in a decoded JSON document that the sidecar moderates and may mask in place.
A family module only finds slots and shapes documents; it does no I/O and decides nothing: the
decisions come from `hegui.moderation`, applied by the sidecar's request handler (non-streamed)
and its stream relay (`hegui.sidecar.streaming`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

#: Deeper JSON than this is refused before it is parsed (a 400, never a 500: Art.13's SLI).
MAX_JSON_DEPTH = 64
#: Nested tool inputs, schemas and tensors are walked to this depth, no deeper.
MAX_WALK_DEPTH = 32


class BodyError(ValueError):
    """A request (400) or an answer (502) that is not what its family says it is."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def invalid(message: str) -> BodyError:
    return BodyError("hegui.invalid_request", message)


def malformed(message: str) -> BodyError:
    return BodyError("hegui.upstream_malformed", message)


@dataclass(slots=True)
class Slot:
    """`container[key]` is a text to moderate, and to mask in place.

    `kind` says what the text is (content, reasoning, tool_arguments, refusal, name,
    description, template, logprobs, ...); `choice` which choice or candidate it belongs to, so
    that n > 1 choices are moderated (and streamed windows kept) one by one. An `aggregate` slot
    repeats text already streamed (TGI's final `generated_text`, the Responses API's `*.done`
    events): a stream relay sets it to the moderated text it sent, never relays it raw.
    A `probe` slot (kind `logprobs`) is a text made up for moderation only: any hit in it drops
    `owner[owner_key]` (the log probabilities) instead of blocking or masking the answer.
    """

    container: Any  # dict[str, Any] | list[Any]
    key: Any  # str | int
    kind: str = "content"
    choice: int = 0
    aggregate: bool = False
    owner: Any = None
    owner_key: Any = None

    @property
    def text(self) -> str:
        return str(self.container[self.key])

    def set(self, text: str) -> None:
        self.container[self.key] = text

    @property
    def probe(self) -> bool:
        return self.owner is not None

    def drop(self) -> bool:
        """Drop what a probe stands for; True when something was dropped."""
        if self.owner is not None and self.owner_key in self.owner:
            del self.owner[self.owner_key]
            return True
        return False


def text_slots(value: Any, container: Any, key: Any, *, kind: str = "content",
               choice: int = 0) -> list[Slot]:
    """The slots of a `content`: a string, or a list of parts that carry `text` (of any part
    type: text, input_text, output_text, ...), or nested `content` (tool results)."""
    if isinstance(value, str):
        return [Slot(container, key, kind, choice)]
    slots: list[Slot] = []
    if isinstance(value, list):
        for part in value:
            if isinstance(part, str):
                continue
            if not isinstance(part, dict):
                continue
            for name in ("text", "refusal", "thinking"):
                if isinstance(part.get(name), str):
                    slots.append(Slot(part, name, "refusal" if name == "refusal" else
                                      "reasoning" if name == "thinking" else kind, choice))
            if "content" in part:
                slots.extend(text_slots(part["content"], part, "content", kind=kind,
                                        choice=choice))
        slots.extend(Slot(value, i, kind, choice) for i, part in enumerate(value)
                     if isinstance(part, str))
    return slots


#: Content parts that carry images, audio, video or files. The sidecar moderates text only (its
#: posture has no image or audio classifier), so an input part of these is refused, never
#: passed on unmoderated (Art.14): text in an image would walk around every text rule.
MEDIA_TYPES = frozenset({"image_url", "image", "input_image", "input_audio", "audio",
                         "audio_url", "input_file", "file", "video", "video_url", "input_video"})
_MEDIA_KEYS = ("image_url", "input_audio", "audio_url", "video_url", "image", "file",
               "file_data", "file_id", "file_url")


def refuse_media(value: Any, where: str, depth: int = 0) -> None:
    """Refuse a content (a list of parts, nested `content` of tool results included) that
    carries a part the sidecar cannot moderate; the error names the field (Art.14)."""
    if not isinstance(value, list) or depth > MAX_WALK_DEPTH:
        return
    for position, part in enumerate(value):
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        media = kind if isinstance(kind, str) and kind in MEDIA_TYPES else next(
            (key for key in _MEDIA_KEYS if key in part), None)
        source = part.get("source")
        if media is None and kind == "document" and isinstance(source, dict) and \
                source.get("type") not in ("text", "content"):
            media = f"document ({source.get('type')})"
        if media is not None:
            raise BodyError(
                "hegui.input_not_moderated",
                f"{where}[{position}] is media ({media}): this sidecar moderates text only (no "
                "image, audio or file classifier in the service's posture), and nothing "
                "unmoderated reaches the model (Art.14); send text parts only")
        refuse_media(part.get("content"), f"{where}[{position}].content", depth + 1)


def string_leaves(value: Any, *, kind: str, choice: int = 0, depth: int = 0) -> list[Slot]:
    """Every string in a nested value (a tool call's input object, a tensor's data)."""
    if depth > MAX_WALK_DEPTH:
        raise invalid(f"a value nested deeper than {MAX_WALK_DEPTH} levels")
    slots: list[Slot] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str):
                slots.append(Slot(value, key, kind, choice))
            else:
                slots.extend(string_leaves(item, kind=kind, choice=choice, depth=depth + 1))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, str):
                slots.append(Slot(value, index, kind, choice))
            else:
                slots.extend(string_leaves(item, kind=kind, choice=choice, depth=depth + 1))
    return slots


def schema_descriptions(schema: Any, *, depth: int = 0) -> list[Slot]:
    """The `description` and `title` texts of a JSON schema (tool parameters), nested."""
    if depth > MAX_WALK_DEPTH:
        raise invalid(f"a tool schema nested deeper than {MAX_WALK_DEPTH} levels")
    slots: list[Slot] = []
    if isinstance(schema, dict):
        for key, item in schema.items():
            if key in ("description", "title") and isinstance(item, str):
                slots.append(Slot(schema, key, "description"))
            elif isinstance(item, (dict, list)):
                slots.extend(schema_descriptions(item, depth=depth + 1))
    elif isinstance(schema, list):
        for item in schema:
            slots.extend(schema_descriptions(item, depth=depth + 1))
    return slots


#: An RFC 3339 time (Ollama's `created_at`, new in every event): says nothing, not moderated.
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)")


def other_strings(value: Any, slots: list[Slot]) -> list[Slot]:
    """The strings of a decoded answer or event that none of `slots` covers: ids, model names,
    roles, and any field the model server adds that its API does not define. A client reads
    them too (the openai client keeps unknown fields), so they are moderated as well (Art.14).
    What a probe stands for (log probabilities) is left to the probe."""
    return [slot for _, slot in other_strings_at(value, slots)]


def other_strings_at(value: Any, slots: list[Slot]) -> list[tuple[tuple[Any, ...], Slot]]:
    """`other_strings`, each with its path (the keys and indices from `value` to it): a
    stream's events carry the same field at the same path, whose values a model can spell a
    text across (hegui.sidecar.streaming joins them)."""
    known = {(id(s.container), s.key) for s in slots if not s.probe}
    skipped = {id(s.owner[s.owner_key]) for s in slots
               if s.probe and isinstance(s.owner, dict) and s.owner_key in s.owner}
    found: list[tuple[tuple[Any, ...], Slot]] = []
    if type(value) is not dict and type(value) is not list:
        return found  # a bare string is the text itself, a number or null says nothing
    stack: list[tuple[Any, tuple[Any, ...]]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        if len(path) > MAX_JSON_DEPTH:
            raise malformed(f"a value nested deeper than {MAX_JSON_DEPTH} levels")
        pairs = item.items() if type(item) is dict else enumerate(item)
        for key, child in pairs:
            if type(child) is str:
                if child and (id(item), key) not in known and not _TIMESTAMP.fullmatch(child):
                    found.append(((*path, key), Slot(item, key, "field")))
            elif (type(child) is dict or type(child) is list) and id(child) not in skipped:
                stack.append((child, (*path, key)))
    return found


def field_slot(container: Any, key: str, kind: str, choice: int = 0) -> list[Slot]:
    """`container[key]` when it is a string."""
    if isinstance(container, dict) and isinstance(container.get(key), str):
        return [Slot(container, key, kind, choice)]
    return []


def probe(text: str, owner: Any, owner_key: Any, choice: int = 0) -> Slot:
    """A text made for moderation only; any hit drops `owner[owner_key]` (logprobs)."""
    holder = {"text": text}
    return Slot(holder, "text", "logprobs", choice, owner=owner, owner_key=owner_key)


def stream_flag(body: dict[str, Any], name: str, default: bool) -> bool:
    """The request's `name` flag (`stream`): true, false or absent (null: `default`). Any other
    value is refused: model servers coerce `1`, `"true"` or `"yes"` to a stream the sidecar
    would not expect, and the client's mistake must be a 400, never a 502 that counts against
    the service (Art.13)."""
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(f"{name} must be true or false, not {json.dumps(value)[:40]}")
    return value


def choice_index(choice: dict[str, Any], position: int) -> int:
    index = choice.get("index", position)
    return index if isinstance(index, int) and not isinstance(index, bool) else position


def too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a decoded JSON value nests deeper than `limit`: an explicit stack, no recursion,
    visiting containers only (a text-heavy body has few)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        for child in item.values() if type(item) is dict else item:
            if type(child) is dict or type(child) is list:
                stack.append((child, depth + 1))
    return False


def loads_bounded(raw: bytes, limit: int = MAX_JSON_DEPTH) -> Any:
    """`json.loads`, refusing nesting deeper than `limit` with a ValueError, never a
    RecursionError (a 400 for a request, not a 500 that would count against the service)."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise ValueError(f"JSON nested deeper than {limit} levels") from None
    # Nesting cannot exceed the number of brackets (counted in C): most bodies skip the walk.
    if raw.count(b"[") + raw.count(b"{") > limit and too_deep(value, limit):
        raise ValueError(f"JSON nested deeper than {limit} levels")
    return value


def sse(data: Any, event: str | None = None) -> bytes:
    """One Server-Sent Event carrying `data` as JSON."""
    head = f"event: {event}\n" if event else ""
    return (head + "data: " + json.dumps(data, ensure_ascii=False) + "\n\n").encode()


def ndjson(data: Any) -> bytes:
    """One newline-delimited JSON event (Ollama)."""
    return json.dumps(data, ensure_ascii=False).encode() + b"\n"


@dataclass
class Family:
    """An API family the sidecar fronts: how to find the text in its requests, answers and
    stream events, and how its streams are framed. Subclasses override what their API has.

    For streams (`hegui.sidecar.streaming` calls these; all pure):
    - `framing`: "sse" or "ndjson"; `done_marker`: bytes ending a stream (OpenAI's
      `data: [DONE]`), or None.
    - `chunk_slots(chunk)`: the text slots of one decoded stream event (ValueError when it is
      malformed); `scrub(chunk)`: drop what cannot be moderated per token (logprobs), say what.
    - `is_final(chunk)`: the event that ends the stream.
    - `encode(chunk, event)`: one event in the family's framing.
    - `cut_event(template, error)`: the final event telling the client why the stream stopped.
    """

    name: str
    framing: str = "sse"
    done_marker: bytes | None = None
    stream_field: str | None = "stream"  # the request field that asks for a stream
    streams: frozenset[str] = field(default_factory=frozenset)  # routes that always stream
    final_event_name: str | None = None  # the SSE `event:` of final_event (Anthropic, Responses)

    # --- requests --------------------------------------------------------------------------

    def input_slots(self, body: dict[str, Any]) -> list[Slot]:
        raise NotImplementedError

    def wants_stream(self, body: dict[str, Any], action: str = "") -> bool:
        """Whether this request asks for a streamed answer (`action`: the route's last segment,
        e.g. generate_stream)."""
        if action in self.streams:
            return True
        return self.stream_field is not None and stream_flag(body, self.stream_field, False)

    def choices_requested(self, body: dict[str, Any]) -> int:
        n = body.get("n", 1)
        return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1

    # --- answers ---------------------------------------------------------------------------

    def output_slots(self, body: Any) -> list[Slot]:
        raise NotImplementedError

    def answer_scrub(self, body: Any) -> list[str]:
        """Drop what an answer carries that cannot be moderated (token ids); say what."""
        return []

    def withhold_choice(self, body: Any, choice: int, error: dict[str, Any]) -> bool:
        """Replace one blocked choice of several with a content-filter end (n > 1); False
        when the family has no separate choices (the whole answer is withheld)."""
        return False

    # --- streams ---------------------------------------------------------------------------

    def chunk_slots(self, chunk: Any) -> list[Slot]:
        raise NotImplementedError

    def scrub(self, chunk: Any) -> list[str]:
        return []

    def is_final(self, chunk: Any) -> bool:
        """The decoded event that ends the stream (Ollama's `done: true`, ...)."""
        return False

    def is_done(self, data: str) -> bool:
        """An undecoded event that ends the stream (OpenAI's `[DONE]`)."""
        return self.done_marker is not None and data.strip() == "[DONE]"

    def finish_reason(self, chunk: Any) -> dict[int, Any]:
        """The finish reason this event gives, per choice index."""
        return {}

    def closes_text(self, chunk: Any) -> bool:
        """An event after which no more text of the content block comes (Anthropic's
        `content_block_stop`, the Responses API's `*.done`): the end label (Art.12) goes
        before it. Finish reasons and the final event close text in every family."""
        return False

    def encode(self, chunk: Any, event: str | None = None) -> bytes:
        return ndjson(chunk) if self.framing == "ndjson" else sse(chunk, event)

    def final_event(self, template: dict[str, Any], error: dict[str, Any]) -> Any:
        """The event (decoded) that tells the client why the stream stopped (Art.14)."""
        return {"error": error}

    def cut_event(self, template: dict[str, Any], error: dict[str, Any]) -> bytes:
        """`final_event`, framed, and the stream's end marker."""
        return (self.encode(self.final_event(template, error), self.final_event_name)
                + (self.done_marker or b""))


__all__ = ["MAX_JSON_DEPTH", "MEDIA_TYPES", "BodyError", "Family", "Slot", "choice_index",
           "field_slot", "invalid", "loads_bounded", "malformed", "ndjson", "other_strings",
           "probe", "refuse_media", "schema_descriptions", "sse", "stream_flag", "string_leaves",
           "text_slots", "too_deep"]
