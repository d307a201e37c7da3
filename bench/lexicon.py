# ruff: noqa: S311, RUF001 (random keywords and texts, not secrets; Chinese punctuation)
"""Lexicon benchmark: keyword matching throughput at 10k and 100k keywords, on one core, with the
hand-written Aho-Corasick automaton against pyahocorasick, all in one run (the machine is shared
and noisy, so compare figures of the same run only).

    .venv/bin/python bench/lexicon.py [--sizes 10000,100000] [--chars 200000]

Keywords are generated (Chinese words of 2-6 characters from pypinyin's phrase list, and Latin
words), the text is generated Chinese and English with keywords sprinkled in. Three figures per
size and engine, in characters of original text per second:

- `scan`: the automaton alone over the already normalised text (what the engines differ in);
- `finditer`: what a caller pays: normalisation, the scan, and the checks of each candidate;
- `build`: seconds to build the lexicon (a hot reload pays it in the background).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pypinyin

from hegui.moderation.categories import KEYWORD_RISKS
from hegui.moderation.lexicon import Keyword, Lexicon, automaton
from hegui.moderation.normalize import normalise

T = TypeVar("T")
PHRASES = Path(pypinyin.__file__).parent / "phrases_dict.json"


def vocabulary() -> list[str]:
    return sorted(json.loads(PHRASES.read_text(encoding="utf-8")))


def keywords(count: int, words: list[str], rng: random.Random) -> list[Keyword]:
    chosen: set[str] = set()
    while len(chosen) < count:
        if rng.random() < 0.8:
            # Two phrases glued: mostly not a real word, like most entries of a real list.
            text = rng.choice(words) + (rng.choice(words) if rng.random() < 0.7 else "")
        else:
            text = " ".join("".join(rng.choice("abcdefghijklmnopqrstuvwxyz")
                                    for _ in range(rng.randint(4, 9)))
                            for _ in range(rng.randint(1, 3)))
        chosen.add(text[:8])
    return [Keyword(t, rng.choice(KEYWORD_RISKS), 1.0) for t in sorted(chosen)]


def text(size: int, words: list[str], planted: list[Keyword], rng: random.Random) -> str:
    parts: list[str] = []
    length = 0
    while length < size:
        roll = rng.random()
        if roll < 0.02:
            piece = rng.choice(planted).text
        elif roll < 0.75:
            piece = rng.choice(words)
        else:
            piece = rng.choice(("the", "model", "answer", "service", "of", "a", "and")) + " "
        if rng.random() < 0.1:
            piece += rng.choice("，。！？ ")
        parts.append(piece)
        length += len(piece)
    return "".join(parts)[:size]


def timed(function: Callable[[], T]) -> tuple[float, T]:
    began = time.perf_counter()
    result = function()
    return time.perf_counter() - began, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--chars", type=int, default=200_000)
    args = parser.parse_args()
    rng = random.Random(19)
    words = vocabulary()
    rows: list[dict[str, object]] = []
    for size in (int(s) for s in args.sizes.split(",")):
        listed = keywords(size, words, rng)
        sample = text(args.chars, words, listed, rng)
        phonetic = normalise(sample, phonetic=True).text
        for engine in ("python", "pyahocorasick"):
            build, lexicon = timed(lambda: Lexicon(listed, engine=engine))  # noqa: B023
            scanner = automaton(lexicon.keys, engine)  # the scan alone
            scan, found = timed(lambda: sum(1 for _ in scanner.iter(phonetic)))  # noqa: B023
            full, matches = timed(lambda: sum(1 for _ in lexicon.finditer(sample)))  # noqa: B023
            rows.append({"keywords": size, "engine": engine, "build_s": round(build, 2),
                         "scan_chars_per_s": round(len(sample) / scan),
                         "finditer_chars_per_s": round(len(sample) / full),
                         "candidates": found, "matches": matches})
            print(json.dumps(rows[-1]), flush=True)
    print("\nratios, pyahocorasick / python (same run):")
    for size in sorted({int(str(r["keywords"])) for r in rows}):
        python, fast = (next(r for r in rows if r["keywords"] == size and r["engine"] == e)
                        for e in ("python", "pyahocorasick"))
        for figure in ("scan_chars_per_s", "finditer_chars_per_s"):
            ratio = float(str(fast[figure])) / float(str(python[figure]))
            print(f"  {size:>7} keywords  {figure:<22} {ratio:5.1f}x")
        assert python["matches"] == fast["matches"], "the engines disagree"


if __name__ == "__main__":
    main()
