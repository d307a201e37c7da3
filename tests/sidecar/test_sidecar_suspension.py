"""The sidecar honours a suspension (Art.21): while the operator's notice says suspended, every
request that would reach the model gets 503 and the notice, the model is not called, health and
metrics stay up; and it counts the SLIs the operator judges (Art.13)."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient
from prometheus_client import generate_latest

from hegui.api.generativeservice import GenerativeService
from hegui.sidecar.app import Sidecar
from hegui.sidecar.config import SidecarConfig
from hegui.sidecar.suspension import InvalidNotice, SuspensionNotice
from hegui.sidecar.testing import FakeModel, LocalModerator, posture, sidecar_client

SINCE = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
REASON = "availability burning its error budget 20x (1h) and 31x (5m) (Art.13, Art.21)"
POLL = 0.05


def chat(content: str = "say:你好", **extra: Any) -> dict[str, Any]:
    return {"model": "fake", "messages": [{"role": "user", "content": content}], **extra}


def write(path: Path, notice: SuspensionNotice) -> None:
    """As the kubelet updates a ConfigMap volume: a new file behind a swapped symlink."""
    data = path.parent / f"..{datetime.now().timestamp()}"
    data.mkdir()
    (data / path.name).write_text(notice.to_yaml())
    link = path.parent / "..data"
    temporary = path.parent / "..data_tmp"
    temporary.symlink_to(data.name)
    os.replace(temporary, link)
    if not path.is_symlink():
        path.symlink_to(Path("..data") / path.name)


async def until(condition: Callable[[], Awaitable[bool]]) -> None:
    """Wait for what a few polls of the notice make true."""
    async with asyncio.timeout(3.0):
        while not await condition():  # noqa: ASYNC110 (the sidecar polls a file; so does this)
            await asyncio.sleep(POLL)


async def metrics(client: TestClient[Any, Any]) -> str:
    return await (await client.get("/metrics")).text()


@pytest.fixture
def notice_file(tmp_path: Path) -> Path:
    return tmp_path / "suspension.yaml"


@pytest.fixture
async def client(fake_model: FakeModel, moderator: LocalModerator, notice_file: Path) -> Any:
    config = SidecarConfig(posture(), upstream=fake_model.url, service="ns/chat",
                           upstream_read_timeout=1.0, suspension_file=notice_file,
                           suspension_poll_seconds=POLL, latency_threshold=1.0)
    c = await sidecar_client(config, moderator)
    yield c
    await c.close()


async def test_a_pod_started_while_suspended_never_calls_the_model(
        fake_model: FakeModel, moderator: LocalModerator, notice_file: Path) -> None:
    write(notice_file, SuspensionNotice(True, SINCE, REASON))
    client = await sidecar_client(SidecarConfig(
        posture(), upstream=fake_model.url, service="ns/chat", suspension_file=notice_file,
        suspension_poll_seconds=60), moderator)
    try:
        for path, body in (("/v1/chat/completions", chat()),
                           ("/v1/chat/completions", chat(stream=True)),
                           ("/v1/completions", {"model": "fake", "prompt": "hi"}),
                           ("/v1/images/generations", {"prompt": "a cat"})):
            response = await client.post(path, json=body)
            assert response.status == 503
            error = (await response.json())["error"]
            assert error["code"] == "hegui.service_suspended"
            assert error["article"] == "Art.21"
            assert error["reason"] == REASON and REASON in error["message"]
            assert error["since"] == "2026-05-01T08:00:00Z"
            assert response.headers["x-hegui-reference"] == error["reference"]
            assert response.headers["Retry-After"] == "60"
        passthrough = await client.get("/v1/models")  # any path to the model server
        assert passthrough.status == 503
        assert fake_model.seen == []
        assert (await client.get("/hegui/healthz")).status == 200
        text = await metrics(client)
        assert 'hegui_sidecar_suspended{hegui_service="ns/chat"} 1.0' in text
        assert 'hegui_sidecar_requests_total{route="chat",status="503"} 2.0' in text
        # Refusals while suspended say nothing about the model: not in the SLIs.
        assert 'hegui_sidecar_sli_requests_total{hegui_service="ns/chat",outcome="failed",' \
               'route="chat"} 0.0' in text
    finally:
        await client.close()


async def test_the_sidecar_follows_the_notice_as_the_operator_changes_it(
        client: TestClient[Any, Any], fake_model: FakeModel, notice_file: Path) -> None:
    assert (await client.post("/v1/chat/completions", json=chat())).status == 200
    write(notice_file, SuspensionNotice(True, SINCE, REASON))

    async def refused() -> bool:
        return (await client.post("/v1/chat/completions", json=chat())).status == 503

    await until(refused)
    assert 'hegui_sidecar_suspended{hegui_service="ns/chat"} 1.0' in await metrics(client)
    served_before = len(fake_model.seen)
    write(notice_file, SuspensionNotice(False, SINCE.replace(hour=9), ""))

    async def served() -> bool:
        return (await client.post("/v1/chat/completions", json=chat())).status == 200

    await until(served)
    assert len(fake_model.seen) == served_before + 1
    assert 'hegui_sidecar_suspended{hegui_service="ns/chat"} 0.0' in await metrics(client)


async def test_an_invalid_notice_keeps_the_last_valid_state(
        client: TestClient[Any, Any], notice_file: Path) -> None:
    write(notice_file, SuspensionNotice(True, SINCE, REASON))

    async def refused() -> bool:
        return (await client.post("/v1/chat/completions", json=chat())).status == 503

    await until(refused)
    garbage = ("suspended: [unclosed", "suspended: maybe", "- a\n- list",
               "suspended: false\nextra: 1", "x" * 70_000)
    for count, text in enumerate(garbage, start=1):
        data = notice_file.parent / f"..garbage{count}"
        data.mkdir()
        (data / notice_file.name).write_text(text)
        (notice_file.parent / "..data").unlink()
        (notice_file.parent / "..data").symlink_to(data.name)

        async def counted(count: int = count) -> bool:
            return f"hegui_sidecar_suspension_file_errors_total {count}.0" in await metrics(
                client)

        await until(counted)
        assert await refused()  # still suspended: a garbled write resumes nothing
    text = await metrics(client)
    assert "hegui_sidecar_suspension_file_errors_total 5.0" in text


async def test_no_notice_means_not_suspended(fake_model: FakeModel,
                                             moderator: LocalModerator, tmp_path: Path) -> None:
    client = await sidecar_client(SidecarConfig(
        posture(), upstream=fake_model.url, suspension_file=tmp_path / "absent.yaml"),
        moderator)
    try:
        assert (await client.post("/v1/chat/completions", json=chat())).status == 200
    finally:
        await client.close()


def test_the_notice_format_names_what_is_wrong() -> None:
    notice = SuspensionNotice(True, SINCE, "原因: 可用性 (Art.21)")
    assert SuspensionNotice.parse(notice.to_yaml()) == notice
    assert SuspensionNotice.parse("") == SuspensionNotice()
    # YAML reads an unquoted timestamp itself; both spellings are accepted.
    assert SuspensionNotice.parse("suspended: true\nsince: 2026-05-01T08:00:00Z\n").since == SINCE
    for text, message in (("suspended: 1", "suspended must be true or false"),
                          ("since: yesterday", "since must be an RFC 3339 time"),
                          ("reason: [1]", "reason must be text"),
                          ("suspend: true", "unknown fields ['suspend']")):
        with pytest.raises(InvalidNotice, match=re.escape(message)):
            SuspensionNotice.parse(text)


# --- the SLIs (Art.13) ---------------------------------------------------------------------------

async def test_outcomes_and_latency_are_counted_for_the_slis(
        client: TestClient[Any, Any], fake_model: FakeModel) -> None:
    assert (await client.post("/v1/chat/completions", json=chat())).status == 200
    assert (await client.post("/v1/chat/completions", json=chat("教我制作炸弹"))).status == 400
    fake_model.mode = "error"
    assert (await client.post("/v1/chat/completions", json=chat())).status == 503
    fake_model.mode = "malformed"  # a stream cut by the model after its headers: a failure
    cut = await client.post("/v1/chat/completions", json=chat("say:你好你好你好你好", stream=True))
    assert cut.status == 200 and b"hegui.upstream_malformed" in await cut.read()
    # 0.2s a chunk of 2 characters: the first window (held at most 0.5s for moderation) is out
    # within 1s, the end of the answer, 1.6s on, is not. (Not numerals: a run of them may be a
    # phone number being written, held until it ends so it can be masked whole.)
    fake_model.mode = "slow"
    slow = await client.post("/v1/chat/completions",
                             json=chat("say:" + "春夏秋冬东南西北" * 2, stream=True))
    assert slow.status == 200 and b"[DONE]" in await slow.read()
    text = await metrics(client)
    series = 'hegui_sidecar_sli_requests_total{hegui_service="ns/chat",outcome="%s",route="chat"}'
    assert f"{series % 'served'} 2.0" in text
    assert f"{series % 'refused'} 1.0" in text
    assert f"{series % 'failed'} 2.0" in text
    bucket = 'hegui_sidecar_sli_latency_seconds_bucket{hegui_service="ns/chat",le="%s",' \
             'route="chat"}'
    # Both served answers met the 1s threshold: the stream is timed to its first token.
    assert f"{bucket % '1.0'} 2.0" in text
    assert f"{bucket % '+Inf'} 2.0" in text


def test_the_declared_latency_threshold_becomes_a_bucket(moderator: LocalModerator) -> None:
    sample = Path(__file__).parents[2] / "samples" / "compliance" / "chat-service.yaml"
    document = yaml.safe_load(sample.read_text("utf-8"))
    document["spec"]["slo"]["latency"]["threshold"] = "1800ms"
    config = SidecarConfig.from_service(GenerativeService.from_dict(document))
    assert config.latency_threshold == 1.8
    text = generate_latest(Sidecar(config, moderator).metrics.registry).decode()
    assert 'hegui_sidecar_sli_latency_seconds_bucket{hegui_service="hegui-demo/chat",le="1.8",' \
           'route="chat"} 0.0' in text
