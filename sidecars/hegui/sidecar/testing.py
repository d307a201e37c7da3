"""Test helpers for the sidecar: a small OpenAI-compatible model server, a moderator that runs
hegui.moderation in-process (the same rules the Triton models serve), and a sample posture.

Used by the tests in tests/sidecar/ and by the benchmark; nothing here is used in production.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hegui.api.generativeservice import Moderation
from hegui.moderation.client import ModeratorUnavailable
from hegui.moderation.findings import Findings, lexicon_findings, pii_findings
from hegui.moderation.lexicon import load_lexicon
from hegui.sidecar.app import Sidecar, make_app
from hegui.sidecar.config import SidecarConfig

POSTURE: dict[str, Any] = {
    "categories": [
        {"name": "subversion", "threshold": 0.5, "action": "Block", "article": "Art.4(1)"},
        {"name": "terrorismExtremism", "threshold": 0.5, "action": "Block",
         "article": "Art.4(1)"},
        {"name": "falseInformation", "threshold": 0.5, "action": "Flag", "article": "Art.4(1)"},
        {"name": "personalInformation", "threshold": 0.6, "action": "Mask",
         "article": "Art.4(4)"},
    ],
    "output": {"streamWindowTokens": 4},
}


def posture(**changes: Any) -> Moderation:
    return Moderation.from_dict({**POSTURE, **changes})


class LocalModerator:
    """hegui.moderation in-process: the same rules as the Triton models, without Triton."""

    def __init__(self) -> None:
        self.lexicon = load_lexicon()
        self.down = False
        self.calls: list[list[str]] = []

    async def moderate(self, texts: list[str]) -> list[Findings]:
        self.calls.append(texts)
        if self.down:
            raise ModeratorUnavailable("ConnectionRefusedError: test")
        return [lexicon_findings(self.lexicon, t).merge(pii_findings(t)) for t in texts]

    async def close(self) -> None:
        pass


@dataclass
class FakeModel:
    """An OpenAI-compatible model server. The answer is the last user message after `say:`
    without any "Q" (or "好的。"); `stream: true` sends it two characters a chunk."""

    seen: list[dict[str, Any]] = field(default_factory=list)
    mode: str = "normal"  # normal | hang | malformed | hang-midstream | error | slow
    url: str = ""
    delay: float = 0.0  # seconds before every answer (a slow model: runs long enough to interrupt)

    def answer_for(self, body: dict[str, Any]) -> str:
        if "messages" in body:
            text = str(body["messages"][-1].get("content", ""))
        else:
            text = str(body.get("prompt", ""))
        # "Q" is dropped, so a test can have the model say what the user did not (output tests).
        return text.split("say:", 1)[1].replace("Q", "") if "say:" in text else "好的。"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.seen.append(body)
        chat = request.path.endswith("chat/completions")
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if self.mode == "error":
            return web.json_response({"error": {"message": "overloaded"}}, status=503)
        answer = self.answer_for(body)
        if not body.get("stream"):
            choice: dict[str, Any] = ({"index": 0, "message": {"role": "assistant",
                                                                "content": answer},
                                       "finish_reason": "stop"} if chat else
                                      {"index": 0, "text": answer, "finish_reason": "stop"})
            return web.json_response({"id": "cmpl-1", "object": "chat.completion",
                                      "model": "fake", "choices": [choice]})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        pieces = [answer[i:i + 2] for i in range(0, len(answer), 2)]
        for index, piece in enumerate(pieces):
            if self.mode == "malformed" and index == 2:
                await response.write(b"data: {not json\n\n")
                continue
            if self.mode == "hang-midstream" and index == 2:
                await asyncio.sleep(3600)
            if self.mode == "slow":
                await asyncio.sleep(0.2)
            delta = ({"choices": [{"index": 0, "delta": {"content": piece},
                                   "finish_reason": None}]} if chat else
                     {"choices": [{"index": 0, "text": piece, "finish_reason": None}]})
            chunk = {"id": "cmpl-1", "object": "chat.completion.chunk", "model": "fake", **delta}
            await response.write(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode())
        end = {"id": "cmpl-1", "object": "chat.completion.chunk", "model": "fake",
               "choices": [{"index": 0, "delta": {}, "text": "", "finish_reason": "stop"}]}
        await response.write(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode())
        return response

    async def images(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.seen.append(body)
        if body.get("response_format") != "b64_json":
            return web.json_response({"created": 0,
                                      "data": [{"url": "http://example.invalid/1"}]})
        import base64
        import io

        from PIL import Image

        picture = Image.linear_gradient("L").convert("RGB").resize((128, 128))
        encoded = io.BytesIO()
        picture.save(encoded, format="PNG")
        return web.json_response({"created": 0, "data": [
            {"b64_json": base64.b64encode(encoded.getvalue()).decode()}]})

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake"}]})

    def app(self) -> web.Application:
        """The OpenAI-compatible routes this model serves."""
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle)
        app.router.add_post("/v1/completions", self.handle)
        app.router.add_post("/v1/images/generations", self.images)
        app.router.add_get("/v1/models", self.models)
        return app

    async def serve(self) -> TestServer:
        """Serve it on a free loopback port (`url` is set); close the server when done."""
        server = TestServer(self.app(), host="127.0.0.1")
        await server.start_server()
        self.url = str(server.make_url("")).rstrip("/")
        return server


async def sidecar_client(config: SidecarConfig, moderator: Any,
                         **options: Any) -> TestClient[Any, Any]:
    """The sidecar app on a free port; `options` go to Sidecar (records, strikes, ...)."""
    client: TestClient[Any, Any] = TestClient(
        TestServer(make_app(Sidecar(config, moderator, **options)), host="127.0.0.1"))
    await client.start_server()
    return client


class ServingRig:
    """A model server (FakeModel) and the real sidecar app in front of it, served from a
    background thread's event loop on free loopback ports: for synchronous tests (the operator's,
    against the local cluster) that need live traffic for a real Prometheus to scrape.

    The sidecar moderates in-process (LocalModerator): what is under test there is stability and
    suspension, not Triton. `suspension_file` is where the sidecar reads the operator's notice,
    as the kubelet projects it from the ConfigMap.
    """

    def __init__(self, service: str, suspension_file: Any, latency_threshold: float = 1.0,
                 poll_seconds: float = 0.2) -> None:
        import threading

        self.model = FakeModel()
        self._config = dict(service=service, suspension_file=suspension_file,
                            latency_threshold=latency_threshold,
                            suspension_poll_seconds=poll_seconds)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="serving-rig",
                                        daemon=True)
        self._servers: list[TestServer] = []
        self.sidecar_url = ""

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(30)

    async def _start(self) -> None:
        model_server = await self.model.serve()
        config = SidecarConfig(posture(), upstream=self.model.url, **self._config)
        sidecar_server = TestServer(make_app(Sidecar(config, LocalModerator())),
                                    host="127.0.0.1")
        await sidecar_server.start_server()
        self._servers = [sidecar_server, model_server]
        self.sidecar_url = str(sidecar_server.make_url("")).rstrip("/")

    def start(self) -> ServingRig:
        self._thread.start()
        self._run(self._start())
        return self

    def stop(self) -> None:
        for server in self._servers:
            self._run(server.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def metrics_target(self) -> str:
        return self.sidecar_url.removeprefix("http://")

    def chat(self, text: str = "say:你好") -> int:
        """One chat request through the sidecar; its HTTP status."""
        import urllib.error
        import urllib.request

        body = json.dumps({"model": "fake", "messages": [{"role": "user", "content": text}]})
        request = urllib.request.Request(  # noqa: S310 - http on loopback, made here
            f"{self.sidecar_url}/v1/chat/completions", data=body.encode(), method="POST",
            headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                response.read()
                return int(response.status)
        except urllib.error.HTTPError as refused:
            refused.read()
            return int(refused.code)

    def drive(self, seconds: float, pause: float = 0.02) -> list[int]:
        """Requests one after another for `seconds`; their statuses."""
        import time

        deadline, statuses = time.monotonic() + seconds, []
        while time.monotonic() < deadline:
            statuses.append(self.chat())
            time.sleep(pause)
        return statuses


class BackgroundModel:
    """FakeModel served from a background thread on a free loopback port: the stand-in model
    server of the demo (no GPU and no weights here). `model.mode = "error"` makes it fail."""

    def __init__(self) -> None:
        import threading

        self.model = FakeModel()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="model",
                                        daemon=True)
        self._server: TestServer | None = None

    async def _start(self) -> None:
        self._server = await self.model.serve()

    def start(self) -> BackgroundModel:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    def stop(self) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.close(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
