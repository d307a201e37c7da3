"""hegui's image definitions (images/NAME.toml) and the Dockerfiles a platform team's pipeline
builds them with: one definition, two ways to build it, kept in step here. The images themselves
are built, started and probed in tests/images (marker `images`)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from hegui.admission import injection

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "images"
BUILT_BY_DOCKERFILE = ["hegui", "sidecar", "triton"]


def _definition(name: str) -> dict[str, Any]:
    definition: dict[str, Any] = tomllib.loads((IMAGES / f"{name}.toml").read_text())
    return definition


def _stages(dockerfile: Path) -> list[dict[str, Any]]:
    """FROM stages with their instructions (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    stages: list[dict[str, Any]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        if instruction.upper() == "FROM":
            image, _, alias = rest.partition(" AS ")
            stages.append({"from": image.strip(), "name": alias.strip(), "steps": []})
        else:
            stages[-1]["steps"].append((instruction.upper(), rest.strip()))
    return stages


@pytest.mark.parametrize("name", BUILT_BY_DOCKERFILE)
def test_dockerfile_builds_the_definition(name: str) -> None:
    definition = _definition(name)
    build, final = _stages(IMAGES / f"{name}.Dockerfile")
    # The build stage's base is pinned by a dated tag; the image itself starts from nothing.
    assert re.fullmatch(r"debian:bookworm-\d{8}-slim(@sha256:[a-f0-9]{64})?", build["from"])
    assert final["from"] == "scratch" and final["name"] == name
    runs = [rest for instruction, rest in build["steps"] if instruction == "RUN"]
    assert f"python3 images/build.py {name} --out /cache --rootfs /rootfs" in runs
    for instruction, rest in build["steps"]:
        if instruction == "COPY":
            *sources, _ = rest.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: no such path"
    copied = [rest.split()[0] for instruction, rest in build["steps"] if instruction == "COPY"]
    for source in definition.get("files", {}):
        assert any(source == c or source.startswith(f"{c}/") for c in copied), source
    steps = dict(final["steps"])
    assert json.loads(steps["ENTRYPOINT"]) == definition["entrypoint"]
    assert json.loads(steps["CMD"]) == definition["cmd"]
    assert steps["USER"] == f"{injection.SIDECAR_USER}:{injection.SIDECAR_USER}"
    env = dict(pair.split("=", 1) for pair in steps["ENV"].split())
    assert definition.get("env", {}).items() <= env.items()
    assert env["PYTHONPATH"] == "/opt/hegui/lib" and env["HOME"] == "/tmp"
    assert steps.get("EXPOSE", "").split() == [str(p) for p in definition["ports"]]


def test_only_what_each_image_needs() -> None:
    # The operator/webhook image installs no extra; the sidecar no torch (the `ml` extra, for
    # the neural watermark, is a separate image a posture may ask for).
    assert _definition("hegui")["extras"] == []
    assert "ml" not in _definition("sidecar")["extras"]
    assert _definition("triton")["extras"] == ["triton"]
    for name in BUILT_BY_DOCKERFILE:
        assert not {"dev", "dossier", "bench"} & set(_definition(name)["extras"])
