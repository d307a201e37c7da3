"""An answer's JSON strings, found as its bytes arrive (Art.4, Art.14): for the non-generative
routes (embeddings, tokenize), whose answers can be far larger than anything the sidecar should
buffer (a batch of 2,048 embeddings is over 100 MB of numbers) but are written by the
application team's model server, which could put any text in them.

The scanner does not parse: it finds each string (keys too) between its quotes, decodes it as a
JSON parser would, and hands every other byte through as it came, so numbers are never
re-encoded. What lies between strings may hold only the bytes JSON allows there (digits, the
letters of `true`, `false`, `null`, `NaN`, `Infinity` and exponents, punctuation, whitespace):
other text outside a string (a Chinese word, say) makes the answer malformed, as do a string
where JSON allows none, brackets that do not match and nesting deeper than MAX_DEPTH (the
scanner follows the nesting to place each string: a key, or a value and its path). Memory: the
string being read (bounded), what `Runs` holds (at most HOLD_BYTES past one read) and what the
caller holds while it moderates one read's strings.

A model can spell a text across strings (`token_strs: ["制作", "炸弹"]`, an array of short
strings, the same field of consecutive embeddings), each piece clean alone. `Runs` moderates the
text the answer spells: the string values (never keys: they are the answer's schema, moderated
one by one) as running texts, with the streaming path's rules (hegui.sidecar.streaming): each
run is scored with the tail of what was already moderated of it (`stream_overlap_chars`), and a
trailing run that may still become personal information (`pending_start`) is held, with every
byte after it, until the next string of its run decides it (at most `HOLD_BYTES`). Two runs a
value belongs to:

- the answer's values in document order (a text split over sibling fields, over consecutive
  arrays), and
- the values at the same path, array indices left out (`data[*].note`, `token_strs[*]`): a
  text split over one field of consecutive items, whatever other fields lie between (the
  `"object": "embedding"` of each item would break the first run).

Joining is what creates false positives, so it is kept to values: keys joined with values, or
with each other, spell schema words (`objectembeddingindex`) no client shows; values are what a
client shows. Numbers never join (they are not text), nor does a base64 `embedding`: text packed
in it cannot be told from float32 noise (README, the data path's limits).

The semantics are Hold's, whatever the posture's streaming mode: a JSON client shows nothing
before the whole body parses, so sending ahead of moderation earns no earlier text. Until
something went out, a pending run holds the whole answer (within HOLD_BYTES), not only what
follows it, so a text the next strings complete withholds the answer (451). A prohibited text
completed by a later read, after its first pieces went out, cuts the answer (the client's read
fails: what it got never parses), as a stream is cut; so does a mask that would reach text
already sent.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hegui.moderation.pii import PENDING_LIMIT, mask
from hegui.sidecar.streaming import pending_start

if TYPE_CHECKING:
    from hegui.moderation.decision import Decision

# A string's text: orjson when installed (the sidecar extra installs it: a tenth of json's
# time a string, and a tokenize answer is mostly strings), else the standard library.
_loads: Callable[[bytes], Any]
try:
    from orjson import loads as _loads
except ImportError:  # pragma: no cover
    _loads = json.loads

#: Bytes JSON allows outside strings (numbers, literals, punctuation, whitespace), and the
#: letters of `NaN` and `Infinity`, which Python's encoder writes for such floats.
_OUTSIDE = b" \t\r\n0123456789+-.eE[]{},:truefalsnNaIity"
#: The words JSON (and Python's encoder) allows outside strings: its literals, and an exponent.
#: Any other run of the letters above (`_OUTSIDE` lets `satire` through letter by letter) is
#: text outside a string, which a lenient client could show.
_WORD = re.compile(rb"[A-Za-z]+")
_WORDS = (b"true", b"false", b"null", b"NaN", b"Infinity", b"e", b"E")
_NOT_LETTERS = bytes(b for b in range(256) if not chr(b).isascii() or not chr(b).isalpha())
_DOUBLE_E = (b"ee", b"eE", b"Ee", b"EE")
#: A base64 string (the `embedding` of `encoding_format: base64`): packed numbers, not text.
_BASE64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
#: Every byte but JSON's brackets, deleted to find the nesting of what lies between strings in
#: one C pass (a 100 MB array of numbers holds two).
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPEN = {0x5D: 0x5B, 0x7D: 0x7B}  # a closing bracket and its opening one
#: Nesting deeper than this is no answer a model server writes (and bounds the scan's work).
MAX_DEPTH = 64
#: Characters of a key kept as a path's step (runs are told apart by them, not stored whole).
_STEP = 64


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
    is_key: bool = False  # a member's key (else a value: of a member, an item, the document)
    path: tuple[str, ...] = ()  # keys from the document to it, "*" for an array's items


class Scanner:
    def __init__(self, max_string: int) -> None:
        self.max_string = max_string
        self.partial = bytearray()  # the string being read, from its opening quote
        self.scan = 0  # where in `partial` to look for its closing quote
        self.word = b""  # a literal's letters cut off by the end of the last read
        # The open containers: their bracket and step (an object's current key, "*" for an
        # array), and the last byte that is not whitespace outside strings (what the next
        # string is: a key after `{` or an object's `,`, a value after `:`, an item).
        self.stack: list[list[Any]] = []
        self.mark = b""

    @property
    def inside(self) -> bool:
        return bool(self.partial)

    def feed(self, data: bytes) -> list[bytes | String]:
        """The answer's next bytes, as parts: bytes to send as they are, and strings."""
        parts: list[bytes | String] = []
        start = -1  # where the string being read opens, in `data`
        if self.partial:
            # A long string that arrives over many reads is appended to, never copied whole
            # again each read (a model that drips a string would make that quadratic).
            partial = self.partial
            partial += data
            close = partial.find(b'"', self.scan)
            while close >= 0 and _escaped(partial, close):
                close = partial.find(b'"', close + 1)
            if close < 0:
                if len(partial) > self.max_string:
                    raise Malformed(f"a string longer than {self.max_string} bytes")
                self.scan = len(partial)
                return parts
            raw, data, self.partial = bytes(partial[:close + 1]), bytes(partial[close + 1:]), \
                bytearray()
            parts.append(self._string(raw, _decode(raw)))
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
                    if brackets := outside.translate(None, _NOT_BRACKETS):
                        self._nest(brackets)
                    if tail := outside.rstrip(b" \t\r\n"):
                        self.mark = tail[-1:]
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
                self.partial, self.scan = bytearray(data[start:]), len(data) - start
                break
            raw = data[start:close + 1]
            parts.append(self._string(raw, _decode(raw)))
            at, start = close + 1, -1
        return parts

    def _string(self, raw: bytes, text: str) -> String:
        """The string, placed: a key, or a value and its path; a string where JSON allows none
        (after another string, a number) makes the answer malformed."""
        mark, stack = self.mark, self.stack
        self.mark = b'"'
        top = stack[-1] if stack else None
        if top is not None and top[0] == 0x7B:  # in an object
            if mark in (b"{", b","):
                top[1] = text[:_STEP]
                return String(raw, text, None, is_key=True)
            if mark != b":":
                raise Malformed("a string where JSON allows none")
            key: str | None = top[1]
        elif mark in ((b"[", b",") if top is not None else (b"",)):
            key = None
        else:
            raise Malformed("a string where JSON allows none")
        numbers = key == "embedding" and len(raw) % 4 == 2 and bool(
            _BASE64.fullmatch(raw, 1, len(raw) - 1))
        return String(raw, text, key, numbers, path=tuple([step for _, step in stack]))

    def _nest(self, brackets: bytes) -> None:
        """Follow the nesting through the brackets of what lies between two strings: pairs
        that open and close there are dropped first (C passes, at most MAX_DEPTH), so an
        array of arrays costs no Python loop per bracket."""
        for _ in range(MAX_DEPTH + 1):
            if len(brackets) <= 8:
                break
            shorter = brackets.replace(b"[]", b"").replace(b"{}", b"")
            if len(shorter) == len(brackets):
                break
            brackets = shorter
        stack = self.stack
        for byte in brackets:
            if byte in _OPEN:
                if not stack or stack[-1][0] != _OPEN[byte]:
                    raise Malformed("brackets that do not match")
                stack.pop()
            elif len(stack) < MAX_DEPTH:
                stack.append([byte, "*" if byte == 0x5B else ""])
            else:
                raise Malformed(f"nested deeper than {MAX_DEPTH} levels")

    def _words(self, outside: bytes, *, complete: bool) -> None:
        """Check the words outside strings; a word the read's end may cut off (`complete`
        false) need only begin a literal, and is finished with the next read."""
        letters = outside.translate(None, _NOT_LETTERS)
        if not self.word and (not letters or (not letters.translate(None, b"eE") and not any(
                double in outside for double in _DOUBLE_E))):
            # The common case (numbers, exponents and punctuation): no word to look at, one C
            # pass instead of the regular expression's walk over every byte.
            if not complete and outside[-1:] in (b"e", b"E"):
                self.word = outside[-1:]
            return
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
        if self.stack:
            raise Malformed("the answer ends inside an array or an object")
        if self.word:
            self._words(b"", complete=True)


def _decode(raw: bytes) -> str:
    """A string's text, as a JSON parser reads it."""
    try:
        text: str = _loads(raw)
    except ValueError:
        try:  # what orjson refuses and json takes (a lone surrogate's escape)
            text = json.loads(raw)
        except ValueError as bad:  # UTF-8, escapes, control characters
            raise Malformed(f"a string that does not decode: {bad}") from None
    return text


def _escaped(data: bytes | bytearray, quote: int) -> bool:
    """Whether the quote at `quote` is escaped (an odd run of backslashes before it)."""
    run = 0
    while data[quote - 1 - run] == 0x5C:  # never past the opening quote: it is no backslash
        run += 1
    return run % 2 == 1


# --- the text an answer spells across its strings ----------------------------------------------

#: Bytes held behind a run that may still become personal information, at most: beyond, what is
#: held goes out as it is (scanned as it is, as a stream's queue is), and a mask that would then
#: reach text already sent cuts the answer.
HOLD_BYTES = 1 << 16
#: Parts held, at most (a run of PENDING_LIMIT characters spans fewer): each read looks at what
#: is held again, so a model that drips a byte a read costs a bounded amount a byte.
HOLD_PARTS = 512
#: Runs kept (one a path); the values of any further path join one run of their own.
MAX_RUNS = 256
_DOCUMENT: tuple[str, ...] = ("",)  # the run of every value in document order
_OTHERS: tuple[str, ...] = ("", "")  # the run of the paths beyond MAX_RUNS


@dataclass
class _Run:
    run: tuple[str, ...]
    text: str  # what is moderated: the run's context and its released strings
    shift: int  # the context's length
    pieces: list[tuple[String, int]]  # each string and where it starts in `text`


@dataclass
class Batch:
    """What of an answer may go out now (`parts`, in order), once `texts` are moderated:
    each run's context and new strings as one text, each key alone."""

    parts: list[bytes | String]
    texts: list[str]
    runs: list[_Run]
    keys: list[String]
    masks: dict[int, list[tuple[int, int]]] = field(default_factory=dict)

    def mask(self, verdicts: dict[str, Decision]) -> tuple[list[Decision], bool]:
        """Mask, in the strings' own bytes, what the verdicts say to mask (Art.4(4)): each
        string stays a string where it was, its characters masked one for one, so the answer
        keeps its shape and stays JSON. The decisions that masked, and whether a mask reaches
        text already sent (the answer must then be cut: it cannot be masked any more)."""
        masked: list[Decision] = []
        late = False
        strings: dict[int, String] = {}
        for run in self.runs:
            decision = verdicts[run.text]
            spans = [(s.start - run.shift, s.end - run.shift) for s in decision.mask_spans
                     if s.end > run.shift]
            if not spans:
                continue
            masked.append(decision)
            late = late or any(start < 0 for start, _ in spans)
            for string, at in run.pieces:
                local = [(max(a - at, 0), min(b - at, len(string.text))) for a, b in spans
                         if b > at and a < at + len(string.text)]
                if local:
                    strings[id(string)] = string
                    self.masks.setdefault(id(string), []).extend(local)
        for key in self.keys:
            if spans := [(s.start, s.end) for s in verdicts[key.text].mask_spans]:
                masked.append(verdicts[key.text])
                strings[id(key)] = key
                self.masks.setdefault(id(key), []).extend(spans)
        for ident, string in strings.items():
            string.raw = json.dumps(mask(string.text, self.masks[ident]),
                                    ensure_ascii=False).encode()
        return masked, late


def _pending(text: str) -> int:
    """`pending_start(text)`, from its last characters (all it looks at), remembered: a run's
    tail repeats from read to read (`"object": "embedding"` in every item)."""
    tail = text[-_TAIL:]
    return len(text) - len(tail) + _pending_tail(tail)


_TAIL = PENDING_LIMIT + 2
_pending_tail = functools.lru_cache(maxsize=1024)(pending_start)


def _byte_level() -> dict[str, int]:
    """GPT-2's byte-level alphabet (Llama 3, Qwen, GPT-2 and other BPE tokenizers): every byte
    as a printable character, so a token string of Chinese text reads `åĪ¶ä½ľ` and a space
    `Ġ`."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = {chr(b): b for b in printable}
    shifted = 0
    for byte in range(256):
        if byte not in printable:
            chars[chr(0x100 + shifted)] = byte
            shifted += 1
    return chars


_BYTE_LEVEL = _byte_level()
_BYTE_LEVEL_RUN = re.compile("[" + "".join(re.escape(c) for c in _BYTE_LEVEL) + "]+")
_NOT_PLAIN = re.compile("[\u0080-\u0143]|<0x[0-9A-Fa-f]{2}>")  # where tokens may hide bytes
_BYTE_FALLBACK = re.compile("(?:<0x[0-9A-Fa-f]{2}>)+")  # SentencePiece's byte tokens


def token_text(text: str) -> str | None:
    """The text that token strings spell, when they are a tokenizer's bytes rather than text:
    GPT-2's byte-level characters (`åĪ¶ä½ľ` is 制作) or SentencePiece's byte-fallback
    tokens (`<0xE5><0x88><0xB6>`), decoded as UTF-8 as a tokenizer decodes them; None when the
    text has neither (the common case, one search). vLLM's `token_strs` are in this form for
    most models, and a client decodes it with the tokenizer's own table: moderated too, for
    what it blocks (a mask cannot be mapped back through the bytes)."""
    if _NOT_PLAIN.search(text) is None:
        return None

    def byte_level(match: re.Match[str]) -> str:
        return bytes([_BYTE_LEVEL[c] for c in match.group()]).decode("utf-8", "replace")

    def fallback(match: re.Match[str]) -> str:
        return bytes.fromhex(match.group().replace("<0x", "").replace(">", "")).decode(
            "utf-8", "replace")

    decoded = _BYTE_LEVEL_RUN.sub(byte_level, _BYTE_FALLBACK.sub(fallback, text))
    return decoded if decoded != text else None


class Runs:
    """The running texts of one answer (module docstring): `take` each read's parts, moderate
    the batch's texts, `Batch.mask`, then `commit` what went out."""

    def __init__(self, overlap: int, hold_bytes: int = HOLD_BYTES) -> None:
        self.overlap, self.hold_bytes = overlap, hold_bytes
        self.context: dict[tuple[str, ...], str] = {}
        self.held: list[bytes | String] = []
        self.started = False  # something went out
        self.alias: tuple[str, ...] | None = None  # a path run that is the document's (`take`)

    def take(self, parts: list[bytes | String], *, final: bool) -> Batch:
        """The parts that may go out once moderated: all but those from a string where a run's
        trailing characters may still become personal information (`pending_start`, the
        streaming path's rule), held with what follows them until the next read (at most
        `hold_bytes`; all of them when `final`)."""
        if self.held:
            parts = self.held + parts
        values = [(index, part) for index, part in enumerate(parts) if type(part) is String
                  and not part.is_key and not part.numbers and part.text]
        runs: dict[tuple[str, ...], list[tuple[int, String]]] = {}
        if values:
            runs[_DOCUMENT] = values
            by_path: dict[tuple[str, ...], list[tuple[int, String]]] = {}
            for value in values:
                path = value[1].path
                if (pieces := by_path.get(path)) is None:
                    if path not in self.context and len(self.context) + len(by_path) > MAX_RUNS:
                        path = _OTHERS
                    pieces = by_path.setdefault(path, [])
                pieces.append(value)
            context = self.context.get(_DOCUMENT, "")
            for path, pieces in by_path.items():
                # One path only, its context the document's: the same run (a tokenize answer).
                if len(pieces) != len(values) or self.context.get(path, "") != context:
                    runs[path] = pieces
                else:
                    self.alias = path
        texts = {run: [s.text for _, s in pieces] for run, pieces in runs.items()}
        limit = len(parts)
        if not final:
            for run, pieces in runs.items():
                context = self.context.get(run, "")
                text = context + "".join(texts[run][-_TAIL:])
                start = _pending(text) - len(text)  # from the end: <0 when pending
                if start >= 0:
                    continue
                at = 0
                for index, string in reversed(pieces):
                    at -= len(string.text)
                    if at <= start:
                        limit = min(limit, index)
                        break
                else:
                    limit = min(limit, pieces[0][0])  # the run began in what went out
            if limit < len(parts):
                if len(parts) - limit > HOLD_PARTS or sum(
                        [len(p) if isinstance(p, bytes) else len(p.raw)
                         for p in parts[limit:]]) > self.hold_bytes:
                    limit = len(parts)  # held too long: scanned as it is
                elif not self.started:
                    # Nothing went out yet: all is held, so a text completed by the held
                    # strings withholds the answer (451) rather than cutting it.
                    limit = 0
        self.held = parts[limit:]
        batch = Batch(parts[:limit], [], [], [])
        for run, pieces in runs.items():
            count = len(pieces) if limit == len(parts) else \
                sum(1 for index, _ in pieces if index < limit)
            if not count:
                continue
            context = self.context.get(run, "")
            strings = texts[run][:count]
            offsets = itertools.accumulate([len(t) for t in strings], initial=len(context))
            text = context + "".join(strings)
            batch.runs.append(_Run(run, text, len(context),
                                   list(zip([s for _, s in pieces[:count]], offsets,
                                            strict=False))))
            batch.texts.append(text)
            if (decoded := token_text(text)) is not None:
                batch.texts.append(decoded)  # its verdict blocks; masks are the text's own
        batch.keys = [p for p in batch.parts if type(p) is String and p.is_key and p.text]
        batch.texts += [k.text for k in batch.keys]
        return batch

    def commit(self, batch: Batch) -> None:
        """The batch went out: each run's context is the tail of what was moderated of it."""
        self.started = self.started or bool(batch.parts)
        for run in batch.runs:
            self.context[run.run] = run.text[-self.overlap:] if self.overlap else ""
        if self.alias is not None:
            self.context[self.alias] = self.context.get(_DOCUMENT, "")
            self.alias = None

    @property
    def holding(self) -> bool:
        return bool(self.held)


def spelled(value: Any) -> list[str]:
    """The texts a decoded JSON body spells across its string values, joined as `Runs` joins
    them (in document order, and per path with array indices left out; keys alone), with what
    token strings in a tokenizer's bytes decode to: for a body read whole (a model's error
    answer), whose strings are moderated one by one besides. Only runs of more than one string
    (one string is moderated as itself); at most MAX_RUNS paths, nesting past MAX_DEPTH left
    out."""
    return [text for text, _ in spelled_runs(value)]


def spelled_runs(value: Any) -> list[tuple[str, list[tuple[str, int]]]]:
    """`spelled`, each text with the strings it joins and where each starts in it (none for
    what token strings decode to): `spelled_masks` masks them."""
    runs: dict[tuple[str, ...], list[str]] = {_DOCUMENT: []}
    stack: list[tuple[Any, tuple[str, ...]]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if item:
                runs[_DOCUMENT].append(item)
                if path in runs or len(runs) <= MAX_RUNS:
                    runs.setdefault(path, []).append(item)
        elif len(path) < MAX_DEPTH and isinstance(item, dict):
            stack += [(v, (*path, str(k)[:_STEP])) for k, v in reversed(item.items())]
        elif len(path) < MAX_DEPTH and isinstance(item, list):
            stack += [(v, (*path, "*")) for v in reversed(item)]
    # One entry per text and the strings it joins: two paths may spell one text from other
    # strings, and each is masked (the same strings twice are moderated once).
    texts: dict[tuple[str, tuple[str, ...]], list[tuple[str, int]]] = {}
    for strings in runs.values():
        if len(strings) > 1:
            text = "".join(strings)
            offsets = itertools.accumulate([len(t) for t in strings[:-1]], initial=0)
            texts.setdefault((text, tuple(strings)), list(zip(strings, offsets, strict=True)))
            if (decoded := token_text(text)) is not None:
                texts.setdefault((decoded, ()), [])
    return [(text, pieces) for (text, _), pieces in texts.items()]


def spelled_masks(runs: list[tuple[str, list[tuple[str, int]]]], decisions: list[Decision],
                  masked: dict[str, str]) -> bool:
    """Personal information a body spells across its strings (`spelled_runs`, with their
    `decisions`), masked in each string it covers, one for one (Art.4(4)): into `masked`
    (each string's masked form, as `metadata.masks` gives it, applied on top of it). False
    when a decision masks what no string can be found for (a tokenizer's decoded bytes): the
    caller withholds the body then."""
    for (_, pieces), decision in zip(runs, decisions, strict=True):
        spans = [(s.start, s.end) for s in decision.mask_spans]
        if not spans:
            continue
        if not pieces:
            return False
        for string, at in pieces:
            local = [(max(a - at, 0), min(b - at, len(string))) for a, b in spans
                     if b > at and a < at + len(string)]
            if local:
                masked[string] = mask(masked.get(string, string), local)
    return True
