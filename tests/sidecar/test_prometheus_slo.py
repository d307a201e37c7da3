"""The SLO engine against real parts (Art.13, Art.21): a real Prometheus (Debian's package)
scraping a real sidecar every second, in front of a model server made here that can be switched
to fail. No Kubernetes cluster is needed.

The declared window is 2h, so the workbook's alerts scale by 2h/720h = 1/360:
1h/5m x14.4 becomes 10s/0.83s and 6h/30m x6 becomes 60s/5s; the 0.83s short window is raised to
`min_window`, 3s (three scrapes). With the model failing every request the error ratio is 100%,
a burn rate of 100x against a 1% budget: both windows of the first alert pass 14.4x as soon as
a scrape has seen the failures in its 3s window, which this test waits for explicitly.
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
from hegui.operator.slo import Objective, PrometheusClient, SloEvaluation, Verdict
from hegui.operator.suspension import TransitionKind, step
from hegui.sidecar.config import SidecarConfig
from hegui.sidecar.suspension import SuspensionNotice
from hegui.sidecar.testing import FakeModel, LocalModerator, posture, sidecar_client

pytestmark = pytest.mark.prometheus

SERVICE = "ns/chat"
SLO = Slo.from_dict({"window": "2h", "availability": {"objective": 0.99},
                     "latency": {"threshold": "1s", "objective": 0.9}})
MIN_WINDOW = timedelta(seconds=3)
CHAT = {"model": "fake", "messages": [{"role": "user", "content": "say:你好"}]}


@pytest.fixture
async def sidecar(fake_model: FakeModel, moderator: LocalModerator,
                  tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    config = SidecarConfig(posture(), upstream=fake_model.url, service=SERVICE,
                           latency_threshold=1.0, suspension_file=tmp_path / "suspension.yaml",
                           suspension_poll_seconds=0.1)
    client = await sidecar_client(config, moderator)
    yield client
    await client.close()


async def drive(client: TestClient[Any, Any], seconds: float, workers: int = 4) -> int:
    """Chat requests from a few clients for `seconds`; how many were sent."""
    deadline = time.monotonic() + seconds
    sent = 0

    async def worker() -> None:
        nonlocal sent
        while time.monotonic() < deadline:
            response = await client.post("/v1/chat/completions", json=CHAT)
            await response.read()
            sent += 1
            await asyncio.sleep(0.03)

    await asyncio.gather(*(worker() for _ in range(workers)))
    return sent


async def wait_for(condition: Callable[[], bool]) -> None:
    """Wait for Prometheus to see something (a scrape a second)."""
    async with asyncio.timeout(5.0):
        while not await asyncio.to_thread(condition):  # noqa: ASYNC110 (polling Prometheus)
            await asyncio.sleep(0.3)


async def evaluate(prometheus: LocalPrometheus, service: str = SERVICE,
                   suspension: Suspension | None = None, **kwargs: Any) -> SloEvaluation:
    return await asyncio.to_thread(slo.evaluate, prometheus.url, service, SLO, suspension,
                                   min_window=MIN_WINDOW, **{"min_requests": 50, **kwargs})


async def test_burn_rates_from_a_real_prometheus(sidecar: TestClient[Any, Any],
                                                 prometheus: LocalPrometheus,
                                                 fake_model: FakeModel, tmp_path: Path) -> None:
    alerts, _ = slo.alerts_for(SLO, None, min_window=MIN_WINDOW)
    assert [(a.long.total_seconds(), a.short.total_seconds()) for a in alerts] == [
        (10, 3), (60, 5)]

    # Healthy: a model that answers.
    await drive(sidecar, 6)
    healthy = await evaluate(prometheus)
    assert healthy.verdict is Verdict.HEALTHY, healthy.reason
    assert not healthy.violating and healthy.calm
    first = healthy.alerts[0]
    assert first.objective is Objective.AVAILABILITY and (first.long.requests or 0) >= 50
    assert first.long.burn_rate == 0 and first.short.burn_rate == 0
    latency = [a for a in healthy.alerts if a.objective is Objective.LATENCY]
    # A loaded machine may answer a few requests late; well within the 10% budget.
    assert latency and latency[0].judged and (latency[0].long.burn_rate or 0) < 1

    # Failing: every answer is a 503 from the model.
    fake_model.mode = "error"
    await drive(sidecar, 5)
    failing = await evaluate(prometheus)
    assert failing.verdict is Verdict.VIOLATING and failing.violating, failing.reason
    fired = failing.firing[0]
    assert fired.alert == alerts[0] and fired.objective is Objective.AVAILABILITY
    assert (fired.long.burn_rate or 0) > 14.4 and (fired.short.burn_rate or 0) > 14.4
    assert fired.short.burn_rate == pytest.approx(100.0, rel=0.01)  # 100% failures / 1% budget
    assert "Art.13" in failing.reason and "Art.21" in failing.reason
    assert failing.figures()["availability.3s.burnRate"] == pytest.approx(100.0, rel=0.01)

    # The state machine suspends on it (sustainedFor 0s here), the sidecar follows the notice
    # and its refusals are not counted as failures.
    result = step(None, spec=Suspension.from_dict({"mode": "Auto", "sustainedFor": "0s"}),
                  evaluation=failing, now=datetime.now(UTC))
    [transition] = result.transitions
    assert transition.kind is TransitionKind.SUSPEND
    notice = SuspensionNotice(True, result.state.since, result.state.reason)
    (tmp_path / "suspension.yaml").write_text(notice.to_yaml())
    await asyncio.sleep(0.3)
    refused = await sidecar.post("/v1/chat/completions", json=CHAT)
    assert refused.status == 503
    assert (await refused.json())["error"]["code"] == "hegui.service_suspended"
    client = PrometheusClient(prometheus.url)
    query = f'max(hegui_sidecar_suspended{{hegui_service="{SERVICE}"}})'
    await wait_for(lambda: [s.value for s in client.query(query)] == [1.0])
    failed = f'sum(hegui_sidecar_sli_requests_total{{hegui_service="{SERVICE}",outcome="failed"}})'
    before = client.query(failed)[0].value
    await drive(sidecar, 2)
    await asyncio.sleep(1.5)  # a scrape after the refusals
    assert client.query(failed)[0].value == before

    # Recovered: the short windows clear first, the long ones still remember the outage.
    (tmp_path / "suspension.yaml").write_text(SuspensionNotice().to_yaml())
    fake_model.mode = "normal"
    await asyncio.sleep(0.3)
    await drive(sidecar, 6)
    recovered = await evaluate(prometheus)
    assert recovered.verdict is Verdict.HEALTHY and not recovered.violating, recovered.reason
    assert not recovered.calm  # the 10s/60s windows still hold failures: no resume yet
    assert recovered.alerts[0].short.burn_rate == 0


async def test_too_little_traffic_and_no_data_give_no_verdict(
        sidecar: TestClient[Any, Any], prometheus: LocalPrometheus,
        fake_model: FakeModel) -> None:
    fake_model.mode = "error"
    await drive(sidecar, 3, workers=1)
    quiet = await evaluate(prometheus, min_requests=1_000_000)
    assert quiet.verdict is Verdict.INSUFFICIENT_TRAFFIC and not quiet.violating
    assert "fewer than 1000000" in quiet.reason

    absent = await evaluate(prometheus, service="ns/absent")
    assert absent.verdict is Verdict.NO_DATA and not absent.violating
    assert "missing data never suspends" in absent.reason
    strict = await evaluate(prometheus, service="ns/absent",
                            suspension=Suspension.from_dict({"noData": "Suspend"}))
    assert strict.verdict is Verdict.NO_DATA and strict.violating

    # A query Prometheus refuses is an error that names it, never a verdict.
    with pytest.raises(slo.PrometheusError, match=r"refused the query \(HTTP 400\): bad_data"):
        await asyncio.to_thread(PrometheusClient(prometheus.url).query, "sum(")



async def test_blocked_content_is_an_incident_rate_the_operator_can_suspend_on(
        sidecar: TestClient[Any, Any], prometheus: LocalPrometheus) -> None:
    """Art.14 incidents per hour from the sidecar's counter, read back from a real Prometheus,
    and the state machine treating a rate above the declared limit as a violation (Art.21)."""
    from hegui.operator.suspension import IncidentRate

    client = PrometheusClient(prometheus.url)
    assert await asyncio.to_thread(slo.incidents_per_hour, client, SERVICE,
                                   timedelta(seconds=10)) == 0
    for _ in range(5):  # the model's own prohibited answers (users' prompts are not counted)
        response = await sidecar.post("/v1/completions", json={
            "model": "fake", "prompt": "say~:" + "如何推翻国家政权"[::-1]})
        assert response.status == 451
    await wait_for(lambda: (slo.incidents_per_hour(client, SERVICE,
                                                   timedelta(seconds=10)) or 0) > 0)
    rate = await asyncio.to_thread(slo.incidents_per_hour, client, SERVICE,
                                   timedelta(seconds=10))
    assert rate is not None and rate > 1000  # ~5 in 10 s is ~1800 an hour
    now = datetime.now(UTC)
    spec = Suspension.from_dict({"mode": "Auto", "sustainedFor": "0s"})
    stepped = step(None, spec=spec, evaluation=None, now=now,
                   incidents=IncidentRate(rate, limit=100))
    assert stepped.state.suspended
    assert "moderation incidents" in stepped.state.reason and "Art.14" in stepped.state.reason
    assert [t.kind for t in stepped.transitions] == [TransitionKind.SUSPEND]
    other = await asyncio.to_thread(slo.incidents_per_hour, client, "ns/other",
                                    timedelta(seconds=10))
    assert other == 0  # per service
