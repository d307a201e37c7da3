"""The texts of a metadata request or answer (model lists, health, an Ollama model card, the
model server's own Prometheus metrics), to moderate and mask (Art.4, Art.14).

The application team runs the model server, so a "harmless" metadata answer is whatever it
writes: `GET /v1/models/<a prompt>` answered with generated text would reach its clients around
moderation. So metadata is moderated both ways like generation, at a bounded cost (it is rare):

- JSON: every string, keys included (a key is text a client reads too), once per distinct string;
- Prometheus / OpenMetrics exposition (`/hegui/model/metrics`): per line, the text before the
  sample's value (metric name, label names and values) and every comment or HELP line whole; the
  value and timestamp are numbers and stay as they are, so a counter that happens to read like a
  phone number is not masked into a series Prometheus cannot parse;
- any other text: the text whole, decoded in its declared charset (strictly: a body that is not
  what it says it is is refused, never moderated as replacement characters a client would read
  otherwise).

A text that is masked is masked the same wherever it occurs. Nothing here labels: Art.12 labels
generated content, and a model list or a health answer is not one.
"""

from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass
from typing import Any

from hegui.moderation.decision import Decision
from hegui.moderation.pii import mask
from hegui.sidecar.families.base import MAX_JSON_DEPTH, too_deep

#: The most of a metadata answer the sidecar reads, moderates and relays: a model card or a
#: metrics page of a large server is a few hundred kilobytes; more is refused, not buffered.
MAX_METADATA_BYTES = 4 << 20

#: The content types of the Prometheus text formats.
EXPOSITION_TYPES = frozenset({"application/openmetrics-text"})
# A sample line: name, optional labels, then the value and an optional timestamp (numbers).
_SAMPLE = re.compile(r"(?P<text>[a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^\n]*\})?)"
                     r"(?P<tail>[ \t]+\S+(?:[ \t]+\S+)?[ \t]*)")


class NotModerable(ValueError):
    """A body whose texts cannot be read as the client would read them."""


def _number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


@dataclass
class Document:
    """A body as texts: `texts` (distinct, non-empty) to moderate, `render` with masks."""

    kind: str  # json, exposition, text
    charset: str
    value: Any = None  # json: the decoded value
    lines: list[tuple[str, str]] | None = None  # exposition: (text, numeric tail)
    text: str = ""  # text

    @property
    def texts(self) -> list[str]:
        if self.kind == "text":
            return [self.text] if self.text else []
        if self.kind == "exposition":
            assert self.lines is not None
            return list(dict.fromkeys(t for t, _ in self.lines if t))
        found: dict[str, None] = {}
        stack = [self.value]
        while stack:
            item = stack.pop()
            if type(item) is str:
                if item:
                    found[item] = None
            elif type(item) is dict:
                for key, child in item.items():
                    if key:
                        found[key] = None
                    stack.append(child)
            elif type(item) is list:
                stack.extend(item)
        return list(found)

    def render(self, masked: dict[str, str]) -> bytes:
        """The body with every text in `masked` replaced by its masked form."""
        if self.kind == "text":
            out = masked.get(self.text, self.text)
        elif self.kind == "exposition":
            assert self.lines is not None
            out = "\n".join(masked.get(t, t) + tail for t, tail in self.lines)
        else:
            out = json.dumps(_replaced(self.value, masked), ensure_ascii=False)
            try:
                return out.encode(self.charset)
            except UnicodeEncodeError:  # a lone surrogate (`\\ud800`): escaped, as it came
                out = json.dumps(_replaced(self.value, masked))
        return out.encode(self.charset)


def _replaced(value: Any, masked: dict[str, str]) -> Any:
    if type(value) is str:
        return masked.get(value, value)
    if type(value) is dict:
        return {masked.get(k, k): _replaced(v, masked) for k, v in value.items()}
    if type(value) is list:
        return [_replaced(v, masked) for v in value]
    return value


def _exposition(text: str) -> list[tuple[str, str]]:
    lines: list[tuple[str, str]] = []
    for line in text.split("\n"):
        found = None if line.startswith("#") else _SAMPLE.fullmatch(line)
        if found is not None and all(_number(v) for v in found.group("tail").split()):
            lines.append((found.group("text"), found.group("tail")))
        else:  # HELP, TYPE, comments, anything else: the line is text
            lines.append((line, ""))
    return lines


def document(data: bytes, mime: str, charset: str | None, *, exposition: bool = False
             ) -> Document:
    """The texts of a body of type `mime` (NotModerable when they cannot be read as a client
    would read them)."""
    name = charset or "utf-8"
    try:
        codecs.lookup(name)
        text = data.decode(name)
    except (LookupError, UnicodeDecodeError):
        raise NotModerable(f"the body is not text in its charset ({name})") from None
    if exposition or mime in EXPOSITION_TYPES:
        return Document("exposition", name, lines=_exposition(text))
    try:
        value = json.loads(text)
    except RecursionError:
        raise NotModerable(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError:
        return Document("text", name, text=text)
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and too_deep(value):
        raise NotModerable(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return Document("json", name, value=value)


def masks(texts: list[str], decisions: list[Decision]) -> dict[str, str]:
    """The masked form of each text a decision masks."""
    return {text: mask(text, [(s.start, s.end) for s in decision.mask_spans])
            for text, decision in zip(texts, decisions, strict=True) if decision.mask_spans}


__all__ = ["EXPOSITION_TYPES", "MAX_METADATA_BYTES", "Document", "NotModerable", "document",
           "masks"]
