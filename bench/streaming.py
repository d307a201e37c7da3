"""Streaming benchmark (issue 14): what the sidecar adds to a streamed answer, against the model
server called directly in the same run (the machine is shared and noisy: compare figures of one
run only, read ratios).

    .venv/bin/python bench/streaming.py [--seconds 5] [--quick]

Each server runs in its own process: the fake model server (hegui.sidecar.testing.FakeModel) and
sidecars with the lexicon and personal-information rules in-process (RulesModerator), in
StreamThenRetract and in Hold (first window 4 tokens), with their event loop (asyncio or uvloop)
and JSON library (json or orjson) chosen per process. The load generator is this process.

- paced: 64 concurrent streams, the model sends 256 one-token chunks 20 ms apart (a loaded GPU
  server); time to first token p50 and the gap between tokens p99, direct and through each mode.
- saturated: the model (LeanModel) sends its 256 tokens as fast as it can (it yields to its event
  loop between tokens, as a server emitting one token a stream per decode step); 1, 32, 128, 256
  concurrent streams, single-token chunks a second through the sidecar and the sidecar process's
  CPU time per chunk (1e6 / that = chunks a second one sidecar process relays on a whole core).
- relay code: the relay's own CPU per chunk in-process, no sockets (`--relay-only` alone), one and
  eight events a read: what a machine too loaded for the figures above still measures.

A/B of two checkouts (the same machine, the same run, interleaved rounds, best of N):

    python bench/streaming.py --compare-with ../base/sidecars --streams 128 --seconds 3

    python bench/streaming.py serve model PORT PACE
    python bench/streaming.py serve sidecar PORT UPSTREAM MODE LOOP JSON [freeze|nofreeze]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve()
# Clean Chinese text, one character a token; no personal information (a number holds its run).
SENTENCE = ("人工智能服务应当坚持社会主义核心价值观，"  # noqa: RUF001
            "尊重他人合法权益，提高生成内容的准确性和可靠性。")  # noqa: RUF001
TEXT = (SENTENCE * 8)[:256]
TICK = os.sysconf("SC_CLK_TCK")


# --- the server processes ----------------------------------------------------------------------

class LeanModel(asyncio.Protocol):
    """The saturated upstream: HTTP/1.1 keep-alive, each answer 256 pre-encoded one-token SSE
    events (what FakeModel sends), yielding to the event loop between tokens as a server that
    emits one token a stream per decode step. It costs little per token, so what limits the
    figures is the sidecar (and the load generator), not the stand-in model."""

    pace = 0.0  # seconds between tokens; 0: as fast as it can (saturated)
    trace: dict[str, list[float]] | None = None  # stream id: [request parsed, first token sent]

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: Any = None  # asyncio's or uvloop's
        self.answering: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15:].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length:]
            if self.pace:
                self.paced(_stream_id(head))
            else:
                self.answering = asyncio.ensure_future(self.answer())

    def paced(self, stream: str) -> None:
        """One token every `pace` seconds on the stream's own clock (from its request: no
        drift), each written by a timer, no task: what the load generator sees is the
        sidecar, not this stand-in's cost."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n" + FRAMES[0])
        if self.trace is not None and stream:
            self.trace[stream] = [began, time.monotonic()]

        def tick(index: int) -> None:
            if self.transport.is_closing():
                return
            if index == len(FRAMES):
                self.transport.write(_frame(END) + b"0\r\n\r\n")
                return
            self.transport.write(FRAMES[index])
            self.timer = loop.call_at(began + self.pace * (index + 1), tick, index + 1)

        self.timer = loop.call_at(began + self.pace, tick, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()

    async def answer(self) -> None:
        transport = self.transport
        transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n")
        for frame in FRAMES:
            if transport.is_closing():
                return
            transport.write(frame)
            await asyncio.sleep(0)
        transport.write(_frame(END) + b"0\r\n\r\n")


def _stream_id(head: bytes) -> str:
    at = head.find(b"x-bench-stream:")
    return head[at + 15:].split(b"\r\n", 1)[0].strip().decode() if at >= 0 else ""


def _frame(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


EVENTS = [("data: " + json.dumps({
    "id": "cmpl-1", "object": "chat.completion.chunk", "model": "fake",
    "choices": [{"index": 0, "delta": {"content": char}, "finish_reason": None}]},
    ensure_ascii=False, separators=(",", ":")) + "\n\n").encode() for char in TEXT]
FRAMES = [_frame(event) for event in EVENTS]
END = (b'data: {"id":"cmpl-1","object":"chat.completion.chunk","model":"fake","choices":'
       b'[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n')


async def serve_model(port: int, pace: float) -> None:
    """The stand-in model, lean (LeanModel), paced or saturated, in its own process; its
    per-stream times go to the trace file on SIGUSR1 (`_dump_on_signal`)."""
    LeanModel.pace = pace
    LeanModel.trace = {}
    _dump_on_signal(LeanModel.trace)
    server = await asyncio.get_running_loop().create_server(LeanModel, "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def _dump_on_signal(trace: dict[str, Any]) -> None:
    """SIGUSR1: the stage times gathered so far (CLOCK_MONOTONIC, one clock for every process
    of the machine) written to $HEGUI_BENCH_TRACE as JSON, then forgotten."""
    import signal

    def dump() -> None:
        if path := os.environ.get("HEGUI_BENCH_TRACE"):
            Path(path).with_suffix(".tmp").write_text(json.dumps(trace))
            Path(path).with_suffix(".tmp").rename(path)
        trace.clear()

    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump)


def _trace_stages(trace: dict[str, dict[str, float]]) -> None:
    """Per request, when each stage of the sidecar ended (time.monotonic): `received` (the
    handler began: headers parsed), `body` (read), `input` (input moderated), `upstream`
    (the model's answer headers), `first_event` (the model's first event read), `first_out`
    (the first token written to the client). By wrapping the sidecar's methods in this
    process only: the sidecar's code is the one that serves."""
    import contextvars

    from hegui.api.generativeservice import Direction
    from hegui.sidecar import app, streaming

    current: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar(
        "stages", default=None)

    def wrap(owner: Any, name: str, stage: str, when: Any = None) -> None:
        inner = getattr(owner, name)

        async def timed(*args: Any, **kwargs: Any) -> Any:
            result = await inner(*args, **kwargs)
            if (stages := current.get()) is not None and stage not in stages and (
                    when is None or when(args, result)):
                stages[stage] = time.monotonic()
            return result

        setattr(owner, name, timed)

    dispatch = app.Sidecar.dispatch

    async def traced(self: Any, request: Any) -> Any:
        stages = {"received": time.monotonic()}
        token = current.set(stages)
        try:
            return await dispatch(self, request)
        finally:
            current.reset(token)
            if stream := request.headers.get("x-bench-stream"):
                trace[stream] = stages

    app.Sidecar.dispatch = traced  # type: ignore[method-assign]
    wrap(app.Sidecar, "_read_json", "body")
    wrap(app.Sidecar, "moderate", "input", lambda args, _: args[2] is Direction.INPUT)
    wrap(app.Sidecar, "_open_upstream", "upstream")
    wrap(streaming.EventReader, "next", "first_event")
    for name in ("_write_plain", "_send"):
        wrap(streaming._Relay, name, "first_out", lambda args, _: args[0].shown)


async def serve_sidecar(port: int, upstream: str, mode: str, use_json: str,
                        freeze: str = "freeze") -> None:
    from hegui.api.generativeservice import Direction
    from hegui.moderation.client import RulesModerator
    from hegui.sidecar import streaming
    from hegui.sidecar.app import SIDECAR, Sidecar, serve
    from hegui.sidecar.config import SidecarConfig
    from hegui.sidecar.testing import posture

    if use_json == "json":  # what orjson earns: the standard library in its place
        streaming._loads = json.loads

        def dumps(value: Any) -> bytes:
            return json.dumps(value, ensure_ascii=False).encode()

        streaming._dumps = dumps
    config = SidecarConfig(posture(output={"streamWindowTokens": 64, "streaming": {
        "mode": mode, "firstWindowTokens": 4}}), upstream=upstream,
        upstream_read_timeout=30.0)
    stages: dict[str, dict[str, float]] = {}
    _trace_stages(stages)
    _dump_on_signal(stages)
    runner = await serve(Sidecar(config, RulesModerator()), "127.0.0.1", port)
    await runner.app[SIDECAR].moderate(["预热"], Direction.OUTPUT)  # the rules' tables load
    if freeze == "freeze":  # as python -m hegui.sidecar does once it serves
        from hegui.sidecar import common

        getattr(common, "tune_gc", gc.freeze)()  # (a checkout before tune_gc: --compare-with)
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


async def serve_relay(port: int, upstream: str) -> None:
    """A bare proxy hop, no moderation: what any extra process in the path costs on this
    machine (scheduling, sockets), so the sidecar's own cost can be told apart from it."""
    from aiohttp import web

    session = aiohttp.ClientSession()

    async def relay(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {"Content-Type": "application/json",
                   "x-bench-stream": request.headers.get("x-bench-stream", "")}
        async with session.post(upstream + request.path, data=body,
                                headers=headers) as answer:
            response = web.StreamResponse(headers={"Content-Type": answer.content_type})
            await response.prepare(request)
            async for data in answer.content.iter_any():
                await response.write(data)
            await response.write_eof()
            return response

    _dump_on_signal({})
    app = web.Application()
    app.router.add_post("/v1/chat/completions", relay)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


def serve_main(argv: list[str]) -> None:
    role, port = argv[0], int(argv[1])
    if role == "model":
        import uvloop

        uvloop.install()
        asyncio.run(serve_model(port, float(argv[2])))
        return
    if role == "relay":
        import uvloop

        uvloop.install()
        asyncio.run(serve_relay(port, argv[2]))
        return
    upstream, mode, loop, use_json = argv[2:6]
    if loop == "uvloop":
        import uvloop

        uvloop.install()
    asyncio.run(serve_sidecar(port, upstream, mode, use_json, *argv[6:7]))


# --- the load ------------------------------------------------------------------------------------

def free_port() -> int:
    from hegui.moderation.tritonserver import free_port as pick

    return pick()


class Server:
    def __init__(self, *args: str, source: str | None = None) -> None:
        """`source`: the `sidecars` folder of another checkout, imported instead of this one
        (`--compare-with`)."""
        self.port = free_port()
        command = [sys.executable, str(HERE), "serve", args[0], str(self.port), *args[1:]]
        env = {**os.environ, "PYTHONPATH": source} if source else None
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, env=env)
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"{args} did not start")
        self.url = f"http://127.0.0.1:{self.port}/v1/chat/completions"
        self.trace: Path | None = None  # its stage times (SIGUSR1)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


BODY = json.dumps({"model": "fake", "stream": True,
                   "messages": [{"role": "user", "content": f"say:{TEXT}"}]},
                  ensure_ascii=False).encode()


class _LeanClient(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection of the paced load, as cheap as a client can be (no
    HTTP library, no JSON): each read's arrival time (time.monotonic) for each token event it
    brings, counted by its bytes (`"content":"` that is not `"content":""`)."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.arrivals: list[float] = []
        self.tail = b""
        self.done: asyncio.Future[None] | None = None
        self.head = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if not self.head:
            self.head = data[:12]
        both = self.tail + data
        tokens = (both.count(b'"content":"') - both.count(b'"content":""')
                  - self.tail.count(b'"content":"') + self.tail.count(b'"content":""'))
        self.arrivals += [now] * tokens
        self.tail = both[-16:]
        if both.endswith(b"\r\n0\r\n\r\n") and self.done is not None:
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError(f"closed: {exc}"))

    async def stream(self, port: int, stream: str, at: float) -> tuple[float, list[float]]:
        """One stream sent at `at` (loop time): when it was sent, and its tokens' arrivals."""
        loop = asyncio.get_running_loop()
        if (wait := at - loop.time()) > 0:
            await asyncio.sleep(wait)
        self.arrivals, self.tail, self.head = [], b"", b""
        self.done = loop.create_future()
        sent = time.monotonic()
        body = BODY.replace(b"say:", f"{stream} say:".encode())  # no two prompts alike
        self.transport.write(
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"x-bench-stream: {stream}\r\n\r\n".encode() + body)
        try:
            await asyncio.wait_for(self.done, 60)
        except TimeoutError:
            raise RuntimeError(f"stream {stream} on port {port}: {len(self.arrivals)} tokens "
                               f"in 60 s, last bytes {self.tail!r}") from None
        assert self.head.startswith(b"HTTP/1.1 200"), self.head
        assert len(self.arrivals) == len(TEXT), (len(self.arrivals), port)
        return sent, self.arrivals


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


PACE = 0.02


async def paced(port: int, streams: int, start: str, name: str
                ) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """`streams` streams on as many kept-alive connections. `start`: `simultaneous` warms
    each connection with one stream, then sends every request at once (a burst of arrivals);
    `staggered` sends a lead stream on each evenly over one stream's length, then measures each
    connection's next stream, sent as the previous ends: the steady state of `streams`
    concurrent streams.
    Returns the figures and, per stream id, when its request was sent and its first token
    came (time.monotonic)."""
    loop = asyncio.get_running_loop()
    clients = []
    for _ in range(streams):
        _, client = await loop.create_connection(_LeanClient, "127.0.0.1", port)
        clients.append(client)
    if start == "simultaneous":  # (staggered: the lead streams warm the connections)
        await asyncio.gather(*(c.stream(port, f"warm-{i}", 0) for i, c in enumerate(clients)))
    spread = PACE * len(TEXT) / streams

    async def one(index: int, client: _LeanClient) -> tuple[float, list[float]]:
        if start == "simultaneous":
            return await client.stream(port, f"{name}-{index}", 0)
        await client.stream(port, f"lead-{index}", loop.time() + index * spread)
        return await client.stream(port, f"{name}-{index}", 0)

    results = await asyncio.gather(*(one(i, c) for i, c in enumerate(clients)))
    for client in clients:
        client.transport.close()
    ttft = [arrivals[0] - sent for sent, arrivals in results]
    gaps = [b - a for _, arrivals in results for a, b in itertools.pairwise(arrivals)]
    times = {f"{name}-{i}": (sent, arrivals[0]) for i, (sent, arrivals) in enumerate(results)}
    return ({"ttft_p50_ms": quantile(ttft, 0.5) * 1e3, "ttft_p99_ms": quantile(ttft, 0.99) * 1e3,
             "gap_p50_ms": quantile(gaps, 0.5) * 1e3, "gap_p99_ms": quantile(gaps, 0.99) * 1e3},
            times)


async def saturated(server: Server, streams: int, seconds: float,
                    sidecar: Server | None) -> dict[str, Any]:
    """Single-token chunks a second over `seconds` with `streams` streams always open."""
    chunks = 0
    failures: list[str] = []
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=streams)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def client() -> None:
            nonlocal chunks
            while time.perf_counter() < deadline:
                async with session.post(server.url, data=BODY,
                                        headers={"Content-Type": "application/json"}) as r:
                    if r.status != 200:
                        failures.append(f"{r.status} {(await r.read())[:200]!r}")
                        continue
                    async for data in r.content.iter_any():
                        chunks += data.count(b'"content"')
        cpu = sidecar.cpu_seconds() if sidecar else 0.0
        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(streams)))
        elapsed = time.perf_counter() - began
        cpu = (sidecar.cpu_seconds() - cpu) if sidecar else 0.0
    out: dict[str, Any] = {"chunks_per_s": chunks / elapsed}
    if failures:
        out["failures"] = len(failures)
        out["first_failure"] = failures[0]
    if sidecar:
        out["sidecar_cpu_us_per_chunk"] = cpu / chunks * 1e6
        out["per_core_chunks_per_s"] = chunks / cpu if cpu else 0.0
    return out


class _Content:
    """The model's stream in memory, `per_read` events a read (a loaded socket brings several)."""

    def __init__(self, per_read: int) -> None:
        events = [*EVENTS, END]
        self.parts = [b"".join(events[i:i + per_read]) for i in range(0, len(events), per_read)]

    async def readany(self) -> bytes:
        return self.parts.pop(0) if self.parts else b""


class _Sink:
    async def write(self, data: bytes) -> None:
        pass


async def relay_cpu(mode: str, per_read: int, rounds: int = 15) -> dict[str, float]:
    """Microseconds of CPU the relay's own code takes per chunk (no sockets, no HTTP: what a
    shared machine's scheduling cannot blur), best of five; the same with the events' other
    strings left unchecked (`streaming.OTHERS`), interleaved with it in this process (A/B)."""
    from hegui.api.generativeservice import Direction
    from hegui.moderation.client import RulesModerator
    from hegui.sidecar import families, streaming
    from hegui.sidecar.app import Sidecar
    from hegui.sidecar.config import SidecarConfig
    from hegui.sidecar.testing import posture

    config = SidecarConfig(posture(output={"streamWindowTokens": 64, "streaming": {
        "mode": mode, "firstWindowTokens": 4}}), upstream="http://127.0.0.1:9")
    sidecar = Sidecar(config, RulesModerator())
    await sidecar.moderate(["预热"], Direction.OUTPUT)  # the rules load their tables once
    best = {True: float("inf"), False: float("inf")}
    for round_ in range(6):
        for others in ((True, False) if round_ % 2 else (False, True)):  # either goes first
            streaming.OTHERS = others
            began = time.process_time()
            for _ in range(rounds):
                relay = streaming._Relay(
                    sidecar, families.get("chat"), _Sink(), None,  # type: ignore[arg-type]
                    retract=mode == "StreamThenRetract", merge=False, window=4, max_window=64,
                    overlap=config.stream_overlap_chars, hold=config.stream_max_hold_seconds,
                    keep=config.max_response_bytes)
                await relay.run(streaming.EventReader(
                    _Content(per_read), 1 << 20, "sse"))  # type: ignore[arg-type]
            best[others] = min(best[others], time.process_time() - began)
    streaming.OTHERS = True
    await sidecar.close()
    chunks = rounds * len(TEXT)
    return {"cpu_us_per_chunk": best[True] / chunks * 1e6,
            "cpu_us_per_chunk_other_strings_unchecked": best[False] / chunks * 1e6}


async def compare(args: argparse.Namespace) -> dict[str, Any]:
    """This checkout's sidecar against another's (`--compare-with`), both saturated at each of
    `--streams` in interleaved rounds (either first in turn), best of `--rounds`: the sidecar
    process's CPU a chunk, and the ratio of this checkout's chunks a CPU second to the other's
    (above 1: this one is cheaper). One model, one load generator, one machine, one run."""
    model = Server("model", "0")
    upstream = model.url.rsplit("/v1", 1)[0]
    report: dict[str, Any] = {}
    try:
        for mode in args.modes:
            sidecars = {"this": Server("sidecar", upstream, mode, "uvloop", "orjson"),
                        "other": Server("sidecar", upstream, mode, "uvloop", "orjson",
                                        source=args.compare_with)}
            try:
                for streams in args.streams:
                    best = {name: 0.0 for name in sidecars}
                    for round_ in range(args.rounds):
                        order = list(sidecars) if round_ % 2 == 0 else list(sidecars)[::-1]
                        for name in order:
                            measured = await saturated(sidecars[name], streams, args.seconds,
                                                       sidecars[name])
                            if measured.get("failures"):
                                raise RuntimeError(f"{name}: {measured['first_failure']}")
                            best[name] = max(best[name], measured["per_core_chunks_per_s"])
                    report[f"{mode} {streams} streams"] = {
                        "this_per_core_chunks_per_s": round(best["this"]),
                        "other_per_core_chunks_per_s": round(best["other"]),
                        "this_over_other": round(best["this"] / best["other"], 3)}
            finally:
                for server in sidecars.values():
                    server.stop()
    finally:
        model.stop()
    return report


STAGES = ("received", "body", "input", "upstream", "first_event", "first_out")


async def paced_run(args: argparse.Namespace) -> dict[str, Any]:
    """Paced upstream: the model directly, the bare relay, StreamThenRetract and Hold, in
    interleaved rounds (each round in a rotated order), each start (`--starts`); best of the
    rounds for each figure, and what each adds to the model called directly (and its ratio).
    With each, where the first token's time went (p50 over the measured streams, ms): from
    the request sent to each stage of the sidecar, to the model, and to the client."""
    trace_dir = Path(tempfile.mkdtemp(prefix="hegui-bench-"))

    def start(*spec: str, source: str | None = None) -> Server:
        os.environ["HEGUI_BENCH_TRACE"] = str(trace_dir / f"{spec[0]}-{len(servers)}.json")
        server = Server(*spec, source=source)
        server.trace = Path(os.environ.pop("HEGUI_BENCH_TRACE"))
        return server

    servers: dict[str, Server] = {}
    servers["direct"] = model = start("model", str(PACE))
    upstream = model.url.rsplit("/v1", 1)[0]
    servers["bare relay"] = start("relay", upstream)
    for mode in ("StreamThenRetract", "Hold"):
        servers[mode] = start("sidecar", upstream, mode, "uvloop", "orjson")
    if args.compare_with:  # the same in another checkout (before a change), same run
        for mode in ("StreamThenRetract", "Hold"):
            servers[f"{mode} (other)"] = start("sidecar", upstream, mode, "uvloop", "orjson",
                                               source=args.compare_with)
    report: dict[str, Any] = {}
    loads: list[float] = []
    try:
        for begin in args.starts:
            best: dict[str, dict[str, float]] = {}
            stages: dict[str, dict[str, list[float]]] = {}
            for round_ in range(args.paced_rounds):
                names = list(servers)
                names = names[round_ % len(names):] + names[:round_ % len(names)]
                for name in names:
                    loads.append(os.getloadavg()[0])
                    cpu = servers[name].cpu_seconds()
                    figures, times = await paced(servers[name].port, args.paced_streams, begin,
                                                 name.replace(" ", "_").lower())
                    # Its process's CPU a relayed token (lead or warm-up streams included): what
                    # decides whether it keeps up on a shared machine, which latency cannot show.
                    figures["cpu_us_per_token"] = (servers[name].cpu_seconds() - cpu) / (
                        2 * args.paced_streams * len(TEXT)) * 1e6
                    print(f"{begin} round {round_} {name}: " + ", ".join(
                        f"{k} {v:.1f}" for k, v in figures.items()), file=sys.stderr, flush=True)
                    for key, value in figures.items():
                        best.setdefault(name, {})[key] = min(
                            best.get(name, {}).get(key, float("inf")), value)
                    _stages(stages.setdefault(name, {}), times, servers[name],
                            model if name != "direct" else None)
            direct = best["direct"]
            for name, figures in best.items():
                if name != "direct":
                    for key in ("ttft_p50", "gap_p99"):
                        figures[f"added_{key}_ms"] = figures[f"{key}_ms"] - direct[f"{key}_ms"]
                        figures[f"{key}_ratio"] = figures[f"{key}_ms"] / direct[f"{key}_ms"]
                shown: dict[str, Any] = {k: round(v, 3 if k.endswith("ratio") else 1)
                                         for k, v in figures.items()}
                shown["first token, p50 ms from the request sent"] = {
                    stage: round(quantile(values, 0.5) * 1e3, 1)
                    for stage, values in stages[name].items() if values}
                report[f"paced {begin} {name}"] = shown
    finally:
        for server in servers.values():
            server.stop()
    report["paced: 1-minute load average during the runs"] = (
        f"{min(loads):.1f} to {max(loads):.1f}")
    return report


def _stages(into: dict[str, list[float]], times: dict[str, tuple[float, float]],
            server: Server, model: Server | None) -> None:
    """The processes' stage times (SIGUSR1: `_dump_on_signal`) of the streams just measured,
    relative to when each request was sent."""
    traces = {}
    for who in ([server, model] if model else [server]):
        if who.trace is None:
            continue
        who.trace.unlink(missing_ok=True)
        who.process.send_signal(signal.SIGUSR1)
        for _ in range(200):
            if who.trace.exists():
                break
            time.sleep(0.01)
        traces[who] = json.loads(who.trace.read_text()) if who.trace.exists() else {}
    for stream, (sent, first) in times.items():
        if model is not None and stream in traces.get(server, {}):
            for stage, at in traces[server][stream].items():
                into.setdefault(f"sidecar {stage}", []).append(at - sent)
        if model is not None and stream in traces.get(model, {}):
            into.setdefault("model: request parsed", []).append(
                traces[model][stream][0] - sent)
            into.setdefault("model: first token written", []).append(
                traces[model][stream][1] - sent)
        elif model is None and stream in traces.get(server, {}):
            into.setdefault("model: first token written", []).append(
                traces[server][stream][1] - sent)
        into.setdefault("client: first token read", []).append(first - sent)


async def main(args: argparse.Namespace) -> None:
    report: dict[str, Any] = {"machine": f"{os.cpu_count()} cores, shared (load average "
                                         f"{os.getloadavg()[0]:.1f} at start)"}
    if args.compare_with and not args.paced_only:
        report |= await compare(args)
        report["load average at end"] = round(os.getloadavg()[0], 1)
        print(json.dumps(report, indent=1, ensure_ascii=False))
        return
    # the relay's own code, lexicon and personal information on: CPU a chunk, 1 and 8 events a read
    for mode in ("StreamThenRetract", "Hold") if not args.paced_only else ():
        for per_read in (1, 8):
            micros = await relay_cpu(mode, per_read)
            report[f"relay code {mode} {per_read} events a read"] = {
                **micros, "per_core_chunks_per_s": 1e6 / micros["cpu_us_per_chunk"],
                "other_strings_cost_ratio": (micros["cpu_us_per_chunk"]
                                             / micros["cpu_us_per_chunk_other_strings_unchecked"])}
    if args.relay_only:
        print(json.dumps(report, indent=1, ensure_ascii=False))
        return
    # paced upstream
    report |= await paced_run(args)
    if args.paced_only:
        report["load average at end"] = round(os.getloadavg()[0], 1)
        print(json.dumps(report, indent=1, ensure_ascii=False))
        return
    # saturated upstream
    model = Server("model", "0")
    upstream = model.url.rsplit("/v1", 1)[0]
    relay_server = Server("relay", upstream)
    variants = {"StreamThenRetract uvloop orjson": ("StreamThenRetract", "uvloop", "orjson"),
                "Hold uvloop orjson": ("Hold", "uvloop", "orjson")}
    if not args.quick:
        variants |= {"StreamThenRetract asyncio json": ("StreamThenRetract", "asyncio", "json"),
                     "StreamThenRetract asyncio orjson": ("StreamThenRetract", "asyncio",
                                                          "orjson"),
                     "StreamThenRetract uvloop json": ("StreamThenRetract", "uvloop", "json")}
    servers = {name: Server("sidecar", upstream, *spec) for name, spec in variants.items()}
    try:
        for streams in args.streams:
            direct = await saturated(model, streams, args.seconds, None)
            report[f"saturated {streams} direct"] = direct
            bare = await saturated(relay_server, streams, args.seconds, relay_server)
            bare["ratio_to_direct"] = bare["chunks_per_s"] / direct["chunks_per_s"]
            report[f"saturated {streams} bare relay"] = bare
            for name, server in servers.items():
                if streams != 128 and "uvloop orjson" not in name:
                    continue  # the loop and JSON choice is measured at 128 streams
                measured = await saturated(server, streams, args.seconds, server)
                measured["ratio_to_direct"] = measured["chunks_per_s"] / direct["chunks_per_s"]
                report[f"saturated {streams} {name}"] = measured
    finally:
        for server in [model, relay_server, *servers.values()]:
            server.stop()
    report["load average at end"] = round(os.getloadavg()[0], 1)
    print(json.dumps(report, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve_main(sys.argv[2:])
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--paced-streams", type=int, default=64)
    parser.add_argument("--streams", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 32, 128, 256])
    parser.add_argument("--paced-rounds", type=int, default=2)
    parser.add_argument("--starts", type=lambda s: s.split(","),
                        default=["staggered", "simultaneous"],
                        help="paced: when the streams' requests are sent (paced())")
    parser.add_argument("--paced-only", action="store_true")
    parser.add_argument("--quick", action="store_true", help="skip the loop and JSON variants")
    parser.add_argument("--relay-only", action="store_true",
                        help="only the relay's own CPU a chunk, in-process (a noisy machine)")
    parser.add_argument("--compare-with", metavar="SIDECARS_DIR",
                        help="A/B: this checkout's sidecar against the one in another "
                             "checkout's sidecars/ folder, saturated (--streams, --rounds)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of --compare-with")
    parser.add_argument("--modes", type=lambda s: s.split(","),
                        default=["StreamThenRetract", "Hold"], help="modes of --compare-with")
    arguments = parser.parse_args()
    import uvloop

    uvloop.install()  # the load generator must not be what limits the figures
    asyncio.run(main(arguments))
