"""Test helpers for the sidecar: a small OpenAI-compatible model server, a moderator that runs
hegui.moderation in-process (the same rules the Triton models serve), and a sample posture.

Used by the tests in tests/sidecar/ and by the benchmark; nothing here is used in production.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hegui.api.generativeservice import Moderation
from hegui.moderation.client import ModeratorUnavailable, RulesModerator
from hegui.moderation.findings import Findings
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


class LocalModerator(RulesModerator):
    """The sidecar's in-process rules, with what tests need: the calls it got and a switch that
    makes it unreachable (a fault that cannot be produced otherwise in-process)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.calls: list[list[str]] = []

    async def moderate(self, texts: list[str]) -> list[Findings]:
        self.calls.append(texts)
        if self.down:
            raise ModeratorUnavailable("ConnectionRefusedError: test")
        return await super().moderate(texts)


def prompt_of(body: dict[str, Any]) -> str:
    """The last user text of a request of any family the fake model answers."""
    messages = body.get("messages")
    if isinstance(messages, list) and messages:
        content = messages[-1].get("content", "")
        if isinstance(content, list):  # parts or blocks
            return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        return str(content)
    data = body.get("input")
    if isinstance(data, list) and data:  # Responses API items
        content = data[-1].get("content", "") if isinstance(data[-1], dict) else ""
        return content if isinstance(content, str) else "".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict))
    inputs = body.get("inputs")
    if isinstance(inputs, list) and inputs and isinstance(inputs[0], dict):  # KServe v2
        return str((inputs[0].get("data") or [""])[0])
    for key in ("prompt", "input", "inputs", "text_input", "text"):
        if isinstance(body.get(key), str):
            return str(body[key])
    return ""


# --- raw HTTP, for the red-team tests (tests/sidecar/test_datapath_*.py) ------------------------

async def exchange(host: str, port: int | None, data: bytes, *, wait: float = 10.0,
                   pieces: list[bytes] | None = None, pause: float = 0.0) -> bytes:
    """Bytes sent as they are (or `pieces`, `pause` seconds apart); all the answer until the
    server closes."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for piece in pieces or [data]:
            writer.write(piece)
            await writer.drain()
            if pause:
                await asyncio.sleep(pause)
        return await asyncio.wait_for(reader.read(), wait)
    finally:
        writer.close()


def http_request(method: str, target: str, body: bytes = b"", *headers: str) -> bytes:
    head = [f"{method} {target} HTTP/1.1", "Host: sidecar", "Connection: close",
            f"Content-Length: {len(body)}", "Content-Type: application/json", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def parse(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    while head.startswith(b"HTTP/1.1 100"):  # an interim answer, then the real one
        head, _, body = body.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:])}
    if fields.get("transfer-encoding") == "chunked":
        out = b""
        while body:
            size, _, body = body.partition(b"\r\n")
            length = int(size.split(b";")[0] or b"0", 16)
            if not length:
                break
            out, body = out + body[:length], body[length + 2:]
        body = out
    return int(lines[0].split()[1]), fields, body


@dataclass
class FakeModel:
    """An OpenAI-compatible model server. The answer is the last user message after `say:`
    without any "Q" (or "好的。"); `stream: true` sends it `chunk_chars` characters a chunk
    (a token), one every `pace` seconds (a loaded GPU server), or all at once when 0.
    `disconnects` counts streams the client closed before their end (generation stopped)."""

    seen: list[dict[str, Any]] = field(default_factory=list)
    mode: str = "normal"  # normal | hang | malformed | hang-midstream | error | slow
    url: str = ""
    delay: float = 0.0  # seconds before every answer (a slow model: runs long enough to interrupt)
    pace: float = 0.0  # seconds between streamed tokens
    chunk_chars: int = 2
    disconnects: int = 0
    written: int = 0  # streamed chunks written, all streams
    # What reached the model: "METHOD /raw/path" of every request (bypass tests look here).
    paths: list[str] = field(default_factory=list)
    # The headers of each generation request that reached the model.
    headers_seen: list[dict[str, str]] = field(default_factory=list)
    # Merged into each chat answer's message and choice (reasoning, tool calls, logprobs...).
    message_extra: dict[str, Any] = field(default_factory=dict)
    choice_extra: dict[str, Any] = field(default_factory=dict)
    embedding_dims: int = 8
    embedding_extra: dict[int, dict[str, Any]] = field(default_factory=dict)
    embedding_pause: float = 0.0
    second_half_at: float = 0.0  # when the last answer's second half was sent (monotonic)

    def answer_for(self, body: dict[str, Any]) -> str:
        text = prompt_of(body)
        # "say~:" answers the rest reversed, so a test can have the model say what the user did
        # not (output tests); "say:" drops any "Q".
        if "say~:" in text:
            return text.split("say~:", 1)[1][::-1]
        return text.split("say:", 1)[1].replace("Q", "") if "say:" in text else "好的。"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.seen.append(body)
        self.headers_seen.append(dict(request.headers))
        chat = request.path.endswith("chat/completions")
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if self.mode == "error":
            return web.json_response({"error": {"message": "overloaded"}}, status=503)
        answer = self.answer_for(body)
        if not body.get("stream"):
            n = body.get("n") if isinstance(body.get("n"), int) else 1
            answers = answer.split("||") if "||" in answer else [answer] * n
            choices = [({"index": i, "message": {"role": "assistant", "content": text,
                                                 **json.loads(json.dumps(self.message_extra))},
                         "finish_reason": "stop"} if chat else
                        {"index": i, "text": text, "finish_reason": "stop"})
                       | json.loads(json.dumps(self.choice_extra))
                       for i, text in enumerate(answers)]
            return web.json_response({"id": "cmpl-1", "object": "chat.completion",
                                      "model": "fake", "choices": choices})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            await self._stream(response, answer, chat)
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnects += 1
            raise
        return response

    async def _stream(self, response: web.StreamResponse, answer: str, chat: bool) -> None:
        size = self.chunk_chars
        pieces = [answer[i:i + size] for i in range(0, len(answer), size)]
        for index, piece in enumerate(pieces):
            if self.mode == "malformed" and index == 2:
                await response.write(b"data: {not json\n\n")
                continue
            if self.mode == "hang-midstream" and index == 2:
                await asyncio.sleep(3600)
            if self.mode == "slow":
                await asyncio.sleep(0.2)
            if self.pace and index:
                await asyncio.sleep(self.pace)
            delta = ({"choices": [{"index": 0, "delta": {"content": piece},
                                   "finish_reason": None}]} if chat else
                     {"choices": [{"index": 0, "text": piece, "finish_reason": None}]})
            chunk = {"id": "cmpl-1", "object": "chat.completion.chunk", "model": "fake", **delta}
            await response.write(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode())
            self.written += 1
        end = {"id": "cmpl-1", "object": "chat.completion.chunk", "model": "fake",
               "choices": [{"index": 0, "delta": {}, "text": "", "finish_reason": "stop"}]}
        await response.write(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode())

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

    async def family(self, request: web.Request) -> web.StreamResponse:
        """The other generation APIs (Responses, Anthropic messages, TGI, Ollama, Triton,
        SageMaker), answering `answer_for` in each one's shape, streamed where asked."""
        body = await request.json()
        self.seen.append(body)
        answer = self.answer_for(body)
        path = request.path
        if path.endswith("_stream") or (path.startswith("/api/") and body.get("stream", True)):
            return await self._family_stream(request, path, answer)
        shaped: Any
        if path == "/v1/responses":
            shaped = {"id": "resp-1", "object": "response", "status": "completed", "output": [
                {"type": "message", "role": "assistant", "content": [
                    {"type": "output_text", "text": answer, "annotations": []}]}]}
        elif path == "/v1/messages":
            shaped = {"id": "msg-1", "type": "message", "role": "assistant", "model": "fake",
                      "content": [{"type": "text", "text": answer}], "stop_reason": "end_turn"}
        elif path in ("/generate", "/invocations") and "inputs" in body:
            shaped = {"generated_text": answer}
        elif path == "/invocations":
            return await self.handle(request)
        elif path == "/api/chat":
            shaped = {"model": "fake", "message": {"role": "assistant", "content": answer},
                      "done": True, "context": [1, 2, 3]}
        elif path == "/api/generate":
            shaped = {"model": "fake", "response": answer, "done": True, "context": [1, 2, 3]}
        elif path.endswith("/infer"):
            shaped = {"model_name": "fake", "outputs": [
                {"name": "text_output", "datatype": "BYTES", "shape": [1], "data": [answer]}]}
        else:  # Triton's generate extension
            shaped = {"model_name": "fake", "model_version": "1", "text_output": answer}
        return web.json_response(shaped)

    async def _family_stream(self, request: web.Request, path: str,
                             answer: str) -> web.StreamResponse:
        ndjson = path.startswith("/api/")
        response = web.StreamResponse(headers={
            "Content-Type": "application/x-ndjson" if ndjson else "text/event-stream"})
        await response.prepare(request)
        pieces = [answer[i:i + self.chunk_chars] for i in range(0, len(answer),
                                                                 self.chunk_chars)]
        for piece in pieces:
            if path == "/api/chat":
                event: Any = {"model": "fake", "message": {"role": "assistant",
                                                           "content": piece}, "done": False}
            elif path == "/api/generate":
                event = {"model": "fake", "response": piece, "done": False}
            elif path == "/generate_stream":
                event = {"token": {"id": 1, "text": piece, "special": False},
                         "generated_text": None}
            else:
                event = {"model_name": "fake", "text_output": piece}
            data = json.dumps(event, ensure_ascii=False)
            await response.write((data + "\n" if ndjson else f"data: {data}\n\n").encode())
        if ndjson:
            await response.write(b'{"model": "fake", "done": true, "context": [1]}\n')
        elif path == "/generate_stream":
            last = {"token": {"id": 2, "text": "", "special": True}, "generated_text": answer}
            await response.write(f"data: {json.dumps(last, ensure_ascii=False)}\n\n".encode())
        return response

    async def anything(self, request: web.Request) -> web.Response:
        """Any other path: answered, so a bypass test would see it get through."""
        data = await request.read()
        self.seen.append({"path": request.path, "body": data.decode("utf-8", "replace")})
        return web.json_response({"ok": True, "path": request.path})

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        """OpenAI embeddings (`encoding_format` float or base64), `embedding_dims` numbers an
        input, each item merged with `embedding_extra[index]` (text a model server could add);
        sent in two halves `embedding_pause` seconds apart when that is set (a big batch that
        takes a while)."""
        import base64
        import struct

        body = await request.json()
        inputs = body.get("input", [])
        inputs = [inputs] if isinstance(inputs, str) else inputs
        data = []
        for index in range(len(inputs)):
            vector = [((index * 31 + j) % 97) / 97 - 0.5 for j in range(self.embedding_dims)]
            value: Any = vector
            if body.get("encoding_format") == "base64":
                value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": value,
                         **self.embedding_extra.get(index, {})})
        answer = json.dumps({"object": "list", "data": data, "model": body.get("model", "fake"),
                             "usage": {"prompt_tokens": len(inputs),
                                       "total_tokens": len(inputs)}},
                            ensure_ascii=False).encode()
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        half = len(answer) // 2
        await response.write(answer[:half])
        if self.embedding_pause:
            await asyncio.sleep(self.embedding_pause)
        self.second_half_at = time.monotonic()
        await response.write(answer[half:])
        await response.write_eof()
        return response

    async def tokenize(self, request: web.Request) -> web.Response:
        """vLLM's /tokenize: a token a word, `token_strs` when asked."""
        body = await request.json()
        text = prompt_of(body) if "messages" in body else str(body.get("prompt", ""))
        words = text.split()
        answer: dict[str, Any] = {"count": len(words), "max_model_len": 4096,
                                  "tokens": [len(w) * 1000 + i for i, w in enumerate(words)]}
        if body.get("return_token_strs"):
            answer["token_strs"] = words
        return web.json_response(answer, dumps=lambda v: json.dumps(v, ensure_ascii=False))

    def app(self) -> web.Application:
        """The OpenAI-compatible routes this model serves, and the other families'."""

        @web.middleware
        async def note(request: web.Request, handler: Any) -> web.StreamResponse:
            self.paths.append(f"{request.method} {request.raw_path}")
            response: web.StreamResponse = await handler(request)
            return response

        app = web.Application(middlewares=[note])
        app.router.add_post("/v1/chat/completions", self.handle)
        app.router.add_post("/v1/completions", self.handle)
        app.router.add_post("/v1/images/generations", self.images)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_post("/tokenize", self.tokenize)
        for path in ("/v1/responses", "/v1/messages", "/generate", "/generate_stream",
                     "/api/chat", "/api/generate", "/v2/models/{model}/generate",
                     "/v2/models/{model}/generate_stream", "/v2/models/{model}/infer",
                     "/v2/models/{model}/versions/{version}/generate",
                     "/invocations"):
            app.router.add_post(path, self.family)
        app.router.add_route("*", "/{tail:.*}", self.anything)
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
