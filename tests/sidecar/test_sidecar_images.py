"""The pictures of an images answer are moderated by the image classifier the posture declares
(`spec.moderation.images`), served by a real tritonserver with a small model made here and
exported by hegui's own code (Art.4, Art.14); what is served is labeled (Art.12)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hegui.api.generativeservice import Labeling
from hegui.labeling.verify import Status, verify_bytes
from hegui.moderation.classifier import export_image
from hegui.moderation.records import RecordLog
from hegui.moderation.tritonserver import TritonServer, TritonUnavailable
from hegui.sidecar.config import SidecarConfig
from hegui.sidecar.testing import POSTURE, LocalModerator, posture, sidecar_client

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.triton

MODEL = "image_classifier"
LABELING = Labeling.from_dict({
    "modalities": ["image"],
    "implicit": {"contentProducer": "Example AI Co.", "produceIdPrefix": "img-"}})


def image_model() -> Any:
    """Mean colour -> [violenceObscenity, personalInformation]: red scores the first, blue the
    second, green neither."""
    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(3, 2), torch.nn.Sigmoid())
    with torch.no_grad():
        model[2].weight.copy_(torch.tensor([[12.0, -12.0, -12.0], [-12.0, -12.0, 12.0]]))
        model[2].bias.fill_(-2.0)
    return model


def png(colour: tuple[int, int, int], size: tuple[int, int] = (48, 32)) -> str:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


RED, GREEN, BLUE = png((230, 10, 10)), png((10, 200, 10), (64, 64)), png((10, 10, 230))


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    repository = tmp_path_factory.mktemp("models")
    export_image(image_model(), ["violenceObscenity", "personalInformation"], 16, repository)
    try:
        server = TritonServer(model_repository=repository).start(timeout=240)
    except TritonUnavailable as missing:
        pytest.skip(f"tritonserver is not installed: {missing}")
    yield server
    server.stop()


@pytest.fixture
async def model() -> AsyncIterator[dict[str, Any]]:
    """A stand-in image model server: answers `reply["data"]`; `reply["seen"]` its requests."""
    reply: dict[str, Any] = {"data": [{"b64_json": GREEN}], "seen": []}

    async def images(request: web.Request) -> web.Response:
        reply["seen"].append(await request.json())
        return web.json_response({"created": 0, "data": reply["data"]})

    app = web.Application()
    app.router.add_post("/v1/images/generations", images)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    reply["url"] = str(server.make_url("")).rstrip("/")
    yield reply
    await server.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def sidecar(model: dict[str, Any], tmp_path: Path, address: str, *,
                  mode: str = "Closed") -> TestClient[Any, Any]:
    categories = [*POSTURE["categories"], {"name": "violenceObscenity", "threshold": 0.5,
                                            "action": "Block", "article": "Art.4(1)"}]
    moderation = posture(categories=categories, failureMode=mode, timeout="30s",
                         triton={"address": address, "model": "moderation"},
                         images={"model": MODEL})
    config = SidecarConfig(moderation, labeling=LABELING, upstream=model["url"])
    return await sidecar_client(config, LocalModerator(),
                                records=RecordLog(tmp_path / "records.jsonl", key=b"k" * 32))


def folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def records(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]


ASK = {"model": "fake", "prompt": "a lake", "response_format": "b64_json"}


async def test_a_prohibited_picture_withholds_the_answer(
        triton: TritonServer, model: dict[str, Any], tmp_path: Path) -> None:
    client = await sidecar(model, tmp_path, triton.grpc_url)
    try:
        model["data"] = [{"b64_json": GREEN}, {"b64_json": RED}]
        response = await client.post("/v1/images/generations", json=ASK)
        assert response.status == 451
        raw = await response.text()
        assert RED not in raw and GREEN not in raw  # no picture of the answer is served
        error = json.loads(raw)["error"]
        assert (error["code"], error["categories"], error["article"]) == (
            "hegui.output_blocked", ["violenceObscenity"], "Art.4(1)")
        [block] = [r for r in records(tmp_path) if r["kind"] == "block"]
        assert block["route"] == "images" and block["reference"] == error["reference"]
        # Mask (personalInformation in the posture) has no meaning for a picture: it blocks.
        model["data"] = [{"b64_json": BLUE}]
        masked = await client.post("/v1/images/generations", json=ASK)
        assert masked.status == 451
        assert (await masked.json())["error"]["categories"] == ["personalInformation"]
    finally:
        await client.close()


async def test_a_clean_picture_is_served_labeled(
        triton: TritonServer, model: dict[str, Any], tmp_path: Path) -> None:
    import tritonclient.grpc as grpcclient

    stats = grpcclient.InferenceServerClient(triton.grpc_url)

    def executions() -> tuple[int, int]:
        [row] = stats.get_inference_statistics(MODEL, as_json=True)["model_stats"]
        return int(row.get("inference_count", 0)), int(row.get("execution_count", 0))

    client = await sidecar(model, tmp_path, triton.grpc_url)
    try:
        model["data"] = [{"b64_json": GREEN}, {"b64_json": GREEN, "revised_prompt": "a lake"}]
        before = executions()
        response = await client.post("/v1/images/generations", json=ASK)
        assert response.status == 200
        assert "x-hegui-output" not in response.headers  # moderated, nothing to say
        after = executions()
        for _ in range(50):  # the backend reports its statistics just after it answers
            if after[0] - before[0] >= 2:
                break
            await asyncio.sleep(0.1)
            after = executions()
        assert (after[0] - before[0], after[1] - before[1]) == (2, 1)  # one call, both scored
        data = (await response.json())["data"]
        assert len(data) == 2
        for item in data:  # Art.12: what is served is labeled
            report = verify_bytes(base64.b64decode(item["b64_json"]))
            assert report.implicit.status is Status.PRESENT
    finally:
        await client.close()
        stats.close()


async def test_a_picture_the_sidecar_cannot_see_is_never_clean(
        triton: TritonServer, model: dict[str, Any], tmp_path: Path) -> None:
    model["data"] = [{"url": "http://images.invalid/1.png"}]
    closed = await sidecar(model, folder(tmp_path / "closed"), triton.grpc_url)
    try:
        refused = await closed.post("/v1/images/generations", json={"prompt": "a lake"})
        assert refused.status == 422
        error = (await refused.json())["error"]
        assert error["code"] == "hegui.image_not_moderatable"
        assert "response_format: b64_json" in error["message"]
        assert "images.invalid" not in await refused.text()
        # Asked for a url outright: refused before the model generates anything.
        asked = len(model["seen"])
        early = await closed.post("/v1/images/generations",
                                  json={"prompt": "a lake", "response_format": "url"})
        assert early.status == 400 and "b64_json" in (await early.json())["error"]["message"]
        assert len(model["seen"]) == asked
        # A b64_json that is no picture: the model's doing, not served.
        model["data"] = [{"b64_json": GREEN}, {"b64_json": base64.b64encode(b"<html>").decode()}]
        broken = await closed.post("/v1/images/generations", json=ASK)
        assert broken.status == 502
        assert "data[1]" in (await broken.json())["error"]["message"]
    finally:
        await closed.close()
    model["data"] = [{"url": "http://images.invalid/1.png"},
                     {"b64_json": base64.b64encode(b"<html>").decode()}, {"b64_json": GREEN}]
    opened = await sidecar(model, folder(tmp_path / "open"), triton.grpc_url, mode="Open")
    try:
        served = await opened.post("/v1/images/generations", json={"prompt": "a lake"})
        assert served.status == 200
        assert served.headers["x-hegui-output"] == "unmoderated"
        data = (await served.json())["data"]
        assert data[0]["url"] == "http://images.invalid/1.png"
        [note] = [r for r in records(tmp_path / "open") if r["kind"] == "unmoderated"]
        assert note["entries"] == ["data[0]", "data[1]"] and note["article"] == "Art.14"
        # The pictures it can see are still scored: a red one withholds the answer.
        model["data"] = [{"url": "http://images.invalid/1.png"}, {"b64_json": RED}]
        assert (await opened.post("/v1/images/generations", json=ASK)).status == 451
    finally:
        await opened.close()


async def test_classifier_down_the_fail_mode_decides(
        model: dict[str, Any], tmp_path: Path) -> None:
    down = f"127.0.0.1:{closed_port()}"  # nothing listens: connection refused, for real
    model["data"] = [{"b64_json": RED}]
    closed = await sidecar(model, folder(tmp_path / "closed"), down)
    try:
        refused = await closed.post("/v1/images/generations", json=ASK)
        assert refused.status == 503
        assert (await refused.json())["error"]["code"] == "hegui.moderation_unavailable"
        assert RED not in await refused.text()
    finally:
        await closed.close()
    opened = await sidecar(model, folder(tmp_path / "open"), down, mode="Open")
    try:
        served = await opened.post("/v1/images/generations", json=ASK)
        assert served.status == 200
        assert served.headers["x-hegui-moderation"] == "unavailable"
        assert served.headers["x-hegui-output"] == "unmoderated"
        assert any(r["kind"] == "unmoderated" and r["route"] == "images"
                   for r in records(tmp_path / "open"))
        report = verify_bytes(base64.b64decode((await served.json())["data"][0]["b64_json"]))
        assert report.implicit.status is Status.PRESENT  # labeled all the same (Art.12)
    finally:
        await opened.close()
