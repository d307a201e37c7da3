# ruff: noqa: RUF001 (Chinese text and full-width forms are what is tested)
"""hegui.moderation: lexicon matching, personal information, findings and decisions."""

from __future__ import annotations

import itertools
import random
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hegui.api.generativeservice import Direction, Moderation
from hegui.moderation.categories import article_of, is_known
from hegui.moderation.decision import Outcome, decide
from hegui.moderation.findings import Findings, Span, lexicon_findings, pii_findings
from hegui.moderation.lexicon import Keyword, Lexicon, load_lexicon, parse_keywords
from hegui.moderation.pii import (
    PiiKind,
    find_pii,
    is_resident_id,
    luhn_valid,
    mask,
    resident_id_check,
)
from hegui.moderation.triton_backend import findings_batch

LEXICON = load_lexicon()


def _id(first17: str) -> str:
    return first17 + resident_id_check(first17)


def _luhn(prefix: str) -> str:
    for last in "0123456789":
        if luhn_valid(prefix + last):
            return prefix + last
    raise AssertionError


# --- lexicon ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "category", "span"), [
    ("教我制作炸弹", "terrorismExtremism", (2, 6)),
    ("教我制 作*炸 弹吧", "terrorismExtremism", (2, 9)),  # separators between characters
    ("how to BUILD A BOMB?", "terrorismExtremism", (7, 19)),
    ("how to ＢＵＩＬＤ　Ａ　ＢＯＭＢ", "terrorismExtremism", (7, 19)),  # full width (NFKC)
    ("他们想推翻国家政权。", "subversion", (3, 9)),
])
def test_lexicon_matches_with_spans(text: str, category: str, span: tuple[int, int]) -> None:
    matches = list(LEXICON.finditer(text))
    assert [(m.keyword.category, (m.start, m.end)) for m in matches] == [(category, span)]


@pytest.mark.parametrize("text", [
    "", "今天天气很好", "a good skill to build a bombshell-proof plan", "制作炸", "炸弹制作"])
def test_lexicon_clean_text(text: str) -> None:
    assert list(LEXICON.finditer(text)) == []


def test_lexicon_overlapping_and_nested_keywords() -> None:
    lexicon = Lexicon([Keyword("he", "subversion"), Keyword("she", "separatism", 0.5),
                       Keyword("hers", "discrimination", 0.7), Keyword("his", "ethnicHatred")])
    found = sorted((m.start, m.end, m.keyword.text) for m in lexicon.finditer("ushers"))
    # Latin keywords match whole words only, so only "ushers" as a word could match: nothing.
    assert found == []
    cjk = Lexicon([Keyword("中国", "subversion"), Keyword("国人", "separatism"),
                   Keyword("中国人", "discrimination", 0.4)])
    found = sorted((m.start, m.end, m.keyword.text) for m in cjk.finditer("我是中国人"))
    assert found == [(2, 4, "中国"), (2, 5, "中国人"), (3, 5, "国人")]
    assert cjk.scores("我是中国人") == {"subversion": 1.0, "separatism": 1.0,
                                        "discrimination": 0.4}


@given(st.lists(st.sampled_from("abc中国人 "), max_size=40).map("".join),
       st.lists(st.sampled_from(["ab", "bc", "中国", "国人", "a", "cab"]), min_size=1,
                max_size=4, unique=True))
def test_lexicon_agrees_with_naive_search(text: str, words: list[str]) -> None:
    # Only CJK/alpha keywords without separators: compare against str.find on the folded text.
    lexicon = Lexicon([Keyword(w, "subversion") for w in words])
    # A single Latin letter between two Chinese characters is noise (制作x炸弹): dropped.
    folded = re.sub(r"(?<=[中国人])[abc](?=[中国人])", "", text.replace(" ", ""))
    expected = sum(1 for w in words for i in range(len(folded)) if folded.startswith(w, i)
                   if not w.isascii())
    got = sum(1 for m in lexicon.finditer(text) if not m.keyword.text.isascii())
    assert got == expected


def test_keyword_files(tmp_path: Path) -> None:
    (tmp_path / "a.tsv").write_text("# comment\nsubversion\tfoo bar\t0.5\n\n", encoding="utf-8")
    (tmp_path / "b.tsv").write_text("discrimination\t歧视词\n", encoding="utf-8")
    lexicon = load_lexicon(tmp_path)
    assert lexicon.scores("x foo  bar y 歧视词") == {"subversion": 0.5, "discrimination": 1.0}
    assert LEXICON.max_length > 0


@pytest.mark.parametrize(("line", "error"), [
    ("nosuch\tword", "unknown category"),
    ("subversion", "expected category"),
    ("subversion\tword\tx", "not a number"),
    ("subversion\tword\t2", "not within"),
])
def test_keyword_file_errors(line: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_keywords(line, "f.tsv")


def test_shipped_lexicon_uses_known_categories() -> None:
    assert all(is_known(k.category) for k in LEXICON.keywords)
    assert article_of("personalInformation") == "Art.4(4)"
    assert article_of("subversion", "Art.4(2)") == "Art.4(2)"


# --- personal information -----------------------------------------------------------------------

def test_resident_id_check_digit() -> None:
    assert _id("11010519491231002") == "11010519491231002X"  # the standard's worked example
    assert is_resident_id("11010519491231002X")
    assert is_resident_id("11010519491231002x")
    assert not is_resident_id("110105194912310021")  # wrong check digit
    assert not is_resident_id(_id("11010519491331002"))  # month 13
    assert not is_resident_id(_id("91010519491231002"))  # region code


@given(st.text(alphabet="0123456789", min_size=12, max_size=18))
def test_luhn_completion(prefix: str) -> None:
    card = _luhn(prefix)
    assert luhn_valid(card)
    wrong = card[:-1] + str((int(card[-1]) + 1) % 10)
    assert not luhn_valid(wrong)


CARD = _luhn("622202100112345678")
RID = _id("44030419900307123")


@pytest.mark.parametrize(("text", "kinds"), [
    (f"我的身份证是{RID}。", [PiiKind.RESIDENT_ID]),
    ("手机13812345678，座机010-12345678", [PiiKind.MOBILE]),
    ("call +86 138 1234 5678 now", [PiiKind.MOBILE]),
    (f"卡号{CARD}", [PiiKind.BANK_CARD]),
    ("卡号 4111 1111 1111 1111 谢谢", [PiiKind.BANK_CARD]),
    ("mail zhang.san+ai@example.com.cn.", [PiiKind.EMAIL]),
    ("order 138123456789 is not a phone", []),  # 12 digits
    ("4111 1111 1111 1112", []),  # Luhn fails
    ("110105194912310021", []),  # a bad ID is also no card (Luhn) nor a phone (length)
    ("", []),
])
def test_pii_detection(text: str, kinds: list[PiiKind]) -> None:
    assert [s.kind for s in find_pii(text)] == kinds


def test_pii_mask_keeps_length_and_hides_everything() -> None:
    text = f"身份证{RID}，手机13812345678，卡{CARD}，邮箱a@b.cn"
    spans = find_pii(text)
    masked = mask(text, spans)
    assert len(masked) == len(text)
    for secret in (RID, "13812345678", CARD, "a@b.cn"):
        assert secret not in masked
    assert masked.startswith("身份证***")


@given(st.integers(min_value=1930, max_value=2010), st.integers(1, 12), st.integers(1, 28),
       st.integers(0, 999), st.text(alphabet="字abc ，。", max_size=10))
def test_any_valid_resident_id_is_found_in_text(year: int, month: int, day: int, seq: int,
                                                 around: str) -> None:
    rid = _id(f"310101{year:04d}{month:02d}{day:02d}{seq:03d}")
    text = f"{around}{rid}{around}"
    spans = find_pii(text)
    assert [(s.kind, text[s.start:s.end]) for s in spans] == [(PiiKind.RESIDENT_ID, rid)]


@given(st.text(max_size=200))
def test_pii_never_fails_and_spans_are_disjoint(text: str) -> None:
    spans = find_pii(text)
    for a, b in itertools.pairwise(spans):
        assert a.end <= b.start
    assert len(mask(text, spans)) == len(text)


def test_random_digit_runs_are_rarely_masked() -> None:
    rng = random.Random(7)
    hits = sum(bool(find_pii("".join(rng.choice("0123456789") for _ in range(18))))
               for _ in range(500))
    assert hits < 100  # ~10% of 18-digit runs pass Luhn; the check digit and date cut the rest


# --- findings, batch glue, decisions ----------------------------------------------------------

def test_findings_round_trip_and_merge() -> None:
    text = f"制作炸弹 {RID}"
    lexicon, pii = lexicon_findings(LEXICON, text), pii_findings(text)
    both = Findings.from_json(lexicon.to_json()).merge(Findings.from_json(pii.to_json()))
    assert both.scores == {"terrorismExtremism": 1.0, "personalInformation": 1.0}
    assert Span(5, 23, "personalInformation", "residentId") in both.spans


def test_findings_batch_decodes_bytes_and_bad_utf8() -> None:
    batch = np.array([["制作炸弹".encode()], [b"\xff\xfe 13812345678"]], dtype=np.object_)
    out = findings_batch(batch, pii_findings)
    assert out.shape == (2, 1)
    assert Findings.from_json(out[1][0]).spans[0].label == "mobile"


POSTURE = Moderation.from_dict({
    "categories": [
        {"name": "terrorismExtremism", "threshold": 0.5, "action": "Block", "article": "Art.4(1)"},
        {"name": "falseInformation", "threshold": 0.8, "action": "Flag"},
        {"name": "personalInformation", "threshold": 0.6, "action": "Mask",
         "directions": ["output"], "article": "Art.4(4)"},
    ]})


def test_decide_block_mask_flag() -> None:
    text = f"制作炸弹 {RID}"
    found = lexicon_findings(LEXICON, text).merge(pii_findings(text))
    out = decide(found, POSTURE, Direction.OUTPUT)
    assert out.outcome == Outcome.BLOCK
    assert out.article == "Art.4(1)"
    assert [h.category for h in out.blocking] == ["terrorismExtremism"]
    masked = decide(pii_findings(text), POSTURE, Direction.OUTPUT)
    assert masked.outcome == Outcome.MASK
    assert masked.article == "Art.4(4)"
    assert [s.label for s in masked.mask_spans] == ["residentId"]
    # personalInformation applies to outputs only
    assert decide(pii_findings(text), POSTURE, Direction.INPUT).outcome == Outcome.ALLOW


def test_decide_threshold_and_undeclared() -> None:
    below = Findings({"falseInformation": 0.6})
    assert decide(below, POSTURE, Direction.INPUT).outcome == Outcome.ALLOW
    undeclared = decide(Findings({"ethnicHatred": 0.8}), POSTURE, Direction.INPUT)
    assert undeclared.outcome == Outcome.FLAG
    assert undeclared.hits[0].article == "Art.4(1)"
    assert decide(Findings({"ethnicHatred": 0.1}), POSTURE, Direction.INPUT).hits == []
    assert decide(Findings(), POSTURE, Direction.INPUT).article == "Art.14"


# --- the tritonserver launcher ------------------------------------------------------------------

def test_launcher_reports_a_missing_wheel(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from hegui.moderation import tritonserver

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(tritonserver.TritonUnavailable, match="nvidia-pytriton"):
        tritonserver.pytriton_root()


def test_launcher_environment_and_command(tmp_path: Path) -> None:
    import sysconfig

    from hegui.moderation.tritonserver import TritonServer

    server = TritonServer(http_port=1, grpc_port=2, metrics_port=3)
    env = server.environment(tmp_path / "pytriton")
    assert env["LD_LIBRARY_PATH"].split(":")[0] == sysconfig.get_config_var("LIBDIR")
    assert str(tmp_path / "nvidia_pytriton.libs") in env["LD_LIBRARY_PATH"]
    assert "HEGUI_TRITON_PYTHONPATH" in env
    command = server.command(tmp_path / "pytriton", tmp_path / "backends")
    assert "--http-address=127.0.0.1" in command and "--grpc-port=2" in command
    assert f"--backend-directory={tmp_path / 'backends'}" in command


def test_a_reload_during_a_scan_never_marks_a_text_clean_under_the_new_lexicon(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The rules remember short texts found clean, per lexicon. A long prompt is scanned in a
    thread of its own; if the lexicon reloads while it scans a short text that the new list
    prohibits, the text must not be remembered clean for the new list (Art.14)."""
    from hegui.moderation import client

    old, new = Lexicon([Keyword("zzz", "subversion")]), Lexicon([Keyword("炸弹", "violence")])
    rules = client.RulesModerator(old)
    scan = lexicon_findings

    def reloaded_meanwhile(lexicon: Lexicon, text: str) -> Findings:
        found = scan(lexicon, text)
        if text == "炸弹" and rules._lexicon is old:
            rules._lexicon = new  # the store's reload, seen by the event loop's next scan
            rules.findings("model: qwen")
        return found

    monkeypatch.setattr(client, "lexicon_findings", reloaded_meanwhile)
    assert not rules.findings("炸弹").scores  # clean under the old list, as scanned
    assert rules.findings("炸弹").scores  # and found under the new one
