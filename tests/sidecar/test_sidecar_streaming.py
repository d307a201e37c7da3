# ruff: noqa: RUF001 (Chinese text is written with its own punctuation)
"""Streaming modes (Art.14): Hold sends nothing unmoderated, StreamThenRetract sends tokens as
they arrive and withdraws on a violation, both keep the model's per-token chunks and mask
personal information holding back only a run that may be a number. Against the fake model
server (paced like a loaded GPU server) with the moderation rules in-process, through raw HTTP
and the real `openai` client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from hegui.moderation.client import may_contain_pii
from hegui.moderation.findings import Findings
from hegui.moderation.pii import find_pii
from hegui.sidecar.config import SidecarConfig
from hegui.sidecar.streaming import _pending_start_fallback, pending_start
from hegui.sidecar.testing import FakeModel, LocalModerator, posture, sidecar_client

CLEAN = "第一段内容正常无害。" * 2
TAIL = "后面的内容不应该被发送出去。" * 4


def streaming(mode: str, **options: Any) -> dict[str, Any]:
    # Input moderation off: these tests are about what the model says.
    return {"input": {"enabled": False},
            "output": {"streamWindowTokens": 16, "streaming": {"mode": mode, **options}}}


async def start(fake_model: FakeModel, moderator: LocalModerator, mode: str,
                **options: Any) -> TestClient[Any, Any]:
    return await sidecar_client(SidecarConfig(posture(**streaming(mode, **options)),
                                              upstream=fake_model.url,
                                              upstream_read_timeout=2.0), moderator)


def chat(text: str) -> dict[str, Any]:
    return {"model": "fake", "stream": True,
            "messages": [{"role": "user", "content": f"say:{text}"}]}


async def chunks_of(response: Any) -> AsyncIterator[Any]:
    """Each event as it arrives: the chunk, or "[DONE]"."""
    buffer = b""
    async for data in response.content.iter_any():
        buffer += data
        *events, buffer = buffer.split(b"\n\n")
        for event in events:
            assert event.startswith(b"data: ")
            yield "[DONE]" if event == b"data: [DONE]" else json.loads(event[6:])


def text_of(chunk: Any) -> str:
    if not isinstance(chunk, dict):
        return ""
    return "".join(c.get("delta", {}).get("content") or c.get("text") or ""
                   for c in chunk.get("choices", []))


@pytest.fixture
def paced(fake_model: FakeModel) -> FakeModel:
    fake_model.pace, fake_model.chunk_chars = 0.02, 1  # one token a chunk, 20 ms apart
    return fake_model


async def test_stream_then_retract_withdraws_and_stops_the_model(
        paced: FakeModel, moderator: LocalModerator) -> None:
    client = await start(paced, moderator, "StreamThenRetract")
    try:
        response = await client.post("/v1/chat/completions", json=chat(f"{CLEAN}制作Q炸弹{TAIL}"))
        assert response.headers["x-hegui-streaming"] == "StreamThenRetract"
        received = [c async for c in chunks_of(response)]
    finally:
        await client.close()
    assert received[-1] == "[DONE]"
    final = received[-2]
    assert final["choices"][0]["finish_reason"] == "content_filter"
    error = final["error"]
    assert error["code"] == "hegui.output_blocked" and error["withdraw"] is True
    assert error["category"] == "terrorismExtremism" and error["article"] == "Art.4(1)"
    shown = "".join(text_of(c) for c in received)
    assert shown.startswith(CLEAN)  # streamed before moderation had seen the violation
    assert all(len(text_of(c)) == 1 for c in received[:-2] if text_of(c))  # per token
    assert len(shown) < len(CLEAN) + 4 + len(TAIL) // 2  # transmission stopped
    # generation stopped: the model's stream was closed before its end
    for _ in range(100):
        if paced.disconnects:
            break
        await asyncio.sleep(0.02)
    assert paced.disconnects == 1
    assert paced.written < len(CLEAN) + 4 + len(TAIL)


#: The strings of the fake model's events that are not their text (id, object, model, finish).
_FIELDS = frozenset({"cmpl-1", "chat.completion.chunk", "fake", "stop"})


class Witness(LocalModerator):
    """Keeps what was moderated, in order, without the context each window repeats."""

    def __init__(self) -> None:
        super().__init__()
        self.moderated = ""

    async def moderate(self, texts: list[str]) -> list[Findings]:
        for text in texts:
            if text in _FIELDS:  # the events' other strings, moderated in a call of their own
                continue
            context = self.moderated[-32:]  # stream_overlap_chars
            assert text.startswith(context)
            self.moderated += text[len(context):]
        return await super().moderate(texts)


async def test_hold_never_sends_unmoderated_text(paced: FakeModel) -> None:
    witness = Witness()
    client = await start(paced, witness, "Hold", firstWindowTokens=2)
    try:
        response = await client.post("/v1/chat/completions", json=chat(f"{CLEAN}制作Q炸弹{TAIL}"))
        shown = ""
        received = []
        async for chunk in chunks_of(response):
            received.append(chunk)
            shown += text_of(chunk)
            assert witness.moderated.startswith(shown)  # moderated before it was sent
    finally:
        await client.close()
    error = received[-2]["error"]
    assert error["code"] == "hegui.output_blocked" and error["withdraw"] is False
    assert "炸" not in shown and shown.startswith(CLEAN[:2])
    assert all(len(text_of(c)) == 1 for c in received[:-2] if text_of(c))  # per token


async def test_a_phone_number_split_across_tokens_is_masked_and_only_it_is_held(
        paced: FakeModel, moderator: LocalModerator) -> None:
    paced.pace = 0.05
    text = "请拨打电话13812345678联系我们，谢谢"
    client = await start(paced, moderator, "StreamThenRetract")
    try:
        response = await client.post("/v1/chat/completions", json=chat(text))
        arrivals = []  # (text, chunks the model had written when it arrived)
        async for chunk in chunks_of(response):
            if text_of(chunk):
                arrivals.append((text_of(chunk), paced.written))
    finally:
        await client.close()
    shown = "".join(t for t, _ in arrivals)
    assert shown == "请拨打电话***********联系我们，谢谢"
    assert [t for t, _ in arrivals] == list(shown)  # still one token a chunk
    for index, (piece, written) in enumerate(arrivals):
        if piece == "*":
            assert written >= 17  # a digit waits until the number is known to have ended
        else:
            assert written <= index + 2  # any other token goes out as it arrives


async def test_hold_windows_grow_and_merge_is_asked_for(paced: FakeModel,
                                                         moderator: LocalModerator) -> None:
    paced.pace = 0.0
    text = "一段没有问题的文字，" * 6
    client = await start(paced, moderator, "Hold", firstWindowTokens=2)
    merging = await start(paced, moderator, "Hold", firstWindowTokens=2, mergeTokens=True)
    try:
        per_token = [c async for c in chunks_of(
            await client.post("/v1/chat/completions", json=chat(text)))]
        merged = [c async for c in chunks_of(
            await merging.post("/v1/chat/completions", json=chat(text)))]
    finally:
        await client.close()
        await merging.close()
    assert "".join(map(text_of, per_token)) == text == "".join(map(text_of, merged))
    assert [len(text_of(c)) for c in per_token if text_of(c)] == [1] * len(text)
    assert all(c["id"] == "cmpl-1" and c["object"] == "chat.completion.chunk"
               for c in per_token[:-1])
    # windows of 2, 4, 8, 16, 16: each is one chunk when the posture asks for merging
    assert [len(text_of(c)) for c in merged if text_of(c)] == [2, 4, 8, 16, 16, 14]
    assert [c for c in moderator.calls if c == ["一段"]]  # the first window was 2 tokens


async def test_the_openai_client_sees_the_withdrawal(paced: FakeModel,
                                                     moderator: LocalModerator) -> None:
    client = await start(paced, moderator, "StreamThenRetract")
    api = openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="unused",
                             max_retries=0)
    try:
        clean = await api.chat.completions.create(
            model="fake", stream=True, messages=[{"role": "user", "content": "say:你好，世界"}])
        tokens = [c.choices[0].delta.content async for c in clean if c.choices]
        assert "".join(t for t in tokens if t) == "你好，世界"
        assert len([t for t in tokens if t]) == 5
        shown = ""
        with pytest.raises(openai.APIError) as raised:
            withdrawn = await api.chat.completions.create(
                model="fake", stream=True,
                messages=[{"role": "user", "content": f"say:{CLEAN}制作Q炸弹{TAIL}"}])
            async for chunk in withdrawn:
                shown += chunk.choices[0].delta.content or ""
        assert shown.startswith(CLEAN)
        body = raised.value.body
        assert isinstance(body, dict) and body["withdraw"] is True
        assert body["code"] == "hegui.output_blocked"
        with pytest.raises(openai.APIStatusError) as withheld:  # not streamed: withheld whole
            await api.chat.completions.create(
                model="fake", messages=[{"role": "user", "content": f"say:{CLEAN}制作Q炸弹"}])
        assert withheld.value.status_code == 451
    finally:
        await api.close()
        await client.close()


@pytest.mark.parametrize("mode", ["Hold", "StreamThenRetract"])
async def test_moderator_down_mid_stream_fails_closed(paced: FakeModel,
                                                      moderator: LocalModerator,
                                                      mode: str) -> None:
    client = await start(paced, moderator, mode)
    try:
        response = await client.post("/v1/chat/completions", json=chat(CLEAN * 3))
        received = []
        async for chunk in chunks_of(response):
            received.append(chunk)
            if len(received) == 6:
                moderator.down = True
    finally:
        await client.close()
    error = received[-2]["error"]
    assert error["code"] == "hegui.moderation_unavailable"
    assert error["withdraw"] is (mode == "StreamThenRetract")
    assert len("".join(map(text_of, received))) < len(CLEAN * 3)


def test_pending_runs() -> None:
    for hold in (_pending_start_fallback, pending_start):
        assert hold("请拨打138") == 3
        assert hold("请拨打电话，谢谢") == len("请拨打电话，谢谢")
        assert hold("卡号 6222 0200 ") == 3  # digit groups with their separators
        assert hold("写信给 zhang.san@exa") == 4
        assert hold("x" * 100) == 100  # longer than any number or address: not held
    # bounded: a long run costs no more than a short one
    assert _pending_start_fallback("1 " * 500_000) == 1_000_000


def lines_of(raw: bytes, ndjson: bool) -> list[Any]:
    if ndjson:
        return [json.loads(line) for line in raw.split(b"\n") if line.strip()]
    out = []
    for event in raw.split(b"\n\n"):
        data = [line[6:] for line in event.split(b"\n") if line.startswith(b"data: ")]
        if data and data[0] != b"[DONE]":
            out.append(json.loads(data[0]))
    return out


FAMILY_STREAMS = [
    ("/api/chat", lambda t: {"model": "fake", "messages": [{"role": "user", "content": t}]},
     lambda e: (e.get("message") or {}).get("content", "")),
    ("/api/generate", lambda t: {"model": "fake", "prompt": t}, lambda e: e.get("response", "")),
    ("/generate_stream", lambda t: {"inputs": t},
     lambda e: (e.get("token") or {}).get("text", "") if e.get("generated_text") is None
     else ""),
    ("/v2/models/fake/generate_stream", lambda t: {"text_input": t},
     lambda e: e.get("text_output", "")),
]


@pytest.mark.parametrize(("path", "body", "text"), FAMILY_STREAMS,
                         ids=[p for p, _, _ in FAMILY_STREAMS])
@pytest.mark.parametrize("mode", ["Hold", "StreamThenRetract"])
async def test_every_streaming_family_is_masked_per_token_and_withdrawn(
        fake_model: FakeModel, moderator: LocalModerator, path: str, body: Any, text: Any,
        mode: str) -> None:
    fake_model.chunk_chars = 1
    client = await start(fake_model, moderator, mode)
    ndjson = path.startswith("/api/")
    try:
        response = await client.post(path, json=body("say:请拨打13812345678联系"))
        assert response.status == 200
        events = lines_of(await response.read(), ndjson)
        shown = [text(e) for e in events if text(e)]
        assert "".join(shown) == "请拨打***********联系"
        assert shown == list("请拨打***********联系")  # one token an event, as the model sent
        final = [e for e in events if e.get("generated_text")]  # TGI repeats what was sent
        assert all(e["generated_text"] == "请拨打***********联系" for e in final)
        cut = await client.post(path, json=body(f"say:{CLEAN}制作Q炸弹{TAIL}"))
        events = lines_of(await cut.read(), ndjson)
        if mode == "Hold":  # a model this fast is all sent before a StreamThenRetract verdict
            assert "炸弹" not in "".join(text(e) for e in events)
        errors = [e for e in events if "error" in e or "hegui" in e]
        assert len(errors) == 1 and errors[-1] is events[-1]
        error = events[-1].get("hegui") or events[-1]["error"]
        assert error["code"] == "hegui.output_blocked"
        assert error["withdraw"] is (mode == "StreamThenRetract")
    finally:
        await client.close()


async def test_several_choices_are_moderated_one_by_one() -> None:
    """n = 2: a violation in one choice cuts the stream (what was shown of both is withdrawn);
    a phone number in the other is masked; chunks of the two interleave as the model sent them."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    async def two_choices(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        first, second = f"{CLEAN}制作炸弹{TAIL}", "电话13812345678" + "好" * 60
        for a, b in zip(first, second, strict=False):
            for index, piece in ((0, a), (1, b)):
                chunk = {"id": "c", "object": "chat.completion.chunk", "choices": [
                    {"index": index, "delta": {"content": piece}, "finish_reason": None}]}
                await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await asyncio.sleep(0.005)
        await response.write(b"data: [DONE]\n\n")
        return response

    model = web.Application()
    model.router.add_post("/v1/chat/completions", two_choices)
    server = TestServer(model, host="127.0.0.1")
    await server.start_server()
    client = await sidecar_client(SidecarConfig(
        posture(**streaming("StreamThenRetract")),
        upstream=str(server.make_url("")).rstrip("/")), LocalModerator())
    try:
        response = await client.post("/v1/chat/completions", json={
            "model": "fake", "stream": True, "n": 2, "messages": [{"role": "user",
                                                                   "content": "hi"}]})
        assert response.status == 200
        received = [c async for c in chunks_of(response)]
    finally:
        await client.close()
        await server.close()
    by_choice = {0: "", 1: ""}
    for chunk in received[:-2]:
        for choice in chunk["choices"]:
            by_choice[choice["index"]] += choice["delta"].get("content", "")
    assert by_choice[0].startswith(CLEAN) and "后面的内容不应该被发送出去。" * 2 not in by_choice[0]
    assert by_choice[1].startswith("电话***********")
    assert received[-2]["error"]["withdraw"] is True


PIECES = ["13812345678", "138", "0013", "8000", "１３８", "一三八零零", "zhang", "san", "@", "＠",
          "艾特", "[at]", "(at)", "qq", "example", "点", ".", "com", "cn", " ", "-", "人工智能",
          "电话", "44030419900307123X", "6222 0200 1234 5678"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=8).map("".join))
def test_the_personal_information_prefilter_never_hides_any(text: str) -> None:
    """Texts the prefilter lets through unscanned (every streamed token) have none."""
    if not may_contain_pii(text):
        assert find_pii(text) == []


def test_evasions_still_reach_the_detectors() -> None:
    for text in ("138.0013.8000", "１３８００１３８０００", "一三八零零一三八零零零",
                 "zhang[at]example.cn", "zhang＠example.cn", "zhang艾特qq点com"):
        assert may_contain_pii(text), text
    assert not may_contain_pii("人工智能服务应当坚持社会主义核心价值观")
