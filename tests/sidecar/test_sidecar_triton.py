# ruff: noqa: RUF001 (Chinese text is written with its own punctuation)
"""The moderation models served by a real tritonserver, called as the sidecar calls them, and the
sidecar end to end with Triton and a small model server made in the test (Art.4, Art.14)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from hegui.api.generativeservice import TritonEndpoint, TritonProtocol
from hegui.moderation.client import ModeratorUnavailable, TritonModerator
from hegui.moderation.findings import Findings, lexicon_findings, pii_findings
from hegui.moderation.lexicon import load_lexicon
from hegui.moderation.pii import resident_id_check
from hegui.moderation.tritonserver import TritonServer, TritonUnavailable
from hegui.sidecar.config import SidecarConfig
from hegui.sidecar.testing import FakeModel, posture, sidecar_client

pytestmark = pytest.mark.triton

RID = "11010519491231002" + resident_id_check("11010519491231002")
TEXTS = ["今天天气很好", "教我制 作*炸弹", f"身份证{RID}，电话+86 138 1234 5678",
         "mail a.b@example.com and build a bomb", "", "\ufffd invalid"]


def endpoint(server: TritonServer, protocol: str, model: str = "moderation") -> TritonEndpoint:
    address = server.grpc_url if protocol == "grpc" else server.http_url
    return TritonEndpoint(address=address, protocol=TritonProtocol(protocol), model=model)


@pytest.fixture
async def triton_moderator(triton_server: TritonServer) -> AsyncIterator[TritonModerator]:
    moderator = TritonModerator(endpoint(triton_server, "grpc"), timeout=5.0)
    yield moderator
    await moderator.close()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("model", ["moderation", "lexicon", "pii"])
async def test_served_models_run_the_same_rules(triton_server: TritonServer, protocol: str,
                                                model: str) -> None:
    lexicon = load_lexicon()
    expected = {"moderation": lambda t: lexicon_findings(lexicon, t).merge(pii_findings(t)),
                "lexicon": lambda t: lexicon_findings(lexicon, t),
                "pii": pii_findings}[model]
    moderator = TritonModerator(endpoint(triton_server, protocol, model), timeout=10.0)
    try:
        got = await moderator.moderate(TEXTS)
    finally:
        await moderator.close()
    assert [g.to_json() for g in got] == [expected(t).to_json() for t in TEXTS]
    assert got[1].scores == ({"terrorismExtremism": 1.0} if model != "pii" else {})


async def test_dynamic_batching_groups_concurrent_requests(triton_server: TritonServer) -> None:
    import tritonclient.grpc.aio as grpcclient

    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    moderator = TritonModerator(endpoint(triton_server, "grpc", "pii"), timeout=10.0)
    try:
        async def counts() -> tuple[int, int]:
            stats = await client.get_inference_statistics("pii", as_json=True)
            model = stats["model_stats"][0]
            return int(model.get("inference_count", 0)), int(model.get("execution_count", 0))

        before = await counts()
        results = await asyncio.gather(*(moderator.moderate([f"电话1381234{i:04d}"])
                                         for i in range(64)))
        after = await counts()
    finally:
        await moderator.close()
        await client.close()
    assert all(r[0].scores == {"personalInformation": 1.0} for r in results)
    inferences, executions = after[0] - before[0], after[1] - before[1]
    assert inferences == 64
    assert executions < inferences  # requests were batched together


async def test_sidecar_with_triton(triton_server: TritonServer, fake_model: FakeModel,
                                   triton_moderator: TritonModerator) -> None:
    client = await sidecar_client(SidecarConfig(posture(), upstream=fake_model.url),
                                  triton_moderator)
    try:
        blocked = await client.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "怎样推翻国家政权"}]})
        assert blocked.status == 400
        error = (await blocked.json())["error"]
        assert (error["code"], error["category"], error["article"]) == (
            "hegui.input_blocked", "subversion", "Art.4(1)")
        assert fake_model.seen == []

        masked = await client.post("/v1/completions",
                                   json={"prompt": f"say:号码是{RID}"})
        assert masked.status == 200
        assert (await masked.json())["choices"][0]["text"] == "号码是" + "*" * 18

        stream = await client.post("/v1/chat/completions", json={
            "stream": True,
            "messages": [{"role": "user", "content": "say:一段正常的文字。build a bQomb now"}]})
        chunks: list[Any] = [json.loads(b[6:]) if b[6:] != "[DONE]" else b[6:]
                  for b in (await stream.read()).decode().split("\n\n") if b.startswith("data")]
        assert chunks[-1] == "[DONE]"
        assert chunks[-2]["error"]["code"] == "hegui.output_blocked"
        assert chunks[-2]["choices"][0]["finish_reason"] == "content_filter"
        assert "bomb" not in json.dumps(chunks[:-2])
    finally:
        await client.close()


async def test_fail_modes_with_triton_killed_mid_run(fake_model: FakeModel) -> None:
    try:
        server = TritonServer().start()
    except TritonUnavailable as missing:
        pytest.skip(f"tritonserver is not installed: {missing}")
    clients: list[Any] = []
    try:
        for mode in ("Closed", "Open"):
            moderator = TritonModerator(endpoint(server, "grpc"), timeout=2.0)
            clients.append(await sidecar_client(
                SidecarConfig(posture(failureMode=mode), upstream=fake_model.url), moderator))
        closed, opened = clients
        for client in clients:
            ok = await client.post("/v1/completions", json={"prompt": "say:你好"})
            assert ok.status == 200 and "x-hegui-moderation" not in ok.headers
        server.kill()
        refused = await closed.post("/v1/completions", json={"prompt": "say:你好"})
        assert refused.status == 503
        assert (await refused.json())["error"]["code"] == "hegui.moderation_unavailable"
        served = await opened.post("/v1/completions", json={"prompt": "say:你好"})
        assert served.status == 200
        assert served.headers["x-hegui-moderation"] == "unavailable"
        assert len(fake_model.seen) == 3  # the refused request never reached the model
        metrics = await (await opened.get("/metrics")).text()
        assert 'hegui_sidecar_moderator_errors_total{direction="input"} 1.0' in metrics
        assert 'hegui_sidecar_fail_mode_activations_total{direction="input",mode="Open"} 1.0' \
            in metrics
    finally:
        for client in clients:
            await client.close()
        server.stop()


async def test_unreachable_triton_is_reported_as_unavailable() -> None:
    from hegui.moderation.tritonserver import free_port

    moderator = TritonModerator(TritonEndpoint(address=f"127.0.0.1:{free_port()}",
                                               model="moderation"), timeout=1.0)
    with pytest.raises(ModeratorUnavailable):
        await moderator.moderate(["x"])
    await moderator.close()
    assert Findings().to_json() == b'{"scores":{},"spans":[]}'
