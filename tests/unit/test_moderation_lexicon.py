# ruff: noqa: RUF001, RUF003 (Chinese text, full-width forms and look-alikes are what is tested)
"""hegui.moderation at the standard's scale: the 31 risks, normalisation against evasion with
offsets that land, lexicon versions and hot reload, keyword counts against GB/T 45654-2025."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hegui.moderation import categories, normalize
from hegui.moderation.lexicon import (
    MIN_KEYWORDS_PER_RISK,
    MIN_TOTAL_KEYWORDS,
    Keyword,
    Lexicon,
    LexiconStore,
    PythonAutomaton,
    coverage,
    load_lexicon,
)
from hegui.moderation.lexicon import main as lexicon_main
from hegui.moderation.pii import PiiKind, find_pii, pending_start

# --- the 31 risks -------------------------------------------------------------------------------


def test_appendix_a_has_31_risks_in_5_classes() -> None:
    assert len(categories.CATEGORIES) == 31
    sizes = {c.clause: len(c.members) for c in categories.RISK_CLASSES.values()}
    assert sizes == {"A.1": 8, "A.2": 9, "A.3": 5, "A.4": 7, "A.5": 2}
    assert len(categories.KEYWORD_RISKS) == 17  # A.1 and A.2: what the keyword library covers
    articles = {c.risk_class: c.article for c in categories.CATEGORIES.values()}
    assert articles == {"A.1": "Art.4(1)", "A.2": "Art.4(2)", "A.3": "Art.4(3)",
                        "A.4": "Art.4(4)", "A.5": "Art.4(5)"}


def test_old_names_keep_working() -> None:
    # The 12 names hegui used before the 31 risks: each is a risk or a class.
    for name in ("subversion", "nationalSecurity", "separatism", "terrorismExtremism",
                 "ethnicHatred", "violenceObscenity", "falseInformation", "discrimination",
                 "commercialViolation", "portraitRights", "reputationRights",
                 "personalInformation"):
        assert categories.is_known(name), name
    assert categories.article_of("discrimination") == "Art.4(2)"
    assert categories.article_of("commercialViolation") == "Art.4(3)"
    assert categories.covers("discrimination", "regionalDiscrimination")
    assert categories.covers("regionalDiscrimination", "discrimination")
    assert not categories.covers("discrimination", "subversion")
    assert not categories.covers("ageDiscrimination", "regionalDiscrimination")
    assert categories.risks_of("nosuch") == ()


# --- normalisation ------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("製作炸彈", "制作炸弹"),  # traditional
    ("制\u200b作\ufe0f炸\u034f弹\u3164", "制作炸弹"),  # default-ignorables
    ("制作x炸弹", "制作炸弹"),  # a stray letter
    ("bаmb", "bamb"),  # Cyrillic а
    ("ＢＯＭＢＳ", "bomb"),  # full width, inflection
    ("b̶o̷m̸b", "bomb"),  # combining marks
    ("b.o.m.b", "bomb"),  # spelled out
])
def test_normalise(text: str, expected: str) -> None:
    assert normalize.literal(text) == expected


def test_phonetic_form_and_offsets() -> None:
    text = "我要製\u200b作 zha 彈。"
    norm = normalize.normalise(text, phonetic=True)
    assert norm.text == "woyaozhizuozhadan"
    start = norm.text.index("zhizuo")
    assert norm.span(start, len(norm.text)) == (2, 11)  # 製 .. 彈
    assert not norm.aligned(start + 1, len(norm.text))  # not at a syllable's start
    assert norm.kinds(start, len(norm.text)) == {normalize.HAN, normalize.LATIN}


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_hostile_text_never_crashes_and_spans_stay_inside(text: str) -> None:
    lexicon = Lexicon([Keyword("炸弹", "terrorismExtremism"), Keyword("bomb", "subversion"),
                       Keyword("制作炸弹", "terrorismExtremism")])
    for match in lexicon.finditer(text):
        assert 0 <= match.start < match.end <= len(text)
    for span in find_pii(text):
        assert 0 <= span.start < span.end <= len(text)
    assert 0 <= pending_start(text) <= len(text)


def test_letter_runs_are_read_in_linear_time() -> None:
    # A run of single letters that ends in a word: read once, not once per letter (no
    # backtracking: 20,000 letters would take minutes if the tokeniser were quadratic).
    text = "a " * 20_000 + "ab"
    assert normalize.literal(text) == "a" * 20_001 + "b"
    # The same for the folded view of personal information: runs of spaces (where `a [at] b.cn`
    # allows them) are taken once.
    assert find_pii(" " * 20_000 + "1" + " " * 20_000) == []


# --- what matches, what does not ----------------------------------------------------------------

LEXICON = Lexicon([Keyword("色情", "violenceObscenity"), Keyword("淫秽色情", "violenceObscenity"),
                   Keyword("kill", "violenceObscenity"), Keyword("hate", "ethnicHatred"),
                   Keyword("制作炸弹", "terrorismExtremism")])


@pytest.mark.parametrize(("text", "how"), [
    ("色情", "exact"), ("seqing", "pinyin"), ("sè qíng", "pinyin"), ("色qing", "pinyin"),
    ("yinhuiseqing", "pinyin"), ("yhsq", "initials"), ("淫秽涩情", "homophone"),
    ("KILL", "exact"), ("killing", "variant"), ("ｋｉｌｌ", "variant"), ("zzzd", "initials"),
    ("製作炸彈", "exact"),
])
def test_matches_say_how(text: str, how: str) -> None:
    assert how in {m.how for m in LEXICON.finditer(text)}


@pytest.mark.parametrize("text", [
    "颜色清楚",  # 色清 reads as 色情: two-character homophones are not matched
    "哈特先生",  # ha-te spells hate: a Latin keyword is not matched by Chinese pinyin
    "a good skill", "skills", "seqingx", "yhsqs",  # whole words only
])
def test_no_match(text: str) -> None:
    assert list(LEXICON.finditer(text)) == []


def test_pinyin_forms_match_only_whole_written_words() -> None:
    lexicon = Lexicon([Keyword("收摊儿", "otherRights"), Keyword("儿童村", "otherRights"),
                       Keyword("傲睨得志", "otherRights")])
    # shoutaner is stemmed to shoutan as a typed word; that form must not match 收摊 itself.
    assert [(m.how, m.start, m.end) for m in lexicon.finditer("收摊儿收摊")] == [("exact", 0, 3)]
    assert [m.how for m in lexicon.finditer("shoutaner")] == ["pinyin"]
    # Initials of three characters are English words (etc); of four, only as one written word.
    assert list(lexicon.finditer("and so on, etc.")) == []
    assert list(lexicon.finditer('"and" z')) == []
    assert [m.how for m in lexicon.finditer("andz")] == ["initials"]


def test_engines_agree() -> None:
    keys = ["he", "she", "his", "hers", "中国", "国人"]
    fast = Lexicon([Keyword(k, "subversion") for k in keys], engine="pyahocorasick")
    slow = Lexicon([Keyword(k, "subversion") for k in keys], engine="python")
    assert fast.engine == "PyAhoCorasick" and slow.engine == "PythonAutomaton"
    text = "ushers his hers 我是中国人 she"
    assert list(fast.finditer(text)) == list(slow.finditer(text))
    assert sorted(PythonAutomaton(["a", "ab"]).iter("xab")) == [(1, 0), (2, 1)]


# --- files, versions, hot reload ----------------------------------------------------------------

def test_version_names_the_files(tmp_path: Path) -> None:
    (tmp_path / "a.tsv").write_text("# version: 2026-W48\nsubversion\tfoo\n", encoding="utf-8")
    first = load_lexicon(tmp_path)
    assert first.version.startswith("2026-W48+sha256:")
    assert first.sources == (str(tmp_path / "a.tsv"),)
    (tmp_path / "a.tsv").write_text("# version: 2026-W48\nsubversion\tbar\n", encoding="utf-8")
    assert load_lexicon(tmp_path).version != first.version  # same label, other content


def test_store_reloads_and_keeps_the_old_list_on_a_bad_update(tmp_path: Path) -> None:
    keywords = tmp_path / "k.tsv"
    keywords.write_text("subversion\told\n", encoding="utf-8")
    store = LexiconStore((tmp_path,))
    assert store.lexicon.scores("old new") == {"subversion": 1.0}
    assert not store.reload()  # nothing changed
    time.sleep(0.01)
    keywords.write_text("subversion\tnew\n", encoding="utf-8")
    assert store.reload()
    assert store.lexicon.scores("old") == {} and store.lexicon.scores("new") == {"subversion": 1.0}
    version = store.lexicon.version
    keywords.write_text("nosuch\tword\n", encoding="utf-8")
    assert not store.reload()
    assert "unknown category 'nosuch'" in store.error and store.lexicon.version == version
    keywords.write_text("# emptied by mistake\n", encoding="utf-8")
    assert not store.reload()
    assert "no keywords" in store.error and store.lexicon.version == version
    status = store.status()
    assert status["version"] == version and status["keywords"] == 1
    assert "no keywords" in status["refusedUpdate"]
    assert status["coverage"]["ok"] is False and status["coverage"]["total"] == 1


def test_reload_under_load_drops_no_request(tmp_path: Path) -> None:
    (tmp_path / "k.tsv").write_text("subversion\tword0\n", encoding="utf-8")
    store = LexiconStore((tmp_path,))
    store.watch(0.01)
    failures: list[BaseException] = []
    seen: set[str] = set()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                lexicon = store.lexicon
                found = {m.keyword.text for m in lexicon.finditer("word0 word1 word2 word3")}
                assert len(found) == 1  # a whole lexicon, old or new, never a mix
                seen.update(found)
            except BaseException as error:  # any failure is the finding
                failures.append(error)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for n in range(1, 4):
            time.sleep(0.05)
            # Written as the kubelet updates a ConfigMap volume: whole, then swapped in.
            (tmp_path / "next").write_text(f"subversion\tword{n}\n", encoding="utf-8")
            os.replace(tmp_path / "next", tmp_path / "k.tsv")
            deadline = time.monotonic() + 5
            while f"word{n}" not in seen and time.monotonic() < deadline:
                time.sleep(0.01)
    finally:
        stop.set()
        store.stop()
        for thread in threads:
            thread.join()
    assert not failures
    assert seen == {"word0", "word1", "word2", "word3"}


# --- keyword counts against the standard ---------------------------------------------------------

def test_shipped_list_falls_short_and_says_so() -> None:
    report = coverage(load_lexicon())
    assert not report.ok
    assert f"fewer than the {MIN_TOTAL_KEYWORDS}" in report.problems[0]
    assert "GB/T 45654-2025" in report.problems[0]
    assert any("risk subversion (A.1(a)) has 2 keywords, fewer than the 200" in p
               for p in report.problems)
    assert report.by_class == {"discrimination": 1, "commercialViolation": 1}
    data = report.to_dict()
    assert data["requiredTotal"] == 10_000 and len(data["risks"]) == 17


def test_coverage_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert lexicon_main(["coverage"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["total"] == 13
    (tmp_path / "bad.tsv").write_text("nosuch\tword\n", encoding="utf-8")
    assert lexicon_main(["coverage", str(tmp_path)]) == 2
    assert "unknown category 'nosuch'" in capsys.readouterr().err


def test_a_library_at_the_standard_size_passes() -> None:
    keywords = []
    for risk in categories.KEYWORD_RISKS:
        need = MIN_KEYWORDS_PER_RISK[categories.CATEGORIES[risk].risk_class]
        keywords += [Keyword(f"{risk}词{n}", risk) for n in range(need)]
    keywords += [Keyword(f"其他词{n}", "otherRights") for n in range(10_000 - len(keywords))]
    report = coverage(Lexicon(keywords))
    assert report.ok, report.problems
    assert report.total == 10_000
    # Duplicates, once normalised, count once.
    assert coverage(Lexicon([Keyword("炸弹", "subversion"),
                             Keyword("炸 彈", "subversion")])).risks[0].keywords == 1


# --- personal information -----------------------------------------------------------------------

@pytest.mark.parametrize(("text", "kind", "span"), [
    ("电话138.0013.8000", PiiKind.MOBILE, (2, 15)),
    ("一三八零零一三八零零零", PiiKind.MOBILE, (0, 11)),
    ("２０２３年 13800138000", PiiKind.MOBILE, (6, 17)),  # a year beside it stays apart
    ("写信给a[at]b.cn吧", PiiKind.EMAIL, (3, 12)),
    ("写信给 a 艾特 b.cn", PiiKind.EMAIL, (4, 13)),
])
def test_pii_evasions(text: str, kind: PiiKind, span: tuple[int, int]) -> None:
    assert [(s.kind, (s.start, s.end)) for s in find_pii(text)] == [(kind, span)]


@pytest.mark.parametrize("text", [
    "营收13,800,138,000元", "see you at example.com", "版本 1.3.5.7.9", "第一三八页"])
def test_pii_clean(text: str) -> None:
    assert find_pii(text) == []


@pytest.mark.parametrize(("text", "held"), [
    ("我的电话是138 0013", "138 0013"), ("请发到 a", "a"), ("请发到 a [at]", "a [at]"),
    ("一三八", "一三八"), ("你好。", ""), ("x" * 100, ""),
])
def test_pending_start(text: str, held: str) -> None:
    assert text[pending_start(text):] == held
