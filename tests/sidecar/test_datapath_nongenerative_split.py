"""Text a model spells across the strings of an embeddings or tokenize answer is moderated as
the text it spells (Art.4, Art.14, issue 14). The model server is the application team's: each
string of such an answer was moderated on its own, so a prohibited text split over consecutive
strings (`token_strs: ["制作", "炸弹"]`, an array of short strings, the same field of
consecutive embeddings) passed piece by piece, and a phone number split over strings was never
masked. The sidecar now moderates each run of string values as one running text, with the
streaming path's rules (a context carried from what was moderated, a trailing run that may be
personal information held until the next string decides it). Through the real sidecar app and
the official `openai` client; numbers still pass byte for byte."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hegui.sidecar.config import SidecarConfig
from hegui.sidecar.testing import LocalModerator, posture, sidecar_client

PROHIBITED = "制作炸弹"  # the illustrative lexicon's terrorismExtremism entries
ENGLISH = "build a bomb"
PHONE = "13800138000"


class ScriptedModel:
    """A model server whose embeddings and tokenize answers are the bytes a test gives, sent in
    the pieces given (`pause` seconds apart: a piece per read of the sidecar)."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = [b"{}"]
        self.pause = 0.0
        self.url = ""
        self.status = 200

    def say(self, document: Any, *, pieces: int = 1, pause: float = 0.0) -> bytes:
        raw = json.dumps(document, ensure_ascii=False).encode()
        size = -(-len(raw) // pieces)
        self.pieces = [raw[at:at + size] for at in range(0, len(raw), size)]
        self.pause = pause
        return raw

    async def answer(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(status=self.status,
                                      headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for index, piece in enumerate(self.pieces):
            if index and self.pause:
                await asyncio.sleep(self.pause)
            await response.write(piece)
        await response.write_eof()
        return response


@pytest.fixture
async def model() -> AsyncIterator[ScriptedModel]:
    scripted = ScriptedModel()
    app = web.Application()
    for path in ("/v1/embeddings", "/tokenize", "/api/embed"):
        app.router.add_post(path, scripted.answer)
    app.router.add_get("/v1/models", scripted.answer)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    scripted.url = str(server.make_url("")).rstrip("/")
    yield scripted
    await server.close()


@pytest.fixture
async def sidecar(model: ScriptedModel) -> AsyncIterator[TestClient[Any, Any]]:
    client = await sidecar_client(SidecarConfig(posture(), upstream=model.url),
                                  LocalModerator())
    yield client
    await client.close()


async def post(sidecar: TestClient[Any, Any], path: str = "/tokenize") -> tuple[int, bytes]:
    """The status and body; status 0 when the answer was cut (the client's read fails) and
    the body is then what arrived before the cut."""
    received = bytearray()
    try:
        async with aiohttp.ClientSession() as session, session.post(
                sidecar.make_url(path), json={"model": "m", "prompt": "x",
                                              "input": "x"}) as response:
            async for chunk in response.content.iter_any():
                received += chunk
            return response.status, bytes(received)
    except aiohttp.ClientPayloadError:
        return 0, bytes(received)


def tokenize(strings: list[str]) -> dict[str, Any]:
    """vLLM's /tokenize answer with `return_token_strs`."""
    return {"count": len(strings), "max_model_len": 4096,
            "tokens": [1000 + i for i in range(len(strings))], "token_strs": strings}


def embeddings(items: list[dict[str, Any]], dims: int = 4) -> dict[str, Any]:
    data = [{"object": "embedding", "index": i, "embedding": [0.25 * j - 0.5 for j in
                                                              range(dims)], **extra}
            for i, extra in enumerate(items)]
    return {"object": "list", "data": data, "model": "bge-m3",
            "usage": {"prompt_tokens": len(items), "total_tokens": len(items)}}


def spelled(body: bytes, text: str) -> bool:
    """Whether the body's strings, joined, still spell `text` (what a client that joins the
    tokens would show)."""
    return text in "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', body.decode("utf-8", "replace")))


@pytest.mark.parametrize("strings", [
    ["制作", "炸弹"], ["制作炸", "弹"], ["制", "作", "炸", "弹"], ["教我", "制作", "炸弹", "吧"],
    ["bu", "ild a bo", "mb"], ["how to ", "build", " a ", "bomb"],
])
@pytest.mark.parametrize("reads", [1, 3])
async def test_a_prohibited_text_split_across_token_strings_is_withheld(
        sidecar: TestClient[Any, Any], model: ScriptedModel, strings: list[str],
        reads: int) -> None:
    """Each token string is clean alone; together they spell a lexicon entry. The old code
    relayed the answer (200) with every piece. In one read: withheld (451); when the model
    sends the rest a read later, what went out before may be the first pieces, and the answer
    is cut (as a stream is): never the whole text, never a body that parses."""
    model.say(tokenize(strings), pieces=reads, pause=0.05 if reads > 1 else 0.0)
    status, body = await post(sidecar)
    if reads == 1 or status != 0:
        assert status == 451, body
        assert json.loads(body)["error"]["code"] == "hegui.output_blocked"
    assert not spelled(body, PROHIBITED) and not spelled(body, ENGLISH)


async def test_a_split_across_arrays_of_strings_and_interleaved_fields_is_withheld(
        sidecar: TestClient[Any, Any], model: ScriptedModel) -> None:
    """An embeddings answer is numbers, but a server can add strings: an array of short
    strings, or the same field of consecutive embeddings with other fields between (the run of
    that field is joined whatever lies between)."""
    for items in (
        [{"tags": ["制", "作", "炸", "弹"]}],
        [{"note": "制作"}, {"note": "炸弹"}],  # "object": "embedding" between the halves
        [{"note": "bu"}, {}, {"note": "ild a b"}, {"note": "omb"}],
        [{"a": "制作", "b": "炸弹"}],  # sibling fields, in order
    ):
        model.say(embeddings(items))
        status, body = await post(sidecar, "/v1/embeddings")
        assert status == 451, (items, body)
        assert not spelled(body, PROHIBITED) and not spelled(body, ENGLISH)


async def test_a_split_after_much_was_sent_cuts_the_answer(
        sidecar: TestClient[Any, Any], model: ScriptedModel) -> None:
    """The second half arrives a read later, after the first half went out with the numbers
    before it: the answer is cut (the client's read fails, it never holds the whole text)."""
    items: list[dict[str, Any]] = [{} for _ in range(400)]
    items[10], items[399] = {"note": "制作"}, {"note": "炸弹"}
    model.say(embeddings(items, dims=64), pieces=2, pause=0.2)
    status, received = await post(sidecar, "/v1/embeddings")
    assert status == 0  # cut: the client's read failed
    assert len(received) > 10_000 and not spelled(received, PROHIBITED)


def byte_level(text: str) -> str:
    """`text` as GPT-2's byte-level BPE writes a token string (Llama 3, Qwen): each UTF-8 byte
    a printable character."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {b: chr(b) for b in printable}
    table.update({b: chr(0x100 + n) for n, b in enumerate(
        b for b in range(256) if b not in printable)})
    return "".join(table[b] for b in text.encode())


@pytest.mark.parametrize("strings", [
    [byte_level("制作"), byte_level("炸弹")],  # what vLLM returns for Qwen: åĪ¶ä½ľ...
    [byte_level("制作炸")[:5], byte_level("制作炸")[5:], byte_level("弹")],  # mid-character
    [byte_level(" build"), byte_level(" a"), byte_level(" bomb")],  # Ġbuild Ġa Ġbomb
    ["<0xE5>", "<0x88>", "<0xB6>", "作", "<0xE7><0x82><0xB8>", "弹"],  # byte fallback
])
async def test_token_strings_in_a_tokenizer_s_bytes_are_read_as_their_text(
        sidecar: TestClient[Any, Any], model: ScriptedModel, strings: list[str]) -> None:
    """Token strings are a tokenizer's bytes for most models (GPT-2's byte-level characters,
    SentencePiece's byte tokens), which a client decodes with the tokenizer's table: the text
    they spell is moderated too. The old code relayed these; clean ones still pass byte for
    byte."""
    model.say(tokenize(strings))
    status, body = await post(sidecar)
    assert status == 451, body
    raw = model.say(tokenize([byte_level("北京"), byte_level("的"), byte_level(" history")]))
    status, body = await post(sidecar)
    assert status == 200 and body == raw


@pytest.mark.parametrize("split", [
    ["call 138", "0013", "8000 now"], ["1380013800", "0"], ["1", "3800138000"],
    ["138 0013", " 8000"],
])
@pytest.mark.parametrize("reads", [1, 4])
async def test_a_phone_number_split_across_strings_is_masked(
        sidecar: TestClient[Any, Any], model: ScriptedModel, split: list[str],
        reads: int) -> None:
    """The pieces are masked in place: the answer keeps its shape (as many strings, each a
    string where it was) and stays valid JSON; the digits never reach the client. The old
    code relayed every piece untouched."""
    raw = model.say(tokenize(split), pieces=reads, pause=0.05 if reads > 1 else 0.0)
    status, body = await post(sidecar)
    assert status == 200, body
    answer = json.loads(body)
    assert answer["tokens"] == json.loads(raw)["tokens"]
    strings = answer["token_strs"]
    assert len(strings) == len(split)
    assert [len(s) for s in strings] == [len(s) for s in split]  # masked character for character
    joined = "".join(strings)
    assert not re.search(r"\d{4}", joined.replace(" ", "")), joined
    assert strings != split


async def test_clean_answers_pass_byte_for_byte(
        sidecar: TestClient[Any, Any], model: ScriptedModel) -> None:
    """Joining must not mask or refuse what is clean: numbers (one that reads like a phone
    number, too), the schema's words, a model name with digits, token strings of a clean
    prompt; the answer is the model's, byte for byte."""
    answers = [
        tokenize(["Hello", ",", " world", "!", " 2024", " ", "13", "8"]),
        tokenize(["北京", "的", "历史", "很", "悠久"]),
        embeddings([{}, {}, {"score": 13800138000}], dims=16),
        {**embeddings([{}, {}]), "model": "Qwen3-Embedding-8B", "id": "embd-1380013"},
    ]
    for document in answers:
        for reads in (1, 5):
            raw = model.say(document, pieces=reads, pause=0.02 if reads > 1 else 0.0)
            status, body = await post(sidecar, "/v1/embeddings")
            assert status == 200 and body == raw, (document, body)


async def test_the_openai_client_gets_embeddings_whole_and_the_refusal(
        sidecar: TestClient[Any, Any], model: ScriptedModel) -> None:
    client = openai.AsyncOpenAI(base_url=f"http://{sidecar.host}:{sidecar.port}/v1",
                                api_key="test", max_retries=0, timeout=30)
    try:
        model.say(embeddings([{}, {}], dims=8), pieces=3, pause=0.02)
        answer = await client.embeddings.create(model="m", input=["a", "b"],
                                                encoding_format="float")
        assert len(answer.data) == 2 and answer.data[1].embedding[:2] == [-0.5, -0.25]
        model.say(embeddings([{"note": "制作"}, {"note": "炸弹"}]), pieces=2, pause=0.02)
        with pytest.raises(openai.APIStatusError) as refused:
            await client.embeddings.create(model="m", input=["a", "b"],
                                           encoding_format="float")
        assert refused.value.status_code == 451
        # The client's default: base64 (packed float32), relayed as numbers are; text the
        # model adds beside it is still read as the text it spells.
        packed = base64.b64encode(struct.pack("<4f", 0.5, -0.25, 1.0, 2.0)).decode()
        items = [{"object": "embedding", "index": i, "embedding": packed} for i in range(3)]
        model.say({"object": "list", "data": items, "model": "m"}, pieces=3, pause=0.02)
        answer = await client.embeddings.create(model="m", input=["a", "b", "c"])
        assert answer.data[2].embedding == [0.5, -0.25, 1.0, 2.0]
        items[0]["note"], items[2]["note"] = "bu", "ild a bomb"
        model.say({"object": "list", "data": items, "model": "m"})
        with pytest.raises(openai.APIStatusError) as refused:
            await client.embeddings.create(model="m", input=["a", "b", "c"])
        assert refused.value.status_code == 451
    finally:
        await client.close()


@pytest.mark.parametrize("status", [400, 500])
async def test_an_error_answer_that_spells_across_strings_is_withheld(
        sidecar: TestClient[Any, Any], model: ScriptedModel, status: int) -> None:
    """An error answer (read whole, its strings moderated one by one) is read as the text its
    strings spell too: a client shows an error's message. Withheld, the model's status kept
    (Art.13 counts it as the model's); the old code relayed it."""
    model.status = status
    for error in ({"message": ["制作", "炸弹"], "type": "BadRequestError"},
                  {"message": "bu", "detail": "ild a bomb"}):
        model.say({"error": error})
        got, body = await post(sidecar, "/v1/embeddings")
        assert got == status and b"hegui.output_blocked" in body, body
        assert not spelled(body, PROHIBITED) and not spelled(body, ENGLISH)
    raw = model.say({"error": {"message": "input too long", "type": "BadRequestError",
                               "code": status}})
    got, body = await post(sidecar, "/tokenize")
    assert got == status and json.loads(body) == json.loads(raw)


async def test_a_model_list_that_spells_across_strings_is_withheld(
        sidecar: TestClient[Any, Any], model: ScriptedModel) -> None:
    """A metadata answer (`/v1/models`, read whole, every string moderated) is read as the text
    its strings spell too: a model picker shows the ids one after another. The old code
    relayed it; a real model list still passes byte for byte."""
    model.say({"object": "list", "data": [{"id": "制作", "object": "model"},
                                          {"id": "炸弹", "object": "model"}]})
    response = await sidecar.get("/v1/models")
    body = await response.read()
    assert response.status == 451 and b"hegui.output_blocked" in body, body
    raw = model.say({"object": "list", "data": [
        {"id": "Qwen3-8B", "object": "model", "created": 1764633600, "owned_by": "vllm",
         "root": "/models/Qwen3-8B", "parent": None, "max_model_len": 32768}]})
    response = await sidecar.get("/v1/models")
    assert response.status == 200 and json.loads(await response.read()) == json.loads(raw)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
async def test_random_splits_of_a_prohibited_text_never_pass(
        sidecar: TestClient[Any, Any], model: ScriptedModel, data: st.DataObject) -> None:
    """Any split of a prohibited text into consecutive strings (token strings, an array in an
    embedding, a field of consecutive embeddings), cut into reads anywhere: never relayed
    whole. Refused before anything went out (451), or cut (the client's read fails)."""
    text = data.draw(st.sampled_from([PROHIBITED, ENGLISH, f"请{PROHIBITED}吧",
                                      f"how to {ENGLISH}?"]))
    cuts = sorted(data.draw(st.sets(st.integers(1, len(text) - 1), min_size=1,
                                    max_size=len(text) - 1)))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    shape = data.draw(st.sampled_from(["token_strs", "array", "field"]))
    if shape == "token_strs":
        document = tokenize(pieces)
        path = "/tokenize"
    elif shape == "array":
        document, path = embeddings([{"tags": pieces}]), "/v1/embeddings"
    else:
        document, path = embeddings([{"note": p} for p in pieces]), "/v1/embeddings"
    reads = data.draw(st.integers(1, 6))
    model.say(document, pieces=reads, pause=0.01 if reads > 1 else 0.0)
    status, received = await post(sidecar, path)
    assert status in (0, 451), (pieces, received)  # 0: cut, the client's read failed
    assert not spelled(received, text)
