"""The data path red-teamed (Art.4, Art.13, Art.14): what a hostile client, or the regulated team
that runs the model container, tried to get a prohibited text past the sidecar or to burn the
service's availability objective with the client's own behaviour. Each test goes through a real
sidecar over raw HTTP (or the real `openai` client), and failed on the sidecar before its fix:

- an HTTP/2 prior-knowledge client got a bare HTTP/1.0 400 it cannot read;
- an HTTP/0.9 request line (`GET /v1/models`, no version) waited for the client's timeout;
- `Expect: 100-continue` was sent on to the model server, and the sidecar's request waited for a
  100 that a plain server never sends: a 504 that counted as the service's failure;
- `"stream": 1` (or `"true"`) made the model stream where the sidecar expected one JSON answer:
  a 502 counted as the service's failure (and retried twice by the openai client);
- a generation route's query string reached the model unmoderated (`?prompt=...`);
- a model server's error answer (4xx, 5xx) was relayed as it came, prohibited text and all;
- an images answer's texts (`revised_prompt`, or a chat answer behind a route declared with
  the images family) were relayed unmoderated;
- a client that trickled its request body made the service look slow in its latency SLI.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hegui.sidecar.app import H2_PREFACE, Sidecar, serve
from hegui.sidecar.config import SidecarConfig
from hegui.sidecar.testing import (
    FakeModel,
    LocalModerator,
    exchange,
    parse,
    posture,
    sidecar_client,
)
from hegui.sidecar.testing import http_request as request

BAD = "教我制作炸弹"  # terrorismExtremism, Art.4(1)
PHONE = "13812345678"


def chat(content: str, **extra: Any) -> bytes:
    return json.dumps({"model": "fake", "messages": [{"role": "user", "content": content}],
                       **extra}, ensure_ascii=False).encode()


def sli(metrics: str, outcome: str, route: str = "chat") -> float:
    pattern = (r'hegui_sidecar_sli_requests_total\{[^}]*outcome="' + outcome + '",route="'
               + route + r'"\} (\S+)')
    found = re.search(pattern, metrics)
    return float(found.group(1)) if found else 0.0


async def metrics_of(client: TestClient[Any, Any]) -> str:
    return await (await client.get("/metrics")).text()


@pytest.fixture
async def sidecar(fake_model: FakeModel, moderator: LocalModerator) -> AsyncIterator[Any]:
    c = await sidecar_client(SidecarConfig(posture(), upstream=fake_model.url,
                                           upstream_read_timeout=2.0), moderator)
    yield c
    await c.close()


# --- HTTP/2 with prior knowledge ------------------------------------------------------------

async def test_http2_prior_knowledge_gets_goaway_http_1_1_required(
        fake_model: FakeModel, moderator: LocalModerator) -> None:
    runner = await serve(Sidecar(SidecarConfig(posture(), upstream=fake_model.url), moderator),
                         "127.0.0.1", 0)
    try:
        host, port = runner.addresses[0][:2]
        settings = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # the client's empty SETTINGS
        answer = await exchange(host, port, H2_PREFACE + settings, wait=5)
        frames = []
        while answer:  # HTTP/2 frames: length (3), type, flags, stream (4), payload
            length = int.from_bytes(answer[:3], "big")
            frames.append((answer[3], answer[9:9 + length]))
            answer = answer[9 + length:]
        assert [kind for kind, _ in frames] == [0x4, 0x7]  # SETTINGS, GOAWAY
        goaway = frames[1][1]
        assert int.from_bytes(goaway[4:8], "big") == 0xD  # HTTP_1_1_REQUIRED
        assert b"HTTP/1.1" in goaway[8:] and b"http2-prior-knowledge" in goaway[8:]
        # The preface sent a byte at a time is refused too, never left hanging.
        answer = await exchange(host, port, b"", pieces=[bytes([b]) for b in H2_PREFACE])
        assert answer[3] == 0x4 and b"HTTP_1_1" not in answer[:9]
        assert not fake_model.paths
        # HTTP/1.1 on the same listener is served as before.
        status, _, body = parse(await exchange(host, port, request(
            "POST", "/v1/chat/completions", chat("say:你好"))))
        assert status == 200 and json.loads(body)["choices"][0]["message"]["content"] == "你好"
    finally:
        await runner.cleanup()


# --- a request line with no HTTP/1.x version ------------------------------------------------

async def test_an_http_0_9_request_line_is_refused_at_once(
        fake_model: FakeModel, moderator: LocalModerator) -> None:
    """`GET /v1/models` with no version (HTTP/0.9) made the sidecar read header lines until the
    client gave up; now a 400 that names the fix comes at once and the connection closes."""
    runner = await serve(Sidecar(SidecarConfig(posture(), upstream=fake_model.url), moderator),
                         "127.0.0.1", 0)
    try:
        host, port = runner.addresses[0][:2]
        for line in (b"GET /v1/models\r\n", b"GET /v1/models\n", b"GET /v1/models HTTP/2.0\r\n",
                     b"GET /v1/models HTTP/0.9\r\n\r\n"):
            started = asyncio.get_running_loop().time()
            status, _, body = parse(await exchange(host, port, line, wait=2.0))
            assert status == 400 and b"HTTP/1.1" in body, line
            assert asyncio.get_running_loop().time() - started < 1.0
        # The same line later on a keep-alive connection: refused too, from its parsed version.
        answer = await exchange(host, port, b"GET /hegui/healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                                b"GET /v1/models\r\n\r\n", wait=2.0)
        assert answer.startswith(b"HTTP/1.1 200") and b"hegui.http_version" in answer
        assert not fake_model.paths
    finally:
        await runner.cleanup()


# --- Expect: 100-continue to a model server that never sends 100 ---------------------------

async def _plain_model(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A model server that reads the whole body before it answers and never sends
    `100 Continue` (HTTP/1.0 servers, Python's http.server): it answers what it saw."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    await reader.readexactly(length)
    seen = head.decode("latin-1").lower()
    answer = json.dumps({"id": "1", "object": "chat.completion", "model": "fake", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "好的"},
         "finish_reason": "stop"}], "expect_seen": "expect:" in seen,
        "secret_seen": "x-secret" in seen}).encode()
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                 + f"Content-Length: {len(answer)}\r\n\r\n".encode() + answer)
    await writer.drain()
    writer.close()


async def test_expect_100_continue_is_not_sent_to_the_model(moderator: LocalModerator) -> None:
    server = await asyncio.start_server(_plain_model, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = await sidecar_client(SidecarConfig(posture(), upstream=f"http://127.0.0.1:{port}",
                                                upstream_read_timeout=2.0), moderator)
    try:
        status, _, body = parse(await exchange(client.host, client.port, request(
            "POST", "/v1/chat/completions", chat("say:hi"), "Expect: 100-continue",
            "Connection: close, x-secret", "X-Secret: hop")))
        assert status == 200, body
        answer = json.loads(body)
        assert answer["expect_seen"] is False and answer["secret_seen"] is False
        metrics = await metrics_of(client)
        assert sli(metrics, "failed") == 0 and sli(metrics, "served") == 1
    finally:
        await client.close()
        server.close()


# --- a `stream` the model reads otherwise ---------------------------------------------------

@pytest.mark.parametrize("value", [1, "true", "yes"])
async def test_a_stream_flag_that_is_not_a_boolean_is_the_clients_400(
        sidecar: TestClient[Any, Any], fake_model: FakeModel, value: Any) -> None:
    status, _, body = parse(await exchange(sidecar.host, sidecar.port, request(
        "POST", "/v1/chat/completions", chat("say:hi", stream=value))))
    assert status == 400 and json.loads(body)["error"]["code"] == "hegui.invalid_request"
    assert "stream must be true or false" in json.loads(body)["error"]["message"]
    assert not fake_model.seen
    metrics = await metrics_of(sidecar)
    assert sli(metrics, "failed") == 0 and sli(metrics, "refused") == 1


async def test_the_openai_client_gets_a_400_not_retried_502s(
        sidecar: TestClient[Any, Any], fake_model: FakeModel) -> None:
    client = openai.AsyncOpenAI(base_url=f"http://{sidecar.host}:{sidecar.port}/v1",
                                api_key="test", timeout=10)  # the client's default retries
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="fake", messages=[
            {"role": "user", "content": "say:hi"}], extra_body={"stream": "true"})
    assert sli(await metrics_of(sidecar), "failed") == 0


async def _always_streams(request: web.Request) -> web.StreamResponse:
    """A model server that streams whatever the request said (it read `stream` otherwise)."""
    body = await request.json()
    said = body["messages"][-1]["content"]
    text = said.split("say~:", 1)[1][::-1] if "say~:" in said else said.split("say:", 1)[1]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for index in range(0, len(text), 2):
        chunk = {"id": "1", "object": "chat.completion.chunk", "model": "fake", "choices": [
            {"index": 0, "delta": {"content": text[index:index + 2]}, "finish_reason": None}]}
        await response.write(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode())
    await response.write(b"data: [DONE]\n\n")
    return response


async def test_a_stream_the_model_sends_unasked_is_moderated_not_a_502(
        moderator: LocalModerator) -> None:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", _always_streams)
    model = TestServer(app, host="127.0.0.1")
    await model.start_server()
    client = await sidecar_client(SidecarConfig(posture(), upstream=str(model.make_url(""))
                                                .rstrip("/")), moderator)
    try:
        status, _, body = parse(await exchange(client.host, client.port, request(
            "POST", "/v1/chat/completions", chat("say:你好世界"))))
        assert status == 200 and "你好" in body.decode()
        status, _, body = parse(await exchange(client.host, client.port, request(
            "POST", "/v1/chat/completions", chat(f"say~:{PHONE[::-1]}。好的"))))
        assert status == 200 and "*" * 11 in "".join(re.findall(r'"content": ?"([^"]*)"',
                                                                body.decode()))
        assert sli(await metrics_of(client), "failed") == 0
    finally:
        await client.close()
        await model.close()


# --- the query string of a generation route -------------------------------------------------

async def test_a_prompt_in_the_query_string_is_moderated(sidecar: TestClient[Any, Any],
                                                         fake_model: FakeModel) -> None:
    status, _, body = parse(await exchange(sidecar.host, sidecar.port, request(
        "POST", f"/v1/chat/completions?prompt={quote(BAD)}", chat("say:hi"))))
    assert status == 400 and json.loads(body)["error"]["code"] == "hegui.input_blocked"
    assert not fake_model.paths
    status, _, _ = parse(await exchange(sidecar.host, sidecar.port, request(
        "POST", f"/v1/chat/completions?api-version=2024-06-01&note=call+{PHONE}",
        chat("say:hi"))))
    assert status == 200
    assert fake_model.paths == [f"POST /v1/chat/completions?api-version=2024-06-01&note=call%20"
                                f"{'*' * 11}"]  # masked before the model saw it


async def test_the_openai_clients_extra_query_is_moderated(sidecar: TestClient[Any, Any],
                                                           fake_model: FakeModel) -> None:
    client = openai.AsyncOpenAI(base_url=f"http://{sidecar.host}:{sidecar.port}/v1",
                                api_key="test", max_retries=0, timeout=10)
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(model="fake", messages=[
            {"role": "user", "content": "say:hi"}], extra_query={"q": BAD})
    assert refused.value.code == "hegui.input_blocked"
    assert not fake_model.paths


# --- the model server's error answers ------------------------------------------------------

def _erring_model(status: int, body: bytes | list[bytes], content_type: str) -> web.Application:
    """A model server that answers `status` with `body` (a list: its last item, which a test
    may change)."""
    async def answer(request: web.Request) -> web.Response:
        await request.read()
        said = body[-1] if isinstance(body, list) else body
        return web.Response(status=status, body=said, content_type=content_type)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    return app


@pytest.mark.parametrize(("status", "body", "content_type"), [
    (400, json.dumps({"error": {"message": f"your prompt: {BAD}"}}, ensure_ascii=False),
     "application/json"),
    (422, f"validation failed near '{BAD}'", "text/plain"),
    (400, "data: " + json.dumps({"choices": [{"delta": {"content": BAD}}]},
                                ensure_ascii=False) + "\n\n", "text/event-stream"),
    (500, json.dumps({"detail": [{"msg": BAD}]}, ensure_ascii=False), "application/json"),
])
async def test_an_error_answer_of_the_model_is_moderated(
        moderator: LocalModerator, status: int, body: str, content_type: str) -> None:
    model = TestServer(_erring_model(status, body.encode(), content_type), host="127.0.0.1")
    await model.start_server()
    client = await sidecar_client(SidecarConfig(posture(), upstream=str(model.make_url(""))
                                                .rstrip("/")), moderator)
    try:
        for stream in (False, True):
            got, _, answer = parse(await exchange(client.host, client.port, request(
                "POST", "/v1/chat/completions", chat("say:hi", stream=stream))))
            assert got == status  # whose failure it was is the model's status, kept (Art.13)
            assert BAD not in answer.decode()
            error = json.loads(answer)["error"]
            assert error["code"] == "hegui.output_blocked" and error["direction"] == "output"
        metrics = await metrics_of(client)
        assert sli(metrics, "failed") == (2 if status >= 500 else 0)
    finally:
        await client.close()
        await model.close()


async def test_personal_information_in_an_error_answer_is_masked(
        moderator: LocalModerator) -> None:
    said = [json.dumps({"error": {"message": f"call {PHONE}", "code": 400}}).encode()]
    model = TestServer(_erring_model(400, said, "application/json"), host="127.0.0.1")
    await model.start_server()
    client = await sidecar_client(SidecarConfig(posture(), upstream=str(model.make_url(""))
                                                .rstrip("/")), moderator)
    try:
        status, headers, answer = parse(await exchange(client.host, client.port, request(
            "POST", "/v1/chat/completions", chat("say:hi"))))
        assert status == 400 and headers["x-hegui-output"] == "masked"
        assert json.loads(answer) == {"error": {"message": "call " + "*" * 11, "code": 400}}
        harmless = json.dumps({"error": {"message": "max_tokens too large"}}).encode()
        said.append(harmless)
        status, _, answer = parse(await exchange(client.host, client.port, request(
            "POST", "/v1/chat/completions", chat("say:hi"))))
        assert (status, answer) == (400, harmless)  # relayed as it came
    finally:
        await client.close()
        await model.close()


def _header_model(status: int, body: bytes, content_type: str,
                  headers: dict[str, str]) -> web.Application:
    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=status, body=body, headers={"Content-Type": content_type,
                                                               **headers})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    return app


@pytest.mark.parametrize(("body", "content_type", "headers"), [
    (b'{"error": {"message": "bad request"}}', "application/json", {"X-Detail": BAD}),
    (f"no: {BAD}".encode("gb18030"), "text/plain; charset=gb18030", {}),
    (json.dumps({"error": {BAD: 1}}).encode(), "application/json", {}),
])
async def test_an_error_answers_headers_charset_and_keys_are_moderated(
        moderator: LocalModerator, body: bytes, content_type: str,
        headers: dict[str, str]) -> None:
    """A model server's error answer carried a prohibited text past moderation in a response
    header, in a body in another charset (read as UTF-8 with replacement characters, relayed as
    it came) or in a JSON key."""
    model = TestServer(_header_model(400, body, content_type, headers), host="127.0.0.1")
    await model.start_server()
    client = await sidecar_client(SidecarConfig(posture(), upstream=str(model.make_url(""))
                                                .rstrip("/")), moderator)
    try:
        status, got, answer = parse(await exchange(client.host, client.port, request(
            "POST", "/v1/chat/completions", chat("say:hi"))))
    finally:
        await client.close()
        await model.close()
    assert status == 400 and "x-detail" not in got
    assert BAD.encode("gb18030") not in answer and BAD not in answer.decode("utf-8", "replace")
    assert json.loads(answer)["error"]["code"] == "hegui.output_blocked"


async def test_a_key_sent_twice_in_an_error_answer_reaches_no_client(
        moderator: LocalModerator) -> None:
    """Python's parser takes the last of two keys, others the first: the client gets what was
    moderated, not the model's bytes."""
    said = f'{{"error": {{"message": "{BAD}", "message": "max_tokens too large"}}}}'
    model = TestServer(_erring_model(400, said.encode(), "application/json"), host="127.0.0.1")
    await model.start_server()
    client = await sidecar_client(SidecarConfig(posture(), upstream=str(model.make_url(""))
                                                .rstrip("/")), moderator)
    try:
        status, _, answer = parse(await exchange(client.host, client.port, request(
            "POST", "/v1/chat/completions", chat("say:hi"))))
    finally:
        await client.close()
        await model.close()
    assert status == 400 and BAD not in answer.decode()
    assert json.loads(answer) == {"error": {"message": "max_tokens too large"}}


# --- images: every text of the answer -------------------------------------------------------

def _images_model(answer: dict[str, Any]) -> web.Application:
    async def images(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(answer, dumps=lambda v: json.dumps(v, ensure_ascii=False))

    app = web.Application()
    app.router.add_post("/v1/images/generations", images)
    app.router.add_post("/custom/chat", images)
    return app


async def test_the_texts_of_an_images_answer_are_moderated(moderator: LocalModerator) -> None:
    image: dict[str, str] = {"url": "http://images.invalid/1.png",
                             "revised_prompt": f"a poster: {BAD}"}
    answer = {"created": 0, "data": [image]}
    model = TestServer(_images_model(answer), host="127.0.0.1")
    await model.start_server()
    # Fail mode Open: a url picture is served flagged (in Closed it is refused, no image
    # classifier seeing it: tests/sidecar/test_sidecar_images.py); its texts are moderated.
    client = await sidecar_client(SidecarConfig(posture(failureMode="Open"),
                                                upstream=str(model.make_url("")).rstrip("/")),
                                  moderator)
    try:
        api = openai.AsyncOpenAI(base_url=f"http://{client.host}:{client.port}/v1",
                                 api_key="test", max_retries=0, timeout=10)
        with pytest.raises(openai.APIStatusError) as withheld:
            await api.images.generate(prompt="a poster", model="fake")
        assert withheld.value.status_code == 451 and BAD not in str(withheld.value.body)
        image["revised_prompt"] = f"a poster, call {PHONE}"
        images = await api.images.generate(prompt="a poster", model="fake")
        assert images.data is not None
        assert images.data[0].revised_prompt == "a poster, call " + "*" * 11
        assert images.data[0].url == "http://images.invalid/1.png"
        status, _, _ = parse(await exchange(client.host, client.port, request(
            "POST", "/v1/images/generations", json.dumps({"prompt": "x", "stream": True})
            .encode())))
        assert status == 400
    finally:
        await client.close()
        await model.close()


async def test_a_chat_behind_a_route_declared_as_images_is_moderated(
        moderator: LocalModerator) -> None:
    """The team declares its chat server's route with the images family (and no image
    classifier, fail mode Open): the chat answer's text is moderated all the same."""
    answer = {"id": "1", "object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": BAD}}]}
    model = TestServer(_images_model(answer), host="127.0.0.1")
    await model.start_server()
    config = SidecarConfig(posture(routes=[{"path": "/custom/chat", "family": "images"}],
                                   failureMode="Open"),
                           upstream=str(model.make_url("")).rstrip("/"))
    client = await sidecar_client(config, moderator)
    try:
        status, _, body = parse(await exchange(client.host, client.port, request(
            "POST", "/custom/chat", json.dumps({"prompt": "hi"}).encode())))
        assert status == 451 and BAD not in body.decode()
    finally:
        await client.close()
        await model.close()


# --- a client that trickles its body --------------------------------------------------------

async def test_a_slow_upload_is_not_the_services_latency(sidecar: TestClient[Any, Any]) -> None:
    data = request("POST", "/v1/chat/completions", chat("say:hi"))
    head, _, body = data.partition(b"\r\n\r\n")
    pieces = [head + b"\r\n\r\n"] + [body[i:i + 8] for i in range(0, len(body), 8)]
    status, _, _ = parse(await exchange(sidecar.host, sidecar.port, b"", pieces=pieces,
                                        pause=1.5 / len(pieces)))
    assert status == 200
    metrics = await metrics_of(sidecar)
    seconds = float(re.search(r'hegui_sidecar_sli_latency_seconds_sum\{[^}]*route="chat"\} (\S+)',
                              metrics).group(1))  # type: ignore[union-attr]
    assert sli(metrics, "served") == 1 and seconds < 0.5  # the body took 1.5 s to arrive


# --- what else a model's answer carries -----------------------------------------------------

def _raw_model(path: str, body: bytes, content_type: str) -> web.Application:
    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=body, content_type=content_type)

    app = web.Application()
    app.router.add_post(path, answer)
    return app


async def _through(model_app: web.Application, target: str, body: bytes,
                   moderator: LocalModerator) -> tuple[int, dict[str, str], bytes]:
    model = TestServer(model_app, host="127.0.0.1")
    await model.start_server()
    client = await sidecar_client(SidecarConfig(posture(), upstream=str(model.make_url(""))
                                                .rstrip("/")), moderator)
    try:
        return parse(await exchange(client.host, client.port, request("POST", target, body)))
    finally:
        await client.close()
        await model.close()


def _chunk(text: str) -> str:
    return json.dumps({"id": "1", "object": "chat.completion.chunk", "model": "fake", "choices": [
        {"index": 0, "delta": {"content": text}, "finish_reason": None}]}, ensure_ascii=False)


async def test_sse_fields_the_relay_does_not_moderate_are_not_sent_on(
        moderator: LocalModerator) -> None:
    """Comments, `id` (a browser's lastEventId), `retry` and unknown fields are text a front end
    can read: the model put a prohibited text in each, the client gets none of them."""
    stream = (f"id: {BAD}\n: {BAD}\nnote: {BAD}\ndata: {_chunk('你好')}\n\n"
              f"retry: 1000\ndata: {_chunk('世界')}\n\ndata: [DONE]\n\n").encode()
    status, _, body = await _through(_raw_model("/v1/chat/completions", stream,
                                                "text/event-stream"),
                                     "/v1/chat/completions", chat("hi", stream=True), moderator)
    assert status == 200 and BAD not in body.decode() and b"retry" not in body
    contents = re.findall(r'"content": ?"([^"]*)"', body.decode())
    assert "".join(contents) == "你好世界" and body.endswith(b"data: [DONE]\n\n")


async def test_an_sse_event_name_that_is_no_apis_cuts_the_stream(
        moderator: LocalModerator) -> None:
    stream = f"event: {BAD}\ndata: {_chunk('你好')}\n\ndata: [DONE]\n\n".encode()
    status, _, body = await _through(_raw_model("/v1/chat/completions", stream,
                                                "text/event-stream"),
                                     "/v1/chat/completions", chat("hi", stream=True), moderator)
    assert status == 200 and BAD not in body.decode()
    assert "hegui.upstream_malformed" in body.decode()


@pytest.mark.parametrize("extra", [{"x_note": BAD}, {"model": BAD},
                                   {"choices_meta": [{"reason": BAD}]}])
async def test_a_field_no_api_defines_is_moderated_too(moderator: LocalModerator,
                                                       extra: dict[str, Any]) -> None:
    """The openai client keeps fields it does not know (`model_extra`): a model server that
    puts its answer there is moderated like the answer."""
    answer = {"id": "1", "object": "chat.completion", "model": "fake", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "你好"},
         "finish_reason": "stop"}], **extra}
    status, _, body = await _through(
        _raw_model("/v1/chat/completions", json.dumps(answer, ensure_ascii=False).encode(),
                   "application/json"), "/v1/chat/completions", chat("hi"), moderator)
    assert status == 451 and BAD not in body.decode()


async def test_personal_information_in_another_field_is_masked(
        moderator: LocalModerator) -> None:
    answer = {"id": "1", "object": "chat.completion", "model": "fake", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "你好"},
         "finish_reason": "stop"}], "x_contact": f"call {PHONE}"}
    status, headers, body = await _through(
        _raw_model("/v1/chat/completions", json.dumps(answer).encode(), "application/json"),
        "/v1/chat/completions", chat("hi"), moderator)
    assert status == 200 and headers["x-hegui-output"] == "masked"
    said = json.loads(body)
    assert said["x_contact"] == "call " + "*" * 11
    assert said["choices"][0]["message"]["content"] == "你好"


@pytest.mark.parametrize("mode", ["Hold", "StreamThenRetract"])
async def test_a_streamed_field_no_api_defines_is_moderated_too(mode: str) -> None:
    """The same in a stream: the model's `model` and an unknown field of a later event carry a
    prohibited text (stopped, never sent) or a phone number (masked)."""
    first = json.loads(_chunk("你好"))
    later = {**json.loads(_chunk("世界")), "x_note": BAD}
    stream = f"data: {json.dumps(first)}\n\ndata: {json.dumps(later)}\n\ndata: [DONE]\n\n"
    moderator = LocalModerator()
    config = posture(output={"streaming": {"mode": mode}})
    for said, expect in ((stream, "hegui.output_blocked"),
                         (stream.replace(json.dumps(BAD)[1:-1], f"call {PHONE}"), "*" * 11),
                         (stream.replace('"model": "fake"', f'"model": "{BAD}"', 1),
                          "hegui.output_blocked")):
        model = TestServer(_raw_model("/v1/chat/completions", said.encode(),
                                      "text/event-stream"), host="127.0.0.1")
        await model.start_server()
        client = await sidecar_client(SidecarConfig(config, upstream=str(model.make_url(""))
                                                    .rstrip("/")), moderator)
        try:
            status, _, body = parse(await exchange(client.host, client.port, request(
                "POST", "/v1/chat/completions", chat("hi", stream=True))))
        finally:
            await client.close()
            await model.close()
        text = body.decode("utf-8")
        assert status == 200 and BAD not in text and PHONE not in text
        assert BAD.encode("unicode_escape").decode() not in text
        assert expect in text


def _tokens(texts: list[str], *, last: str | None = None) -> str:
    """A chat stream of one-token events alike but for their text (what the relay learns the
    shape of and then decodes by it), `last` sent as the model wrote it after them."""
    events = [f"data: {_chunk(t)}\n\n" for t in texts]
    if last is not None:
        events.append(f"data: {last}\n\n")
    return "".join(events) + "data: [DONE]\n\n"


_SAME = [_chunk(t) for t in "你好世界你好世界你好世界你好世界"]


@pytest.mark.parametrize("mode", ["Hold", "StreamThenRetract"])
@pytest.mark.parametrize(("last", "expect"), [
    # a field put where the text goes: the same bytes before and after it
    (_SAME[0].replace('"你"', f'"你", "x_note": "{BAD}"'), "hegui.output_blocked"),
    (_SAME[0].replace('"你"', f'"你", "x_note": "call {PHONE}"'), "*" * 11),
    # a key twice: parsers differ on which counts (Python's and orjson the last, others the
    # first), so what was moderated must be what is sent
    (_SAME[0].replace('"content": "你"', f'"content": "{BAD}", "content": "你"'), "你"),
    (_SAME[0].replace('"model": "fake"', f'"model": "{BAD}", "model": "fake"'), "你"),
    # the text itself, late in a stream of one shape (StreamThenRetract shows a whole token
    # and withdraws it, below)
    (_SAME[0].replace("你", BAD), "hegui.output_blocked"),
    (_SAME[0].replace("你", f"call {PHONE}"), "*" * 11),
])
async def test_an_event_that_differs_from_its_stream_only_in_hiding_text_is_moderated(
        mode: str, last: str, expect: str) -> None:
    """The relay decodes a stream's token events by the shape it learned from one whose other
    strings passed (`streaming._Shape`): an event that is not exactly that shape with another
    text is decoded and checked in full, and a key sent twice reaches no client."""
    said = _tokens(list("你好世界你好世界你好世界你好世界"), last=last)
    model = TestServer(_raw_model("/v1/chat/completions", said.encode(), "text/event-stream"),
                       host="127.0.0.1")
    await model.start_server()
    client = await sidecar_client(SidecarConfig(posture(output={"streaming": {"mode": mode}}),
                                                upstream=str(model.make_url("")).rstrip("/")),
                                  LocalModerator())
    try:
        status, _, body = parse(await exchange(client.host, client.port, request(
            "POST", "/v1/chat/completions", chat("hi", stream=True))))
    finally:
        await client.close()
        await model.close()
    text = body.decode("utf-8")
    assert status == 200 and PHONE not in text and expect in text
    if mode == "StreamThenRetract" and f'"content":"{BAD}"' in text.replace(" ", ""):
        assert re.search(r'"withdraw": ?true', text)  # a token shown is withdrawn (Art.14)
    else:
        assert BAD not in text and BAD.encode("unicode_escape").decode() not in text


async def test_an_ollama_stream_is_checked_without_moderating_its_timestamps() -> None:
    """Ollama's events carry a new `created_at` each: not moderated (it says nothing), while a
    prohibited text in another field of a later event stops the stream."""
    events = [{"model": "llama3", "created_at": f"2024-06-01T12:00:0{i}.12345Z",
               "message": {"role": "assistant", "content": text}, "done": False}
              for i, text in enumerate(["你", "好", "呀"])]
    events[2]["x_note"] = BAD
    said = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in events)
    moderator = LocalModerator()
    status, _, body = await _through(
        _raw_model("/api/chat", (said + '{"model": "llama3", "done": true}\n').encode(),
                   "application/x-ndjson"), "/api/chat",
        json.dumps({"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}).encode(),
        moderator)
    assert status == 200 and BAD not in body.decode() and "hegui.output_blocked" in body.decode()
    assert not any("2024-06-01T" in text for call in moderator.calls for text in call)
