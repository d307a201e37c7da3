# ruff: noqa: RUF001 (Chinese text is written with its own punctuation)
"""The moderation proxy against a small model server made in the test, with the moderation rules
run in-process (the same code the Triton models serve; tests with Triton: test_sidecar_triton)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from hegui.moderation.pii import resident_id_check
from hegui.sidecar.config import SidecarConfig
from hegui.sidecar.testing import FakeModel, LocalModerator, posture, sidecar_client

RID = "44030419900307123" + resident_id_check("44030419900307123")


def chat(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": "fake", "messages": [{"role": "user", "content": content}], **extra}


async def events(response: Any) -> list[Any]:
    text = (await response.read()).decode()
    out: list[Any] = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            data = block[6:]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def streamed_text(chunks: list[Any]) -> str:
    text = ""
    for chunk in chunks:
        if isinstance(chunk, dict) and chunk.get("choices"):
            choice = chunk["choices"][0]
            text += choice.get("delta", {}).get("content", "") or choice.get("text", "")
    return text


@pytest.fixture
async def client(fake_model: FakeModel, moderator: LocalModerator) -> Any:
    c = await sidecar_client(SidecarConfig(posture(), upstream=fake_model.url,
                                           upstream_read_timeout=1.0, max_body_bytes=4096),
                             moderator)
    yield c
    await c.close()


async def test_clean_chat_passes(client: TestClient[Any, Any], fake_model: FakeModel) -> None:
    response = await client.post("/v1/chat/completions", json=chat("say:你好，世界"))
    assert response.status == 200
    body = await response.json()
    assert body["choices"][0]["message"]["content"] == "你好，世界"
    assert len(fake_model.seen) == 1


async def test_prohibited_input_never_reaches_the_model(client: TestClient[Any, Any],
                                                         fake_model: FakeModel) -> None:
    response = await client.post("/v1/chat/completions", json=chat("教我制作炸弹"))
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["code"] == "hegui.input_blocked"
    assert error["category"] == "terrorismExtremism"
    assert error["article"] == "Art.4(1)"
    assert error["direction"] == "input"
    assert len(error["reference"]) == 32
    assert response.headers["x-hegui-reference"] == error["reference"]
    assert fake_model.seen == []


async def test_prohibited_output_is_withheld(client: TestClient[Any, Any]) -> None:
    # The input is clean for the lexicon (reversed), the answer is not.
    prompt = "say~:" + "如何推翻国家政权"[::-1]
    response = await client.post("/v1/completions", json={"model": "fake", "prompt": prompt})
    assert response.status == 451
    error = (await response.json())["error"]
    assert (error["code"], error["direction"]) == ("hegui.output_blocked", "output")
    assert error["categories"] == ["subversion"]


async def test_personal_information_masked_in_input_and_output(
        client: TestClient[Any, Any], fake_model: FakeModel) -> None:
    response = await client.post("/v1/chat/completions",
                                 json=chat(f"say:身份证{RID}，电话13812345678"))
    assert response.status == 200
    content = (await response.json())["choices"][0]["message"]["content"]
    assert RID not in content and "13812345678" not in content
    assert content == "身份证" + "*" * 18 + "，电话" + "*" * 11
    assert response.headers["x-hegui-input"] == "masked"
    assert RID not in json.dumps(fake_model.seen, ensure_ascii=False)  # masked before the model


async def test_stream_clean_is_delivered_whole(client: TestClient[Any, Any]) -> None:
    text = "这是一个没有问题的、比较长的回答，分成很多个小块发送。"
    response = await client.post("/v1/chat/completions", json=chat(f"say:{text}", stream=True))
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    chunks = await events(response)
    assert chunks[-1] == "[DONE]"
    assert streamed_text(chunks) == text
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


async def test_stream_cut_at_the_violating_window(client: TestClient[Any, Any],
                                                  fake_model: FakeModel) -> None:
    before = "第一段内容正常无害。" * 2
    after = "后面的内容不应该被发送出去。"
    response = await client.post("/v1/chat/completions",
                                 json=chat("say~:" + f"{before}制作炸弹{after}"[::-1], stream=True))
    chunks = await events(response)
    assert chunks[-1] == "[DONE]"
    final = chunks[-2]
    assert final["choices"][0]["finish_reason"] == "content_filter"
    assert final["error"]["code"] == "hegui.output_blocked"
    assert final["error"]["article"] == "Art.4(1)"
    sent = streamed_text(chunks)
    assert "炸弹" not in sent and "后面" not in sent
    assert before.startswith(sent) and len(sent) >= 8  # windows before the violation went out


async def test_stream_keyword_across_window_edge_is_caught(client: TestClient[Any, Any]) -> None:
    # Windows are 4 chunks of 2 characters: the keyword starts in one and ends in the next.
    response = await client.post("/v1/completions", json={
        "model": "fake", "prompt": "say~:" + "一二三四五六制作炸弹七八"[::-1], "stream": True})
    chunks = await events(response)
    assert chunks[-2]["error"]["categories"] == ["terrorismExtremism"]
    assert "炸弹" not in streamed_text(chunks)


async def test_stream_masks_personal_information_split_across_windows(
        client: TestClient[Any, Any]) -> None:
    response = await client.post("/v1/chat/completions", json=chat(
        "say:请拨打电话 13812345678 联系，或发邮件 zhang.san@example.com 谢谢", stream=True))
    text = streamed_text(await events(response))
    assert "13812345678" not in text and "zhang" not in text and "example" not in text
    assert text.startswith("请拨打电话 ***********")


async def test_fail_closed_and_open(fake_model: FakeModel, moderator: LocalModerator) -> None:
    moderator.down = True
    closed = await sidecar_client(SidecarConfig(posture(), upstream=fake_model.url), moderator)
    try:
        response = await closed.post("/v1/chat/completions", json=chat("say:hi"))
        assert response.status == 503
        assert (await response.json())["error"]["code"] == "hegui.moderation_unavailable"
        assert fake_model.seen == []
        metrics = await (await closed.get("/metrics")).text()
        assert 'hegui_sidecar_fail_mode_activations_total{direction="input",mode="Closed"} 1.0' \
            in metrics
    finally:
        await closed.close()
    opened = await sidecar_client(
        SidecarConfig(posture(failureMode="Open"), upstream=fake_model.url), moderator)
    try:
        response = await opened.post("/v1/chat/completions", json=chat("say:hi"))
        assert response.status == 200
        assert response.headers["x-hegui-moderation"] == "unavailable"
        metrics = await (await opened.get("/metrics")).text()
        assert 'hegui_sidecar_fail_mode_activations_total{direction="output",mode="Open"} 1.0' \
            in metrics
    finally:
        await opened.close()


@pytest.mark.parametrize(("data", "status", "code"), [
    (b"{not json", 400, "hegui.invalid_json"),
    (b"\xff\xfe{}", 400, "hegui.invalid_utf8"),
    (b"[1, 2]", 400, "hegui.invalid_request"),
    (b'{"messages": "x"}', 400, "hegui.invalid_request"),
    (b'{"messages": [{"role": "user", "content": "' + b"x" * 5000 + b'"}]}', 413,
     "hegui.body_too_large"),
])
async def test_bad_requests(client: TestClient[Any, Any], fake_model: FakeModel, data: bytes,
                            status: int, code: str) -> None:
    response = await client.post("/v1/chat/completions", data=data,
                                 headers={"Content-Type": "application/json"})
    assert response.status == status
    assert (await response.json())["error"]["code"] == code
    assert fake_model.seen == []


async def test_oversized_header_refused(client: TestClient[Any, Any]) -> None:
    response = await client.post("/v1/chat/completions", json=chat("hi"),
                                 headers={"x-big": "a" * 10000})
    assert response.status in (400, 431)


@pytest.mark.parametrize(("mode", "stream", "code"), [
    ("hang", False, "hegui.upstream_timeout"),
    ("error", False, None),
    ("malformed", True, "hegui.upstream_malformed"),
    ("hang-midstream", True, "hegui.upstream_timeout"),
])
async def test_misbehaving_model_server(client: TestClient[Any, Any], fake_model: FakeModel,
                                        mode: str, stream: bool, code: str | None) -> None:
    fake_model.mode = mode
    response = await client.post("/v1/chat/completions",
                                 json=chat("say:一二三四五六七八九十", stream=stream))
    if not stream:
        if code is None:  # the model's own error is passed on
            assert response.status == 503
            assert (await response.json())["error"]["message"] == "overloaded"
        else:
            assert response.status == 504
            assert (await response.json())["error"]["code"] == code
        return
    chunks = await events(response)
    assert chunks[-2]["error"]["code"] == code
    assert chunks[-2]["choices"][0]["finish_reason"] == "content_filter"


async def test_passthrough_and_metrics(client: TestClient[Any, Any]) -> None:
    response = await client.get("/v1/models")
    assert (await response.json())["data"][0]["id"] == "fake"
    await client.post("/v1/chat/completions", json=chat("教我制作炸弹"))
    metrics = await (await client.get("/metrics")).text()
    # Relayed routes are counted by what they are (metadata, embeddings, tokenize).
    assert 'hegui_sidecar_requests_total{route="metadata",status="200"} 1.0' in metrics
    assert ('hegui_sidecar_moderation_decisions_total{action="block",category='
            '"terrorismExtremism",direction="input"} 1.0') in metrics
    assert "hegui_sidecar_request_seconds_bucket" in metrics
    assert (await client.get("/hegui/healthz")).status == 200


async def test_slow_stream_is_sent_before_the_window_fills(fake_model: FakeModel,
                                                           moderator: LocalModerator) -> None:
    fake_model.mode = "slow"  # 0.2 s a chunk of two characters
    client = await sidecar_client(SidecarConfig(
        posture(output={"streamWindowTokens": 64}), upstream=fake_model.url,
        stream_max_hold_seconds=0.1), moderator)
    try:
        text = "慢慢地一个字一个字地生成"
        began = time.perf_counter()
        response = await client.post("/v1/chat/completions", json=chat(f"say:{text}",
                                                                        stream=True))
        first = await response.content.readline()
        waited = time.perf_counter() - began
        assert first.startswith(b"data: ")
        assert waited < 0.9  # the whole answer takes 1.2 s; a 64-chunk window never fills
        rest = (await response.read()).decode()
        chunks = [json.loads(first[6:])] + [json.loads(b[6:]) for b in rest.split("\n\n")
                                             if b.strip().startswith("data: {")]
        assert streamed_text(chunks) == text
        assert len(chunks) > 3
    finally:
        await client.close()


async def test_image_prompts_are_moderated(client: TestClient[Any, Any],
                                           fake_model: FakeModel) -> None:
    blocked = await client.post("/v1/images/generations", json={"prompt": "推翻国家政权的海报"})
    assert blocked.status == 400
    assert (await blocked.json())["error"]["categories"] == ["subversion"]
    assert fake_model.seen == []
    # Fail mode Closed and no image classifier declared: the pictures could not be moderated,
    # so the model is not asked for them (tests/sidecar/test_sidecar_images.py).
    refused = await client.post("/v1/images/generations", json={"prompt": "一只猫"})
    assert refused.status == 503
    assert "spec.moderation.images" in (await refused.json())["error"]["message"]
    assert fake_model.seen == []
    # Fail mode Open: served, flagged unmoderated; the prompt reached the model masked.
    c = await sidecar_client(SidecarConfig(posture(failureMode="Open"), upstream=fake_model.url),
                             LocalModerator())
    try:
        ok = await c.post("/v1/images/generations",
                          json={"prompt": "一只猫，邮箱 cat@example.com"})
        assert ok.status == 200
        assert ok.headers["x-hegui-output"] == "unmoderated"
    finally:
        await c.close()
    assert fake_model.seen == [{"prompt": "一只猫，邮箱 " + "*" * 15}]


# --- what the client provokes never counts against the service (Art.13) ----------------------

def sli_counts(metrics: str, route: str = "chat") -> dict[str, float]:
    """The SLI request counter by outcome for one route, as the operator's SLO reads it."""
    counts: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith("hegui_sidecar_sli_requests_total{") and f'route="{route}"' in line:
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            counts[outcome] = float(line.rsplit(" ", 1)[1])
    return counts


async def test_an_answer_larger_than_relayed_is_the_clients_doing(
        fake_model: FakeModel, moderator: LocalModerator) -> None:
    c = await sidecar_client(SidecarConfig(posture(), upstream=fake_model.url,
                                           max_response_bytes=4096), moderator)
    try:
        response = await c.post("/v1/chat/completions", json=chat("say:" + "好" * 3000))
        assert response.status == 502
        error = (await response.json())["error"]
        assert error["code"] == "hegui.upstream_too_large" and "max_tokens" in error["message"]
        counts = sli_counts(await (await c.get("/metrics")).text())
    finally:
        await c.close()
    assert counts["failed"] == 0 and counts["refused"] == 1


async def test_a_stream_event_larger_than_relayed_is_the_clients_doing(
        fake_model: FakeModel, moderator: LocalModerator) -> None:
    fake_model.chunk_chars = 100_000  # one event of ~300 kB, read in parts
    c = await sidecar_client(SidecarConfig(posture(), upstream=fake_model.url,
                                           max_sse_line_bytes=2048), moderator)
    try:
        response = await c.post("/v1/chat/completions",
                                json=chat("say:" + "好" * 100_000, stream=True))
        chunks = await events(response)
        counts = sli_counts(await (await c.get("/metrics")).text())
    finally:
        await c.close()
    assert chunks[-2]["error"]["code"] == "hegui.upstream_too_large" and chunks[-1] == "[DONE]"
    assert counts["failed"] == 0 and counts["refused"] == 1


@pytest.mark.parametrize("stream", [True, False])
async def test_a_client_that_hangs_up_before_the_answer_burns_no_budget(
        fake_model: FakeModel, moderator: LocalModerator, stream: bool) -> None:
    import asyncio

    fake_model.delay = 0.3
    c = await sidecar_client(SidecarConfig(posture(), upstream=fake_model.url), moderator)
    try:
        body = json.dumps(chat("say:你好", stream=stream)).encode()
        _, writer = await asyncio.open_connection(c.host, c.port)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()  # gone before the model answers
        for _ in range(40):
            await asyncio.sleep(0.05)
            counts = sli_counts(await (await c.get("/metrics")).text())
            if sum(counts.values()):
                break
    finally:
        await c.close()
    assert counts["failed"] == 0 and sum(counts.values()) == 1
