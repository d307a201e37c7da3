"""Keyword lexicon matching with an Aho-Corasick automaton (Art.4(1), Art.14).

A lexicon is a set of keywords, each mapped to a risk category (`hegui.moderation.categories`)
with a score. Text is matched in one pass whatever the number of keywords. Matching is done on a
normalised copy of the text (NFKC, case-folded, with whitespace, punctuation and symbols dropped)
so that `BoMb`, `炸 弹` and `炸*弹` all match; every match is mapped back to its span in the
original text, so it can be masked or shown.

Keyword files (`*.tsv`, UTF-8, e.g. a mounted ConfigMap) hold one keyword a line:
`category<TAB>keyword[<TAB>score]`; `#` starts a comment. The score defaults to 1.0.
"""

from __future__ import annotations

import unicodedata
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hegui.moderation.categories import CATEGORIES

#: The lexicon shipped with hegui: a short, illustrative list, not a real one.
DEFAULT_LEXICON_DIR = Path(__file__).parent / "lexicons"

# Unicode categories dropped before matching: separators, punctuation, symbols, controls. They are
# what evasions put between the characters of a keyword.
_DROPPED = ("Z", "P", "S", "C")


@dataclass(frozen=True)
class Keyword:
    text: str
    category: str
    score: float = 1.0


@dataclass(frozen=True)
class Match:
    start: int  # offsets in the original text, end exclusive
    end: int
    keyword: Keyword


def _fold(char: str) -> str:
    """The normalised form of one character, or '' when it is dropped before matching."""
    if unicodedata.category(char)[0] in _DROPPED:
        return ""
    return unicodedata.normalize("NFKC", char).casefold()


def normalise(text: str) -> tuple[str, list[int]]:
    """The text to match and, for each of its characters, the offset it came from."""
    out: list[str] = []
    origin: list[int] = []
    for index, char in enumerate(text):
        for folded in _fold(char):
            if unicodedata.category(folded)[0] in _DROPPED:
                continue
            out.append(folded)
            origin.append(index)
    return "".join(out), origin


def _is_word_char(char: str) -> bool:
    return char.isascii() and char.isalnum()


class Lexicon:
    """An Aho-Corasick automaton over normalised keywords."""

    def __init__(self, keywords: Iterable[Keyword]) -> None:
        self._goto: list[dict[str, int]] = [{}]
        self._fail: list[int] = [0]
        self._out: list[list[int]] = [[]]
        self.keywords: list[Keyword] = []
        self._lengths: list[int] = []
        self._ascii_word: list[bool] = []
        for keyword in keywords:
            self._add(keyword)
        self._link()

    def _add(self, keyword: Keyword) -> None:
        folded, _ = normalise(keyword.text)
        if not folded:
            raise ValueError(f"keyword {keyword.text!r} is empty once normalised")
        node = 0
        for char in folded:
            nxt = self._goto[node].get(char)
            if nxt is None:
                nxt = len(self._goto)
                self._goto[node][char] = nxt
                self._goto.append({})
                self._fail.append(0)
                self._out.append([])
            node = nxt
        self._out[node].append(len(self.keywords))
        self.keywords.append(keyword)
        self._lengths.append(len(folded))
        # Latin keywords match whole words only: "kill" must not fire inside "skill".
        self._ascii_word.append(all(_is_word_char(c) for c in folded))

    def _link(self) -> None:
        queue: deque[int] = deque(self._goto[0].values())
        while queue:
            node = queue.popleft()
            for char, child in self._goto[node].items():
                queue.append(child)
                fail = self._fail[node]
                while fail and char not in self._goto[fail]:
                    fail = self._fail[fail]
                target = self._goto[fail].get(char, 0)
                self._fail[child] = target if target != child else 0
                self._out[child] = self._out[child] + self._out[self._fail[child]]

    @property
    def max_length(self) -> int:
        """The longest keyword, in normalised characters: the overlap a streaming window needs."""
        return max(self._lengths, default=0)

    def finditer(self, text: str) -> Iterator[Match]:
        folded, origin = normalise(text)
        node = 0
        for position, char in enumerate(folded):
            while node and char not in self._goto[node]:
                node = self._fail[node]
            node = self._goto[node].get(char, 0)
            for index in self._out[node]:
                first = position - self._lengths[index] + 1
                start, end = origin[first], origin[position] + 1
                if self._ascii_word[index] and (
                        (start > 0 and _is_word_char(text[start - 1]))
                        or (end < len(text) and _is_word_char(text[end]))):
                    continue
                yield Match(start, end, self.keywords[index])

    def scores(self, text: str) -> dict[str, float]:
        """The highest score of any matching keyword, by category."""
        result: dict[str, float] = {}
        for match in self.finditer(text):
            category = match.keyword.category
            result[category] = max(result.get(category, 0.0), match.keyword.score)
        return result


def parse_keywords(text: str, source: str = "<string>") -> list[Keyword]:
    """Keywords from the lines of a keyword file; errors name the file and line."""
    keywords: list[Keyword] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) not in (2, 3) or not fields[1]:
            raise ValueError(f"{source}:{number}: expected category<TAB>keyword[<TAB>score]")
        category = fields[0]
        if category not in CATEGORIES:
            raise ValueError(f"{source}:{number}: unknown category {category!r}")
        try:
            score = float(fields[2]) if len(fields) == 3 else 1.0
        except ValueError:
            raise ValueError(f"{source}:{number}: score {fields[2]!r} is not a number") from None
        if not 0.0 <= score <= 1.0:
            raise ValueError(f"{source}:{number}: score {score} is not within 0..1")
        keywords.append(Keyword(fields[1], category, score))
    return keywords


def load_lexicon(*paths: Path) -> Lexicon:
    """A lexicon from keyword files, or from every `*.tsv` in the directories given."""
    keywords: list[Keyword] = []
    for path in paths or (DEFAULT_LEXICON_DIR,):
        files = sorted(path.glob("*.tsv")) if path.is_dir() else [path]
        for file in files:
            keywords.extend(parse_keywords(file.read_text(encoding="utf-8"), str(file)))
    return Lexicon(keywords)
