"""The neural classifier slot served by a real tritonserver: a text model over the 31 risks and an
image model, both made here and exported by hegui's own code, loaded by version, batched across
callers, and their scores turned into the sidecar's actions (Art.4, Art.14)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hegui.api.generativeservice import TritonEndpoint
from hegui.moderation.classifier import (
    CARRIERS,
    Classifier,
    Example,
    export_image,
    export_text,
    synthetic_examples,
)
from hegui.moderation.client import (
    CombinedModerator,
    RulesModerator,
    TritonImageModerator,
    TritonModerator,
    UndecodableImage,
)
from hegui.moderation.quality import chinese_phrases
from hegui.moderation.tritonserver import TritonServer, TritonUnavailable
from hegui.sidecar.config import SidecarConfig
from hegui.sidecar.testing import POSTURE, FakeModel, posture, sidecar_client

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.triton

CLEAN = chinese_phrases(300, seed=5)
#: Violence the illustrative lexicon has no keyword for: only the classifier can find it.
VIOLENT = ["拿刀捅人", "用刀砍死那个人", "把他打成重伤", "往死里打他", "用棍子打断他的腿",
           "拿砖头砸他的头"]


def violence_only() -> list[Example]:
    return [Example(c.format(t), ("violenceObscenity",)) for t in VIOLENT
            for c in CARRIERS[:4]] + [Example(t, ()) for t in CLEAN[:200]]


def image_model() -> Any:
    """Mean colour -> violenceObscenity: red scores high."""
    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(3, 1), torch.nn.Sigmoid())
    with torch.no_grad():
        model[2].weight.copy_(torch.tensor([[12.0, -12.0, -12.0]]))
        model[2].bias.fill_(-2.0)
    return model


def png(colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TritonServer, Path]]:
    repository = tmp_path_factory.mktemp("models")
    export_text(violence_only(), repository, buckets=4096, max_len=64, epochs=80)
    export_image(image_model(), ["violenceObscenity"], 16, repository)
    try:
        # explicit: versions published later are loaded on request, as an operator would.
        server = TritonServer(model_repository=repository, extra_args=(
            "--model-control-mode=explicit", "--load-model=*")).start(timeout=240)
    except TritonUnavailable as missing:
        pytest.skip(f"tritonserver is not installed: {missing}")
    yield server, repository
    server.stop()


def text_endpoint(server: TritonServer, version: str = "") -> TritonEndpoint:
    return TritonEndpoint(address=server.grpc_url, model="classifier", model_version=version)


async def test_served_scores_are_the_models(served: tuple[TritonServer, Path]) -> None:
    server, repository = served
    texts = ["请详细告诉我如何拿刀捅人", "今天天气很好", "", "\ufffd"]
    moderator = TritonModerator(text_endpoint(server), timeout=30.0)
    try:
        got = await moderator.moderate(texts)
    finally:
        await moderator.close()
    local = Classifier(repository / "classifier" / "1").findings(texts)
    assert [f.scores for f in got] == [f.scores for f in local]
    assert len(got[0].scores) == 31  # every risk is scored
    assert got[0].scores["violenceObscenity"] > 0.5 > got[1].scores["violenceObscenity"]


async def test_concurrent_callers_are_batched(served: tuple[TritonServer, Path]) -> None:
    import tritonclient.grpc.aio as grpcclient

    server, _ = served
    client = grpcclient.InferenceServerClient(server.grpc_url)
    # Separate clients stand for separate sidecars.
    moderators = [TritonModerator(text_endpoint(server), timeout=30.0) for _ in range(8)]

    async def counts() -> tuple[int, int]:
        stats = await client.get_inference_statistics("classifier", as_json=True)
        model = next(m for m in stats["model_stats"] if m["version"] == "1")
        return int(model.get("inference_count", 0)), int(model.get("execution_count", 0))

    try:
        before = await counts()
        results = await asyncio.gather(*(moderators[i % 8].moderate([f"拿刀捅人{i}"])
                                         for i in range(64)))
        after = await counts()
        for _ in range(50):  # the backend reports its statistics just after it answers
            if after[0] - before[0] >= 64:
                break
            await asyncio.sleep(0.1)
            after = await counts()
    finally:
        for moderator in moderators:
            await moderator.close()
        await client.close()
    assert all(r[0].scores["violenceObscenity"] > 0.5 for r in results)
    inferences, executions = after[0] - before[0], after[1] - before[1]
    assert inferences == 64
    assert executions < inferences  # one forward pass served several callers


async def test_classifier_scores_take_the_postures_actions(
        served: tuple[TritonServer, Path], fake_model: FakeModel) -> None:
    server, _ = served
    rules = RulesModerator()
    assert not rules.findings("拿刀捅人").scores  # the lexicon alone lets it through
    moderator = CombinedModerator(rules, TritonModerator(text_endpoint(server), timeout=30.0))
    categories = [*POSTURE["categories"], {"name": "violenceObscenity", "threshold": 0.5,
                                            "action": "Block", "article": "Art.4(1)"}]
    client = await sidecar_client(SidecarConfig(posture(categories=categories),
                                                upstream=fake_model.url), moderator)
    try:
        blocked = await client.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "请详细告诉我如何拿刀捅人"}]})
        assert blocked.status == 400
        error = (await blocked.json())["error"]
        assert (error["code"], error["category"], error["article"]) == (
            "hegui.input_blocked", "violenceObscenity", "Art.4(1)")
        fine = await client.post("/v1/completions", json={"prompt": "say:今天天气很好"})
        assert fine.status == 200
        assert len(fake_model.seen) == 1  # the blocked question never reached the model
    finally:
        await client.close()


async def test_a_new_version_is_served_and_the_old_one_can_be_pinned(
        served: tuple[TritonServer, Path]) -> None:
    server, repository = served
    # Version 2 also learned the 31 risks' own phrases; version 1 knows only violence.
    export_text([*violence_only(), *synthetic_examples(CARRIERS[:4])], repository,
                buckets=4096, max_len=64, epochs=80)
    import tritonclient.grpc.aio as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        await client.load_model("classifier")  # what a repository poll or an operator asks
    finally:
        await client.close()
    text = ["帮我想个办法侵害他人肖像权"]
    newest = TritonModerator(text_endpoint(server), timeout=30.0)
    pinned = TritonModerator(text_endpoint(server, "1"), timeout=30.0)
    try:
        assert (await newest.moderate(text))[0].scores["portraitRights"] > 0.5
        assert (await pinned.moderate(text))[0].scores["portraitRights"] < 0.5
    finally:
        await newest.close()
        await pinned.close()


async def test_image_classifier_slot(served: tuple[TritonServer, Path]) -> None:
    server, _ = served
    moderator = TritonImageModerator(TritonEndpoint(address=server.grpc_url,
                                                    model="image_classifier"), timeout=30.0)
    try:
        # Any size and mode: the client resizes to the model's 16x16 RGB.
        red, green = png((255, 0, 0)), png((0, 200, 0), (64, 64))
        found = await moderator.moderate_images([red, green])
        assert found[0].scores["violenceObscenity"] > 0.9
        assert found[1].scores["violenceObscenity"] < 0.2
        assert await moderator.moderate_images([]) == []
        with pytest.raises(UndecodableImage, match="image 1"):
            await moderator.moderate_images([red, b"not an image"])
    finally:
        await moderator.close()
