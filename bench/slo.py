"""SLO engine benchmark (Art.13, Art.21): time from a breach to a Violating verdict against the
arithmetic of the burn-rate windows, and the cost of one evaluation against the cheapest query
the same Prometheus answers, all in one run (the machine is shared and noisy, so compare figures
of the same run only).

    .venv/bin/python bench/slo.py [--window 2h] [--evaluations 20]

A real Prometheus (Debian's package, 1s scrape) scrapes a real sidecar in front of a model
server made here; traffic runs healthy, then the model fails every request, and `slo.evaluate`
is polled until it says Violating. The prediction is `slo.detection_time` of the first alert
(scaled windows), plus up to one scrape interval before Prometheus sees a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from datetime import timedelta
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from hegui.api.generativeservice import Slo
from hegui.localcluster.prometheus import LocalPrometheus
from hegui.operator import slo
from hegui.sidecar.config import SidecarConfig
from hegui.sidecar.testing import FakeModel, LocalModerator, posture, sidecar_client

SERVICE = "bench/chat"
CHAT = {"model": "fake", "messages": [{"role": "user", "content": "say:你好"}]}
MIN_WINDOW = timedelta(seconds=3)


async def traffic(client: Any, stop: asyncio.Event, workers: int = 4) -> None:
    async def worker() -> None:
        while not stop.is_set():
            await (await client.post("/v1/chat/completions", json=CHAT)).read()
            await asyncio.sleep(0.02)

    await asyncio.gather(*(worker() for _ in range(workers)))


async def run(window: str, evaluations: int) -> None:
    model = FakeModel()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", model.handle)
    upstream = TestServer(app, host="127.0.0.1")
    await upstream.start_server()
    model.url = str(upstream.make_url("")).rstrip("/")
    client = await sidecar_client(SidecarConfig(posture(), upstream=model.url, service=SERVICE),
                                  LocalModerator())
    prometheus = LocalPrometheus([f"127.0.0.1:{client.server.port}"])
    await asyncio.to_thread(prometheus.start)
    stop = asyncio.Event()
    load = asyncio.ensure_future(traffic(client, stop))
    try:
        await asyncio.to_thread(prometheus.wait_for_targets)
        spec = Slo.from_dict({"window": window, "availability": {"objective": 0.99}})
        alerts, _ = slo.alerts_for(spec, None, min_window=MIN_WINDOW)
        await asyncio.sleep(max(a.long for a in alerts).total_seconds() / 2)

        def evaluate() -> slo.SloEvaluation:
            return slo.evaluate(prometheus.url, SERVICE, spec, min_requests=20,
                                min_window=MIN_WINDOW)

        query = slo.PrometheusClient(prometheus.url)
        cheap, full = [], []
        for _ in range(evaluations):
            started = time.perf_counter()
            await asyncio.to_thread(query.query, "vector(1)")
            cheap.append(time.perf_counter() - started)
            started = time.perf_counter()
            result = await asyncio.to_thread(evaluate)
            full.append(time.perf_counter() - started)
        assert result.verdict is slo.Verdict.HEALTHY, result.reason

        model.mode = "error"
        breach = time.perf_counter()
        violating = slo.Verdict.VIOLATING
        while (await asyncio.to_thread(evaluate)).verdict is not violating:  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # polling is what the operator does too
        detected = time.perf_counter() - breach
        predicted = min(t for a in alerts if (t := slo.detection_time(a, 0.99)) is not None)
        print(f"window {window}: alerts {', '.join(a.name for a in alerts)}")
        print(f"evaluation (2 queries, {len({w for a in alerts for w in (a.long, a.short)})} "
              f"windows): median {statistics.median(full) * 1000:.1f} ms, "
              f"{statistics.median(full) / statistics.median(cheap):.1f}x the cheapest query "
              f"({statistics.median(cheap) * 1000:.1f} ms)")
        print(f"breach to Violating: {detected:.2f}s; windows predict "
              f"{predicted.total_seconds():.2f}s + up to 1s of scrape: "
              f"{detected / (predicted.total_seconds() + 1):.2f}x the prediction")
    finally:
        stop.set()
        await load
        await asyncio.to_thread(prometheus.stop)
        await client.close()
        await upstream.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window", default="2h", help="the declared SLO window (scaled alerts)")
    parser.add_argument("--evaluations", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(run(args.window, args.evaluations))


if __name__ == "__main__":
    main()
