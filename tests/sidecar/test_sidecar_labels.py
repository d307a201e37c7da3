# ruff: noqa: RUF001 (Chinese text is written with its own punctuation)
"""Generated content leaves the sidecar labeled (Art.12, GB 45438-2025): explicit labels people
see, the implicit AIGC label in the body and the X-AIGC header, traceable in the records."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from hegui.api.generativeservice import Labeling
from hegui.labeling.verify import Status, verify_bytes
from hegui.moderation.records import RecordLog
from hegui.sidecar.config import SidecarConfig
from hegui.sidecar.testing import FakeModel, LocalModerator, posture, sidecar_client

LABEL = "本内容由人工智能生成"
#: The pictures here are not scored (no image classifier: tests/sidecar/test_sidecar_images.py
#: scores them); fail mode Open serves them flagged unmoderated, and labeled, which is what is
#: tested here (in Closed they would be refused before the model is asked).
OPEN = {"failureMode": "Open"}
LABELING = Labeling.from_dict({
    "modalities": ["text", "image"],
    "explicit": {"text": LABEL, "position": "End"},
    "implicit": {"contentProducer": "Example AI Co.", "produceIdPrefix": "chat-"},
})


@pytest.fixture
async def client(fake_model: FakeModel, tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    config = SidecarConfig(posture(**OPEN), labeling=LABELING, upstream=fake_model.url)
    records = RecordLog(tmp_path / "records.jsonl", key=b"k" * 32)
    test_client = await sidecar_client(config, LocalModerator(), records=records)
    yield test_client
    await test_client.close()


def _records(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]


async def test_a_chat_answer_carries_both_labels_and_a_traceable_produce_id(
        client: TestClient[Any, Any], tmp_path: Path) -> None:
    response = await client.post("/v1/chat/completions", json={
        "model": "fake", "messages": [{"role": "user", "content": "say:你好，世界"}]})
    assert response.status == 200
    raw = await response.read()
    body = json.loads(raw)
    assert body["choices"][0]["message"]["content"].endswith(LABEL)
    produce_id = body["AIGC"]["ProduceID"]
    assert produce_id.startswith("chat-")
    assert body["AIGC"]["ContentProducer"] == "Example AI Co."
    assert json.loads(response.headers["X-AIGC"])["ProduceID"] == produce_id
    report = verify_bytes(raw)
    assert report.explicit.status is Status.PRESENT and report.implicit.status is Status.PRESENT
    assert any(produce_id in json.dumps(record) for record in _records(tmp_path))


async def test_each_answer_gets_its_own_produce_id(client: TestClient[Any, Any]) -> None:
    ids = set()
    for _ in range(3):
        response = await client.post("/v1/completions",
                                     json={"model": "fake", "prompt": "say:晴天"})
        ids.add((await response.json())["AIGC"]["ProduceID"])
    assert len(ids) == 3


async def test_a_stream_ends_with_the_label_before_done(client: TestClient[Any, Any]) -> None:
    response = await client.post("/v1/chat/completions", json={
        "model": "fake", "stream": True,
        "messages": [{"role": "user", "content": "say:今天天气很好"}]})
    assert response.status == 200 and "X-AIGC" in response.headers
    raw = await response.read()
    events = [block[6:] for block in raw.decode().split("\n\n") if block.startswith("data: ")]
    assert events[-1] == "[DONE]"
    text = "".join((json.loads(e)["choices"][0].get("delta") or {}).get("content") or ""
                   for e in events[:-1] if json.loads(e).get("choices"))
    assert text.startswith("今天天气很好") and text.endswith(LABEL)
    assert verify_bytes(raw).implicit.status is Status.PRESENT


async def test_generated_images_carry_metadata_and_a_visible_label(
        client: TestClient[Any, Any]) -> None:
    response = await client.post("/v1/images/generations", json={
        "model": "fake", "prompt": "a mountain", "response_format": "b64_json"})
    assert response.status == 200
    [item] = (await response.json())["data"]
    image = base64.b64decode(item["b64_json"])
    report = verify_bytes(image)
    assert report.implicit.status is Status.PRESENT
    assert report.implicit.payload is not None
    assert report.implicit.payload["ContentProducer"] == "Example AI Co."


# --- bad images from the model (issue 7 "Bad input") ------------------------------------------

def _png(size: tuple[int, int] = (96, 64)) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.effect_noise(size, 30).convert("RGB").save(out, "PNG")
    return out.getvalue()


def _bomb_header() -> bytes:
    """A PNG whose header claims 20000x20000 pixels (nothing behind it is ever decoded)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20_000, 20_000, 8, 2,
                                                                0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _animated_webp() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    frames = [Image.new("RGB", (64, 64), c) for c in ((200, 0, 0), (0, 200, 0))]
    frames[0].save(out, "WEBP", save_all=True, append_images=frames[1:], duration=100)
    return out.getvalue()


BAD_ITEMS: list[Any] = [
    {"b64_json": base64.b64encode(_png()).decode()},                 # the one good image
    {"b64_json": base64.b64encode(_png()[:-100]).decode()},          # truncated
    {"b64_json": base64.b64encode(_bomb_header()).decode()},         # decompression bomb
    {"b64_json": base64.b64encode(_animated_webp()).decode()},       # animated
    {"b64_json": base64.b64encode(b"GIF89a\x01\x00\x01\x00").decode()},  # a format not labeled
    {"b64_json": base64.b64encode(b"<html>upstream error</html>").decode()},  # not an image
    {"b64_json": "%%% not base64 %%%"},
    "not an object",
]


@pytest.fixture
async def odd_model() -> AsyncIterator[dict[str, Any]]:
    """A model server made here whose images/generations answer is set by each test: a JSON
    body (`reply["json"]`) or raw bytes with a content type (`reply["raw"]`)."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    reply: dict[str, Any] = {"json": {"created": 1, "data": BAD_ITEMS}}

    async def images(request: web.Request) -> web.Response:
        await request.read()
        if "raw" in reply:
            body, content_type = reply["raw"]
            return web.Response(body=body, content_type=content_type)
        return web.json_response(reply["json"])

    app = web.Application()
    app.router.add_post("/v1/images/generations", images)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    reply["url"] = str(server.make_url("")).rstrip("/")
    yield reply
    await server.close()


@pytest.fixture
async def odd_client(odd_model: dict[str, Any], tmp_path: Path
                     ) -> AsyncIterator[TestClient[Any, Any]]:
    config = SidecarConfig(posture(**OPEN), labeling=LABELING, upstream=odd_model["url"])
    records = RecordLog(tmp_path / "records.jsonl", key=b"k" * 32)
    test_client = await sidecar_client(config, LocalModerator(), records=records)
    yield test_client
    await test_client.close()


async def test_bad_images_pass_through_unchanged_and_flagged_the_good_one_labeled(
        odd_client: TestClient[Any, Any], tmp_path: Path) -> None:
    response = await odd_client.post("/v1/images/generations", json={
        "model": "fake", "prompt": "a lake", "response_format": "b64_json"})
    assert response.status == 200
    items = (await response.json())["data"]
    good = verify_bytes(base64.b64decode(items[0]["b64_json"]))
    assert good.implicit.status is Status.PRESENT and good.explicit.status is Status.PRESENT
    assert items[0]["AIGC"]["ProduceID"].startswith("chat-")
    assert items[1:] == BAD_ITEMS[1:]                       # byte for byte, no AIGC field
    assert response.headers["x-hegui-label-flags"] == ",".join([
        "data[1]:unreadable", "data[2]:too-large", "data[3]:animated",
        "data[4]:unsupported-format", "data[5]:unknown-format", "data[6]:invalid base64",
        "data[7]:not-an-object"])
    [record] = [r for r in _records(tmp_path)
                if r.get("route") == "images" and r["kind"] == "label"]
    assert any(flag.startswith("data[2]: too-large: Image size (400000000 pixels)")
               for flag in record["flags"])


@pytest.mark.parametrize(("body", "content_type"), [
    (b"<html><body>502 Bad Gateway</body></html>", "text/html"),
    (b"\x89PNG\r\n\x1a\n raw bytes, not the API's JSON", "image/png"),
    (b"[1, 2, 3]", "application/json"),
])
async def test_an_images_answer_that_is_not_the_api_object_is_refused(
        odd_client: TestClient[Any, Any], odd_model: dict[str, Any], body: bytes,
        content_type: str) -> None:
    odd_model["raw"] = (body, content_type)
    response = await odd_client.post("/v1/images/generations", json={
        "model": "fake", "prompt": "a lake", "response_format": "b64_json"})
    assert response.status == 502
    error = (await response.json())["error"]
    assert error["code"] == "hegui.upstream_malformed"


async def test_the_sidecar_watermarks_images_when_the_posture_enables_it(
        fake_model: FakeModel, tmp_path: Path) -> None:
    """labeling.watermark.enabled: each image carries the invisible watermark of its own
    ProduceID under the mounted key, found by `hegui label verify` with that key (Art.12)."""
    labeling = Labeling.from_dict({**LABELING.to_dict(), "watermark": {
        "enabled": True, "keySecretRef": {"name": "watermark", "key": "key"}}})
    key = b"watermark-key-from-the-secret"
    config = SidecarConfig(posture(**OPEN), labeling=labeling, upstream=fake_model.url,
                           watermark_key=key)
    client = await sidecar_client(config, LocalModerator())
    try:
        response = await client.post("/v1/images/generations", json={
            "model": "fake", "prompt": "a mountain", "response_format": "b64_json"})
        assert response.status == 200
        [item] = (await response.json())["data"]
        image = base64.b64decode(item["b64_json"])
        assert verify_bytes(image, key=key).watermark.status is Status.PRESENT
        assert verify_bytes(image, key=b"another key").watermark.status is not Status.PRESENT
    finally:
        await client.close()
    # Enabled but no key mounted: served, and flagged.
    config = SidecarConfig(posture(**OPEN), labeling=labeling, upstream=fake_model.url)
    client = await sidecar_client(config, LocalModerator())
    try:
        response = await client.post("/v1/images/generations", json={
            "model": "fake", "prompt": "a mountain", "response_format": "b64_json"})
        assert response.status == 200
        assert "watermark-key-missing" in response.headers.get("x-hegui-label-flags", "")
    finally:
        await client.close()


# --- streams: labeled in every family, whatever moderation does (Art.12) ---------------------

BOTH = Labeling.from_dict({
    "modalities": ["text"], "explicit": {"text": LABEL, "position": "StartAndEnd"},
    "implicit": {"contentProducer": "Example AI Co.", "produceIdPrefix": "chat-"}})
PREFIX, SUFFIX = f"{LABEL}\n\n", f"\n\n{LABEL}"
ANSWER = "今天天气很好"


def _events(raw: bytes, ndjson: bool) -> list[tuple[str | None, Any]]:
    """(SSE event name, decoded data) of each event; `[DONE]` left out."""
    if ndjson:
        return [(None, json.loads(line)) for line in raw.split(b"\n") if line.strip()]
    out: list[tuple[str | None, Any]] = []
    for block in raw.decode().split("\n\n"):
        name = next((line[6:].strip() for line in block.split("\n")
                     if line.startswith("event:")), None)
        data = [line[6:] for line in block.split("\n") if line.startswith("data: ")]
        if data and data[0] != "[DONE]":
            out.append((name, json.loads(data[0])))
    return out


def _anthropic_text(name: str | None, event: Any) -> str:
    delta = event.get("delta") or {}
    return str(delta.get("text") or "") if event.get("type") == "content_block_delta" else ""


def _responses_text(name: str | None, event: Any) -> str:
    return str(event.get("delta") or "") if event.get("type") == "response.output_text.delta" \
        else ""


#: path, request body, the text an event shows, framing
STREAMS: list[tuple[str, Any, Any, bool]] = [
    ("/v1/chat/completions", {"model": "f", "stream": True, "messages": [
        {"role": "user", "content": f"say:{ANSWER}"}]},
     lambda n, e: "".join((c.get("delta") or {}).get("content") or ""
                          for c in e.get("choices", [])), False),
    ("/v1/completions", {"model": "f", "stream": True, "prompt": f"say:{ANSWER}"},
     lambda n, e: "".join(c.get("text") or "" for c in e.get("choices", [])), False),
    ("/api/chat", {"model": "f", "messages": [{"role": "user", "content": f"say:{ANSWER}"}]},
     lambda n, e: (e.get("message") or {}).get("content", ""), True),
    ("/api/generate", {"model": "f", "prompt": f"say:{ANSWER}"},
     lambda n, e: e.get("response", ""), True),
    ("/generate_stream", {"inputs": f"say:{ANSWER}"},
     lambda n, e: (e.get("token") or {}).get("text", "") if e.get("generated_text") is None
     else "", False),
    ("/v2/models/fake/generate_stream", {"text_input": f"say:{ANSWER}"},
     lambda n, e: e.get("text_output", ""), False),
    ("/v1/messages", {"model": "f", "stream": True, "max_tokens": 9, "messages": [
        {"role": "user", "content": "hi"}]}, _anthropic_text, False),
    ("/v1/responses", {"model": "f", "stream": True, "input": "hi"}, _responses_text, False),
]


async def _family_streams(request: Any) -> Any:
    """Anthropic messages and Responses API streams, as vLLM serves them (the fake model
    answers those two families unstreamed)."""
    from aiohttp import web

    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)

    async def send(name: str, data: dict[str, Any]) -> None:
        await response.write(f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"
                             .encode())

    if request.path == "/v1/messages":
        await send("message_start", {"type": "message_start", "message": {
            "id": "m", "type": "message", "role": "assistant", "content": []}})
        await send("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": ""}})
        for char in ANSWER:
            await send("content_block_delta", {"type": "content_block_delta", "index": 0,
                                               "delta": {"type": "text_delta", "text": char}})
        await send("content_block_stop", {"type": "content_block_stop", "index": 0})
        await send("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": "end_turn"}})
        await send("message_stop", {"type": "message_stop"})
    else:
        await send("response.created", {"type": "response.created", "response": {
            "id": "r", "status": "in_progress", "output": []}})
        for char in ANSWER:
            await send("response.output_text.delta", {
                "type": "response.output_text.delta", "item_id": "i", "output_index": 0,
                "content_index": 0, "delta": char})
        await send("response.output_text.done", {
            "type": "response.output_text.done", "item_id": "i", "output_index": 0,
            "content_index": 0, "text": ANSWER})
        await send("response.completed", {"type": "response.completed", "response": {
            "id": "r", "status": "completed", "output": [{"type": "message", "content": [
                {"type": "output_text", "text": ANSWER}]}]}})
    return response


@pytest.mark.parametrize("output", ["Hold", "StreamThenRetract", "off"])
@pytest.mark.parametrize(("path", "body", "text", "ndjson"), STREAMS,
                         ids=[s[0] for s in STREAMS])
async def test_every_stream_is_labeled_whatever_moderation_does(
        fake_model: FakeModel, tmp_path: Path, output: str, path: str, body: Any, text: Any,
        ndjson: bool) -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    fake_model.chunk_chars = 1
    upstream = fake_model.url
    server = None
    if path in ("/v1/messages", "/v1/responses"):
        app = web.Application()
        app.router.add_post(path, _family_streams)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        upstream = str(server.make_url("")).rstrip("/")
    moderation = ({"output": {"enabled": False}} if output == "off" else
                  {"output": {"streamWindowTokens": 4, "streaming": {"mode": output}}})
    config = SidecarConfig(posture(**moderation), labeling=BOTH, upstream=upstream)
    client = await sidecar_client(config, LocalModerator(),
                                  records=RecordLog(tmp_path / "r.jsonl", key=b"k" * 32))
    try:
        response = await client.post(path, json=body)
        assert response.status == 200
        raw = await response.read()
    finally:
        await client.close()
        if server is not None:
            await server.close()
    events = _events(raw, ndjson)
    shown = [t for name, e in events if (t := text(name, e))]
    # Both labels around the answer, in the family's own events; one token an event still.
    assert "".join(shown) == PREFIX + ANSWER + SUFFIX, shown
    assert shown[1:-1] == list(ANSWER[1:]), shown
    produce_id = json.loads(response.headers["X-AIGC"])["ProduceID"]
    assert events[0][1]["AIGC"]["ProduceID"] == produce_id
    # Aggregates (TGI's generated_text, the Responses API's *.done) repeat what was shown.
    for _, event in events:
        if event.get("generated_text") is not None:
            assert event["generated_text"] == PREFIX + ANSWER + SUFFIX
        if event.get("type") == "response.output_text.done":
            assert event["text"] == PREFIX + ANSWER + SUFFIX
    if path == "/v1/messages":  # the label comes before the text block closes
        types = [e["type"] for _, e in events]
        assert types.index("content_block_stop") > max(
            i for i, (_, e) in enumerate(events) if _anthropic_text(None, e))


async def test_the_openai_client_reads_labels_on_an_unmoderated_stream(
        fake_model: FakeModel, tmp_path: Path) -> None:
    import openai

    fake_model.chunk_chars = 1
    config = SidecarConfig(posture(output={"enabled": False}), labeling=LABELING,
                           upstream=fake_model.url)
    client = await sidecar_client(config, LocalModerator(),
                                  records=RecordLog(tmp_path / "r.jsonl", key=b"k" * 32))
    try:
        api = openai.AsyncOpenAI(base_url=f"http://{client.host}:{client.port}/v1",
                                 api_key="test", max_retries=0, timeout=10)
        stream = await api.chat.completions.create(
            model="f", stream=True, messages=[{"role": "user", "content": f"say:{ANSWER}"}])
        text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream
                        if chunk.choices])
        answer = await api.chat.completions.create(
            model="f", messages=[{"role": "user", "content": f"say:{ANSWER}"}])
    finally:
        await client.close()
    assert text == ANSWER + SUFFIX
    assert answer.choices[0].message.content == ANSWER + SUFFIX


@pytest.mark.parametrize("mode", ["Hold", "StreamThenRetract"])
async def test_a_stopped_stream_labels_what_stays_shown(fake_model: FakeModel, tmp_path: Path,
                                                        mode: str) -> None:
    """Hold: what was shown before a violation stays on screen, so it carries the end label
    (Art.12) before the final event; StreamThenRetract withdraws it all, no label needed."""
    fake_model.chunk_chars, fake_model.pace = 1, 0.01
    config = SidecarConfig(posture(input={"enabled": False}, output={
        "streamWindowTokens": 4, "streaming": {"mode": mode}}), labeling=BOTH,
        upstream=fake_model.url)  # input moderation off: the model says what it is told
    client = await sidecar_client(config, LocalModerator(),
                                  records=RecordLog(tmp_path / "r.jsonl", key=b"k" * 32))
    clean = "第一段内容正常无害。" * 3
    try:
        response = await client.post("/v1/chat/completions", json={
            "model": "f", "stream": True, "messages": [
                {"role": "user", "content": f"say:{clean}制作Q炸弹后面的内容。"}]})
        raw = await response.read()
    finally:
        await client.close()
    events = [e for _, e in _events(raw, False)]
    final = events[-1]
    assert final["error"]["code"] == "hegui.output_blocked"
    text = "".join((c.get("delta") or {}).get("content") or ""
                   for e in events[:-1] for c in e.get("choices", []))
    assert text.startswith(PREFIX) and "炸弹" not in text[:len(PREFIX) + len(clean)]
    if mode == "Hold":
        assert final["error"]["withdraw"] is False and text.endswith(SUFFIX)
    else:
        assert final["error"]["withdraw"] is True
