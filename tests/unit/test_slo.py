"""The SLO engine's arithmetic (Art.13): windows scaled from the SRE workbook, burn rates,
minimum traffic, no data, latency buckets, and the Prometheus client's failures against real
sockets. The same engine against a real Prometheus: tests/sidecar/test_prometheus_slo.py."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from prometheus_client import generate_latest

from hegui.api.generativeservice import Slo, Suspension
from hegui.operator import slo
from hegui.operator.slo import (
    Alert,
    Counts,
    Objective,
    PrometheusClient,
    PrometheusError,
    Sample,
    Verdict,
    alerts_for,
    judge,
)
from hegui.sidecar.metrics import SidecarMetrics

H, M, S = timedelta(hours=1), timedelta(minutes=1), timedelta(seconds=1)


def availability(objective: float = 0.99, window: str = "720h") -> Slo:
    return Slo.from_dict({"window": window, "availability": {"objective": objective}})


def counts(**windows: tuple[float, float] | None) -> dict[timedelta, Counts | None]:
    """counts(h1=(1000, 200), m5=(100, 50)): requests and bad ones per window."""
    named = {"h1": H, "m5": 5 * M, "h6": 6 * H, "m30": 30 * M}
    return {named[k]: (Counts(*v) if v is not None else None) for k, v in windows.items()}


WORKBOOK = (Alert(H, 5 * M, 14.4), Alert(6 * H, 30 * M, 6.0))


# --- windows -----------------------------------------------------------------------------------

def test_a_30_day_window_gets_the_workbooks_alerts() -> None:
    alerts, notes = alerts_for(availability(), None)
    assert alerts == WORKBOOK
    assert notes == ()


def test_windows_scale_with_the_declared_window_and_factors_stay() -> None:
    # 7 days: 1h * 7/30 = 14m, 5m * 7/30 = 70s; the factor still means 2% of the budget.
    alerts, _ = alerts_for(availability(window="168h"), None)
    assert [(a.long, a.short, a.factor) for a in alerts] == [
        (14 * M, 70 * S, 14.4), (84 * M, 7 * M, 6.0)]


def test_scaled_windows_too_short_to_measure_are_raised_and_said_so() -> None:
    # 1h: 1h/720 = 5s and 5m/720 = 0.417s; 0.417s cannot be measured at a 1s scrape.
    alerts, notes = alerts_for(availability(window="1h"), None, min_window=3 * S)
    assert [(a.long, a.short) for a in alerts] == [(5 * S, 3 * S), (30 * S, 3 * S)]
    assert any("0.417s raised to 3s" in n for n in notes)
    # 30m: the first long window (2.5s) would not exceed its raised short window (3s).
    alerts, notes = alerts_for(availability(window="30m"), None, min_window=3 * S)
    assert (alerts[0].long, alerts[0].short) == (6 * S, 3 * S)
    assert any("raised to 6s, twice its short window" in n for n in notes)


def test_declared_burn_rates_are_used_as_written() -> None:
    suspension = Suspension.from_dict({"burnRates": [
        {"longWindow": "2h", "shortWindow": "10m", "factor": 10}]})
    alerts, _ = alerts_for(availability(), suspension)
    assert alerts == (Alert(2 * H, 10 * M, 10.0, declared=True),)


def test_the_time_to_detect_a_breach_follows_from_the_windows() -> None:
    # 99.5%: a budget of 0.5%; at 14.4x the 1h window must hold 7.2% failures.
    assert slo.detection_time(WORKBOOK[0], 0.995) == timedelta(seconds=259.2)
    assert slo.detection_time(WORKBOOK[0], 0.995, error_ratio=0.1) == timedelta(seconds=2592)
    assert slo.detection_time(WORKBOOK[0], 0.995, error_ratio=0.05) is None  # below 7.2%


def test_promql_ranges_are_whole_seconds_or_milliseconds() -> None:
    assert slo.promql_duration(H) == "3600s"
    assert slo.promql_duration(timedelta(milliseconds=417)) == "417ms"
    with pytest.raises(ValueError, match="positive"):
        slo.promql_duration(timedelta(0))


def test_one_query_per_objective_covers_every_window() -> None:
    query = slo.availability_query('ns/x"} or vector(1) #', [H, 5 * M])
    assert query.count("label_replace(") == 2 and " or label_replace(" in query
    assert 'increase(hegui_sidecar_sli_requests_total{hegui_service="ns/x\\"} or vector(1) #"}' \
        '[300s])' in query  # a hostile name stays inside its string literal
    assert '"window", "3600s"' in query
    latency = slo.latency_query("ns/x", [5 * M])
    assert latency.startswith("label_replace(sum by (le) (increase("
                              "hegui_sidecar_sli_latency_seconds_bucket{")


def test_the_sidecar_exports_the_series_the_engine_reads() -> None:
    metrics = SidecarMetrics(service="ns/chat", latency_threshold=1.8)
    text = generate_latest(metrics.registry).decode()
    # Zero series exist before any traffic, so "no traffic" is not "not scraped".
    assert (f'{slo.SLI_REQUESTS}{{hegui_service="ns/chat",outcome="failed",route="chat"}} 0.0'
            in text)
    # The declared threshold is a bucket boundary: the slow share is exact.
    assert f'{slo.SLI_LATENCY_BUCKETS}{{hegui_service="ns/chat",le="1.8",route="chat"}}' in text


# --- verdicts ------------------------------------------------------------------------------------

def test_both_windows_above_the_factor_is_a_violation_with_its_figures() -> None:
    # 99% objective: budget 1%. 20% failures = 20x; the page threshold is 14.4x.
    measured = {Objective.AVAILABILITY: counts(h1=(1000, 200), m5=(100, 30), h6=(6000, 210),
                                               m30=(500, 40))}
    result = judge("ns/chat", availability(), None, WORKBOOK, measured)
    assert result.verdict is Verdict.VIOLATING and result.violating and not result.calm
    assert [a.alert for a in result.firing] == [WORKBOOK[0]]  # 6h burns 3.5x: below 6
    assert result.firing[0].long.burn_rate == pytest.approx(20.0)
    assert result.firing[0].short.burn_rate == pytest.approx(30.0)
    assert "20.0% of 1000 requests failed over 1h" in result.reason
    assert "Art.13" in result.reason and "Art.21" in result.reason
    figures = result.figures()
    assert figures["availability.1h.burnRate"] == pytest.approx(20.0)
    assert figures["availability.1h.requests"] == 1000


def test_a_recovered_short_window_stops_the_alert() -> None:
    # The long window still holds the outage; the short one shows it is over.
    measured = {Objective.AVAILABILITY: counts(h1=(1000, 200), m5=(100, 0), h6=(6000, 210),
                                               m30=(500, 0))}
    result = judge("ns/chat", availability(), None, WORKBOOK, measured)
    assert result.verdict is Verdict.HEALTHY and not result.violating
    assert not result.calm  # ... but not yet calm enough to resume a suspended service
    assert "objectives met" in result.reason


def test_too_little_traffic_gives_no_verdict() -> None:
    measured = {Objective.AVAILABILITY: counts(h1=(20, 20), m5=(5, 5), h6=(40, 20),
                                               m30=(8, 8))}
    result = judge("ns/chat", availability(), None, WORKBOOK, measured, min_requests=50)
    assert result.verdict is Verdict.INSUFFICIENT_TRAFFIC and not result.violating
    assert "20 requests in 1h, fewer than 50" in result.reason
    assert "never suspends" in result.reason


def test_no_data_never_suspends_under_keep_and_does_under_suspend() -> None:
    measured = {Objective.AVAILABILITY: counts(h1=None, m5=None, h6=None, m30=None)}
    keep = judge("ns/chat", availability(), None, WORKBOOK, measured)
    assert keep.verdict is Verdict.NO_DATA and not keep.violating and not keep.calm
    assert "missing data never suspends" in keep.reason and "ns/chat" in keep.reason
    strict = judge("ns/chat", availability(), Suspension.from_dict({"noData": "Suspend"}),
                   WORKBOOK, measured)
    assert strict.verdict is Verdict.NO_DATA and strict.violating


def test_windows_without_requests_are_calm_while_suspended() -> None:
    # Suspended: no requests are counted; once the failures left the long windows, all calm.
    measured = {Objective.AVAILABILITY: counts(h1=(0, 0), m5=(0, 0), h6=(0, 0), m30=(0, 0))}
    result = judge("ns/chat", availability(), None, WORKBOOK, measured)
    assert result.calm and not result.violating
    assert result.verdict is Verdict.INSUFFICIENT_TRAFFIC
    # Old failures still in the 6h window: not calm, whatever the short windows say.
    measured = {Objective.AVAILABILITY: counts(h1=(0, 0), m5=(0, 0), h6=(500, 100), m30=(0, 0))}
    assert not judge("ns/chat", availability(), None, WORKBOOK, measured).calm


def test_an_alert_that_cannot_fire_is_reported() -> None:
    measured = {Objective.AVAILABILITY: counts(h1=(1000, 0), m5=(100, 0), h6=(1000, 0),
                                               m30=(100, 0))}
    result = judge("ns/chat", availability(objective=0.9), None, WORKBOOK, measured)
    assert any("cannot fire" in n and "14.4" in n for n in result.notes)


def test_latency_uses_the_threshold_bucket_or_the_next_one_above() -> None:
    buckets = [Sample({"le": le}, n) for le, n in
               (("1.0", 60), ("2.0", 90), ("5.0", 99), ("+Inf", 100))]
    exact, note = slo.latency_counts(buckets, 2.0)
    assert exact == Counts(100, 10) and note is None
    near, note = slo.latency_counts(buckets, 1.5)
    assert near == Counts(100, 10)  # requests up to 2s count as fast: never over-reported
    assert note is not None and "not a bucket boundary" in note and "2s" in note
    beyond, note = slo.latency_counts(buckets, 10.0)
    assert beyond is None and note is not None and "above every bucket" in note
    assert slo.latency_counts([Sample({"le": "1.0"}, 5)], 1.0) == (None, None)


def test_latency_and_availability_are_judged_together() -> None:
    both = Slo.from_dict({"window": "720h", "availability": {"objective": 0.99},
                          "latency": {"threshold": "2s", "objective": 0.9}})
    measured = {Objective.AVAILABILITY: counts(h1=(1000, 0), m5=(100, 0), h6=(6000, 0),
                                               m30=(500, 0)),
                # 10% budget; 100% slow = 10x, above 6 on the 6h alert only.
                Objective.LATENCY: counts(h1=(1000, 500), m5=(100, 10), h6=(6000, 6000),
                                          m30=(500, 500))}
    result = judge("ns/chat", both, None, WORKBOOK, measured)
    assert result.verdict is Verdict.VIOLATING
    assert [(a.objective, a.alert.factor) for a in result.firing] == [(Objective.LATENCY, 6.0)]
    assert "were slower" in result.reason and "latency 0.9 under 2s" in result.reason


# --- the Prometheus client against real sockets ----------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    answer: bytes = b""
    status = 200
    seen: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append({"auth": self.headers.get("Authorization"), "body": body})
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(self.answer)))
        self.end_headers()
        self.wfile.write(self.answer)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {"seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_an_invalid_url_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"prometheus.url must be an http\(s\) URL"):
        PrometheusClient("prometheus.monitoring.svc:9090")
    with pytest.raises(ValueError, match=r"prometheus\.timeout"):
        PrometheusClient("http://p:9090", timeout="10m")


def test_unreachable_prometheus_is_an_error_that_names_it_without_credentials() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    client = PrometheusClient(f"http://admin:s3cret@127.0.0.1:{port}", timeout=2)
    with pytest.raises(PrometheusError, match="unreachable") as failure:
        client.query("up")
    assert "s3cret" not in str(failure.value) and f"127.0.0.1:{port}" in str(failure.value)
    result = slo.evaluate(client, "ns/chat", availability())
    assert result.verdict is Verdict.ERROR
    assert not result.violating and not result.calm
    assert "nothing is suspended or resumed" in result.reason and "s3cret" not in result.reason


def test_a_silent_server_times_out() -> None:
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        client = PrometheusClient(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.5)
        with pytest.raises(PrometheusError, match=r"did not answer within 0.5s"):
            client.query("up")


def test_something_that_is_not_prometheus_is_named(
        http_server: tuple[str, type[_Handler]]) -> None:
    address, handler = http_server
    handler.answer = b"<html>login</html>"
    with pytest.raises(PrometheusError, match="not answer with Prometheus' JSON"):
        PrometheusClient(f"http://{address}").query("up")
    handler.status, handler.answer = 400, json.dumps(
        {"status": "error", "errorType": "bad_data", "error": "parse error"}).encode()
    with pytest.raises(PrometheusError, match=r"refused the query \(HTTP 400\): bad_data: parse"):
        PrometheusClient(f"http://{address}").query("up{")


def test_credentials_are_sent_and_hostile_values_are_dropped(
        http_server: tuple[str, type[_Handler]]) -> None:
    address, handler = http_server
    handler.answer = json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"outcome": "served"}, "value": [1, "12"]},
        {"metric": {"outcome": "failed"}, "value": [1, "NaN"]},
        {"metric": {"outcome": "refused"}, "value": [1, "-3"]}]}}).encode()
    samples = PrometheusClient(f"http://user:p%40ss@{address}/").query("x")
    assert samples == [Sample({"outcome": "served"}, 12.0), Sample({"outcome": "refused"}, 0.0)]
    assert handler.seen[0]["auth"] == "Basic dXNlcjpwQHNz"  # user:p@ss
    PrometheusClient(f"http://{address}", bearer_token="tok").query("x")
    assert handler.seen[1]["auth"] == "Bearer tok"
