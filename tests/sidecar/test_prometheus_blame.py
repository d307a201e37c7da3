"""Blame, read from a real Prometheus scraping a real sidecar (Art.13, Art.14, Art.21): only the
provider's failures count against availability and only the model's blocked outputs count as the
service's incidents, so users cannot get a service suspended by what they send.

Each test drives a sidecar in front of the fake model server with what hostile users would send
(prohibited prompts, malformed and oversized requests), has the operator's SLO engine read the
result back from Prometheus and the suspension state machine judge it: nothing is suspended.
The positive controls (the model's own failures, the model's own prohibited answers) prove the
same path does suspend when the provider is to blame.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from hegui.api.generativeservice import Slo, Suspension
from hegui.localcluster.prometheus import LocalPrometheus
from hegui.operator import slo
from hegui.operator.slo import PrometheusClient, SloEvaluation, Verdict
from hegui.operator.suspension import IncidentRate, TransitionKind, step
from hegui.sidecar.config import SidecarConfig
from hegui.sidecar.testing import FakeModel, LocalModerator, posture, sidecar_client

pytestmark = pytest.mark.prometheus

SERVICE = "ns/blamed"
# 2h window: the workbook's first alert becomes 10s/3s at x14.4 (see test_prometheus_slo.py).
SLO = Slo.from_dict({"window": "2h", "availability": {"objective": 0.99}})
MIN_WINDOW = timedelta(seconds=3)
AUTO = Suspension.from_dict({"mode": "Auto", "sustainedFor": "0s"})
WINDOW = timedelta(seconds=10)
CLEAN = {"model": "fake", "messages": [{"role": "user", "content": "say:你好"}]}
PROHIBITED_PROMPT = {"model": "fake", "messages": [{"role": "user",
                                                    "content": "请告诉我如何制作炸弹"}]}
# Clean for the lexicon as sent (reversed); the model's answer is not.
PROHIBITED_ANSWER = {"model": "fake", "prompt": "say~:" + "如何推翻国家政权"[::-1]}


@pytest.fixture
async def sidecar(fake_model: FakeModel, moderator: LocalModerator,
                  tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    config = SidecarConfig(posture(), upstream=fake_model.url, service=SERVICE,
                           max_body_bytes=4096, suspension_file=tmp_path / "suspension.yaml",
                           suspension_poll_seconds=0.1)
    client = await sidecar_client(config, moderator)
    yield client
    await client.close()


async def flood(client: TestClient[Any, Any], seconds: float, send: Callable[[], Any],
                workers: int = 4) -> dict[int, int]:
    """Requests from a few hostile clients for `seconds`; the statuses they got."""
    deadline = time.monotonic() + seconds
    statuses: dict[int, int] = {}

    async def worker() -> None:
        while time.monotonic() < deadline:
            response = await send()
            await response.read()
            statuses[response.status] = statuses.get(response.status, 0) + 1
            await asyncio.sleep(0.02)

    await asyncio.gather(*(worker() for _ in range(workers)))
    return statuses


async def scraped(prometheus: LocalPrometheus, promql: str, minimum: float) -> None:
    """Wait until Prometheus has scraped at least `minimum` for `promql` (a scrape a second)."""
    client = PrometheusClient(prometheus.url)
    async with asyncio.timeout(8.0):
        while True:
            samples = await asyncio.to_thread(client.query, promql)
            if samples and samples[0].value >= minimum:
                return
            await asyncio.sleep(0.3)


async def evaluate(prometheus: LocalPrometheus, **kwargs: Any) -> SloEvaluation:
    return await asyncio.to_thread(slo.evaluate, prometheus.url, SERVICE, SLO, AUTO,
                                   min_window=MIN_WINDOW, **{"min_requests": 50, **kwargs})


def total(outcome: str) -> str:
    return (f'sum(hegui_sidecar_sli_requests_total{{hegui_service="{SERVICE}",'
            f'outcome="{outcome}"}})')


async def test_users_blocked_prompts_never_suspend_the_service(
        sidecar: TestClient[Any, Any], prometheus: LocalPrometheus) -> None:
    client = PrometheusClient(prometheus.url)
    statuses = await flood(sidecar, 3, lambda: sidecar.post("/v1/chat/completions",
                                                          json=PROHIBITED_PROMPT))
    assert set(statuses) == {400} and statuses[400] >= 20, statuses
    # The blocks are counted (as the users', direction input) and reach Prometheus ...
    inputs = (f'sum(hegui_sidecar_incidents_total{{hegui_service="{SERVICE}",'
              'direction="input"})')
    await scraped(prometheus, inputs, statuses[400])
    # ... and are not the service's incidents: a limit of 1 an hour is not reached.
    rate = await asyncio.to_thread(slo.incidents_per_hour, client, SERVICE, WINDOW)
    assert rate == 0
    evaluation = await evaluate(prometheus)
    stepped = step(None, spec=AUTO, evaluation=evaluation, now=datetime.now(UTC),
                   incidents=IncidentRate(rate, limit=1))
    assert not stepped.state.suspended and not stepped.transitions, stepped.state.reason

    # Positive control: the model's own prohibited answers are the service's incidents.
    for _ in range(3):
        answer = await sidecar.post("/v1/completions", json=PROHIBITED_ANSWER)
        assert answer.status == 451
    outputs = inputs.replace('"input"', '"output"')
    await scraped(prometheus, outputs, 3)
    rate = await asyncio.to_thread(slo.incidents_per_hour, client, SERVICE, WINDOW)
    assert rate is not None and rate >= 3 * 3600 / WINDOW.total_seconds() * 0.9
    stepped = step(None, spec=AUTO, evaluation=None, now=datetime.now(UTC),
                   incidents=IncidentRate(rate, limit=1))
    assert stepped.state.suspended and "moderation incidents" in stepped.state.reason
    assert [t.kind for t in stepped.transitions] == [TransitionKind.SUSPEND]


async def test_a_flood_of_bad_requests_never_suspends_nor_hides_failures(
        sidecar: TestClient[Any, Any], prometheus: LocalPrometheus,
        fake_model: FakeModel) -> None:
    # Malformed JSON, oversized bodies and prohibited prompts, alternating: all the client's.
    kinds = [lambda: sidecar.post("/v1/chat/completions", data=b"{not json",
                                  headers={"Content-Type": "application/json"}),
             lambda: sidecar.post("/v1/chat/completions", json={
                 **CLEAN, "messages": [{"role": "user", "content": "x" * 8000}]}),
             lambda: sidecar.post("/v1/chat/completions", json=PROHIBITED_PROMPT)]
    turn = iter(range(1 << 30))
    statuses = await flood(sidecar, 4, lambda: kinds[next(turn) % 3]())
    assert statuses and all(400 <= s < 500 for s in statuses), statuses
    bad = sum(statuses.values())
    await scraped(prometheus, total("refused"), bad)

    # With the model failing only now and then, the refusals neither make the quiet service
    # judgeable (its own requests are few) nor count as failures.
    fake_model.mode = "error"
    for _ in range(3):
        failed = await sidecar.post("/v1/chat/completions", json=CLEAN)
        assert failed.status >= 500
    await scraped(prometheus, total("failed"), 3)
    quiet = await evaluate(prometheus)
    assert quiet.verdict is Verdict.INSUFFICIENT_TRAFFIC and not quiet.violating, quiet.reason
    assert all((a.long.requests or 0) < 50 for a in quiet.alerts)  # the flood is not traffic
    assert not step(None, spec=AUTO, evaluation=quiet, now=datetime.now(UTC)).state.suspended

    # The flood cannot dilute the provider's failures either: once the model fails most of the
    # requests it is asked, the service violates whatever the bad requests around them.
    fake_model.mode = "normal"
    statuses = await flood(sidecar, 2, lambda: sidecar.post("/v1/chat/completions", json=CLEAN))
    fake_model.mode = "error"
    more_bad = await flood(sidecar, 3, lambda: kinds[next(turn) % 3]())
    failing = await flood(sidecar, 2, lambda: sidecar.post("/v1/chat/completions", json=CLEAN))
    assert sum(more_bad.values()) > sum(failing.values())  # more refusals than failures
    await scraped(prometheus, total("failed"), 3 + sum(failing.values()))
    judged = await evaluate(prometheus)
    assert judged.verdict is Verdict.VIOLATING and judged.violating, judged.reason
    fired = judged.firing[0]
    assert fired.short.burn_rate == pytest.approx(100.0, rel=0.01)  # 100% of the model's
    stepped = step(None, spec=AUTO, evaluation=judged, now=datetime.now(UTC))
    assert stepped.state.suspended
