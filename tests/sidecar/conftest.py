"""Fixtures of the sidecar tests: a small OpenAI-compatible model server made here, a moderator
that runs hegui.moderation in-process, a real tritonserver (tests marked `triton`) and a real
Prometheus scraping the module's `sidecar` fixture (tests marked `prometheus`).

The tritonserver comes from the nvidia-pytriton wheel and is started on free loopback ports by
`hegui.moderation.tritonserver.TritonServer`; tests marked `triton` are skipped only when that
wheel (the binary) is not installed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from hegui.localcluster.prometheus import LocalPrometheus, PrometheusUnavailable
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


@pytest.fixture
async def prometheus(sidecar: TestClient[Any, Any]) -> AsyncIterator[LocalPrometheus]:
    """A real Prometheus scraping the sidecar of the test's module every second."""
    server = LocalPrometheus([f"127.0.0.1:{sidecar.server.port}"])
    try:
        await asyncio.to_thread(server.start)
    except PrometheusUnavailable as missing:
        pytest.skip(str(missing))
    try:
        # In threads: the sidecar must keep answering scrapes on this event loop.
        await asyncio.to_thread(server.wait_for_targets)
        yield server
    finally:
        await asyncio.to_thread(server.stop)
