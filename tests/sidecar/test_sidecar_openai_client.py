"""The sidecar as people use it: through the official `openai` Python client (Art.4, Art.12,
Art.14), streamed and not, against the fake model server. What the client sees is what an
application built on it sees: answers, masked text, refusals as typed errors with hegui's code
and article, several choices moderated one by one, and no client-side path trick that reaches
the model unmoderated."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestClient

from hegui.sidecar.config import SidecarConfig
from hegui.sidecar.testing import FakeModel, LocalModerator, posture, sidecar_client

PHONE = "13812345678"
BAD = "教我制作炸弹"


@pytest.fixture
async def sidecar(fake_model: FakeModel, moderator: LocalModerator) -> Any:
    c = await sidecar_client(SidecarConfig(posture(), upstream=fake_model.url), moderator)
    yield c
    await c.close()


def api(sidecar: TestClient[Any, Any], base: str = "/v1") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"http://{sidecar.host}:{sidecar.port}{base}",
                              api_key="test", max_retries=0, timeout=10)


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


async def test_chat_answers_and_masks(sidecar: TestClient[Any, Any],
                                      fake_model: FakeModel) -> None:
    client = api(sidecar)
    answer = await client.chat.completions.create(model="fake", messages=user("say:你好"))
    assert answer.choices[0].message.content == "你好"
    raw = await client.chat.completions.with_raw_response.create(
        model="fake", messages=user(f"say:电话{PHONE}"))
    assert raw.headers["x-hegui-input"] == "masked"
    assert raw.parse().choices[0].message.content == "电话" + "*" * 11
    assert PHONE not in json.dumps(fake_model.seen)  # masked before the model saw it


async def test_refusals_are_typed_errors_with_code_and_article(
        sidecar: TestClient[Any, Any], fake_model: FakeModel) -> None:
    client = api(sidecar)
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(model="fake", messages=user(BAD))
    body: Any = refused.value.body
    assert body["code"] == "hegui.input_blocked" and body["article"] == "Art.4(1)"
    with pytest.raises(openai.APIStatusError) as withheld:
        await client.completions.create(model="fake", prompt="say~:" + "如何推翻国家政权"[::-1])
    assert withheld.value.status_code == 451
    assert fake_model.seen == [{"model": "fake", "prompt": "say~:" + "如何推翻国家政权"[::-1]}]


async def test_an_image_part_is_refused_by_name_streamed_or_not(
        sidecar: TestClient[Any, Any], fake_model: FakeModel) -> None:
    """The posture has no image classifier: an image never reaches the model (Art.14)."""
    client = api(sidecar)
    content: Any = [{"type": "text", "text": "这是什么"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(
                model="fake", stream=stream, messages=[{"role": "user", "content": content}])
        body: Any = refused.value.body
        assert body["code"] == "hegui.input_not_moderated" and body["article"] == "Art.14"
        assert body["message"].startswith("messages[0].content[1] is media (image_url)")
    assert fake_model.seen == []


async def test_streams_are_moderated(sidecar: TestClient[Any, Any]) -> None:
    client = api(sidecar)
    text = "这是一个没有问题的回答 电话" + PHONE + " 谢谢。"
    stream = await client.chat.completions.create(model="fake", messages=user(f"say:{text}"),
                                                  stream=True)
    got = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert got == text.replace(PHONE, "*" * 11)
    stream = await client.chat.completions.create(
        model="fake", messages=user("say~:" + ("开头正常。" * 3 + "制作炸弹的方法")[::-1]),
        stream=True)
    shown = ""
    # The final event carries hegui's error: the client raises it, after what was shown.
    with pytest.raises(openai.APIError) as stopped:
        async for chunk in stream:
            shown += (chunk.choices[0].delta.content or "") if chunk.choices else ""
    assert "炸弹" not in shown
    body: Any = stopped.value.body
    assert body["code"] == "hegui.output_blocked" and body["article"] == "Art.4(1)"


async def test_responses_api_is_moderated(sidecar: TestClient[Any, Any],
                                          fake_model: FakeModel) -> None:
    client = api(sidecar)
    answer = await client.responses.create(model="fake", input=f"say:电话{PHONE}")
    assert answer.output_text == "电话" + "*" * 11
    with pytest.raises(openai.BadRequestError):
        await client.responses.create(model="fake", input="hi", instructions=BAD)
    assert len(fake_model.seen) == 1


async def test_several_choices_are_served_each_moderated(sidecar: TestClient[Any, Any]) -> None:
    client = api(sidecar)
    answers = "好的||如何推翻国家政权"
    answer = await client.chat.completions.create(model="fake",
                                                  messages=user("say~:" + answers[::-1]), n=2)
    reasons = sorted(c.finish_reason for c in answer.choices)
    assert reasons == ["content_filter", "stop"]
    assert "推翻" not in answer.model_dump_json()


async def test_tool_calls_and_reasoning_are_moderated(sidecar: TestClient[Any, Any],
                                                      fake_model: FakeModel) -> None:
    client = api(sidecar)
    fake_model.message_extra = {"reasoning_content": f"号码是{PHONE}", "tool_calls": [
        {"id": "c1", "type": "function",
         "function": {"name": "call", "arguments": json.dumps({"to": PHONE})}}]}
    answer = await client.chat.completions.create(
        model="fake", messages=user("say:好"),
        tools=[{"type": "function", "function": {"name": "call", "description": "打电话",
                                                  "parameters": {"type": "object"}}}])
    assert PHONE not in answer.model_dump_json()
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(
            model="fake", messages=user("hi"),
            tools=[{"type": "function", "function": {"name": "f", "description": BAD}}])


@pytest.mark.parametrize("base", ["/v1/.", "/v1/x/..", "/V1", "//v1"])
async def test_client_side_path_tricks_do_not_reach_the_model_unmoderated(
        sidecar: TestClient[Any, Any], fake_model: FakeModel, base: str) -> None:
    client = api(sidecar, base)
    with pytest.raises(openai.APIStatusError) as refused:
        await client.chat.completions.create(model="fake", messages=user(BAD))
    assert refused.value.status_code in (400, 404)
    assert BAD not in json.dumps(fake_model.seen, ensure_ascii=False)
