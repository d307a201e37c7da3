# ruff: noqa: S311 (random choice of texts, not secrets)
"""Classifier benchmark: texts per second through a real tritonserver at batch 1 (one caller,
one text a request, as one sidecar moderating one window) against batched (many concurrent
callers, each one text a request, so Triton's dynamic batcher forms batches across them, as it
does across sidecars), and against one caller sending whole batches; all in one run, as ratios
(the machine is shared and noisy, so compare figures of the same run only).

    .venv/bin/python bench/classifier.py [--seconds 10] [--callers 32] [--batch 32]

The model is the one `hegui moderation train` writes, trained here on hegui's generated
labelled set over the 31 risks (hegui.moderation.classifier.synthetic_examples).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path

from hegui.api.generativeservice import TritonEndpoint
from hegui.moderation.classifier import CARRIERS, export_text, synthetic_examples
from hegui.moderation.client import TritonModerator
from hegui.moderation.quality import chinese_phrases
from hegui.moderation.tritonserver import TritonServer


async def rate(endpoint: TritonEndpoint, texts: list[str], *, callers: int, batch: int,
               seconds: float) -> dict[str, float]:
    """Texts per second with `callers` concurrent clients, each sending `batch` texts a request,
    and the mean request latency."""
    moderators = [TritonModerator(endpoint, timeout=60.0) for _ in range(callers)]
    rng = random.Random(0)
    done = 0
    latencies: list[float] = []

    async def caller(moderator: TritonModerator, until: float) -> None:
        nonlocal done
        while time.perf_counter() < until:
            started = time.perf_counter()
            await moderator.moderate([rng.choice(texts) for _ in range(batch)])
            latencies.append(time.perf_counter() - started)
            done += batch

    try:
        # Warm every connection first (the first call reads the model's metadata).
        await asyncio.gather(*(m.moderate(texts[:1]) for m in moderators))
        started = time.perf_counter()
        await asyncio.gather(*(caller(m, started + seconds) for m in moderators))
        elapsed = time.perf_counter() - started
    finally:
        for moderator in moderators:
            await moderator.close()
    return {"texts_per_s": round(done / elapsed, 1),
            "latency_ms": round(1000 * sum(latencies) / max(len(latencies), 1), 2)}


async def execution_count(server: TritonServer) -> tuple[int, int]:
    import tritonclient.grpc.aio as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        stats = await client.get_inference_statistics("classifier", as_json=True)
    finally:
        await client.close()
    model = stats["model_stats"][0]
    return int(model.get("inference_count", 0)), int(model.get("execution_count", 0))


async def measure(server: TritonServer, texts: list[str], args: argparse.Namespace
                  ) -> dict[str, dict[str, float]]:
    endpoint = TritonEndpoint(address=server.grpc_url, model="classifier")
    rows: dict[str, dict[str, float]] = {}
    for name, callers, batch in (("batch1_one_caller", 1, 1),
                                 ("dynamic_batching", args.callers, 1),
                                 ("client_batches", 1, args.batch)):
        before = await execution_count(server)
        rows[name] = await rate(endpoint, texts, callers=callers, batch=batch,
                                seconds=args.seconds)
        after = await execution_count(server)
        executions = max(after[1] - before[1], 1)
        rows[name]["mean_batch"] = round((after[0] - before[0]) / executions, 1)
        rows[name]["callers"], rows[name]["texts_per_request"] = callers, batch
        print(json.dumps({name: rows[name]}), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    texts = [e.text for e in synthetic_examples(CARRIERS[4:])] + chinese_phrases(500, seed=7)
    with tempfile.TemporaryDirectory(prefix="hegui-bench-classifier-") as work:
        repository = Path(work)
        started = time.perf_counter()
        export_text(synthetic_examples(CARRIERS[:4], chinese_phrases(500)), repository,
                    epochs=40)
        print(f"trained and exported in {time.perf_counter() - started:.1f}s", flush=True)
        server = TritonServer(model_repository=repository).start(timeout=300)
        try:
            rows = asyncio.run(measure(server, texts, args))
        finally:
            server.stop()
    base = rows["batch1_one_caller"]["texts_per_s"]
    print("\nratios against batch 1, one caller (same run):")
    for name in ("dynamic_batching", "client_batches"):
        print(f"  {name:<18} {rows[name]['texts_per_s'] / base:5.1f}x "
              f"(mean batch {rows[name]['mean_batch']})")


if __name__ == "__main__":
    main()
