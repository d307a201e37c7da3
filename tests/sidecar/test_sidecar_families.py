"""Every generation API the sidecar fronts, through a real sidecar to the fake model server, over
raw HTTP (Art.4, Art.12, Art.14): bypasses refused, every family and every text field
moderated both ways, logprobs dropped and said, n > 1 choices moderated one by one, hostile
bodies a 400, and client errors never counted against the service (Art.13)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hegui.moderation.pii import resident_id_check
from hegui.sidecar.config import SidecarConfig
from hegui.sidecar.testing import FakeModel, LocalModerator, posture, sidecar_client

RID = "44030419900307123" + resident_id_check("44030419900307123")
PHONE = "13812345678"
BAD = "教我制作炸弹"  # terrorismExtremism, Art.4(1)


async def raw(client: TestClient[Any, Any], method: str, target: str, body: Any = None,
              headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request with the target sent byte for byte (no client-side path normalisation)."""
    data = b"" if body is None else (body if isinstance(body, bytes) else
                                     json.dumps(body, ensure_ascii=False).encode())
    head = [f"{method} {target} HTTP/1.1", f"Host: {client.host}:{client.port}",
            "Connection: close", f"Content-Length: {len(data)}",
            "Content-Type: application/json", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    status_line, _, rest = response.partition(b"\r\n")
    header_block, _, payload = rest.partition(b"\r\n\r\n")
    fields = dict(line.decode().split(": ", 1) for line in header_block.split(b"\r\n") if line)
    if fields.get("Transfer-Encoding") == "chunked":
        payload = _unchunk(payload)
    return int(status_line.split()[1]), fields, payload


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2:]
    return out


def chat(content: Any, **extra: Any) -> dict[str, Any]:
    return {"model": "fake", "messages": [{"role": "user", "content": content}], **extra}


@pytest.fixture
async def client(fake_model: FakeModel, moderator: LocalModerator) -> Any:
    c = await sidecar_client(SidecarConfig(posture(), upstream=fake_model.url,
                                           upstream_read_timeout=2.0, max_body_bytes=1 << 16),
                             moderator)
    yield c
    await c.close()


def reached(fake_model: FakeModel, text: str) -> bool:
    return text in json.dumps(fake_model.seen, ensure_ascii=False)


# --- the bypasses of the issue, over raw HTTP ------------------------------------------------

@pytest.mark.parametrize(("method", "target", "status"), [
    ("POST", "/v1/./chat/completions", 400),
    ("POST", "/v1/chat/completions/", 400),
    ("POST", "//v1/chat/completions", 400),
    ("POST", "/V1/chat/completions", 400),
    ("POST", "/v1/chat%2Fcompletions", 400),
    ("POST", "/v1/chat/completions%2f", 400),
    ("POST", "/v1/%2E/chat/completions", 400),
    ("PUT", "/v1/chat/completions", 405),
    ("POST", "/v1/unknown/generation", 404),
    ("POST", "/", 404),
    ("POST", "http://127.0.0.1/v1/chat/completions", 400),
])
async def test_bypass_paths_are_refused(client: TestClient[Any, Any], fake_model: FakeModel,
                                        method: str, target: str, status: int) -> None:
    got, headers, body = await raw(client, method, target, chat(BAD))
    assert got == status, body
    error = json.loads(body)["error"]
    assert error["article"] == "Art.14" and headers["x-hegui-reference"]
    assert fake_model.paths == [] and not reached(fake_model, BAD)


async def test_override_headers_do_not_reroute(client: TestClient[Any, Any],
                                               fake_model: FakeModel) -> None:
    status, _, _ = await raw(client, "POST", "/v1/chat/completions", chat("say:你好"), {
        "X-HTTP-Method-Override": "DELETE", "X-Original-URL": "/admin"})
    assert status == 200
    assert fake_model.paths == ["POST /v1/chat/completions"]


# --- every family, moderated both ways -------------------------------------------------------

FAMILIES: list[tuple[str, Any]] = [
    ("/v1/chat/completions", lambda t: chat(t)),
    ("/v1/completions", lambda t: {"model": "fake", "prompt": t}),
    ("/v1/responses", lambda t: {"model": "fake", "input": t}),
    ("/v1/responses", lambda t: {"model": "fake", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": t}]}]}),
    ("/v1/messages", lambda t: {"model": "fake", "max_tokens": 9, "messages": [
        {"role": "user", "content": [{"type": "text", "text": t}]}]}),
    ("/generate", lambda t: {"inputs": t, "parameters": {}}),
    ("/api/chat", lambda t: {"model": "fake", "stream": False,
                             "messages": [{"role": "user", "content": t}]}),
    ("/api/generate", lambda t: {"model": "fake", "stream": False, "prompt": t}),
    ("/v2/models/llm/generate", lambda t: {"text_input": t, "parameters": {}}),
    ("/v2/models/llm/versions/1/generate", lambda t: {"text_input": t}),
    ("/v2/models/llm/infer", lambda t: {"inputs": [
        {"name": "text_input", "datatype": "BYTES", "shape": [1], "data": [t]}]}),
    ("/invocations", lambda t: {"inputs": t}),
    ("/invocations", lambda t: chat(t)),
]


@pytest.mark.parametrize(("path", "make"), FAMILIES)
async def test_prohibited_input_never_reaches_the_model(
        client: TestClient[Any, Any], fake_model: FakeModel, path: str, make: Any) -> None:
    status, _, body = await raw(client, "POST", path, make(BAD))
    assert status == 400, body
    assert json.loads(body)["error"]["code"] == "hegui.input_blocked"
    assert fake_model.seen == []


@pytest.mark.parametrize(("path", "make"), FAMILIES)
async def test_output_is_moderated_in_every_family(
        client: TestClient[Any, Any], fake_model: FakeModel, path: str, make: Any) -> None:
    # The model says (reversed) what the user did not: blocked on the way out.
    status, _, body = await raw(client, "POST", path, make("say~:" + "如何推翻国家政权"[::-1]))
    assert status == 451, body
    assert json.loads(body)["error"]["categories"] == ["subversion"]
    assert "推翻" not in body.decode()
    # Personal information in the answer is masked, in the family's own shape.
    status, _, body = await raw(client, "POST", path, make(f"say~:{('电话' + PHONE)[::-1]}"))
    assert status == 200, body
    assert PHONE not in body.decode() and "*" * 11 in body.decode()


async def test_ollama_context_token_ids_are_refused_and_dropped(
        client: TestClient[Any, Any], fake_model: FakeModel) -> None:
    status, _, body = await raw(client, "POST", "/api/generate",
                                {"model": "fake", "prompt": "hi", "context": [1, 2]})
    assert status == 400 and b"context" in body and fake_model.seen == []
    status, headers, body = await raw(client, "POST", "/api/generate",
                                      {"model": "fake", "prompt": "say:你好", "stream": False})
    assert status == 200 and "context" not in json.loads(body)
    assert headers["x-hegui-dropped"] == "context"


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/completions", {"model": "fake", "prompt": [101, 102]}),
    ("/v1/completions", {"model": "fake", "prompt": "x", "prompt_embeds": "AAAA"}),
    ("/generate", {"input_ids": [1, 2, 3]}),
    ("/v2/models/llm/generate", {"text_input": "hi", "input_ids": [1, 2, 3]}),
    ("/v2/models/llm/infer", {"inputs": [{"name": "input_ids", "datatype": "INT32",
                                          "shape": [2], "data": [1, 2]}]}),
    ("/v2/models/llm/infer", {"inputs": [{"name": "text_input", "datatype": "BYTES",
                                          "shape": [1], "data": ["x"],
                                          "parameters": {"binary_data": True}}]}),
    ("/invocations", {"instances": [{"data": "x"}]}),
])
async def test_what_cannot_be_moderated_is_refused(
        client: TestClient[Any, Any], fake_model: FakeModel, path: str, body: Any) -> None:
    status, _, answer = await raw(client, "POST", path, body)
    assert status == 400, answer
    assert "Art.14" in json.loads(answer)["error"]["message"]
    assert fake_model.seen == []


async def test_invocations_moderates_every_shape_a_body_carries(
        client: TestClient[Any, Any], fake_model: FakeModel) -> None:
    # The container behind /invocations may read `inputs` though `messages` is clean.
    status, _, answer = await raw(client, "POST", "/invocations", {**chat("hi"), "inputs": BAD})
    assert status == 400 and json.loads(answer)["error"]["code"] == "hegui.input_blocked"
    assert fake_model.seen == []
    # /generate: TGI reads `inputs`, SGLang `text`; both are moderated.
    status, _, answer = await raw(client, "POST", "/generate", {"inputs": "hi", "text": BAD})
    assert status == 400 and fake_model.seen == []


async def test_a_stream_the_relay_cannot_moderate_is_refused_not_relayed(
        client: TestClient[Any, Any], fake_model: FakeModel) -> None:
    # SageMaker's /invocations has no stream shape the sidecar moderates (Art.14).
    status, _, answer = await raw(client, "POST", "/invocations",
                                  chat("say:你好", stream=True))
    assert status == 400 and b"/invocations" in answer
    assert fake_model.seen == []


# --- every text-bearing field, both ways ---------------------------------------------------

@pytest.mark.parametrize("request_body", [
    chat([{"type": "text", "text": BAD}]),
    {**chat("hi"), "messages": [{"role": "user", "content": "hi", "name": BAD}]},
    {**chat("hi"), "tools": [{"type": "function", "function": {
        "name": "f", "description": BAD, "parameters": {"type": "object"}}}]},
    {**chat("hi"), "tools": [{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object", "properties": {
            "x": {"type": "string", "description": BAD}}}}}]},
    {**chat("hi"), "messages": [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "1", "type": "function", "function": {"name": "f", "arguments":
                                                     json.dumps({"q": BAD})}}]}]},
    {**chat("hi"), "messages": [{"role": "assistant", "content": "x",
                                 "reasoning_content": BAD}]},
    {**chat("hi"), "chat_template": "{{ '" + BAD + "' }}"},
    {"model": "fake", "input": "hi", "instructions": BAD},
    {"model": "fake", "max_tokens": 9, "system": BAD, "messages": [
        {"role": "user", "content": "hi"}]},
    {"model": "fake", "max_tokens": 9, "messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "1", "content": BAD}]}]},
    {"model": "fake", "stream": False, "prompt": "hi", "template": BAD},
    {**chat("hi"), "response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object", "description": BAD}}}},
])
async def test_every_input_field_is_moderated(client: TestClient[Any, Any],
                                              fake_model: FakeModel,
                                              request_body: dict[str, Any]) -> None:
    path = ("/v1/responses" if "input" in request_body else
            "/v1/messages" if "max_tokens" in request_body else
            "/api/generate" if "template" in request_body else "/v1/chat/completions")
    status, _, body = await raw(client, "POST", path, request_body)
    assert status == 400, body
    assert fake_model.seen == []


@pytest.mark.parametrize(("extra", "leak"), [
    ({"reasoning_content": BAD}, "炸弹"),
    ({"refusal": BAD}, "炸弹"),
    ({"tool_calls": [{"id": "1", "type": "function", "function": {
        "name": "f", "arguments": json.dumps({"q": BAD}, ensure_ascii=False)}}]}, "炸弹"),
])
async def test_every_output_field_is_moderated(client: TestClient[Any, Any],
                                               fake_model: FakeModel, extra: dict[str, Any],
                                               leak: str) -> None:
    fake_model.message_extra = extra
    status, _, body = await raw(client, "POST", "/v1/chat/completions", chat("say:你好"))
    assert status == 451 and leak not in body.decode()


async def test_personal_information_masked_in_reasoning_and_tool_arguments(
        client: TestClient[Any, Any], fake_model: FakeModel) -> None:
    fake_model.message_extra = {
        "reasoning_content": f"用户的电话是{PHONE}",
        "tool_calls": [{"id": "1", "type": "function", "function": {
            "name": "call", "arguments": json.dumps({"phone": PHONE})}}]}
    status, headers, body = await raw(client, "POST", "/v1/chat/completions", chat("say:好"))
    assert status == 200 and PHONE not in body.decode()
    message = json.loads(body)["choices"][0]["message"]
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"phone": "*" * 11}
    assert headers["x-hegui-output"] == "masked"


async def test_logprobs_that_spell_masked_text_are_dropped_and_said(
        client: TestClient[Any, Any], fake_model: FakeModel) -> None:
    tokens = ["电话", *PHONE]
    fake_model.choice_extra = {"logprobs": {"content": [
        {"token": t, "logprob": -0.1, "top_logprobs": []} for t in tokens]}}
    status, headers, body = await raw(client, "POST", "/v1/chat/completions",
                                      chat("say~:" + ("电话" + PHONE)[::-1], logprobs=True))
    assert status == 200 and PHONE not in body.decode()
    assert "logprobs" not in json.loads(body)["choices"][0]
    assert headers["x-hegui-dropped"] == "logprobs"
    # Clean text keeps its log probabilities.
    fake_model.choice_extra = {"logprobs": {"content": [
        {"token": "好", "logprob": -0.1, "top_logprobs": [{"token": "行", "logprob": -2}]}]}}
    status, headers, body = await raw(client, "POST", "/v1/chat/completions",
                                      chat("say:好", logprobs=True))
    assert json.loads(body)["choices"][0]["logprobs"]["content"][0]["token"] == "好"
    assert "x-hegui-dropped" not in headers


async def test_alternatives_in_logprobs_are_moderated_too(
        client: TestClient[Any, Any], fake_model: FakeModel) -> None:
    fake_model.choice_extra = {"logprobs": {"content": [
        {"token": "好", "logprob": -0.1, "top_logprobs": [{"token": BAD, "logprob": -9}]}]}}
    status, headers, body = await raw(client, "POST", "/v1/chat/completions",
                                      chat("say:好", logprobs=True))
    assert status == 200 and "炸弹" not in body.decode()
    assert headers["x-hegui-dropped"] == "logprobs"


async def test_several_choices_are_moderated_one_by_one(
        client: TestClient[Any, Any], fake_model: FakeModel) -> None:
    answers = f"第一个回答||{'如何推翻国家政权'}||电话{PHONE}"
    status, headers, body = await raw(client, "POST", "/v1/chat/completions",
                                      chat("say~:" + answers[::-1], n=3))
    assert status == 200, body
    choices = json.loads(body)["choices"]
    # (reversed prompt: the model's answer is reversed back, choices in reverse order)
    texts = {c["index"]: c["message"]["content"] for c in choices}
    withheld = [c for c in choices if c["finish_reason"] == "content_filter"]
    assert len(withheld) == 1 and withheld[0]["error"]["categories"] == ["subversion"]
    assert "推翻" not in body.decode() and PHONE not in body.decode()
    assert any(t.endswith("*" * 11) for t in texts.values())
    assert headers["x-hegui-output"] in ("choices-withheld", "masked")


@pytest.mark.parametrize("output", [True, False], ids=["moderated", "inputs-only"])
async def test_labels_apply_to_every_family(fake_model: FakeModel, moderator: LocalModerator,
                                            output: bool) -> None:
    """Labels (Art.12) whatever moderation does: also when the posture moderates inputs only."""
    from hegui.api.generativeservice import Labeling

    labeling = Labeling.from_dict({
        "modalities": ["text"], "explicit": {"enabled": True, "position": "End"},
        "implicit": {"contentProducer": "Example AI Co.", "produceIdPrefix": "chat-"}})
    c = await sidecar_client(SidecarConfig(posture(output={"enabled": output}),
                                           upstream=fake_model.url, labeling=labeling),
                             moderator)
    try:
        for path, make in FAMILIES:
            status, headers, body = await raw(c, "POST", path, make("say:你好"))
            assert status == 200, (path, body)
            assert headers["X-AIGC"], path
            assert "人工智能生成" in body.decode(), path
    finally:
        await c.close()


async def test_labels_apply_when_only_inputs_are_moderated(fake_model: FakeModel,
                                                           moderator: LocalModerator) -> None:
    from hegui.api.generativeservice import Labeling

    labeling = Labeling.from_dict({
        "modalities": ["text"], "explicit": {"enabled": True, "position": "End"},
        "implicit": {"contentProducer": "Example AI Co.", "produceIdPrefix": "chat-"}})
    c = await sidecar_client(SidecarConfig(posture(output={"enabled": False}),
                                           upstream=fake_model.url, labeling=labeling),
                             moderator)
    try:
        said = "say~:" + f"电话{PHONE}"[::-1]
        status, headers, body = await raw(c, "POST", "/generate", {"inputs": said})
        assert status == 200 and headers["X-AIGC"]
        # Not moderated (the posture says so), but labeled (Art.12).
        assert json.loads(body)["generated_text"] == f"电话{PHONE}\n\n人工智能生成"
    finally:
        await c.close()


# --- multimodal inputs: text parts moderated, media refused by name (Art.14) ------------------

_PNG = "data:image/png;base64,iVBORw0KGgo="


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/chat/completions", chat([{"type": "text", "text": "这是什么"},
                                   {"type": "image_url", "image_url": {"url": _PNG}}]),
     "messages[0].content[1] is media (image_url)"),
    ("/v1/chat/completions", chat([{"type": "input_audio",
                                    "input_audio": {"data": "AAAA", "format": "wav"}}]),
     "messages[0].content[0] is media (input_audio)"),
    ("/v1/chat/completions", chat([{"type": "file", "file": {"file_data": "AAAA"}}]),
     "messages[0].content[0] is media (file)"),
    ("/v1/responses", {"model": "fake", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "hi"}, {"type": "input_image", "image_url": _PNG}]}]},
     "input[0].content[1] is media (input_image)"),
    ("/v1/messages", {"model": "fake", "max_tokens": 9, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": "AAAA"}}]}]},
     "messages[0].content[0] is media (image)"),
    ("/v1/messages", {"model": "fake", "max_tokens": 9, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                        "data": "AAAA"}}]}]},
     "messages[0].content[0] is media (document (base64))"),
    ("/v1/messages", {"model": "fake", "max_tokens": 9, "messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t", "content": [
            {"type": "image", "source": {"type": "url", "url": "http://x/y.png"}}]}]}]},
     "messages[0].content[0].content[0] is media (image)"),
    ("/api/chat", {"model": "fake", "stream": False, "messages": [
        {"role": "user", "content": "这是什么", "images": ["AAAA"]}]},
     "messages[0].images carries images"),
    ("/api/generate", {"model": "fake", "stream": False, "prompt": "这是什么",
                       "images": ["AAAA"]}, "images carries images"),
    ("/invocations", chat([{"type": "image_url", "image_url": {"url": _PNG}}]),
     "messages[0].content[0] is media (image_url)"),
])
async def test_media_inputs_are_refused_naming_the_field(
        client: TestClient[Any, Any], fake_model: FakeModel, path: str, body: Any,
        field: str) -> None:
    """No image, audio or file classifier in the posture: media parts cannot be moderated,
    so they never reach the model (Art.14); the error names the field and what to send."""
    status, headers, answer = await raw(client, "POST", path, body)
    assert status == 400, answer
    error = json.loads(answer)["error"]
    assert error["code"] == "hegui.input_not_moderated" and error["article"] == "Art.14"
    assert error["message"].startswith(field) and "text" in error["message"]
    assert fake_model.seen == [] and headers["x-hegui-reference"]


async def test_text_parts_are_moderated_each(client: TestClient[Any, Any],
                                             fake_model: FakeModel) -> None:
    parts = [{"type": "text", "text": "你好"}, {"type": "text", "text": BAD}]
    status, _, answer = await raw(client, "POST", "/v1/chat/completions", chat(parts))
    assert status == 400 and json.loads(answer)["error"]["code"] == "hegui.input_blocked"
    parts = [{"type": "text", "text": "say:你好"}, {"type": "text", "text": f"电话{PHONE}"}]
    status, _, answer = await raw(client, "POST", "/v1/chat/completions", chat(parts))
    assert status == 200 and reached(fake_model, "电话" + "*" * 11)
    assert not reached(fake_model, PHONE)


# --- hostile bodies and the SLIs ------------------------------------------------------------

async def test_deep_json_is_a_400_and_not_counted_against_the_service(
        client: TestClient[Any, Any], fake_model: FakeModel) -> None:
    deep = b'{"messages": ' + b"[" * 50000 + b"]" * 50000 + b"}"
    status, _, body = await raw(client, "POST", "/v1/chat/completions", deep)
    assert status in (400, 413), body
    deep = b'{"messages": ' + b"[" * 200 + b"]" * 200 + b"}"
    status, _, body = await raw(client, "POST", "/v1/chat/completions", deep)
    assert status == 400 and json.loads(body)["error"]["code"] == "hegui.invalid_json"
    for target in ("/v1/./chat/completions", "/nothing"):
        await raw(client, "POST", target, chat("hi"))
    metrics = (await (await client.get("/metrics")).read()).decode()
    failed = [line for line in metrics.splitlines()
              if line.startswith("hegui_sidecar_sli_requests_total") and 'outcome="failed"' in line]
    assert failed and all(line.endswith(" 0.0") for line in failed)
    assert fake_model.seen == []


# --- no variant of a generation path reaches the model unmoderated --------------------------

_NOISE = st.sampled_from(["", ".", "..", "%2e", "%2E", "%2f", "%2F", "%252f", ";x", "%00", "X"])


@st.composite
def variants(draw: st.DrawFn) -> tuple[str, str]:
    path = draw(st.sampled_from([p for p, _ in FAMILIES]))
    out = []
    for segment in path.split("/")[1:]:
        if draw(st.integers(0, 3)) == 0:
            segment = draw(st.sampled_from([segment.upper(), segment.title()]))
        if draw(st.integers(0, 4)) == 0:
            segment = "".join(f"%{ord(c):02X}" if draw(st.booleans()) else c for c in segment)
        out.append(segment)
        if draw(st.integers(0, 3)) == 0:
            out.append(draw(_NOISE))
    separator = draw(st.sampled_from(["/", "/", "/", "//", "%2F", "/./", "\\"]))
    target = "/" + separator.join(out) + draw(st.sampled_from(["", "", "/", "/.", "%2F", "?a=1"]))
    method = draw(st.sampled_from(["POST", "POST", "PUT", "PATCH", "GET", "DELETE", "post"]))
    return method, target


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(variant=variants())
async def test_no_path_variant_reaches_the_model_unmoderated(
        client: TestClient[Any, Any], fake_model: FakeModel,
        variant: tuple[str, str]) -> None:
    method, target = variant
    fake_model.seen.clear()
    body = {**chat(BAD), "prompt": BAD, "input": BAD, "inputs": BAD, "text_input": BAD}
    status, _, _ = await raw(client, method, target, body)
    assert status >= 400
    assert not reached(fake_model, BAD), (method, target)


async def test_too_many_texts_are_refused_before_moderation(
        client: TestClient[Any, Any], fake_model: FakeModel, moderator: LocalModerator) -> None:
    body = {"model": "fake", "prompt": ["x"] * 3000}
    status, _, answer = await raw(client, "POST", "/v1/completions", body)
    assert status == 413 and json.loads(answer)["error"]["code"] == "hegui.too_many_texts"
    assert moderator.calls == [] and fake_model.seen == []


# --- where each family keeps its text (pure) ------------------------------------------------

def kinds(slots: list[Any]) -> list[tuple[str, str]]:
    return [(s.kind, s.text) for s in slots]


def test_answer_slots_of_each_family() -> None:
    from hegui.sidecar import families

    tgi = {"generated_text": "a", "details": {"tokens": [{"text": "a"}],
                                              "best_of_sequences": [{"generated_text": "b"}]}}
    slots = families.get("tgi").output_slots(tgi)
    assert [(s.kind, s.text, s.choice) for s in slots if not s.probe] == [
        ("content", "a", 0), ("content", "b", 1)]
    assert next(s for s in slots if s.probe).drop() and "details" not in tgi
    messages = {"content": [{"type": "thinking", "thinking": "t"},
                            {"type": "tool_use", "name": "f", "input": {"q": {"r": "x"}}},
                            {"type": "text", "text": "y"}]}
    assert kinds(families.get("messages").output_slots(messages)) == [
        ("reasoning.0", "t"), ("tool_arguments.1", "x"), ("name", "f"), ("content.2", "y")]
    responses = {"output": [
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "r"}]},
        {"type": "function_call", "name": "f", "arguments": "{}"},
        {"type": "message", "content": [{"type": "output_text", "text": "o", "logprobs": [
            {"token": "o", "top_logprobs": []}]}, {"type": "refusal", "refusal": "no"}]}]}
    found = kinds(families.get("responses").output_slots(responses))
    assert ("reasoning.0.0", "r") in found and ("tool_arguments.1.0", "{}") in found
    assert ("content.2.0", "o") in found and ("refusal.2.1", "no") in found
    assert ("logprobs", "o\n") in found
    ollama = {"message": {"content": "c", "thinking": "t", "tool_calls": [
        {"function": {"name": "f", "arguments": {"to": "x"}}}]}}
    assert kinds(families.get("ollama_chat").output_slots(ollama)) == [
        ("content", "c"), ("reasoning", "t"), ("tool_arguments.0", "x"), ("tool_name.0", "f")]
    infer = {"outputs": [{"name": "text_output", "datatype": "BYTES", "data": ["z"]},
                         {"name": "ids", "datatype": "INT32", "data": [1]}]}
    assert kinds(families.get("triton_infer").output_slots(infer)) == [("content", "z")]


def test_stream_chunk_slots_and_aggregates() -> None:
    from hegui.sidecar import families

    chat = {"choices": [{"index": 1, "delta": {"content": "a", "reasoning_content": "r",
                                               "tool_calls": [{"index": 2, "function": {
                                                   "arguments": "{"}}]}}]}
    slots = families.get("chat").chunk_slots(chat)
    assert [(s.choice, s.kind, s.text) for s in slots] == [
        (1, "content", "a"), (1, "reasoning_content", "r"), (1, "tool_arguments.2", "{")]
    last = {"token": {"text": ""}, "generated_text": "whole"}
    tgi = families.get("tgi").chunk_slots(last)
    assert [(s.kind, s.aggregate) for s in tgi] == [("content", False), ("content", True)]
    done = {"type": "response.output_text.done", "output_index": 0, "content_index": 0,
            "text": "whole"}
    assert [(s.kind, s.aggregate) for s in families.get("responses").chunk_slots(done)] == [
        ("content.0.0", True)]
    delta = {"type": "content_block_delta", "index": 3,
             "delta": {"type": "input_json_delta", "partial_json": "{\"a"}}
    assert kinds(families.get("messages").chunk_slots(delta)) == [("tool_arguments.3", "{\"a")]
    assert families.get("ollama_generate").is_final({"done": True})
    assert b"event: error" in families.get("messages").cut_event({}, {"code": "x"})
    assert families.get("chat").cut_event({}, {"code": "x"}).endswith(b"data: [DONE]\n\n")
    start = {"type": "content_block_start", "index": 2,
             "content_block": {"type": "tool_use", "name": "f", "input": {"a": "b"}}}
    assert kinds(families.get("messages").chunk_slots(start))[0] == ("tool_arguments.2", "b")


async def test_metadata_is_relayed_on_the_routes_path(client: TestClient[Any, Any],
                                                      fake_model: FakeModel) -> None:
    for target in ("/v1/models", "/hegui/model/metrics", "/v2/models/llm/ready", "/health"):
        status, _, _ = await raw(client, "GET", target)
        assert status == 200, target
    assert fake_model.paths == ["GET /v1/models", "GET /metrics", "GET /v2/models/llm/ready",
                                "GET /health"]
    status, _, _ = await raw(client, "POST", "/v1/embeddings", {"model": "fake", "input": "x"})
    assert status == 200 and fake_model.paths[-1] == "POST /v1/embeddings"
    status, _, body = await raw(client, "GET", "/v2/repository/index")
    assert status == 404 and b"/v2/repository/index" in body
    assert len(fake_model.paths) == 5
