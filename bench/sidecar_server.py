"""A process of the sidecar benchmark: the fake model server, or the sidecar in front of it.

    python bench/sidecar_server.py model PORT
    python bench/sidecar_server.py sidecar PORT UPSTREAM_URL (none | triton ADDR MODEL)
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web

from hegui.api.generativeservice import TritonEndpoint
from hegui.moderation.client import TritonModerator
from hegui.moderation.findings import Findings
from hegui.sidecar.app import Sidecar, serve
from hegui.sidecar.config import SidecarConfig
from hegui.sidecar.testing import FakeModel, posture


class NoModeration:
    """Scores nothing, at once: what the proxy costs by itself."""

    async def moderate(self, texts: list[str]) -> list[Findings]:
        return [Findings() for _ in texts]

    async def close(self) -> None:
        pass


async def run(argv: list[str]) -> None:
    role, port = argv[0], int(argv[1])
    if role == "model":
        model = FakeModel()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", model.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
    else:
        upstream, kind = argv[2], argv[3]
        moderator = (NoModeration() if kind == "none" else TritonModerator(
            TritonEndpoint(address=argv[4], model=argv[5]), timeout=5.0))
        runner = await serve(Sidecar(SidecarConfig(posture(), upstream=upstream), moderator),
                             "127.0.0.1", port)
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1:]))
