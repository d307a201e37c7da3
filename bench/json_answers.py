"""JSON answers benchmark (issue 14): the sidecar's CPU to relay a large non-generative answer
(embeddings, tokenize), moderated as it streams (hegui.sidecar.json_scan), against another
checkout's sidecar in the same run (the machine is shared and noisy: read the ratio).

    .venv/bin/python bench/json_answers.py --compare-with /tmp/old/sidecars [--rounds 3]

Each server runs in its own process: a model that answers `/v1/embeddings` with a prebuilt
answer of `--items` embeddings of `--dims` floats (about 40 MB by default) and `/tokenize` with
`--tokens` token strings, written in 64 KiB pieces; a sidecar of this checkout and one of the
other (`PYTHONPATH` first), both with the lexicon and personal-information rules in-process
(RulesModerator). Each round fetches each answer through each sidecar, interleaved; the figure
is the sidecar process's CPU time for one answer (utime + stime from /proc), best of the rounds,
and at the end each sidecar's peak resident memory.

    python bench/json_answers.py serve model PORT ITEMS DIMS TOKENS
    python bench/json_answers.py serve sidecar PORT UPSTREAM
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve()
TICK = os.sysconf("SC_CLK_TCK")


def embeddings_answer(items: int, dims: int) -> bytes:
    data = [{"object": "embedding", "index": i,
             "embedding": [round(((i * 31 + j) % 97) / 97 - 0.5, 8) for j in range(dims)]}
            for i in range(items)]
    return json.dumps({"object": "list", "data": data, "model": "bge-m3",
                       "usage": {"prompt_tokens": items, "total_tokens": items}}).encode()


def tokenize_answer(tokens: int) -> bytes:
    words = ["北京", "的", "历史", " the", " history", " of", "\uff0c", " 2024", "年"]
    strings = [words[i % len(words)] for i in range(tokens)]
    return json.dumps({"count": tokens, "max_model_len": 1 << 20,
                       "tokens": list(range(tokens)), "token_strs": strings},
                      ensure_ascii=False).encode()


async def serve(argv: list[str]) -> None:
    from aiohttp import web

    role, port = argv[0], int(argv[1])
    if role == "model":
        answers = {"/v1/embeddings": embeddings_answer(int(argv[2]), int(argv[3])),
                   "/tokenize": tokenize_answer(int(argv[4]))}

        async def answer(request: web.Request) -> web.StreamResponse:
            await request.read()
            body = answers[request.path]
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            for at in range(0, len(body), 1 << 16):
                await response.write(body[at:at + (1 << 16)])
            await response.write_eof()
            return response

        app = web.Application(client_max_size=1 << 20)
        for path in answers:
            app.router.add_post(path, answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
    else:
        from hegui.moderation.client import RulesModerator
        from hegui.sidecar.app import Sidecar
        from hegui.sidecar.app import serve as serve_sidecar
        from hegui.sidecar.config import SidecarConfig
        from hegui.sidecar.testing import posture

        config = SidecarConfig(posture(), upstream=argv[2], max_response_bytes=64 << 20)
        runner = await serve_sidecar(Sidecar(config, RulesModerator()), "127.0.0.1", port)
    print("ready", flush=True)
    await asyncio.Event().wait()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start(*args: str, source: str | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": f"{source}:{os.environ.get('PYTHONPATH', '')}"} \
        if source else None
    process = subprocess.Popen([sys.executable, str(HERE), "serve", *args],
                               stdout=subprocess.PIPE, env=env)
    assert process.stdout is not None
    if process.stdout.readline().strip() != b"ready":
        raise RuntimeError(f"{args[0]} did not start")
    return process


def cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def peak(pid: int) -> int:
    """The process's peak resident memory, KiB: nothing buffered whole keeps it far below an
    answer's size."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


async def fetch(session: aiohttp.ClientSession, url: str) -> bytes:
    async with session.post(url, json={"model": "m", "input": "x", "prompt": "x"}) as response:
        body = await response.read()
        if response.status != 200:
            raise RuntimeError(f"{url}: {response.status} {body[:200]!r}")
        return body


async def measure(args: argparse.Namespace) -> None:
    model_port = free_port()
    processes = [start("model", str(model_port), str(args.items), str(args.dims),
                       str(args.tokens))]
    upstream = f"http://127.0.0.1:{model_port}"
    sidecars: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
    for name, source in (("this", None), ("other", args.compare_with)):
        if name == "other" and not source:
            continue
        port = free_port()
        process = start("sidecar", str(port), upstream, source=source)
        processes.append(process)
        sidecars[name] = (port, process)
    try:
        timeout = aiohttp.ClientTimeout(total=600)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for path in ("/v1/embeddings", "/tokenize"):
                direct = await fetch(session, f"{upstream}{path}")
                best: dict[str, float] = {}
                walls: dict[str, float] = {}
                for _ in range(args.rounds):
                    for name, (port, process) in sidecars.items():
                        before, started = cpu(process.pid), time.perf_counter()
                        body = await fetch(session, f"http://127.0.0.1:{port}{path}")
                        wall = time.perf_counter() - started
                        used = cpu(process.pid) - before
                        if body != direct:
                            raise RuntimeError(f"{name}: the answer on {path} changed")
                        best[name] = min(best.get(name, used), used)
                        walls[name] = min(walls.get(name, wall), wall)
                size = len(direct) / 1e6
                print(f"{path}: {size:.1f} MB answer, load average "
                      f"{os.getloadavg()[0]:.1f}")
                for name in sidecars:
                    print(f"  {name:6s} sidecar CPU {best[name]:.3f} s an answer "
                          f"({size / max(best[name], 1e-9):.0f} MB/s of CPU), "
                          f"wall {walls[name]:.3f} s")
                if "other" in best:
                    print(f"  CPU ratio this/other: {best['this'] / max(best['other'], 1e-9):.2f}")
            for name, (_, process) in sidecars.items():
                print(f"{name} sidecar's peak memory (VmHWM): {peak(process.pid) / 1024:.0f} MiB")
    finally:
        for process in processes:
            process.terminate()
            process.wait()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        asyncio.run(serve(sys.argv[2:]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare-with", metavar="SIDECARS_DIR",
                        help="another checkout's sidecars/ directory (the baseline)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--items", type=int, default=2048)
    parser.add_argument("--dims", type=int, default=1024)
    parser.add_argument("--tokens", type=int, default=200_000)
    asyncio.run(measure(parser.parse_args()))


if __name__ == "__main__":
    main()
