"""Personal information in text, found as spans to mask (Art.4(4), Art.11).

Detectors, each validated so that random digit runs are not masked:

- resident identity numbers (居民身份证号码, GB 11643-1999): 18 characters, a plausible region
  code and birth date, and the ISO 7064 MOD 11-2 check character;
- mainland mobile numbers: 11 digits starting 13-19, optionally after +86 / 0086;
- bank card numbers: 13-19 digits, optionally grouped by spaces or hyphens, passing Luhn;
- e-mail addresses.

Spans never overlap: where two detectors claim the same characters the more specific wins
(resident ID, then bank card, then mobile, then e-mail).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from enum import StrEnum


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
    r"(?<![0-9])(?:[0-9]{13,19}|[0-9]{4}(?:[ -][0-9]{4}){2,3}(?:[ -][0-9]{1,3})?)(?![0-9])")
_MOBILE = re.compile(r"(?<![0-9+])(?:(?:\+|00)86[ -]?)?1[3-9][0-9](?:[ -]?[0-9]{4}){2}(?![0-9])")
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*"
    r"\.[A-Za-z]{2,24}(?![A-Za-z0-9-])")


def _candidates(text: str) -> list[PiiSpan]:
    found: list[PiiSpan] = []
    for match in _RESIDENT_ID.finditer(text):
        if is_resident_id(match.group()):
            found.append(PiiSpan(match.start(), match.end(), PiiKind.RESIDENT_ID))
    for match in _BANK_CARD.finditer(text):
        digits = re.sub(r"[ -]", "", match.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            found.append(PiiSpan(match.start(), match.end(), PiiKind.BANK_CARD))
    for match in _MOBILE.finditer(text):
        found.append(PiiSpan(match.start(), match.end(), PiiKind.MOBILE))
    for match in _EMAIL.finditer(text):
        found.append(PiiSpan(match.start(), match.end(), PiiKind.EMAIL))
    return found


_PRIORITY = {PiiKind.RESIDENT_ID: 0, PiiKind.BANK_CARD: 1, PiiKind.MOBILE: 2, PiiKind.EMAIL: 3}


def find_pii(text: str) -> list[PiiSpan]:
    """Non-overlapping spans of personal information, in text order."""
    chosen: list[PiiSpan] = []
    for span in sorted(_candidates(text), key=lambda s: (_PRIORITY[s.kind], s.start)):
        if all(span.end <= other.start or span.start >= other.end for other in chosen):
            chosen.append(span)
    return sorted(chosen)


def mask(text: str, spans: list[tuple[int, int]] | list[PiiSpan], char: str = "*") -> str:
    """The text with every span replaced by `char`, one for one, so offsets stay valid."""
    chars = list(text)
    for span in spans:
        start, end = (span.start, span.end) if isinstance(span, PiiSpan) else span
        for index in range(max(start, 0), min(end, len(chars))):
            chars[index] = char
    return "".join(chars)
