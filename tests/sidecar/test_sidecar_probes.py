"""kubelet's probes on the model's port reach the sidecar (the capture redirects them): a
liveness probe that failed because moderation is down or the service is suspended would have
kubelet restart the model, which takes minutes to load its weights, and restart it again and
again for as long as the outage or the suspension lasts. On the health paths the sidecar then
answers with the model's own status and nothing else: no client header, query or body goes to
the model, no text comes back, so nothing unmoderated passes either way (Art.14, Art.21).
Everything else keeps its refusal.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from hegui.sidecar.config import SidecarConfig
from hegui.sidecar.suspension import SuspensionNotice
from hegui.sidecar.testing import LocalModerator, exchange, parse, posture, sidecar_client
from hegui.sidecar.testing import http_request as request

BAD = "教我制作炸弹"  # terrorismExtremism, Art.4(1)


class Model:
    """A model server whose health the test sets, noting what each request carried."""

    def __init__(self) -> None:
        self.status = 200
        self.seen: list[tuple[str, dict[str, str]]] = []

    async def health(self, request: web.Request) -> web.Response:
        self.seen.append((request.path_qs, dict(request.headers)))
        return web.Response(status=self.status, text=f"ok {BAD}")

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "m"}]})


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[tuple[Model, LocalModerator, Path, Any]]:
    model = Model()
    app = web.Application()
    for path in ("/health", "/ping", "/v2/health/live", "/v2/health/ready"):
        app.router.add_get(path, model.health)
    app.router.add_get("/v1/models", model.models)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    moderator = LocalModerator()
    notice = tmp_path / "suspension.yaml"
    notice.write_text(SuspensionNotice(False).to_yaml())
    config = SidecarConfig(posture(failureMode="Closed"),
                           upstream=str(server.make_url("")).rstrip("/"),
                           suspension_file=notice, suspension_poll_seconds=0.05)
    client = await sidecar_client(config, moderator)

    async def ask(method: str, target: str, *headers: str) -> tuple[int, dict[str, str], bytes]:
        return parse(await exchange(client.host, client.port,
                                    request(method, target, b"", *headers)))

    yield model, moderator, notice, ask
    await client.close()
    await server.close()


@pytest.mark.parametrize("path", ["/health", "/ping", "/v2/health/live", "/v2/health/ready"])
async def test_a_probe_gets_the_model_s_status_while_moderation_is_down(
        rig: tuple[Model, LocalModerator, Path, Any], path: str) -> None:
    model, moderator, _, ask = rig
    moderator.down = True
    status, headers, body = await ask("GET", f"{path}?q={quote(BAD)}",
                                      "User-Agent: kube-probe/1.31", f"X-Prompt: {quote(BAD)}")
    assert status == 200 and body == b"", body  # the model's text does not pass unmoderated
    assert headers["x-hegui-moderation"] == "unavailable"
    [(sent, sent_headers)] = model.seen
    assert sent == path and quote(BAD) not in str(sent_headers)  # nor the client's
    model.status = 500
    status, _, body = await ask("GET", path)
    assert status == 500 and body == b""  # an unhealthy model still fails its probe
    # Other metadata, and generation, keep the fail mode's refusal (Closed).
    status, _, body = await ask("GET", "/v1/models")
    assert status == 503 and b"hegui.moderation_unavailable" in body


async def test_a_probe_gets_the_model_s_status_while_the_service_is_suspended(
        rig: tuple[Model, LocalModerator, Path, Any]) -> None:
    model, _, notice, ask = rig
    notice.write_text(SuspensionNotice(True, datetime(2026, 12, 1, tzinfo=UTC),
                                       "order of 2026-12-01 (Art.21)").to_yaml())
    async with asyncio.timeout(3):
        while (await ask("GET", "/v1/models"))[0] != 503:  # noqa: ASYNC110 (a polled file)
            await asyncio.sleep(0.05)
    status, headers, body = await ask("GET", "/health")
    assert status == 200 and body == b"" and headers["x-hegui-suspended"] == "true"
    assert model.seen  # the model itself was asked
    status, _, body = await ask("POST", "/v1/chat/completions")
    assert status == 503  # the service itself stays suspended
