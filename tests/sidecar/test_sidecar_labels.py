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
from hegui.sidecar.app import Sidecar, make_app
from hegui.sidecar.config import SidecarConfig
from hegui.sidecar.testing import FakeModel, LocalModerator, posture

LABEL = "本内容由人工智能生成"
LABELING = Labeling.from_dict({
    "modalities": ["text", "image"],
    "explicit": {"text": LABEL, "position": "End"},
    "implicit": {"contentProducer": "Example AI Co.", "produceIdPrefix": "chat-"},
})


@pytest.fixture
async def client(fake_model: FakeModel, tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    from aiohttp.test_utils import TestServer

    config = SidecarConfig(posture(), labeling=LABELING, upstream=fake_model.url)
    records = RecordLog(tmp_path / "records.jsonl", key=b"k" * 32)
    test_client: TestClient[Any, Any] = TestClient(TestServer(
        make_app(Sidecar(config, LocalModerator(), records=records)), host="127.0.0.1"))
    await test_client.start_server()
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
