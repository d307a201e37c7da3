"""Sidecar benchmark: latency the moderation sidecar adds over calling the model server
directly, and the Triton models' throughput with dynamic batching, all in one run (the machine is
shared and noisy, so compare figures of the same run only).

    .venv/bin/python bench/sidecar.py [--seconds 5] [--clients 1,64]

Each server runs in its own process: the fake model server (answers at once), the sidecar with
no moderation (the proxy alone), the sidecar with lexicon+PI in Triton (the `moderation`
ensemble), and tritonserver. A non-streamed chat completion is sent by N concurrent clients.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from hegui.api.generativeservice import TritonEndpoint
from hegui.moderation.client import TritonModerator
from hegui.moderation.tritonserver import TritonServer, free_port

HERE = Path(__file__).resolve().parent
BODY = json.dumps({"model": "fake", "messages": [{"role": "user", "content":
                   "say:请介绍一下北京的历史以及它在中国文化中的地位。电话13812345678"}]}).encode()


def start(*args: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, str(HERE / "sidecar_server.py"), *args],
                               stdout=subprocess.PIPE)
    assert process.stdout is not None
    if process.stdout.readline().strip() != b"ready":
        raise RuntimeError(f"{args[0]} did not start")
    return process


async def load(url: str, clients: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        async def client() -> None:
            nonlocal failures
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                async with session.post(url, data=BODY,
                                        headers={"Content-Type": "application/json"}) as r:
                    await r.read()
                    failures += r.status != 200
                latencies.append(time.perf_counter() - began)
        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    return {"requests": len(latencies), "failures": failures, "rps": len(latencies) / elapsed,
            "p50_ms": latencies[len(latencies) // 2] * 1000,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000}


async def triton_throughput(server: TritonServer, model: str, seconds: float) -> dict[str, float]:
    """Texts a second from one client at a time (batch 1) and from 64 at once (batched)."""
    moderator = TritonModerator(TritonEndpoint(address=server.grpc_url, model=model), 10.0)
    out: dict[str, float] = {}
    try:
        for clients in (1, 64):
            done = 0
            deadline = time.perf_counter() + seconds

            async def client(deadline: float = deadline) -> None:
                nonlocal done
                while time.perf_counter() < deadline:
                    await moderator.moderate(["请介绍一下北京的历史。电话13812345678"])
                    done += 1
            began = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(clients)))
            out[f"texts_per_s_{clients}"] = done / (time.perf_counter() - began)
    finally:
        await moderator.close()
    out["batching_gain"] = out["texts_per_s_64"] / out["texts_per_s_1"]
    return out


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", default="1,64")
    args = parser.parse_args()
    triton = TritonServer().start()
    ports = [free_port() for _ in range(3)]
    processes = [start("model", str(ports[0]))]
    upstream = f"http://127.0.0.1:{ports[0]}"
    processes.append(start("sidecar", str(ports[1]), upstream, "none"))
    processes.append(start("sidecar", str(ports[2]), upstream, "triton", triton.grpc_url,
                           "moderation"))
    try:
        results: dict[str, object] = {}
        for clients in (int(c) for c in args.clients.split(",")):
            for name, port in (("direct", ports[0]), ("proxy_only", ports[1]),
                               ("lexicon_pii", ports[2])):
                results[f"{name}@{clients}"] = await load(
                    f"http://127.0.0.1:{port}/v1/chat/completions", clients, args.seconds)
            direct = results[f"direct@{clients}"]
            for name in ("proxy_only", "lexicon_pii"):
                measured = results[f"{name}@{clients}"]
                assert isinstance(direct, dict) and isinstance(measured, dict)
                results[f"added_{name}@{clients}"] = {
                    "p50_ms": measured["p50_ms"] - direct["p50_ms"],
                    "p99_ms": measured["p99_ms"] - direct["p99_ms"]}
        for model in ("lexicon", "pii", "moderation"):
            results[f"triton_{model}"] = await triton_throughput(triton, model, args.seconds)
        print(json.dumps(results, indent=1))
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)
        triton.stop()


if __name__ == "__main__":
    asyncio.run(main())
