"""The image moderation's decisions without Triton (hegui.sidecar.images_moderation): Mask blocks
a picture, the posture's classifier is followed as it changes, and a service with no image
classifier serves no unmoderated picture in fail mode Closed (Art.4, Art.14)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from hegui.api.generativeservice import Direction, GenerativeService
from hegui.moderation.client import TritonImageModerator
from hegui.moderation.decision import Outcome, decide
from hegui.moderation.findings import Findings
from hegui.moderation.records import RecordLog
from hegui.sidecar.common import BadRequest
from hegui.sidecar.config import SidecarConfig
from hegui.sidecar.images_moderation import ImageClassifiers, as_picture, check_request
from hegui.sidecar.testing import FakeModel, LocalModerator, posture, sidecar_client

IMAGES = {"model": "image_classifier"}
TRITON = {"address": "triton.hegui-system.svc:8001", "model": "moderation"}


def test_mask_on_a_picture_blocks_and_flag_stays_a_flag() -> None:
    moderation = posture()  # personalInformation: Mask; falseInformation: Flag
    text = decide(Findings({"personalInformation": 0.9, "falseInformation": 0.9}), moderation,
                  Direction.OUTPUT)
    assert text.outcome is Outcome.MASK  # for a text, a span to hide
    picture = as_picture(text)
    assert picture.outcome is Outcome.BLOCK
    assert {h.category: h.outcome for h in picture.hits} == {
        "personalInformation": Outcome.BLOCK, "falseInformation": Outcome.FLAG}
    assert picture.mask_spans == []
    flagged = as_picture(decide(Findings({"falseInformation": 0.9}), moderation,
                                Direction.OUTPUT))
    assert flagged.outcome is Outcome.FLAG and not flagged.blocking


SAMPLE = Path(__file__).parents[2] / "samples" / "compliance" / "image-service.yaml"


def service(images: dict[str, Any] | None, triton: dict[str, str] | None = None
            ) -> GenerativeService:
    """The sample text-to-image service, with or without an image classifier."""
    data = yaml.safe_load(SAMPLE.read_text("utf-8"))
    data["spec"]["moderation"].pop("images", None)
    if images is not None:
        data["spec"]["moderation"]["images"] = images
    if triton is not None:
        data["spec"]["moderation"]["triton"] = triton
    return GenerativeService.from_dict(data)


async def test_the_classifier_follows_the_posture() -> None:
    classifiers = ImageClassifiers()
    config = SidecarConfig.from_service(service(None, TRITON))
    assert classifiers.for_posture(config.moderation, 2.0) is None
    # The operator's posture change names a classifier: the running pod uses it (with_posture),
    # on the Triton of spec.moderation.triton.
    config = config.with_posture(service(IMAGES, TRITON))
    first = classifiers.for_posture(config.moderation, 2.0)
    assert isinstance(first, TritonImageModerator)
    assert (first.text.endpoint.address, first.text.endpoint.model) == (
        "triton.hegui-system.svc:8001", "image_classifier")
    assert classifiers.for_posture(config.moderation, 2.0) is first  # one client, kept
    config = config.with_posture(service({**IMAGES, "modelVersion": "2"}, TRITON))
    second = classifiers.for_posture(config.moderation, 2.0)
    assert isinstance(second, TritonImageModerator) and second is not first
    assert second.text.endpoint.model_version == "2"
    await classifiers.close()
    # --triton overrides the address for pictures as for text.
    moved = ImageClassifiers(address="10.0.0.7:8001").for_posture(config.moderation, 2.0)
    assert isinstance(moved, TritonImageModerator)
    assert moved.text.endpoint.address == "10.0.0.7:8001"


def test_the_posture_refuses_an_image_classifier_without_a_model() -> None:
    with pytest.raises(ValueError, match="model"):
        service({})


def test_requests_that_could_not_be_served_are_refused_before_the_model() -> None:
    class Holder:
        def __init__(self, **changes: Any) -> None:
            self.config = SidecarConfig(posture(**changes))

    with pytest.raises(BadRequest) as undeclared:
        check_request(Holder(), {"prompt": "a cat"})  # type: ignore[arg-type]
    assert undeclared.value.status == 503
    assert "spec.moderation.images" in undeclared.value.message
    check_request(Holder(failureMode="Open"), {"prompt": "a cat"})  # type: ignore[arg-type]
    check_request(Holder(output={"enabled": False}), {"prompt": "a cat"})  # type: ignore[arg-type]
    declared = Holder(images=IMAGES)
    check_request(declared, {"prompt": "a cat", "response_format": "b64_json"})  # type: ignore[arg-type]
    with pytest.raises(BadRequest) as url:
        check_request(declared, {"prompt": "a cat", "response_format": "url"})  # type: ignore[arg-type]
    assert url.value.status == 400 and "response_format: b64_json" in url.value.message


async def test_no_image_classifier_closed_serves_no_picture_open_flags_it(
        fake_model: FakeModel, tmp_path: Path) -> None:
    ask = {"prompt": "a cat", "response_format": "b64_json"}
    closed = await sidecar_client(SidecarConfig(posture(), upstream=fake_model.url),
                                  LocalModerator())
    try:
        refused = await closed.post("/v1/images/generations", json=ask)
        assert refused.status == 503
        error = (await refused.json())["error"]
        assert error["code"] == "hegui.image_moderation_undeclared"
        assert "spec.moderation.images" in error["message"]
        assert fake_model.seen == []  # no GPU spent on a picture that cannot be served
    finally:
        await closed.close()
    log = RecordLog(tmp_path / "records.jsonl", key=b"k" * 32)
    opened = await sidecar_client(SidecarConfig(posture(failureMode="Open"),
                                                upstream=fake_model.url), LocalModerator(),
                                  records=log)
    try:
        served = await opened.post("/v1/images/generations", json=ask)
        assert served.status == 200
        assert served.headers["x-hegui-output"] == "unmoderated"
        assert (await served.json())["data"][0]["b64_json"]
    finally:
        await opened.close()
    notes = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    [note] = [n for n in notes if n["kind"] == "unmoderated"]
    assert "spec.moderation.images" in note["reason"] and note["article"] == "Art.14"
