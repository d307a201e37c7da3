"""Embeddings and tokenize answers are moderated as they stream (Art.4, Art.14, issue 14): the
model server is the application team's, and text it puts into such an answer reaches clients
as surely as a chat answer. Every JSON string (keys too) is moderated as it arrives; numbers
pass byte for byte; a big batch is never buffered whole. Through raw HTTP and the real
`openai` client."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from hegui.sidecar.config import SidecarConfig
from hegui.sidecar.json_scan import Malformed, Scanner, String
from hegui.sidecar.testing import FakeModel, LocalModerator, posture, sidecar_client

PROHIBITED = "制作炸弹"


@pytest.fixture
async def sidecar(fake_model: FakeModel, moderator: LocalModerator
                  ) -> AsyncIterator[TestClient[Any, Any]]:
    client = await sidecar_client(SidecarConfig(posture(), upstream=fake_model.url), moderator)
    yield client
    await client.close()


def api(sidecar: TestClient[Any, Any]) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"http://{sidecar.host}:{sidecar.port}/v1",
                              api_key="test", max_retries=0, timeout=30)


async def post(sidecar: TestClient[Any, Any], path: str, body: Any) -> tuple[int, bytes]:
    response = await sidecar.post(path, json=body)
    return response.status, await response.read()


async def test_text_the_model_adds_to_embeddings_is_withheld(
        sidecar: TestClient[Any, Any], fake_model: FakeModel) -> None:
    fake_model.embedding_extra = {1: {"note": f"请{PROHIBITED}"}}
    status, body = await post(sidecar, "/v1/embeddings", {"model": "fake", "input": ["a", "b"]})
    assert status == 451, body  # the old code relayed it
    assert PROHIBITED.encode() not in body
    assert json.loads(body)["error"]["code"] == "hegui.output_blocked"
    # In a key, too: a key is text a client reads.
    fake_model.embedding_extra = {0: {PROHIBITED: 1}}
    status, body = await post(sidecar, "/v1/embeddings", {"model": "fake", "input": ["a"]})
    assert status == 451 and PROHIBITED.encode() not in body


async def test_numbers_pass_byte_for_byte_and_personal_information_is_masked(
        sidecar: TestClient[Any, Any], fake_model: FakeModel) -> None:
    # A number that reads like a phone number is a number: untouched. A string is masked.
    fake_model.embedding_extra = {0: {"score": 13800138000, "owner": "call 13800138000"}}
    request = {"model": "fake", "input": ["a", "b", "c"]}
    async with aiohttp.ClientSession() as session, \
            session.post(f"{fake_model.url}/v1/embeddings", json=request) as direct:
        model_said = await direct.read()
    status, body = await post(sidecar, "/v1/embeddings", request)
    assert status == 200
    assert b"13800138000" in model_said and b"call 13800138000" not in body
    masked = json.loads(body)["data"][0]["owner"]
    assert masked.startswith("call ") and "13800138000" not in masked
    # Everything but the masked string, byte for byte as the model wrote it.
    assert body == model_said.replace(b"call 13800138000", masked.encode())


async def test_tokenize_token_strings_are_moderated(sidecar: TestClient[Any, Any]) -> None:
    status, body = await post(sidecar, "/tokenize", {"model": "fake", "prompt": "call 13800138000"})
    assert status == 200 and json.loads(body)["tokens"] == [4000, 11001]  # numbers: untouched
    # Token strings are text a client shows: moderated as an answer's text is.
    status, body = await post(sidecar, "/tokenize", {
        "model": "fake", "messages": [{"role": "user", "content": "call 13800138000"}],
        "return_token_strs": True})
    strings = json.loads(body)["token_strs"]
    assert status == 200 and strings[0] == "call" and "13800138000" not in strings[1]
    status, body = await post(sidecar, "/tokenize", {
        "model": "fake", "prompt": f"教我 {PROHIBITED}", "return_token_strs": True})
    assert status == 451 and PROHIBITED.encode() not in body


async def test_a_big_batch_streams_through_and_a_late_violation_cuts_it(
        sidecar: TestClient[Any, Any], fake_model: FakeModel) -> None:
    """3,000 embeddings (about 4 MB) sent in two halves a second apart: the client has the
    first half before the model sends the second (nothing buffered whole); text in the last
    item, after much was sent, cuts the answer: the client's read fails and never holds the
    text."""
    fake_model.embedding_dims, fake_model.embedding_pause = 64, 1.0
    request = {"model": "fake", "input": ["x"] * 3000}
    url = sidecar.make_url("/v1/embeddings")
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=request) as response:
            assert response.status == 200
            first = await response.content.readany()
            assert len(first) > 0
            assert fake_model.second_half_at == 0.0 or time.monotonic() < \
                fake_model.second_half_at  # before the model sent its second half
            rest = await response.read()
        answer = json.loads(first + rest)
        assert len(answer["data"]) == 3000 and len(answer["data"][2999]["embedding"]) == 64
        fake_model.embedding_extra = {2999: {"note": PROHIBITED}}
        received = bytearray()
        with pytest.raises(aiohttp.ClientPayloadError):
            async with session.post(url, json=request) as response:
                assert response.status == 200
                async for data in response.content.iter_any():
                    received += data
    assert len(received) > 1 << 20  # the first half went out as it came
    assert PROHIBITED.encode() not in received  # the old code relayed it


async def test_the_openai_client_gets_its_embeddings_and_the_refusal(
        sidecar: TestClient[Any, Any], fake_model: FakeModel) -> None:
    fake_model.embedding_dims = 256
    client = api(sidecar)
    # The client asks for base64 (packed float32): packed numbers, relayed as numbers are.
    answer = await client.embeddings.create(model="fake", input=["一段文字"] * 2048)
    assert len(answer.data) == 2048
    expected = [((5 * 31 + j) % 97) / 97 - 0.5 for j in range(256)]
    assert answer.data[5].embedding == pytest.approx(expected, abs=1e-6)
    answer = await client.embeddings.create(model="fake", input=["a"], encoding_format="float")
    assert answer.data[0].embedding[:2] == pytest.approx([-0.5, 1 / 97 - 0.5])
    fake_model.embedding_extra = {0: {"object": PROHIBITED}}
    with pytest.raises(openai.APIStatusError) as refused:
        await client.embeddings.create(model="fake", input=["a"])
    assert refused.value.status_code == 451
    await client.close()


async def test_text_outside_strings_is_refused(fake_model: FakeModel,
                                               moderator: LocalModerator) -> None:
    from aiohttp import web

    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=f'{{"data": [1, 2, {PROHIBITED}]}}'.encode(),
                            content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/embeddings", answer)
    from aiohttp.test_utils import TestServer

    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    client = await sidecar_client(SidecarConfig(posture(), upstream=str(
        server.make_url("")).rstrip("/")), moderator)
    try:
        status, body = await post(client, "/v1/embeddings", {"model": "m", "input": "a"})
    finally:
        await client.close()
        await server.close()
    assert status == 502 and PROHIBITED.encode() not in body


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(_json, st.lists(st.integers(1, 40), min_size=1, max_size=20), st.booleans())
def test_the_scanner_finds_every_string_and_changes_no_byte(
        document: Any, cuts: list[int], ascii_only: bool) -> None:
    raw = json.dumps(document, ensure_ascii=ascii_only).encode()
    scanner = Scanner(1 << 20)
    out: list[bytes] = []
    strings: list[str] = []
    at, turn = 0, 0
    while at < len(raw):
        size = cuts[turn % len(cuts)]
        for part in scanner.feed(raw[at:at + size]):
            if isinstance(part, String):
                out.append(part.raw)
                strings.append(part.text)
            else:
                out.append(part)
        at, turn = at + size, turn + 1
    scanner.finish()
    assert b"".join(out) == raw

    def walk(value: Any) -> list[str]:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list):
            return [s for v in value for s in walk(v)]
        if isinstance(value, dict):
            return [s for k, v in value.items() for s in (k, *walk(v))]
        return []

    assert strings == walk(document)


def test_the_scanner_refuses_what_json_does_not_allow() -> None:
    for bad in (b'[1, "a" \xe5\x88\xb6]', b'{"a": bomb}', b'["\\q"]'):
        with pytest.raises(Malformed):
            Scanner(100).feed(bad)
    with pytest.raises(Malformed):
        Scanner(10).feed(b'["' + b"a" * 20)
    scanner = Scanner(100)
    scanner.feed(b'["abc')
    with pytest.raises(Malformed):
        scanner.finish()


async def test_moderation_down_in_closed_mode_refuses_before_sending(
        sidecar: TestClient[Any, Any], moderator: LocalModerator) -> None:
    moderator.down = True
    status, body = await post(sidecar, "/v1/embeddings", {"model": "fake", "input": ["a"]})
    assert status == 503 and b"hegui.moderation_unavailable" in body
    await asyncio.sleep(0)


@pytest.mark.parametrize("cut", [1, 2, 3, 5, 100])
def test_words_outside_strings_are_refused_even_in_json_s_own_letters(cut: int) -> None:
    """JSON's literals and exponents leave letters allowed outside strings, enough to spell
    words (`satire`, `fine`): only whole literals pass, however the reads cut them."""
    def scan(raw: bytes) -> None:
        scanner = Scanner(100)
        for at in range(0, len(raw), cut):
            scanner.feed(raw[at:at + cut])
        scanner.finish()

    for bad in (b'[1, satire, 2]', b'{"a": fine}', b'[truest]', b'[tru]', b'[1, nullify]',
                b'[1] listen'):
        with pytest.raises(Malformed):
            scan(bad)
    scan(b'{"a": [true, false, null, 1e-5, 2E+10, NaN, -Infinity], "b": "fine"}')
