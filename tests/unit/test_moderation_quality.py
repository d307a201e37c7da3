# ruff: noqa: RUF001 (Chinese text, full-width forms and look-alikes are what is tested)
"""The moderation quality suite (Art.4, Art.14): every evasion class of every keyword family is
caught where it was written, personal information is masked through its evasions, and clean
Chinese and English text that installed packages ship passes. The README's figures come from
`python -m hegui.moderation.quality`, which runs the same generator on more rounds."""

from __future__ import annotations

import random

import pytest

from hegui.moderation import quality
from hegui.moderation.lexicon import Lexicon
from hegui.moderation.pii import find_pii, mask

LEXICON = Lexicon(quality.FAMILIES)
RNG = random.Random(2025)
CASES = [(k.text, name, variant) for k in quality.FAMILIES
         for name, variant in quality.variants(k.text, RNG).items()]


def test_every_family_has_its_evasion_classes() -> None:
    classes = {(text, name) for text, name, _ in CASES}
    for keyword in quality.FAMILIES:
        expected = ({"traditional", "invisible", "separators", "strayLetter", "pinyin",
                     "mixedPinyin", "combined"} if not keyword.text.isascii() else
                    {"case", "fullWidth", "invisible", "combiningMarks", "confusables",
                     "inflection"})
        got = {name for text, name in classes if text == keyword.text}
        assert expected - {"traditional"} <= got, keyword.text
    assert {name for _, name, _ in CASES} >= {"initials", "homophone", "spelledOut"}


@pytest.mark.parametrize(("keyword", "evasion", "variant"), CASES,
                         ids=[f"{k}-{n}" for k, n, _ in CASES])
def test_evasion_is_caught_where_it_was_written(keyword: str, evasion: str, variant: str) -> None:
    carrier = (quality.ZH_CARRIERS[0] if not keyword.isascii() else
               quality.EN_CARRIERS[0]).format(variant)
    start = carrier.index(variant)
    found = [m for m in LEXICON.finditer(carrier) if m.keyword.text == keyword]
    assert found, f"{evasion} of {keyword!r} passed: {variant!r}"
    # The span is the variant, whole: a mask hides all of it and nothing of the sentence.
    assert any(m.start == start and m.end == start + len(variant) for m in found), \
        [(m.start, m.end, m.how) for m in found]
    masked = mask(carrier, [(m.start, m.end) for m in found])
    assert masked == carrier[:start] + "*" * len(variant) + carrier[start + len(variant):]


@pytest.mark.parametrize("seed", range(3))
def test_personal_information_evasions_are_masked(seed: int) -> None:
    for name, variant, kind in quality.pii_variants(random.Random(seed)):
        carrier = f"我的联系方式是{variant}，请记下。"
        spans = [s for s in find_pii(carrier) if s.kind == kind]
        start = carrier.index(variant)
        assert [(s.start, s.end) for s in spans] == [(start, start + len(variant))], name


def test_clean_text_passes() -> None:
    report = quality.evaluate(LEXICON, list(quality.FAMILIES), rounds=1)
    assert all(t.rate == 1.0 for t in report.recall.values()), \
        {n: t.missed for n, t in report.recall.items() if t.missed}
    corpora = report.false_positives
    assert all(t.total >= 50 for t in corpora.values()), {n: t.total for n, t in corpora.items()}
    # No clean sentence of any corpus is flagged (the README reports the same figures).
    assert all(t.caught == 0 for t in corpora.values()), \
        {n: t.missed for n, t in corpora.items() if t.caught}
    text = report.markdown()
    assert "| traditional |" in text and "| English (pydoc_data) |" in text

