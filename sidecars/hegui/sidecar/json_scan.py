"""An answer's JSON strings, found as its bytes arrive (Art.4, Art.14): for the non-generative
routes (embeddings, tokenize), whose answers can be far larger than anything the sidecar should
buffer (a batch of 2,048 embeddings is over 100 MB of numbers) but are written by the
application team's model server, which could put any text in them.

The scanner does not parse: it finds each string (keys too) between its quotes, decodes it as a
JSON parser would, and hands every other byte through as it came, so numbers are never
re-encoded. What lies between strings may hold only the bytes JSON allows there (digits, the
letters of `true`, `false`, `null`, `NaN`, `Infinity` and exponents, punctuation, whitespace):
other text outside a string (a Chinese word, say) makes the answer malformed. Memory: the string
being read (bounded) and what the caller holds while it moderates one read's strings.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

#: Bytes JSON allows outside strings (numbers, literals, punctuation, whitespace), and the
#: letters of `NaN` and `Infinity`, which Python's encoder writes for such floats.
_OUTSIDE = b" \t\r\n0123456789+-.eE[]{},:truefalsnNaIity"
#: The words JSON (and Python's encoder) allows outside strings: its literals, and an exponent.
#: Any other run of the letters above (`_OUTSIDE` lets `satire` through letter by letter) is
#: text outside a string, which a lenient client could show.
_WORD = re.compile(rb"[A-Za-z]+")
_WORDS = (b"true", b"false", b"null", b"NaN", b"Infinity", b"e", b"E")
#: A base64 string (the `embedding` of `encoding_format: base64`): packed numbers, not text.
_BASE64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}")


class Malformed(ValueError):
    """The answer is not JSON (text outside a string, a string that does not decode, one
    longer than the bound)."""


@dataclass
class String:
    """One JSON string of the answer: its bytes as sent (quotes included) and its text."""

    raw: bytes
    text: str
    key: str | None  # the key it is the value of, if any
    numbers: bool = False  # base64-packed numbers (`embedding`): passed as numbers are


class Scanner:
    def __init__(self, max_string: int) -> None:
        self.max_string = max_string
        self.partial = b""  # the string being read, from its opening quote
        self.scan = 0  # where in `partial` to look for its closing quote
        self.between = b""  # what came between the last string and now, stripped (2 bytes)
        self.last: str | None = None  # the last string's text, if short (a possible key)
        self.word = b""  # a literal's letters cut off by the end of the last read

    @property
    def inside(self) -> bool:
        return bool(self.partial)

    def feed(self, data: bytes) -> list[bytes | String]:
        """The answer's next bytes, as parts: bytes to send as they are, and strings."""
        parts: list[bytes | String] = []
        start = -1  # where the string being read opens, in `data`
        if self.partial:
            data, self.partial, start = self.partial + data, b"", 0
        at = 0
        while at < len(data):
            if start < 0:
                quote = data.find(b'"', at)
                end = len(data) if quote < 0 else quote
                if end > at or self.word:
                    outside = data[at:end]
                    if outside.translate(None, _OUTSIDE):
                        raise Malformed("text outside a JSON string")
                    self._words(outside, complete=quote >= 0)
                    if len(self.between) < 2:
                        self.between = (self.between + outside.strip())[:2]
                    parts.append(outside)
                if quote < 0:
                    break
                start, self.scan = quote, quote + 1
            close = data.find(b'"', self.scan)
            while close >= 0 and _escaped(data, close):
                close = data.find(b'"', close + 1)
            if close < 0:
                if len(data) - start > self.max_string:
                    raise Malformed(f"a string longer than {self.max_string} bytes")
                self.partial, self.scan = data[start:], len(data) - start
                break
            raw = data[start:close + 1]
            try:
                text = json.loads(raw)
            except ValueError as bad:  # UTF-8, escapes
                raise Malformed(f"a string that does not decode: {bad}") from None
            key = self.last if self.between == b":" else None
            numbers = key == "embedding" and len(raw) % 4 == 2 and bool(
                _BASE64.fullmatch(raw, 1, len(raw) - 1))
            parts.append(String(raw, text, key, numbers))
            self.last = text if len(text) <= 64 else None
            self.between = b""
            at, start = close + 1, -1
        return parts

    def _words(self, outside: bytes, *, complete: bool) -> None:
        """Check the words outside strings; a word the read's end may cut off (`complete`
        false) need only begin a literal, and is finished with the next read."""
        text, self.word = self.word + outside, b""
        for match in _WORD.finditer(text):
            word = match.group()
            if match.end() == len(text) and not complete:
                if not any(literal.startswith(word) for literal in _WORDS):
                    raise Malformed("text outside a JSON string")
                self.word = word
            elif word not in _WORDS:
                raise Malformed("text outside a JSON string")

    def finish(self) -> None:
        if self.partial:
            raise Malformed("the answer ends inside a string")
        if self.word:
            self._words(b"", complete=True)


def _escaped(data: bytes, quote: int) -> bool:
    """Whether the quote at `quote` is escaped (an odd run of backslashes before it)."""
    run = 0
    while data[quote - 1 - run] == 0x5C:  # never past the opening quote: it is no backslash
        run += 1
    return run % 2 == 1
