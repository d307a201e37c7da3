"""A provider's lexicon update reaches a running tritonserver with no failed request (Art.4(1),
Art.14): the `lexicon` model watches its keyword files (a mounted ConfigMap), rebuilds the list
beside the one in force and swaps it in between two batches, while clients keep asking."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from hegui.api.generativeservice import TritonEndpoint, TritonProtocol
from hegui.moderation.client import TritonModerator
from hegui.moderation.tritonserver import MODEL_REPOSITORY, TritonServer, TritonUnavailable

pytestmark = pytest.mark.triton


def _publish(folder: Path, text: str) -> None:
    """Write the keyword file as the kubelet updates a ConfigMap volume: whole, then swapped."""
    staged = folder / ".staged"
    staged.write_text(text, encoding="utf-8")
    os.replace(staged, folder / "keywords.tsv")


def _repository(tmp_path: Path, keywords: Path) -> Path:
    repository = tmp_path / "models"
    shutil.copytree(MODEL_REPOSITORY / "lexicon", repository / "lexicon",
                    ignore=shutil.ignore_patterns("__pycache__"))
    config = repository / "lexicon" / "config.pbtxt"
    text = config.read_text(encoding="utf-8")
    text = re.sub(r'(key: "lexicon_dir", value: \{ string_value: )""', rf'\1"{keywords}"', text)
    text = re.sub(r'(key: "reload_seconds", value: \{ string_value: )"[0-9.]+"', r'\1"0.2"',
                  text)
    assert str(keywords) in text and '"0.2"' in text
    config.write_text(text, encoding="utf-8")
    return repository


async def test_lexicon_update_reaches_running_triton_without_failed_requests(
        tmp_path: Path) -> None:
    keywords = tmp_path / "keywords"
    keywords.mkdir()
    _publish(keywords, "# version: week-1\nsubversion\tfirstword\n")
    try:
        server = TritonServer(model_repository=_repository(tmp_path, keywords)).start()
    except TritonUnavailable as missing:
        pytest.skip(f"tritonserver is not installed: {missing}")
    moderator = TritonModerator(TritonEndpoint(address=server.grpc_url,
                                               protocol=TritonProtocol.GRPC, model="lexicon"),
                                timeout=10.0)
    text = "firstword and secondword"
    answers: list[dict[str, float]] = []
    failures: list[str] = []
    updated = asyncio.Event()
    warmed = asyncio.Event()

    async def client() -> None:
        while not updated.is_set() or len(answers) < 40:
            try:
                (found,) = await moderator.moderate([text])
                answers.append(found.scores)
            except Exception as error:  # every failure counts
                failures.append(repr(error))
            if len(answers) >= 20:
                warmed.set()
            if len(answers) + len(failures) > 5000:
                return

    async def provider() -> None:
        await warmed.wait()
        _publish(keywords, "# version: week-2\nseparatism\tsecondword\n")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if answers and answers[-1] == {"separatism": 1.0}:
                break
            await asyncio.sleep(0.05)
        updated.set()

    try:
        await asyncio.wait_for(asyncio.gather(provider(), *(client() for _ in range(4))), 90)
    finally:
        await moderator.close()
        server.stop()
    assert failures == []
    assert answers[0] == {"subversion": 1.0}
    assert answers[-1] == {"separatism": 1.0}, "the update never reached the served model"
    # Every answer came from one whole list, the old or the new, never none or a mix.
    assert {tuple(a) for a in answers} == {("subversion",), ("separatism",)}
