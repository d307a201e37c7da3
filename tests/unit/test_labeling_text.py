"""Text labels (Art.12, GB 45438-2025): explicit wording where the posture puts it, the AIGC
implicit label in the JSON body, the header and SSE streams, a ProduceID per response."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hegui.api.generativeservice import ExplicitLabel, ImplicitLabel, LabelPosition
from hegui.labeling import HEADER, AigcLabel, MetadataError, new_label
from hegui.labeling.text import (
    DEFAULT_LABEL_TEXT,
    TextLabel,
    label_response,
    label_response_bytes,
    label_stream,
    label_text,
    read_stream,
    response_text,
)

IMPLICIT = ImplicitLabel(content_producer="示例科技有限公司", produce_id_prefix="chat-")


def _label(position: LabelPosition, text: str | None = "AI生成") -> TextLabel:
    return TextLabel.from_posture(ExplicitLabel(text=text, position=position))


@pytest.mark.parametrize(("position", "expected"), [
    (LabelPosition.START, "AI生成\n\nhello"),
    (LabelPosition.END, "hello\n\nAI生成"),
    (LabelPosition.START_AND_END, "AI生成\n\nhello\n\nAI生成"),
])
def test_plain_text_label_at_the_posture_position(position: LabelPosition,
                                                  expected: str) -> None:
    assert label_text("hello", _label(position)) == expected


def test_absent_explicit_means_default_wording_at_end_and_disabled_means_none() -> None:
    assert label_text("x", TextLabel.from_posture(None)) == f"x\n\n{DEFAULT_LABEL_TEXT}"
    assert label_text("x", TextLabel.from_posture(ExplicitLabel(enabled=False))) == "x"


def test_implicit_label_has_the_standards_fields_and_a_unique_produce_id() -> None:
    first, second = new_label(IMPLICIT), new_label(IMPLICIT)
    assert list(first.to_dict()) == ["Label", "ContentProducer", "ProduceID", "ReservedCode1",
                                     "ContentPropagator", "PropagateID", "ReservedCode2"]
    assert first.Label == "1" and first.ContentProducer == "示例科技有限公司"
    assert first.ProduceID.startswith("chat-") and first.ProduceID != second.ProduceID
    assert len({new_label(IMPLICIT).ProduceID for _ in range(500)}) == 500


def test_header_value_is_ascii_and_round_trips() -> None:
    label = new_label(IMPLICIT)
    value = label.header_value()
    value.encode("ascii")    # an HTTP header value must be ASCII
    assert HEADER == "X-AIGC"
    assert AigcLabel.from_json(value) == label
    assert AigcLabel.from_json(json.dumps({"AIGC": label.to_dict()})) == label


@pytest.mark.parametrize("bad", ['{"Label": "7"}', "[1]", "not json", '{"Label": [1]}'])
def test_malformed_aigc_payload_is_refused_citing_the_standard(bad: str) -> None:
    with pytest.raises(MetadataError, match="GB 45438-2025"):
        AigcLabel.from_json(bad)


def test_chat_completion_every_choice_labeled_and_aigc_field_added() -> None:
    body: dict[str, Any] = {"object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "一"}},
        {"index": 1, "message": {"role": "assistant", "content": "二"}},
        {"index": 2, "message": {"role": "assistant", "content": None, "tool_calls": []}}]}
    aigc = new_label(IMPLICIT)
    labeled = label_response(body, _label(LabelPosition.START_AND_END), aigc)
    assert response_text(labeled) == ["AI生成\n\n一\n\nAI生成", "AI生成\n\n二\n\nAI生成"]
    assert labeled["choices"][2]["message"]["content"] is None
    assert labeled["AIGC"] == aigc.to_dict()
    assert body["choices"][0]["message"]["content"] == "一"     # input untouched


def test_completions_bytes_labeled_and_non_json_flagged() -> None:
    data = json.dumps({"object": "text_completion", "choices": [{"text": "hi"}]}).encode()
    out = label_response_bytes(data, _label(LabelPosition.END), new_label(IMPLICIT))
    assert out is not None
    assert json.loads(out)["choices"][0]["text"] == "hi\n\nAI生成"
    assert label_response_bytes(b"<html>", _label(LabelPosition.END),
                                new_label(IMPLICIT)) is None


def _chat_stream(pieces: list[str], finish: bool = True) -> bytes:
    events = [{"id": "c1", "object": "chat.completion.chunk", "model": "m",
               "choices": [{"index": 0, "delta": {"role": "assistant"},
                            "finish_reason": None}]}]
    events += [{"id": "c1", "object": "chat.completion.chunk", "model": "m",
                "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]}
               for p in pieces]
    if finish:
        events.append({"id": "c1", "object": "chat.completion.chunk", "model": "m",
                       "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + \
        b": keep-alive\n\ndata: [DONE]\n\n"


@pytest.mark.parametrize("finish", [True, False])
def test_stream_label_in_first_content_chunk_and_final_chunk_before_done(finish: bool) -> None:
    aigc = new_label(IMPLICIT)
    out = label_stream(_chat_stream(["Hel", "lo"], finish), _label(LabelPosition.START_AND_END),
                       aigc)
    stream = read_stream(out)
    assert stream.texts == {0: "AI生成\n\nHello\n\nAI生成"}
    assert stream.aigc[0] == aigc.to_dict()
    assert out.endswith(b"data: [DONE]\n\n") and b": keep-alive\n\n" in out
    events = [e for e in out.split(b"\n\n") if e.startswith(b"data: {")]
    # start label rides on the first chunk with content, not the role-only chunk
    assert "AI生成" not in json.loads(events[0][6:])["choices"][0]["delta"].get("content", "")
    assert json.loads(events[1][6:])["choices"][0]["delta"]["content"].startswith("AI生成")
    end_chunk = json.loads(events[3][6:])
    assert end_chunk["choices"][0]["delta"]["content"] == "\n\nAI生成"
    assert end_chunk["id"] == "c1"


def test_stream_fed_in_arbitrary_pieces_gives_the_same_bytes() -> None:
    from hegui.labeling.text import StreamLabeler
    data = _chat_stream(["a", "b", "c"]).replace(b"\n\n", b"\r\n\r\n")
    label, aigc = _label(LabelPosition.END), new_label(IMPLICIT)
    whole = label_stream(data, label, aigc)
    labeler = StreamLabeler(label, aigc)
    pieces = b"".join(labeler.feed(data[i:i + 7]) for i in range(0, len(data), 7))
    assert pieces + labeler.close() == whole
    assert read_stream(whole).texts == {0: "abc\n\nAI生成"}


def test_completions_stream_end_label_uses_text_field() -> None:
    events = [{"id": "x", "object": "text_completion",
               "choices": [{"index": 0, "text": t, "finish_reason": None}]} for t in "ab"]
    data = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    out = label_stream(data + b"data: [DONE]\n\n", _label(LabelPosition.END),
                       new_label(IMPLICIT))
    assert read_stream(out).texts == {0: "ab\n\nAI生成"}


def test_end_label_follows_text_that_arrives_with_the_finish() -> None:
    """A proxy that re-chunks sends its last window and finish_reason in one chunk."""
    last = {"id": "c1", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": {"content": "world"}, "finish_reason": "stop"}]}
    stream = _chat_stream(["Hello "], finish=False).replace(
        b": keep-alive", b"data: " + json.dumps(last).encode())
    out = label_stream(stream, _label(LabelPosition.END), new_label(IMPLICIT))
    assert read_stream(out).texts == {0: "Hello world\n\nAI生成"}
