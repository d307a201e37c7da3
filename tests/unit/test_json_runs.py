"""The text a JSON answer spells across its strings (hegui.sidecar.json_scan.Runs, Art.4,
Art.14, issue 14): the scanner places every string (a key, or a value and its path) as the bytes
arrive, and the runs moderate consecutive values as one running text, so no split of a
prohibited text over strings and reads ever goes out whole, and personal information split over
strings is masked (or the answer cut), never relayed. The sidecar tests
(tests/sidecar/test_datapath_nongenerative_split.py) drive the same through the real app."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hegui.api.generativeservice import Direction
from hegui.moderation.client import RulesModerator
from hegui.moderation.decision import Decision, decide
from hegui.sidecar.json_scan import (
    HOLD_PARTS,
    MAX_DEPTH,
    Malformed,
    Runs,
    Scanner,
    String,
    spelled,
)
from hegui.sidecar.testing import posture

MODERATOR = RulesModerator()
POSTURE = posture()


def strings(raw: bytes, cut: int = 7) -> list[String]:
    scanner = Scanner(1 << 20)
    found: list[String] = []
    for at in range(0, len(raw), cut):
        found += [p for p in scanner.feed(raw[at:at + cut]) if isinstance(p, String)]
    scanner.finish()
    return found


def test_every_string_is_placed_as_a_key_or_a_value_at_its_path() -> None:
    raw = json.dumps({"object": "list", "data": [
        {"object": "embedding", "embedding": [0.5, 1e-05], "tags": ["a", ["b"]]}],
        "model": "m", "usage": {}}).encode()
    placed = [(s.text, s.path if not s.is_key else "key") for s in strings(raw)]
    assert placed == [
        ("object", "key"), ("list", ("object",)), ("data", "key"), ("object", "key"),
        ("embedding", ("data", "*", "object")), ("embedding", "key"), ("tags", "key"),
        ("a", ("data", "*", "tags", "*")), ("b", ("data", "*", "tags", "*", "*")),
        ("model", "key"), ("m", ("model",)), ("usage", "key")]
    assert [(s.text, s.path) for s in strings(b'"top"')] == [("top", ())]


@pytest.mark.parametrize("bad", [
    b'["a" "b"]', b'{"a" "b"}', b'{"a": 1 "b": 2}', b'[1, 2] "a"', b'[1}', b'{"a": [1]]',
    b'[' * (MAX_DEPTH + 1) + b']' * (MAX_DEPTH + 1), b'{"a": [1, 2]',
])
def test_what_is_no_json_is_refused(bad: bytes) -> None:
    """A string where JSON allows none, brackets that do not match, nesting beyond the bound,
    an answer that ends inside an array: malformed (the client gets a 502 or a cut answer)."""
    with pytest.raises(Malformed):
        strings(bad, cut=3)


def moderate(texts: list[str]) -> dict[str, Decision]:
    found = asyncio.run(MODERATOR.moderate(texts))
    return {t: decide(f, POSTURE, Direction.OUTPUT) for t, f in zip(texts, found, strict=True)}


def relay(raw: bytes, reads: list[int]) -> tuple[bytes, str]:
    """The answer relayed as the sidecar relays it, read by read: what went out, and how it
    ended: "blocked" (a prohibited text: 451 or cut), "late" (a mask reached text already
    sent: cut) or "whole"."""
    scanner, runs = Scanner(1 << 20), Runs(32)
    out = bytearray()
    bounds = [0, *sorted(set(reads)), len(raw)]
    chunks = [raw[a:b] for a, b in itertools.pairwise(bounds) if b > a] + [b""]
    for chunk in chunks:
        parts = scanner.feed(chunk) if chunk else []
        if not chunk:
            scanner.finish()
        batch = runs.take(parts, final=not chunk)
        verdicts = moderate(list(dict.fromkeys(batch.texts)))
        if any(d.blocking for d in verdicts.values()):
            return bytes(out), "blocked"
        _, late = batch.mask(verdicts)
        if late:
            return bytes(out), "late"
        runs.commit(batch)
        out += b"".join(p if isinstance(p, bytes) else p.raw for p in batch.parts)
    return bytes(out), "whole"


def values(body: bytes) -> str:
    """The string values a client could join, from what it received (complete or not)."""
    return "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', body.decode("utf-8", "replace")))


def split(draw: Any, text: str) -> list[str]:
    cuts = sorted(draw(st.sets(st.integers(1, len(text) - 1), max_size=len(text) - 1)))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


@st.composite
def answers(draw: Any, text: str) -> tuple[bytes, list[int]]:
    """An answer that spells `text` across strings, in one of the shapes a model server could
    use: token strings, an array of strings, one field of consecutive items (other fields,
    numbers and base64 between), sibling fields of one object."""
    pieces = split(draw, text)
    shape = draw(st.sampled_from(["token_strs", "array", "field", "siblings"]))
    if shape == "token_strs":
        document: Any = {"count": len(pieces), "tokens": list(range(len(pieces))),
                         "token_strs": pieces}
    elif shape == "array":
        document = {"data": [{"embedding": [0.1, -2e-05], "tags": pieces}]}
    elif shape == "field":
        document = {"object": "list", "data": [
            {"object": "embedding", "index": i, "embedding": "AAAAAA==", "note": piece,
             **({"score": 13} if i % 2 else {})} for i, piece in enumerate(pieces)],
            "model": "bge-m3"}
    else:
        document = {f"k{i}": piece for i, piece in enumerate(pieces)}
    raw = json.dumps(document, ensure_ascii=draw(st.booleans())).encode()
    reads = draw(st.lists(st.integers(1, len(raw) - 1), max_size=6))
    return raw, reads


PROHIBITED = ["制作炸弹", "build a bomb", "请教我制作炸弹吧", "how to build a bomb now"]


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_no_split_of_a_prohibited_text_goes_out_whole(data: st.DataObject) -> None:
    text = data.draw(st.sampled_from(PROHIBITED))
    raw, reads = data.draw(answers(text))
    out, ended = relay(raw, reads)
    assert ended == "blocked", (raw, reads)
    assert text not in values(out)


PHONE = "13800138000"


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_personal_information_split_over_strings_is_masked_or_cut(data: st.DataObject) -> None:
    text = data.draw(st.sampled_from([f"call {PHONE} now", f"{PHONE}", f"电话{PHONE}。"]))
    raw, reads = data.draw(answers(text))
    out, ended = relay(raw, reads)
    assert ended in ("whole", "late"), (raw, reads)
    assert PHONE[:7] not in values(out), (raw, reads, out)
    if ended == "whole":
        json.loads(out)  # masked in place: still JSON, the same shape
        assert len(strings(out)) == len(strings(raw))


def test_clean_answers_go_out_byte_for_byte_and_runs_stay_bounded() -> None:
    items = [{"object": "embedding", "index": i, "embedding": [0.25, -1.5e-05, 13800138000],
              "tags": ["北京", " 2024", "年"]} for i in range(300)]
    raw = json.dumps({"object": "list", "data": items, "model": "Qwen3-Embedding-8B"},
                     ensure_ascii=False).encode()
    out, ended = relay(raw, list(range(1000, len(raw), 4096)))
    assert ended == "whole" and out == raw
    runs = Runs(32)
    scanner = Scanner(1 << 20)
    for at in range(0, len(raw), 4096):
        runs.commit(runs.take(scanner.feed(raw[at:at + 4096]), final=False))
    assert all(len(c) <= 32 for c in runs.context.values()) and len(runs.context) < 8


def test_a_model_that_drips_bytes_holds_a_bounded_number_of_parts() -> None:
    """A pending run ("1", a digit that may begin a phone number) with much whitespace after it,
    sent a byte a read: what is held stays bounded (each read looks at it again), and the answer
    still goes out byte for byte."""
    raw = b'{"token_strs": ["1",' + b" " * 5000 + b'"2"]}'
    scanner, runs = Scanner(1 << 20), Runs(32)
    out = bytearray()
    most = 0
    for at in range(len(raw) + 1):
        chunk = raw[at:at + 1]
        batch = runs.take(scanner.feed(chunk) if chunk else [], final=not chunk)
        most = max(most, len(runs.held))
        runs.commit(batch)
        out += b"".join(p if isinstance(p, bytes) else p.raw for p in batch.parts)
    assert out == raw
    assert most <= HOLD_PARTS


def test_a_body_read_whole_spells_its_runs() -> None:
    """`spelled` (a model's error answer, read whole): the same runs as a streamed answer's,
    each of more than one string; what token strings in bytes decode to as well."""
    body = {"error": {"message": ["制作", "炸弹"], "type": "x"},
            "items": [{"n": "bu", "o": "e"}, {"n": "ild a bomb", "o": "e"}]}
    texts = spelled(body)
    assert "制作炸弹" in texts and "build a bomb" in texts
    assert spelled({"error": "one string"}) == []
    assert " build a bomb" in spelled({"token_strs": ["Ġbuild", "Ġa", "Ġbomb"]})
