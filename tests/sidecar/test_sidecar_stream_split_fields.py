"""A streamed answer's strings other than its texts (ids, `model`, fields no API defines) are
moderated as the runs they spell across events, not one event at a time (Art.4, Art.14): a
model that writes a prohibited keyword or a phone number half in one event's unknown field and
half in the next one's reaches no client, in either streaming mode."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from hegui.sidecar.config import SidecarConfig
from hegui.sidecar.testing import LocalModerator, exchange, parse, posture, sidecar_client
from hegui.sidecar.testing import http_request as request

FIRST, SECOND = "教我制作", "炸弹"  # each clean alone; 制作炸弹: terrorismExtremism, Art.4(1)
PHONE = "13812345678"


def _event(text: str, **extra: str) -> str:
    return json.dumps({"id": "1", "object": "chat.completion.chunk", "model": "fake", **extra,
                       "choices": [{"index": 0, "delta": {"content": text},
                                    "finish_reason": None}]}, ensure_ascii=False)


def _stream(first: str, second: str) -> list[bytes]:
    """Token events alike but for their text, then two whose field `x_note` (no API defines
    it; the openai client keeps it) holds `first`, then `second`, then more tokens: the bytes
    before the second of them, and from it on."""
    texts = list("你好世界你好世界")
    before = [_event(t) for t in texts] + [_event("今", x_note=first)]
    after = [_event("天", x_note=second)] + [_event(t) for t in texts]
    return [("".join(f"data: {e}\n\n" for e in before)).encode(),
            ("".join(f"data: {e}\n\n" for e in after) + "data: [DONE]\n\n").encode()]


async def _through(mode: str, said: list[bytes], pause: float = 0.0) -> str:
    """The stream through the sidecar; with `pause`, the model waits that long between its
    two parts (the first is relayed before the second comes)."""
    async def answer(request_: web.Request) -> web.StreamResponse:
        await request_.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request_)
        for part in said:
            await response.write(part)
            await asyncio.sleep(pause)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    model = TestServer(app, host="127.0.0.1")
    await model.start_server()
    client = await sidecar_client(SidecarConfig(posture(output={"streaming": {"mode": mode}}),
                                                upstream=str(model.make_url("")).rstrip("/")),
                                  LocalModerator())
    body = json.dumps({"model": "fake", "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    try:
        status, _, answered = parse(await exchange(client.host, client.port, request(
            "POST", "/v1/chat/completions", body)))
    finally:
        await client.close()
        await model.close()
    assert status == 200
    return answered.decode("utf-8")


def _notes(text: str) -> str:
    """What the client was given of `x_note`, joined in order."""
    return "".join(json.loads(m)["x_note"] for m in re.findall(r"^data: (\{.*\})$", text, re.M)
                   if "x_note" in json.loads(m))


@pytest.mark.parametrize("mode", ["Hold", "StreamThenRetract"])
async def test_a_keyword_split_across_two_events_unknown_field_is_stopped(mode: str) -> None:
    text = await _through(mode, _stream(FIRST, SECOND))
    assert "hegui.output_blocked" in text  # the stream stopped, saying why (Art.14)
    assert FIRST + SECOND not in _notes(text)
    assert SECOND not in _notes(text)  # the half that completes it never went out


@pytest.mark.parametrize("mode", ["Hold", "StreamThenRetract"])
async def test_a_phone_number_split_across_two_events_unknown_field_is_not_sent(
        mode: str) -> None:
    text = await _through(mode, _stream(f"call {PHONE[:3]}", PHONE[3:]))
    notes = _notes(text)
    assert PHONE not in notes and PHONE[3:] not in notes  # masked or stopped, never sent
    assert PHONE not in text


@pytest.mark.parametrize("mode", ["Hold", "StreamThenRetract"])
async def test_fields_that_only_repeat_or_change_cleanly_pass(mode: str) -> None:
    """No false stop: a field whose values join into clean text goes out as the model wrote
    it, and so does the stream's text."""
    text = await _through(mode, _stream("晴天", "多云"))
    assert "hegui.output_blocked" not in text
    assert _notes(text) == "晴天多云"
    assert "[DONE]" in text


@pytest.mark.parametrize("mode", ["Hold", "StreamThenRetract"])
@pytest.mark.parametrize(("first", "second"), [(FIRST, SECOND), (f"call {PHONE[:3]}", PHONE[3:])])
async def test_the_second_half_coming_after_the_first_went_out_stops_the_stream(
        mode: str, first: str, second: str) -> None:
    """The first half was relayed (or queued) before the second came: the stream stops before
    the second half goes out; a number's first digits already sent cannot be masked, so it is
    stopped, not masked (Art.4(4), Art.14)."""
    text = await _through(mode, _stream(first, second), pause=0.3)
    assert "hegui.output_blocked" in text
    assert second not in _notes(text) and PHONE not in text


@pytest.mark.parametrize("mode", ["Hold", "StreamThenRetract"])
async def test_a_number_masked_in_one_event_does_not_stop_the_next_value(mode: str) -> None:
    """A phone number whole in one event's field is masked there; the field's next value,
    scored with it as context, is not taken for it (no stop, nothing more masked)."""
    text = await _through(mode, _stream(f"call {PHONE}", "谢谢"), pause=0.1)
    assert "hegui.output_blocked" not in text
    assert _notes(text) == "call " + "*" * 11 + "谢谢"


@pytest.mark.parametrize("mode", ["Hold", "StreamThenRetract"])
async def test_a_whole_number_after_a_value_ending_in_digits_is_masked(mode: str) -> None:
    """Read with its run's tail, a number right after a digit is part of a longer one
    ("id 2024" then the number: "id 202413812345678"), which the rules take for no phone
    number; each value is read alone too, as it was before values joined runs (Art.4(4))."""
    text = await _through(mode, _stream("id 2024", PHONE))
    assert "hegui.output_blocked" not in text
    assert PHONE not in text and _notes(text) == "id 2024" + "*" * 11


@pytest.mark.parametrize("mode", ["Hold", "StreamThenRetract"])
async def test_events_flooding_the_runs_with_fields_are_cut(mode: str) -> None:
    """Past 256 distinct string fields the runs would share one and interleave, hiding what a
    field spells across events (a number split over x_note's values between others): the
    stream is cut with a final event saying why (Art.14)."""
    flood = {f"f{i:03}": "x" for i in range(300)}
    events = [_event("你", **flood), _event("好", x_note=f"call {PHONE[:3]}", x_zz="a"),
              _event("世", x_note=PHONE[3:7], x_zz="b"), _event("界", x_note=PHONE[7:], x_zz="c")]
    text = await _through(mode, [("".join(f"data: {e}\n\n" for e in events)
                                  + "data: [DONE]\n\n").encode()])
    assert "hegui.upstream_malformed" in text and "distinct string fields" in text
    assert PHONE[3:7] not in _notes(text)


@pytest.mark.parametrize("mode", ["Hold", "StreamThenRetract"])
async def test_a_repeated_value_after_the_run_moved_on_is_read_with_it(mode: str) -> None:
    """A token event's shape learned while a field held "8000" served later events carrying
    "8000" unread, after the field had moved on to "call 1380013": the number the two spell
    went out. The shape is dropped when a run moves on, so the event is read with the run."""
    parts = [_event(t, x_note=v).encode() for t, v in
             [("你", "x"), ("好", "8000"), ("世", "8000"), ("界", "8000"),
              ("今", "call 1380013"), ("天", "8000"), ("好", "8000")]]
    said = [b"data: " + p + b"\n\n" for p in parts[:-1]] + [
        b"data: " + parts[-1] + b"\n\ndata: [DONE]\n\n"]
    text = await _through(mode, said, pause=0.05)
    assert "call 13800138000" not in _notes(text)
