"""Labels on generated text (Art.12, GB 45438-2025 §5 text): the explicit label in the text
people read, and the implicit AIGC label in the response metadata.

Covers plain text, OpenAI-compatible JSON (chat/completions and completions) and their
Server-Sent-Events streams. Pure functions, plus one small stateful class for streams.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from hegui.api.generativeservice import ExplicitLabel, LabelPosition
from hegui.labeling.metadata import AIGC_KEY, AigcLabel

#: The explicit label when the posture names none (the wording GB 45438-2025 gives as example).
DEFAULT_LABEL_TEXT = "人工智能生成"
#: Wordings verify recognises besides the configured one.
KNOWN_LABEL_TEXTS = ("人工智能生成", "AI生成", "由AI生成", "由人工智能生成", "AI-generated",
                     "AI generated")
SEPARATOR = "\n\n"
#: An SSE event larger than this is passed through unlabeled instead of buffered further.
MAX_EVENT_BYTES = 1 << 20

_START = {LabelPosition.START, LabelPosition.START_AND_END, LabelPosition.TOP_LEFT,
          LabelPosition.TOP_RIGHT}
_END = {LabelPosition.END, LabelPosition.START_AND_END, LabelPosition.BOTTOM_LEFT,
        LabelPosition.BOTTOM_RIGHT}


@dataclass(frozen=True)
class TextLabel:
    """What to add to one text output; `None` text means no explicit label."""

    text: str | None
    at_start: bool
    at_end: bool

    @classmethod
    def from_posture(cls, explicit: ExplicitLabel | None,
                     default_text: str = DEFAULT_LABEL_TEXT) -> TextLabel:
        """The posture's label; absent means the default wording at the end (as the API says)."""
        if explicit is None:
            return cls(default_text, at_start=False, at_end=True)
        if not explicit.enabled:
            return cls(None, at_start=False, at_end=False)
        return cls(explicit.text or default_text, at_start=explicit.position in _START,
                   at_end=explicit.position in _END)

    @property
    def prefix(self) -> str:
        return f"{self.text}{SEPARATOR}" if self.text and self.at_start else ""

    @property
    def suffix(self) -> str:
        return f"{SEPARATOR}{self.text}" if self.text and self.at_end else ""


def label_text(text: str, label: TextLabel) -> str:
    """Plain text with the explicit label at the posture's position(s)."""
    return f"{label.prefix}{text}{label.suffix}"


def explicit_label_positions(text: str, label_texts: tuple[str, ...] = KNOWN_LABEL_TEXTS
                             ) -> tuple[str | None, str | None]:
    """The label wording found at the start and at the end of `text` (whitespace ignored)."""
    stripped = text.strip()
    start = next((t for t in label_texts if stripped.startswith(t)), None)
    end = next((t for t in label_texts if stripped.endswith(t)), None)
    return start, end


# --- OpenAI-compatible JSON -----------------------------------------------------------------

def _label_choice(choice: Any, label: TextLabel) -> None:
    if not isinstance(choice, dict):
        return
    message = choice.get("message")
    if isinstance(message, dict) and isinstance(message.get("content"), str):
        message["content"] = label_text(message["content"], label)
    elif isinstance(choice.get("text"), str):     # completions
        choice["text"] = label_text(choice["text"], label)


def label_response(body: dict[str, Any], label: TextLabel, aigc: AigcLabel) -> dict[str, Any]:
    """A chat/completions or completions response with every choice labeled and the implicit
    label added as the top-level `AIGC` field. Choices without text (tool calls only) keep
    their content: nobody reads them as generated prose. The input is not modified."""
    labeled = json.loads(json.dumps(body))
    choices = labeled.get("choices")
    if isinstance(choices, list):
        for choice in choices:
            _label_choice(choice, label)
    labeled[AIGC_KEY] = aigc.to_dict()
    return dict(labeled)


def label_response_bytes(data: bytes, label: TextLabel, aigc: AigcLabel) -> bytes | None:
    """`label_response` on the wire form; `None` when the body is not a JSON object (the caller
    passes it through and flags it)."""
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict):
        return None
    return json.dumps(label_response(body, label, aigc), ensure_ascii=False).encode()


def response_text(body: dict[str, Any]) -> list[str]:
    """The text of each choice of a (non-streamed) response."""
    texts: list[str] = []
    for choice in body.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            texts.append(message["content"])
        elif isinstance(choice.get("text"), str):
            texts.append(choice["text"])
    return texts


# --- Server-Sent Events ---------------------------------------------------------------------

_EVENT_END = re.compile(rb"\r?\n\r?\n")


@dataclass
class StreamLabeler:
    """Labels a streamed chat/completions or completions response, fed in arbitrary pieces.

    The start label goes into each choice's first content chunk; the end label is sent as an
    extra chunk just before the chunk that finishes the choice, or before `data: [DONE]` when
    no chunk does. The implicit label rides on the first and the label chunks as `AIGC`.
    Anything that is not a JSON `data:` event passes through unchanged.
    """

    label: TextLabel
    aigc: AigcLabel
    flags: set[str] = field(default_factory=set)
    _buffer: bytes = b""
    _started: set[int] = field(default_factory=set)
    _ended: set[int] = field(default_factory=set)
    _seen: set[int] = field(default_factory=set)
    _template: dict[str, Any] | None = None
    _aigc_sent: bool = False
    _done: bool = False

    def feed(self, data: bytes) -> bytes:
        """The labeled bytes that can be sent now; the rest waits for the event's end."""
        self._buffer += data
        out: list[bytes] = []
        while True:
            match = _EVENT_END.search(self._buffer)
            if match is None:
                break
            event, self._buffer = self._buffer[:match.start()], self._buffer[match.end():]
            out.append(self._event(event) + match.group(0))
        if len(self._buffer) > MAX_EVENT_BYTES:
            # Bounded memory beats a complete label: pass the oversized event on, flagged.
            out.append(self._buffer)
            self._buffer = b""
            self.flags.add("oversized-event")
        return b"".join(out)

    def close(self) -> bytes:
        """The rest of the stream at its end: pending bytes and any end label not yet sent."""
        rest, self._buffer = self._buffer, b""
        out = self._event(rest) + b"\n\n" if rest.strip() else rest
        if not self._done:
            out += self._end_labels()
        return out

    def _event(self, event: bytes) -> bytes:
        lines = event.split(b"\n")
        data_lines = [line for line in lines if line.startswith(b"data:")]
        if len(data_lines) != 1:
            return event
        payload = data_lines[0][5:].strip()
        if payload == b"[DONE]":
            self._done = True
            return self._end_labels() + event
        try:
            chunk = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            return event
        if not isinstance(chunk, dict) or not isinstance(chunk.get("choices"), list):
            return event
        prefix = b""
        changed = False
        for choice in chunk["choices"]:
            if not isinstance(choice, dict) or not isinstance(choice.get("index", 0), int):
                continue
            index = int(choice.get("index", 0))
            if self._template is None:
                self._template = {k: chunk[k] for k in ("id", "object", "created", "model")
                                  if k in chunk}
            self._seen.add(index)
            changed |= self._start_label(choice, index)
            if choice.get("finish_reason") and index not in self._ended:
                # A finishing chunk that still carries text (a proxy that re-chunks sends the
                # last window and the finish together) gets the label after that text; an
                # empty one is preceded by a label chunk.
                if self._append_end_label(choice, index):
                    changed = True
                else:
                    prefix += self._end_label(index)
        if not self._aigc_sent:
            chunk[AIGC_KEY] = self.aigc.to_dict()
            self._aigc_sent = changed = True
        if not changed:
            return prefix + event
        rest = [line for line in lines if not line.startswith(b"data:")]
        encoded = b"data: " + json.dumps(chunk, ensure_ascii=False).encode()
        return prefix + b"\n".join([*rest, encoded])

    def _start_label(self, choice: dict[str, Any], index: int) -> bool:
        if index in self._started or not self.label.prefix:
            return False
        delta = choice.get("delta")
        if isinstance(delta, dict) and isinstance(delta.get("content"), str):
            delta["content"] = self.label.prefix + delta["content"]
        elif isinstance(choice.get("text"), str):
            choice["text"] = self.label.prefix + choice["text"]
        else:
            return False
        self._started.add(index)
        return True

    def _append_end_label(self, choice: dict[str, Any], index: int) -> bool:
        if not self.label.suffix:
            return False
        delta = choice.get("delta")
        if isinstance(delta, dict) and isinstance(delta.get("content"), str) and delta["content"]:
            delta["content"] += self.label.suffix
        elif isinstance(choice.get("text"), str) and choice["text"]:
            choice["text"] += self.label.suffix
        else:
            return False
        self._ended.add(index)
        return True

    def _end_label(self, index: int) -> bytes:
        self._ended.add(index)
        if not self.label.suffix:
            return b""
        chunk = dict(self._template or {})
        if chunk.get("object") == "text_completion":
            choice: dict[str, Any] = {"index": index, "text": self.label.suffix,
                                      "finish_reason": None}
        else:
            choice = {"index": index, "delta": {"content": self.label.suffix},
                      "finish_reason": None}
        chunk["choices"] = [choice]
        chunk[AIGC_KEY] = self.aigc.to_dict()
        return b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"

    def _end_labels(self) -> bytes:
        return b"".join(self._end_label(i) for i in sorted(self._seen - self._ended))


def label_stream(data: bytes, label: TextLabel, aigc: AigcLabel) -> bytes:
    """A whole SSE body, labeled (for tests and for buffered proxies)."""
    labeler = StreamLabeler(label, aigc)
    return labeler.feed(data) + labeler.close()


@dataclass
class StreamContent:
    """What a streamed response said, reassembled: text per choice and the AIGC payloads."""

    texts: dict[int, str] = field(default_factory=dict)
    aigc: list[dict[str, Any]] = field(default_factory=list)
    events: int = 0


def read_stream(data: bytes) -> StreamContent:
    """Reassemble an SSE chat/completions or completions stream (used by verify)."""
    content = StreamContent()
    for event in _EVENT_END.split(data):
        for line in event.splitlines():
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                continue
            try:
                chunk = json.loads(payload)
            except (ValueError, UnicodeDecodeError):
                continue
            if not isinstance(chunk, dict):
                continue
            content.events += 1
            if isinstance(chunk.get(AIGC_KEY), dict):
                content.aigc.append(chunk[AIGC_KEY])
            for choice in chunk.get("choices") or []:
                if not isinstance(choice, dict):
                    continue
                index = choice.get("index", 0)
                index = index if isinstance(index, int) else 0
                delta = choice.get("delta")
                piece = delta.get("content") if isinstance(delta, dict) else choice.get("text")
                if isinstance(piece, str):
                    content.texts[index] = content.texts.get(index, "") + piece
    return content
