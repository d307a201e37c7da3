"""Fixtures of the sidecar tests: a small OpenAI-compatible model server made here, a moderator
that runs hegui.moderation in-process, and a real tritonserver (tests marked `triton`).

The tritonserver comes from the nvidia-pytriton wheel and is started on free loopback ports by
`hegui.moderation.tritonserver.TritonServer`; tests marked `triton` are skipped only when that
wheel (the binary) is not installed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from hegui.moderation.tritonserver import TritonServer, TritonUnavailable
from hegui.sidecar.testing import FakeModel, LocalModerator


@pytest.fixture
async def fake_model() -> AsyncIterator[FakeModel]:
    model = FakeModel()
    server = await model.serve()
    yield model
    await server.close()


@pytest.fixture
def moderator() -> LocalModerator:
    return LocalModerator()


@pytest.fixture(scope="session")
def triton_server() -> Iterator[TritonServer]:
    try:
        server = TritonServer().start()
    except TritonUnavailable as missing:
        pytest.skip(f"tritonserver is not installed: {missing}")
    yield server
    server.stop()
