# ruff: noqa: RUF001, RUF002 (Chinese text, full-width forms and look-alikes are the subject)
"""Personal information in text, found as spans to mask (Art.4(4), Art.11).

Detectors, each validated so that random digit runs are not masked:

- resident identity numbers (居民身份证号码, GB 11643-1999): 18 characters, a plausible region
  code and birth date, and the ISO 7064 MOD 11-2 check character;
- mainland mobile numbers: 11 digits starting 13-19, optionally after +86 / 0086;
- bank card numbers: 13-19 digits, optionally grouped by spaces or hyphens, passing Luhn;
- e-mail addresses.

Evasions are folded before the detectors run, each character of the folded view keeping the
span of the original it came from, so the mask covers what was written: full-width digits and
`＠` (NFKC), Chinese numerals written digit by digit (一三八零零一三八零零零, also 壹贰叁, 幺 for
one), invisible characters inside a number (default-ignorable code points), separators between
digits (`138.0013.8000`, `138 0013 8000`, spaced digits: mobile and resident ID numbers only, in
a second view, so two numbers side by side are still found apart) and a spelled-out `@`
(`a[at]b.cn`, `a(at)b.cn`, `a 艾特 b.cn`, `a @ b.cn`, `[dot]`).

Spans never overlap: where two detectors claim the same characters the more specific wins
(resident ID, then bank card, then mobile, then e-mail).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from hegui.moderation.normalize import is_default_ignorable


class PiiKind(StrEnum):
    RESIDENT_ID = "residentId"
    BANK_CARD = "bankCard"
    MOBILE = "mobile"
    EMAIL = "email"


@dataclass(frozen=True, order=True)
class PiiSpan:
    start: int  # offsets in the text, end exclusive
    end: int
    kind: PiiKind


_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def resident_id_check(first17: str) -> str:
    """The GB 11643 check character (ISO 7064 MOD 11-2) of the first 17 digits."""
    total = sum(int(d) * w for d, w in zip(first17, _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11]


def is_resident_id(text: str) -> bool:
    if len(text) != 18 or not text[:17].isdigit() or text[0] not in "12345678":
        return False
    try:
        born = date(int(text[6:10]), int(text[10:12]), int(text[12:14]))
    except ValueError:
        return False
    if born.year < 1900 or born > date.today():
        return False
    return resident_id_check(text[:17]) == text[17].upper()


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


# Lookarounds keep a detector from firing inside a longer run of digits or letters.
_RESIDENT_ID = re.compile(r"(?<![0-9])[1-8][0-9]{16}[0-9Xx](?![0-9])")
# Card numbers are written solid or in groups of four.
_BANK_CARD = re.compile(
    r"(?<![0-9])(?:[0-9]{13,19}|[0-9]{4}(?:[ .-][0-9]{4}){2,3}(?:[ .-][0-9]{1,3})?)(?![0-9])")
_MOBILE = re.compile(r"(?<![0-9+])(?:(?:\+|00)86[ -]?)?1[3-9][0-9](?:[ -]?[0-9]{4}){2}(?![0-9])")
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*"
    r"\.[A-Za-z]{2,24}(?![A-Za-z0-9-])")

#: Chinese numerals written digit by digit, and their digits.
NUMERALS = {**dict.fromkeys("零〇○", "0"), **dict.fromkeys("一壹幺", "1"), "二": "2", "贰": "2",
            "三": "3", "叁": "3", "四": "4", "肆": "4", "五": "5", "伍": "5", "六": "6",
            "陆": "6", "七": "7", "柒": "7", "八": "8", "捌": "8", "九": "9", "玖": "9"}
_OPEN, _CLOSE = r"[\[\(\{<【（〔「]", r"[\]\)\}>】）〕」]"
# Linear on any input: a match starts only where a run of spaces starts, and takes it whole.
_AT = re.compile(rf"(?<!\s)\s*+(?:{_OPEN}\s*+(?:at|@)\s*+{_CLOSE}|艾特|@)\s*+", re.IGNORECASE)
_DOT = re.compile(rf"(?<!\s)\s*+{_OPEN}\s*+(?:dot|\.|点)\s*+{_CLOSE}\s*+", re.IGNORECASE)
_DIGIT_SEPARATORS = re.compile(r"(?<=[0-9])[\s.\-_·/\\]++(?=[0-9])")


@dataclass(frozen=True)
class _View:
    """Text folded for the detectors; `starts[i]:ends[i]` is what its character i came from."""

    text: str
    starts: list[int]
    ends: list[int]

    def sub(self, pattern: re.Pattern[str], replacement: str) -> _View:
        if pattern.search(self.text) is None:  # the usual case: nothing to fold, no copies
            return self
        out: list[str] = []
        starts: list[int] = []
        ends: list[int] = []
        position = 0
        for match in pattern.finditer(self.text):
            first, last = match.span()
            if first == last:
                continue
            out.append(self.text[position:first])
            starts.extend(self.starts[position:first])
            ends.extend(self.ends[position:first])
            out.append(replacement)
            starts.extend([self.starts[first]] * len(replacement))
            ends.extend([self.ends[last - 1]] * len(replacement))
            position = last
        out.append(self.text[position:])
        starts.extend(self.starts[position:])
        ends.extend(self.ends[position:])
        return _View("".join(out), starts, ends)


def _fold(char: str) -> str:
    if is_default_ignorable(char):
        return ""
    if char in NUMERALS:
        return NUMERALS[char]
    folded = unicodedata.normalize("NFKC", char)
    return folded if folded.isascii() else char


class _FoldTable(dict[str, str]):
    """`_fold` of each character, computed once (the alphabet of real text is small): a
    prompt's folding is one lookup a character, not a normalisation (every request's input).
    Bounded at 20,000 characters (a few MiB: common Chinese text uses under 7,000): a client
    sending every code point would otherwise grow it to ~30 MiB in each sidecar."""

    def __missing__(self, char: str) -> str:
        folded = _fold(char)
        if len(self) < 20_000:
            self[char] = folded
        return folded


_FOLDED = _FoldTable()


def _views(text: str) -> tuple[_View, _View]:
    parts = list(map(_FOLDED.__getitem__, text))
    joined = "".join(parts)
    if len(joined) == len(text) and "" not in parts:  # each character folds to one
        plain = _View(joined, list(range(len(text))), list(range(1, len(text) + 1)))
    else:
        starts: list[int] = []
        ends: list[int] = []
        for index, folded in enumerate(parts):
            starts.extend([index] * len(folded))
            ends.extend([index + 1] * len(folded))
        plain = _View(joined, starts, ends)
    plain = plain.sub(_AT, "@").sub(_DOT, ".")
    return plain, plain.sub(_DIGIT_SEPARATORS, "")


def _candidates(text: str) -> list[PiiSpan]:
    found: list[PiiSpan] = []
    plain, compact = _views(text)

    def add(view: _View, pattern: re.Pattern[str], kind: PiiKind,
            valid: Callable[[str], bool] = lambda _: True) -> None:
        for match in pattern.finditer(view.text):
            if valid(match.group()):
                first, last = match.span()
                found.append(PiiSpan(view.starts[first], view.ends[last - 1], kind))

    # Every number below holds four digits in a row once its separators are dropped (the
    # compact view), and an address an @: a text without either is not searched for them.
    if _FOUR_DIGITS.search(compact.text) is not None:
        for view in (plain, compact):
            add(view, _RESIDENT_ID, PiiKind.RESIDENT_ID, is_resident_id)
            add(view, _MOBILE, PiiKind.MOBILE)
        add(plain, _BANK_CARD, PiiKind.BANK_CARD, _is_card)
    if "@" in plain.text:
        add(plain, _EMAIL, PiiKind.EMAIL)
    return found


_FOUR_DIGITS = re.compile("[0-9]{4}")


def _is_card(text: str) -> bool:
    digits = re.sub(r"[ .-]", "", text)
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


_PRIORITY = {PiiKind.RESIDENT_ID: 0, PiiKind.BANK_CARD: 1, PiiKind.MOBILE: 2, PiiKind.EMAIL: 3}


def find_pii(text: str) -> list[PiiSpan]:
    """Non-overlapping spans of personal information, in text order."""
    chosen: list[PiiSpan] = []
    for span in sorted(_candidates(text),
                       key=lambda s: (_PRIORITY[s.kind], s.start, s.start - s.end)):
        if all(span.end <= other.start or span.start >= other.end for other in chosen):
            chosen.append(span)
    return sorted(chosen)


#: The longest trailing run `pending_start` holds back.
PENDING_LIMIT = 64
_PENDING_CHARS = frozenset("@＠._%+-[]()【】（）〔〕「」") | frozenset(NUMERALS)


def _digit_like(char: str) -> bool:
    return char in NUMERALS or unicodedata.normalize("NFKC", char).isdigit()


def pending_start(text: str) -> int:
    """Where a trailing run of `text` begins that may be the start of personal information still
    being written (a number, an e-mail address), so a stream holds back only that run until the
    next characters decide it; len(text) when nothing at the end can grow into personal
    information, or when the run is longer than PENDING_LIMIT (it is then scanned as it is)."""
    start = len(text)
    index = len(text) - 1
    while index >= 0 and len(text) - index <= PENDING_LIMIT:
        char = text[index]
        folded = unicodedata.normalize("NFKC", char)
        if (folded.isascii() and (folded.isalnum() or folded in _PENDING_CHARS)) \
                or char in _PENDING_CHARS or is_default_ignorable(char):
            start = index
        elif (char.isspace() or char in "·/\\") and index > 0 and _digit_like(text[index - 1]):
            start = index  # a separator after a digit: the next group may follow
        elif char.isspace() and start < len(text) and text[start] in "@＠[(【（":
            start = index  # `a [at] b.cn`, `a @ b.cn` being written
        else:
            break
        index -= 1
    if index >= 0 and len(text) - index > PENDING_LIMIT:
        return len(text)
    return start


def mask(text: str, spans: list[tuple[int, int]] | list[PiiSpan], char: str = "*") -> str:
    """The text with every span replaced by `char`, one for one, so offsets stay valid."""
    chars = list(text)
    for span in spans:
        start, end = (span.start, span.end) if isinstance(span, PiiSpan) else span
        for index in range(max(start, 0), min(end, len(chars))):
            chars[index] = char
    return "".join(chars)
