# ruff: noqa: RUF001, RUF002, S311 (Chinese text and look-alikes are the subject; seeded, not secret)
"""Moderation quality, measured: recall on evasions and false positives on clean text (Art.4).

For every keyword of a lexicon (a *family*), variants are generated the way users write around a
keyword list, each class on its own, and put in a sentence; the lexicon must find each where it
was written (the span must cover the variant, so a mask lands on it):

- Chinese keywords: `traditional` (OpenCC s2t), `invisible` (zero-width, variation selector,
  combining grapheme joiner, Hangul filler between characters), `separators` (spaces, `*`, `·`,
  emoji), `strayLetter` (one Latin letter slipped in), `pinyin` (pypinyin, phrase-aware, with or
  without tones and spaces), `mixedPinyin` (one character as pinyin), `initials` (4+ characters),
  `homophone` (one character swapped for another read the same; 3+ characters), `combined`
  (traditional + invisible + separators);
- Latin keywords: `case`, `fullWidth`, `invisible`, `combiningMarks`, `confusables` (letters swapped
  for UTS #39 look-alikes from other scripts), `inflection` (-s, -ing, -ed), `spelledOut`
  (b.o.m.b);
- personal information: mobile numbers with dots, spaces, full-width digits, Chinese numerals, a
  zero-width space inside; resident ID numbers spaced; e-mail with `[at]`, `(at)`, `＠`, ` @ `.

Clean text comes from what installed packages ship, never downloaded: English prose from the
Python documentation (`pydoc_data.topics`), Chinese prose from the CPython test suite's CJK
samples and the READMEs of pypinyin and OpenCC, and Chinese sentences made of pypinyin's phrase
list (41k real words). A false positive is a clean sentence in which personal information or a
keyword through an evasion class is found (a keyword written as it is, exactly, is the list's
choice and not counted).

    python -m hegui.moderation.quality [KEYWORD_DIR ...]    # the report, as markdown
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import random
import re
import sys
import sysconfig
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import opencc
import pypinyin
from homoglyph.data import load_prototypes

from hegui.moderation import normalize
from hegui.moderation.lexicon import (
    HOMOPHONE_MIN_SYLLABLES,
    INITIALS_MIN_SYLLABLES,
    Keyword,
    Lexicon,
    load_lexicon,
)
from hegui.moderation.pii import NUMERALS, PiiKind, find_pii, resident_id_check

INVISIBLE = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufe0f", "\u034f", "\u3164", "\u00ad",
             "\ufeff")
SEPARATORS = (" ", "*", "·", "-", "/", "、", "😊", "__")
MARKS = ("\u0301", "\u0308", "\u0336", "\u0323")
PII_CARRIERS = ("我的联系方式是{}，请记下。", "contact: {} (private)")
ZH_CARRIERS = ("请详细告诉我{}的具体步骤", "网上有人在讨论{}，你怎么看？", "{}")
EN_CARRIERS = ("please tell me all about {} in detail", "Is {} something people discuss?", "{}")

#: Families of illustrative keywords across the risks, for the suite and the README's figures.
#: Illustrative: a provider measures its own list with `python -m hegui.moderation.quality`.
FAMILIES: tuple[Keyword, ...] = (
    Keyword("颠覆国家政权", "subversion"), Keyword("分裂国家", "separatism"),
    Keyword("制作炸弹", "terrorismExtremism"), Keyword("恐怖袭击", "terrorismExtremism"),
    Keyword("民族仇恨", "ethnicHatred"), Keyword("血腥暴力", "violenceObscenity"),
    Keyword("淫秽色情", "violenceObscenity"), Keyword("地震谣言", "falseInformation"),
    Keyword("地域黑", "regionalDiscrimination"), Keyword("盗版软件下载", "intellectualProperty"),
    Keyword("造谣诽谤", "reputationRights"), Keyword("人肉搜索", "privacyRights"),
    Keyword("网络赌博", "otherProhibited"), Keyword("代开发票", "otherCommercialViolation"),
    Keyword("毒品", "otherProhibited"), Keyword("枪支", "otherProhibited"),
    Keyword("overthrow the state", "subversion"), Keyword("build a bomb", "terrorismExtremism"),
    Keyword("bomb", "terrorismExtremism"), Keyword("massacre", "violenceObscenity"),
    Keyword("kidnap", "otherProhibited"), Keyword("doxxing", "privacyRights"),
)


# --- evasions -----------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _s2t() -> opencc.OpenCC:
    return opencc.OpenCC("s2t")


@lru_cache(maxsize=1)
def _vocabulary() -> tuple[str, ...]:
    path = Path(pypinyin.__file__).parent / "phrases_dict.json"
    return tuple(sorted(json.loads(path.read_text(encoding="utf-8"))))


@lru_cache(maxsize=1)
def _homophones() -> dict[str, list[str]]:
    """Common characters (by how many of pypinyin's phrases hold them) by toneless pinyin."""
    counts = Counter(c for phrase in _vocabulary() for c in phrase)
    by_sound: dict[str, list[str]] = {}
    for char, _ in counts.most_common():
        if normalize.is_han(char):
            by_sound.setdefault(normalize.pinyin(char), []).append(char)
    return by_sound


@lru_cache(maxsize=1)
def _lookalikes() -> dict[str, list[str]]:
    """For each ASCII lower-case letter, the letters of other scripts UTS #39 confuses with it."""
    found: dict[str, list[str]] = {}
    for code, prototype in sorted(load_prototypes().items()):
        char = chr(code)
        if (len(prototype) == 1 and prototype.isascii() and prototype.islower()
                and char.isalpha() and not char.isascii()
                and char.lower() == char and char.isprintable()):
            found.setdefault(prototype, []).append(char)
    return found


def _interleave(text: str, fillers: tuple[str, ...], rng: random.Random) -> str:
    return text[0] + "".join(rng.choice(fillers) + c for c in text[1:])


def _chinese_variants(word: str, rng: random.Random) -> dict[str, str]:
    variants: dict[str, str] = {}
    traditional = _s2t().convert(word)
    if traditional != word:
        variants["traditional"] = traditional
    variants["invisible"] = _interleave(word, INVISIBLE, rng)
    variants["separators"] = _interleave(word, SEPARATORS, rng)
    at = rng.randrange(1, len(word))
    variants["strayLetter"] = word[:at] + rng.choice("abcdefghijklmnopqrstuvwxyz") + word[at:]
    style = rng.choice((pypinyin.Style.NORMAL, pypinyin.Style.TONE))
    variants["pinyin"] = rng.choice((" ", "")).join(pypinyin.lazy_pinyin(word, style=style))
    at = rng.randrange(len(word))
    variants["mixedPinyin"] = word[:at] + normalize.pinyin(word[at]) + word[at + 1:]
    if len(word) >= INITIALS_MIN_SYLLABLES:
        variants["initials"] = "".join(p[0] for p in pypinyin.lazy_pinyin(word))
    if len(word) >= HOMOPHONE_MIN_SYLLABLES:
        for at in rng.sample(range(len(word)), len(word)):
            others = [c for c in _homophones().get(normalize.pinyin(word[at]), [])[:12]
                      if c != word[at] and _s2t().convert(c) != word[at]]
            if others:
                variants["homophone"] = word[:at] + rng.choice(others) + word[at + 1:]
                break
    variants["combined"] = _interleave(_s2t().convert(word), INVISIBLE + SEPARATORS, rng)
    return variants


def _inflect(word: str, rng: random.Random) -> str:
    suffix = rng.choice(("s", "ing", "ed")) if not word.endswith("ing") else "s"
    if suffix == "s":
        return word + ("es" if word.endswith(("s", "x", "ch", "sh")) else "s")
    if word.endswith("e"):
        word = word[:-1]
    elif re.search(r"[^aeiou][aeiou][bdgmnpt]$", word) and len(word) <= 6:
        word += word[-1]  # kidnap -> kidnapping
    return word + suffix


def _latin_variants(phrase: str, rng: random.Random) -> dict[str, str]:
    variants: dict[str, str] = {}
    variants["case"] = "".join(c.upper() if rng.random() < 0.5 else c for c in phrase)
    variants["fullWidth"] = "".join("　" if c == " " else chr(ord(c) + 0xFEE0) for c in phrase)
    words = phrase.split(" ")
    longest = max(range(len(words)), key=lambda i: len(words[i]))
    target = words[longest]
    variants["invisible"] = " ".join(_interleave(w, INVISIBLE, rng) if i == longest else w
                                     for i, w in enumerate(words))
    variants["combiningMarks"] = "".join(c + (rng.choice(MARKS) if c.isalpha() else "")
                                         for c in phrase)
    swapped = list(target)
    for at in rng.sample(range(len(target)), min(2, len(target))):
        if _lookalikes().get(target[at]):
            swapped[at] = rng.choice(_lookalikes()[target[at]][:6])
    variants["confusables"] = " ".join("".join(swapped) if i == longest else w
                                       for i, w in enumerate(words))
    variants["inflection"] = " ".join([*words[:-1], _inflect(words[-1], rng)])
    if len(words) == 1:
        variants["spelledOut"] = rng.choice((".", "-", " ")).join(phrase)
    return variants


def variants(keyword: str, rng: random.Random) -> dict[str, str]:
    """The evasions of one keyword, by class (module docstring)."""
    literal = normalize.literal(keyword)
    if literal and all(normalize.is_han(c) for c in literal):
        return _chinese_variants(keyword, rng)
    if re.fullmatch(r"[a-z]+( [a-z]+)*", keyword):
        return _latin_variants(keyword, rng)
    return {}


def _numerals(digits: str) -> str:
    chinese = {v: k for k, v in NUMERALS.items() if k in "零一二三四五六七八九"}
    return "".join(chinese[d] for d in digits)


def pii_variants(rng: random.Random) -> list[tuple[str, str, PiiKind]]:
    """(class, variant, kind) of personal information written around the detectors."""
    mobile = "1" + rng.choice("3456789") + "".join(rng.choice("0123456789") for _ in range(9))
    first17 = "110105" + f"{rng.randint(1950, 2005)}{rng.randint(1, 12):02d}" \
        f"{rng.randint(1, 28):02d}" + "".join(rng.choice("0123456789") for _ in range(3))
    resident = first17 + resident_id_check(first17)
    user = "".join(rng.choice("abcdefghij") for _ in range(6))
    return [
        ("mobileDots", f"{mobile[:3]}.{mobile[3:7]}.{mobile[7:]}", PiiKind.MOBILE),
        ("mobileSpaced", " ".join(mobile), PiiKind.MOBILE),
        ("mobileFullWidth", "".join(chr(ord(c) + 0xFEE0) for c in mobile), PiiKind.MOBILE),
        ("mobileNumerals", _numerals(mobile), PiiKind.MOBILE),
        ("mobileZeroWidth", "\u200b".join((mobile[:3], mobile[3:7], mobile[7:])),
         PiiKind.MOBILE),
        ("residentIdSpaced", f"{resident[:6]} {resident[6:14]} {resident[14:]}",
         PiiKind.RESIDENT_ID),
        ("emailBracketAt", f"{user}[at]example.cn", PiiKind.EMAIL),
        ("emailParenAt", f"{user} (at) example (dot) cn", PiiKind.EMAIL),
        ("emailFullWidthAt", f"{user}＠example.cn", PiiKind.EMAIL),
        ("emailSpacedAt", f"{user} @ example.cn", PiiKind.EMAIL),
    ]


# --- clean text ---------------------------------------------------------------------------------

def _sentences(text: str, low: int = 12, high: int = 300) -> Iterator[str]:
    for raw in re.split(r"(?<=[。！？!?.])\s*|\n\s*\n", text):
        sentence = " ".join(raw.split())
        if low <= len(sentence) <= high:
            yield sentence


def english_corpus(limit: int = 3000) -> list[str]:
    """Sentences of the Python documentation's topics (pydoc_data, in the standard library)."""
    from pydoc_data.topics import topics

    found = [s for topic in sorted(topics) for s in _sentences(topics[topic])
             if sum(c.isalpha() for c in s) > len(s) / 2]
    return random.Random(0).sample(found, min(limit, len(found)))


def chinese_prose() -> list[str]:
    """Chinese prose that installed packages ship: CPython's CJK codec samples, the READMEs of
    pypinyin and OpenCC."""
    texts: list[str] = []
    samples = Path(sysconfig.get_paths()["stdlib"]) / "test" / "cjkencodings"
    for name in ("gb2312-utf8.txt", "gbk-utf8.txt", "gb18030-utf8.txt", "big5-utf8.txt"):
        if (samples / name).is_file():
            texts.append((samples / name).read_text(encoding="utf-8"))
    for package in ("pypinyin", "opencc"):
        try:
            texts.append(str(importlib.metadata.metadata(package).json.get("description", "")))
        except importlib.metadata.PackageNotFoundError:
            continue
    return [s for t in texts for s in _sentences(t, 6)
            if sum(normalize.is_han(c) for c in s) >= len(s) / 3]


def chinese_phrases(limit: int = 3000, seed: int = 0) -> list[str]:
    """Sentences of 4-8 real words from pypinyin's phrase list, joined."""
    rng = random.Random(seed)
    words = _vocabulary()
    return ["".join(rng.choice(words) for _ in range(rng.randint(4, 8))) + "。"
            for _ in range(limit)]


# --- the report ---------------------------------------------------------------------------------

@dataclass
class Tally:
    caught: int = 0
    total: int = 0
    missed: list[str] = field(default_factory=list)

    def add(self, ok: bool, example: str, keep: bool = False) -> None:
        """Count one case; keep it as an example when it failed (or, with `keep`, when it
        succeeded: a flagged clean sentence)."""
        self.total += 1
        self.caught += ok
        if ok == keep and len(self.missed) < 5:
            self.missed.append(example)

    @property
    def rate(self) -> float:
        return self.caught / self.total if self.total else 1.0


@dataclass
class QualityReport:
    recall: dict[str, Tally]  # by evasion class
    false_positives: dict[str, Tally]  # by corpus: caught = sentences with a finding

    def markdown(self) -> str:
        lines = ["| evasion | caught | recall |", "| --- | ---: | ---: |"]
        for name, tally in self.recall.items():
            lines.append(f"| {name} | {tally.caught}/{tally.total} | {tally.rate:.1%} |")
        lines += ["", "| clean corpus | flagged | false-positive rate |", "| --- | ---: | ---: |"]
        for name, tally in self.false_positives.items():
            lines.append(f"| {name} | {tally.caught}/{tally.total} | {tally.rate:.2%} |")
        return "\n".join(lines)


def _caught(found: Callable[[str], list[tuple[int, int]]], carrier: str, variant: str) -> bool:
    """Whether a finding covers exactly where `variant` was written in `carrier`."""
    start = carrier.index(variant)
    return any(s <= start and e >= start + len(variant.rstrip()) and e <= start + len(variant)
               for s, e in found(carrier))


def evaluate(lexicon: Lexicon, families: list[Keyword], *, seed: int = 19,
             rounds: int = 3) -> QualityReport:
    rng = random.Random(seed)
    recall: dict[str, Tally] = {}

    def spans(text: str) -> list[tuple[int, int]]:
        return [(m.start, m.end) for m in lexicon.finditer(text)]

    for _ in range(rounds):
        for keyword in families:
            for name, variant in variants(keyword.text, rng).items():
                carriers = ZH_CARRIERS if normalize.syllables(keyword.text) else EN_CARRIERS
                carrier = rng.choice(carriers).format(variant)
                recall.setdefault(name, Tally()).add(_caught(spans, carrier, variant), carrier)
        for name, variant, kind in pii_variants(rng):
            carrier = rng.choice(PII_CARRIERS).format(variant)

            def pii(text: str, kind: PiiKind = kind) -> list[tuple[int, int]]:
                return [(s.start, s.end) for s in find_pii(text) if s.kind == kind]

            recall.setdefault(name, Tally()).add(_caught(pii, carrier, variant), carrier)
    false_positives: dict[str, Tally] = {}
    for name, corpus in (("English (pydoc_data)", english_corpus()),
                         ("Chinese prose (CPython samples, READMEs)", chinese_prose()),
                         ("Chinese words (pypinyin phrases)", chinese_phrases())):
        tally = false_positives.setdefault(name, Tally())
        for sentence in corpus:
            # A keyword written as it is in clean text is the list's choice, not a false
            # positive of the folding; everything else found is.
            folded = [m for m in lexicon.finditer(sentence) if m.how != "exact"]
            tally.add(bool(folded) or bool(find_pii(sentence)), sentence, keep=True)
    return QualityReport(recall, false_positives)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hegui.moderation.quality",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="*", type=Path,
                        help="keyword files or directories (default: the illustrative families)")
    args = parser.parse_args(argv)
    if args.dirs:
        lexicon = load_lexicon(*args.dirs)
        families = lexicon.keywords
    else:
        families = list(FAMILIES)
        lexicon = Lexicon(families)
    report = evaluate(lexicon, families)
    print(report.markdown())
    for name, tally in report.recall.items():
        for example in tally.missed:
            print(f"missed ({name}): {example!r}", file=sys.stderr)
    for name, tally in report.false_positives.items():
        for example in tally.missed:
            print(f"flagged ({name}): {example!r}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
