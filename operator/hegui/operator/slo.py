"""Stability objectives read from Prometheus (Art.13), judged by multi-window multi-burn-rate
alerts as in the SRE workbook, as grounds for suspension (Art.21).

**SLIs.** hegui's sidecars export, per service (label `hegui_service="namespace/name"`, see
`hegui.sidecar.metrics`):

- availability: `hegui_sidecar_sli_requests_total{outcome}`; the error ratio over a window is
  `failed / (served + failed)`: the provider's failures (5xx answers of the model, the sidecar or
  Triton, and responses cut by a model or moderator failure) against the requests the provider
  had to serve. Requests `refused` for the client's own doing (4xx: bad input, blocked prompts,
  rate limits; a client that hung up; refusals while suspended are not counted at all) are in
  neither term: a flood of bad requests can neither push a service towards suspension nor dilute
  the provider's real failures, and it cannot lift a quiet service over `min_requests`;
- latency: `hegui_sidecar_sli_latency_seconds_bucket{le}` over served requests; the share slower
  than the threshold is `1 - bucket(le=threshold) / bucket(le=+Inf)`. The sidecar adds the
  declared threshold to its buckets, so this is exact. If the threshold is not a bucket boundary
  (changed since the pods started, or another exporter), the next boundary above it is used:
  requests between the threshold and that boundary count as fast, so slowness is under-reported,
  never over-reported, and a service is never suspended for requests that met its threshold.
  The evaluation says so in its notes. Pods with different buckets (mid-rollout) are summed as
  they are; the notes cannot see that.

One PromQL query per objective fetches the counts of every window at once (`increase()` per
window, each tagged with a `window` label by `label_replace`, joined with `or`), so an
evaluation is two HTTP requests whatever the number of alerts.

**Burn rate** over a window = error ratio / error budget, the budget being `1 - objective`: a
burn rate of 1 spends the budget exactly over the SLO window. An alert (long window, short
window, factor) fires when both windows burn faster than `factor`: the long window proves the
burn is significant, the short one that it is still going on (it resets quickly once the
problem is fixed).

**Default alerts, scaled to the declared window.** For a 30-day window the workbook pages on
2% of the budget spent in 1h (factor 14.4 = 2% x 720h / 1h, short window 5m) and on 5% spent in
6h (factor 6 = 5% x 720h / 6h, short window 30m). For a declared window W, every window is
multiplied by W / 30d and the factors are kept, so each alert still fires on the same share of
the budget (2% and 5%): for W = 7d, 1h/5m becomes 14m/1m10s; for W = 1h (tests), 5s/0.42s and
30s/2.5s. A window shorter than `min_window` cannot be measured (`increase()` needs at least
two samples; Prometheus' advice is four scrape intervals), so a scaled short window is raised to
`min_window` and, if that reaches its long window, the long window to twice it; the notes say
so. Alerts declared in `spec.suspension.burnRates` are used as written.

**Minimum traffic.** An alert whose long window holds fewer than `min_requests` requests gives
no verdict (a single failure among a handful of requests would "burn" hundreds of times the
budget); if no alert can be judged, the verdict is InsufficientTraffic, which never suspends.

**No data.** When Prometheus has no SLI series at all for the service (the sidecar is not
scraped, or its pods are gone), the verdict is NoData; the declared `noData` policy decides
whether that counts as a violation: Keep (the default) never suspends on missing data but
reports it, Suspend treats silence as a violation. A Prometheus that cannot be queried gives
the verdict Error, which never suspends under either policy: an outage of the monitoring must
not stop every service.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from hegui.api.common import parse_duration
from hegui.api.generativeservice import NoDataPolicy, Slo, Suspension

log = logging.getLogger(__name__)

#: The SLI series hegui's sidecars export (hegui.sidecar.metrics).
SLI_REQUESTS: Final = "hegui_sidecar_sli_requests_total"
SLI_LATENCY_BUCKETS: Final = "hegui_sidecar_sli_latency_seconds_bucket"
SERVICE_LABEL: Final = "hegui_service"

#: The SRE workbook's page-level alerts for a 30-day window: (long, short, factor).
WORKBOOK_PERIOD: Final = timedelta(days=30)
WORKBOOK_ALERTS: Final = ((timedelta(hours=1), timedelta(minutes=5), 14.4),
                          (timedelta(hours=6), timedelta(minutes=30), 6.0))
#: The shortest window measured: four scrape intervals of a usual 15s scrape.
DEFAULT_MIN_WINDOW: Final = timedelta(minutes=1)
#: Fewer requests than this in an alert's long window give no verdict.
DEFAULT_MIN_REQUESTS: Final = 100
#: The burn rate at or below which a window counts as healthy for resuming (hysteresis: an
#: alert fires above its factor, a suspended service resumes only once it burns at most 1x).
CALM_BURN_RATE: Final = 1.0

_MAX_RESPONSE_BYTES = 8 << 20


class Objective(StrEnum):
    AVAILABILITY = "availability"
    LATENCY = "latency"


class Verdict(StrEnum):
    VIOLATING = "Violating"  # an alert fires: both its windows burn faster than its factor
    HEALTHY = "Healthy"  # judged, and no alert fires
    INSUFFICIENT_TRAFFIC = "InsufficientTraffic"  # too few requests for any alert to judge
    NO_DATA = "NoData"  # no SLI series for the service in Prometheus
    ERROR = "Error"  # Prometheus could not be queried


# --- windows and alerts ---------------------------------------------------------------------------

def _round_ms(value: timedelta) -> timedelta:
    return timedelta(milliseconds=round(value.total_seconds() * 1000))


def promql_duration(value: timedelta) -> str:
    """A range for PromQL: whole seconds, or milliseconds (Prometheus 2.x takes no fractions)."""
    ms = round(value.total_seconds() * 1000)
    if ms <= 0:
        raise ValueError(f"a PromQL range must be positive, not {value}")
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def human_duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds >= 60:
        minutes, rest = divmod(seconds, 60)
        return f"{int(minutes)}m{rest:g}s"
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


@dataclass(frozen=True)
class Alert:
    """A multi-window burn-rate alert."""

    long: timedelta
    short: timedelta
    factor: float
    declared: bool = False  # from spec.suspension.burnRates, else the workbook's, scaled

    @property
    def name(self) -> str:
        return f"{human_duration(self.long)}/{human_duration(self.short)} x{self.factor:g}"


def alerts_for(slo: Slo, suspension: Suspension | None, *,
               min_window: timedelta = DEFAULT_MIN_WINDOW) -> tuple[tuple[Alert, ...],
                                                                    tuple[str, ...]]:
    """The alerts that judge `slo`, and notes on how they were derived (see the module doc)."""
    notes: list[str] = []
    if suspension is not None and suspension.burn_rates:
        alerts = tuple(Alert(parse_duration(b.long_window), parse_duration(b.short_window),
                             b.factor, declared=True) for b in suspension.burn_rates)
        for alert in alerts:
            if alert.short < min_window:
                notes.append(f"alert {alert.name}: the short window is below "
                             f"{human_duration(min_window)}, too short to measure reliably")
        return alerts, tuple(notes)
    window = parse_duration(slo.window)
    if window <= timedelta(0):
        raise ValueError(f"slo.window must be positive, not {slo.window!r} (Art.13)")
    scale = window / WORKBOOK_PERIOD
    scaled: list[Alert] = []
    for long, short, factor in WORKBOOK_ALERTS:
        long_s, short_s = _round_ms(long * scale), _round_ms(short * scale)
        if short_s < min_window:
            notes.append(f"scaled short window {human_duration(short_s) if short_s else '0s'} "
                         f"raised to {human_duration(min_window)}, the shortest window measured")
            short_s = min_window
        if long_s <= short_s:
            notes.append(f"scaled long window {human_duration(long_s) if long_s else '0s'} "
                         f"raised to {human_duration(2 * short_s)}, twice its short window")
            long_s = 2 * short_s
        scaled.append(Alert(long_s, short_s, factor))
    return tuple(scaled), tuple(notes)


def detection_time(alert: Alert, objective: float, error_ratio: float = 1.0) -> timedelta | None:
    """How long after a clean service starts failing a share `error_ratio` of its requests
    (steady traffic) `alert` fires, not counting scrape and query delays; None if never.

    After t seconds of failures, a window w holds the ratio `error_ratio * t / w` (t < w), which
    passes the alert's threshold `factor * (1 - objective)` at t = factor * budget * w /
    error_ratio; both windows must pass, so the long one decides. E.g. 99.5% and 1h/5m x14.4:
    with every request failing, 14.4 * 0.005 * 1h = 4m19s; with 10% failing, 43m12s.
    """
    threshold = alert.factor * (1.0 - objective)
    if error_ratio <= threshold:
        return None
    return max(alert.long, alert.short) * (threshold / error_ratio)


# --- PromQL ---------------------------------------------------------------------------------------

def _label_value(text: str) -> str:
    return json.dumps(text)  # a PromQL string literal: quotes, backslashes, newlines escaped


def _windowed(expression: str, by: str, windows: Iterable[timedelta]) -> str:
    parts = []
    for window in sorted(set(windows)):
        rng = promql_duration(window)
        parts.append(f'label_replace(sum by ({by}) (increase({expression}[{rng}])), '
                     f'"window", "{rng}", "", "")')
    return " or ".join(parts)


def availability_query(service: str, windows: Iterable[timedelta]) -> str:
    """Requests by outcome (served, refused, failed) over each window, labelled `window`."""
    return _windowed(f"{SLI_REQUESTS}{{{SERVICE_LABEL}={_label_value(service)}}}", "outcome",
                     windows)


def latency_query(service: str, windows: Iterable[timedelta]) -> str:
    """Served requests by histogram bucket (`le`) over each window, labelled `window`."""
    return _windowed(f"{SLI_LATENCY_BUCKETS}{{{SERVICE_LABEL}={_label_value(service)}}}", "le",
                     windows)


INCIDENTS = "hegui_sidecar_incidents_total"
#: Only what the model said counts as the service's incident: a user's blocked prompt is the
#: user's (Art.14 strikes the user, hegui.moderation.strikes), never grounds to suspend the
#: service, or any user could get a service suspended by sending prohibited prompts.
INCIDENT_DIRECTION: Final = "output"


def incidents_query(service: str, window: timedelta) -> str:
    """The service's incidents (blocked model outputs) over `window`, summed over replicas."""
    return (f"sum(increase({INCIDENTS}{{{SERVICE_LABEL}={_label_value(service)},"
            f'direction="{INCIDENT_DIRECTION}"}}[{promql_duration(window)}]))')


def incidents_per_hour(client: PrometheusClient, service: str,
                       window: timedelta) -> float | None:
    """The service's moderation incidents per hour, averaged over `window`: the model's outputs
    blocked as prohibited (Art.14), never users' blocked prompts (see INCIDENT_DIRECTION); 0 when
    the sidecars blocked nothing, None when Prometheus cannot tell."""
    promql = incidents_query(service, window)
    try:
        samples = client.query(promql)
    except PrometheusError as failure:
        log.warning("incident rate of %s not read: %s", service, failure)
        return None
    blocked = sum(sample.value for sample in samples)
    return blocked * 3600.0 / window.total_seconds()


# --- the Prometheus HTTP API ----------------------------------------------------------------------

class PrometheusError(RuntimeError):
    """Prometheus could not answer a query; the message names the server (without any
    credentials) and the cause."""


@dataclass(frozen=True)
class Sample:
    labels: Mapping[str, str]
    value: float


class PrometheusClient:
    """A small synchronous client for `/api/v1/query` (kopf runs sync handlers in threads).

    `url` is CompliancePolicy.spec.prometheus.url; credentials in it (`https://user:pass@host`)
    are sent as HTTP basic auth, a `bearer_token` as a bearer token, and neither ever appears in
    messages or logs.
    """

    def __init__(self, url: str, timeout: float | str = 5.0, *,
                 bearer_token: str | None = None) -> None:
        parsed = urllib.parse.urlsplit(url.strip())
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError("prometheus.url must be an http(s) URL such as "
                             f"http://prometheus.monitoring.svc:9090, not {_redact(url)!r}")
        self._auth: str | None = None
        if parsed.username is not None:
            pair = f"{urllib.parse.unquote(parsed.username)}:" \
                   f"{urllib.parse.unquote(parsed.password or '')}"
            self._auth = "Basic " + base64.b64encode(pair.encode()).decode()
        if bearer_token:
            self._auth = f"Bearer {bearer_token}"
        host = parsed.hostname if ":" not in parsed.hostname else f"[{parsed.hostname}]"
        netloc = f"{host}:{parsed.port}" if parsed.port else host
        self.url = urllib.parse.urlunsplit((parsed.scheme, netloc, parsed.path.rstrip("/"),
                                            "", ""))
        seconds = parse_duration(timeout).total_seconds() if isinstance(timeout, str) \
            else float(timeout)
        if not 0 < seconds <= 300:
            raise ValueError(f"prometheus.timeout must be between 0 and 5m, not {timeout!r}")
        self.timeout = seconds

    def query(self, promql: str, at: datetime | None = None) -> list[Sample]:
        """An instant query; the samples of the vector it returns."""
        form = {"query": promql, "timeout": f"{self.timeout:g}s"}
        if at is not None:
            form["time"] = f"{at.timestamp():.3f}"
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
            f"{self.url}/api/v1/query", data=urllib.parse.urlencode(form).encode(),
            method="POST", headers={"Content-Type": "application/x-www-form-urlencoded",
                                    "Accept": "application/json"})
        if self._auth:
            request.add_header("Authorization", self._auth)
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                raw = response.read(_MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as refused:
            raise PrometheusError(self._refusal(refused)) from None
        except TimeoutError:
            raise PrometheusError(f"Prometheus at {self.url} did not answer within "
                                  f"{self.timeout:g}s") from None
        except (urllib.error.URLError, OSError) as failure:
            reason = getattr(failure, "reason", failure)
            raise PrometheusError(f"Prometheus at {self.url} is unreachable: {reason}") from None
        finally:
            log.debug("prometheus %s query took %.3fs", self.url, time.monotonic() - started)
        if len(raw) > _MAX_RESPONSE_BYTES:
            raise PrometheusError(f"Prometheus at {self.url} answered with more than "
                                  f"{_MAX_RESPONSE_BYTES} bytes")
        return self._samples(raw)

    def _refusal(self, refused: urllib.error.HTTPError) -> str:
        detail = ""
        try:
            body = json.loads(refused.read(64 << 10))
            if isinstance(body, dict):
                detail = f": {body.get('errorType', '')}: {str(body.get('error', ''))[:500]}"
        except (ValueError, OSError):
            pass
        return f"Prometheus at {self.url} refused the query (HTTP {refused.code}){detail}"

    def _samples(self, raw: bytes) -> list[Sample]:
        try:
            body = json.loads(raw)
        except ValueError:
            raise PrometheusError(f"{self.url} did not answer with Prometheus' JSON (is it a "
                                  "Prometheus?)") from None
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(body, dict) or body.get("status") != "success" or \
                not isinstance(data, dict):
            raise PrometheusError(f"Prometheus at {self.url} answered without success: "
                                  f"{str(body)[:300]}")
        if data.get("resultType") != "vector" or not isinstance(data.get("result"), list):
            raise PrometheusError(f"Prometheus at {self.url} answered a {data.get('resultType')}"
                                  ", not a vector")
        samples = []
        for item in data["result"]:
            try:
                labels = {str(k): str(v) for k, v in item["metric"].items()}
                value = float(item["value"][1])
            except (KeyError, TypeError, ValueError, IndexError, AttributeError):
                raise PrometheusError(f"Prometheus at {self.url} answered a malformed "
                                      "sample") from None
            if math.isfinite(value):  # NaN or Inf counts carry nothing to judge
                samples.append(Sample(labels, max(0.0, value)))
        return samples


def _redact(url: str) -> str:
    parsed = urllib.parse.urlsplit(url)
    if parsed.username is None and parsed.password is None:
        return url
    netloc = parsed.netloc.rsplit("@", 1)[-1]
    return urllib.parse.urlunsplit((parsed.scheme, "***@" + netloc, parsed.path, "", ""))


# --- measurements ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Counts:
    """What one window holds for one objective: requests, and the bad ones among them."""

    requests: float
    bad: float


#: Per objective, per window: the counts, or None when Prometheus has no series for it.
Measurements = Mapping[Objective, Mapping[timedelta, Counts | None]]


def _by_window(samples: list[Sample], windows: Iterable[timedelta]) -> dict[
        timedelta, list[Sample]]:
    named = {promql_duration(w): w for w in windows}
    grouped: dict[timedelta, list[Sample]] = {w: [] for w in named.values()}
    for sample in samples:
        window = named.get(sample.labels.get("window", ""))
        if window is not None:
            grouped[window].append(sample)
    return grouped


#: The outcomes (hegui.sidecar.metrics.OUTCOMES) that are the provider's to serve: `refused`
#: (the client's doing) counts for neither side of the availability ratio (Art.13).
PROVIDER_OUTCOMES: Final = ("served", "failed")


def availability_counts(samples: list[Sample]) -> Counts | None:
    """Requests the provider had to serve and those it failed; None without any series."""
    if not samples:
        return None
    requests = sum(s.value for s in samples if s.labels.get("outcome") in PROVIDER_OUTCOMES)
    failed = sum(s.value for s in samples if s.labels.get("outcome") == "failed")
    return Counts(requests, failed)


def latency_counts(samples: list[Sample], threshold: float) -> tuple[Counts | None, str | None]:
    """Served requests, and those slower than `threshold` (see the module doc on boundaries);
    with a note when the threshold is not a boundary or cannot be judged."""
    buckets: dict[float, float] = {}
    for sample in samples:
        try:
            buckets[float(sample.labels.get("le", ""))] = sample.value
        except ValueError:
            continue
    if math.inf not in buckets:
        return None, None
    total = buckets[math.inf]
    exact = [le for le in buckets if math.isclose(le, threshold, rel_tol=1e-9)]
    if exact:
        return Counts(total, max(0.0, total - buckets[exact[0]])), None
    above = sorted(le for le in buckets if threshold < le < math.inf)
    if not above:
        return None, (f"latency threshold {threshold:g}s is above every bucket of "
                      f"{SLI_LATENCY_BUCKETS}: latency is not judged")
    le = above[0]
    return Counts(total, max(0.0, total - buckets[le])), (
        f"latency threshold {threshold:g}s is not a bucket boundary; requests up to the next "
        f"boundary, {le:g}s, count as fast (slowness under-reported, never over-reported); the "
        "sidecar adds the threshold it started with to its buckets, restart its pods")


def measure(client: PrometheusClient, service: str, slo: Slo, alerts: Iterable[Alert], *,
            at: datetime | None = None) -> tuple[dict[Objective, dict[timedelta, Counts | None]],
                                                 list[str]]:
    """Query Prometheus for every window of every alert; raises PrometheusError."""
    windows = sorted({w for a in alerts for w in (a.long, a.short)})
    measured: dict[Objective, dict[timedelta, Counts | None]] = {}
    notes: list[str] = []
    if slo.availability is not None:
        grouped = _by_window(client.query(availability_query(service, windows), at), windows)
        measured[Objective.AVAILABILITY] = {w: availability_counts(s)
                                            for w, s in grouped.items()}
    if slo.latency is not None:
        threshold = parse_duration(slo.latency.threshold).total_seconds()
        grouped = _by_window(client.query(latency_query(service, windows), at), windows)
        per_window: dict[timedelta, Counts | None] = {}
        for window, samples in grouped.items():
            per_window[window], note = latency_counts(samples, threshold)
            if note and note not in notes:
                notes.append(note)
        measured[Objective.LATENCY] = per_window
    return measured, notes


# --- the verdict ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class WindowFigures:
    window: timedelta
    requests: float | None  # None: no data
    bad: float | None
    budget: float  # 1 - objective

    @property
    def has_data(self) -> bool:
        return self.requests is not None

    @property
    def ratio(self) -> float | None:
        """The bad share; 0 for a window without requests, None without data."""
        if self.requests is None or self.bad is None:
            return None
        return self.bad / self.requests if self.requests > 0 else 0.0

    @property
    def burn_rate(self) -> float | None:
        ratio = self.ratio
        return None if ratio is None else ratio / self.budget

    def describe(self) -> str:
        burn = self.burn_rate
        if burn is None:
            return f"no data ({human_duration(self.window)})"
        return f"{burn:.1f}x ({human_duration(self.window)})"


@dataclass(frozen=True)
class AlertResult:
    objective: Objective
    objective_text: str  # e.g. "availability 99.5%"
    alert: Alert
    long: WindowFigures
    short: WindowFigures
    judged: bool
    firing: bool
    not_judged: str = ""  # why, when not judged

    def describe(self) -> str:
        return (f"{self.objective_text} burns {self.long.describe()} and "
                f"{self.short.describe()} against alert {self.alert.name}")


@dataclass(frozen=True)
class SloEvaluation:
    """Everything one evaluation found; `reason` is the sentence for conditions and Events."""

    service: str
    verdict: Verdict
    #: Grounds for suspension now: an alert fires, or no data under noData: Suspend.
    violating: bool
    #: Healthy enough to resume a suspended service: Prometheus answered, the SLI series exist
    #: and no window that holds requests burns faster than CALM_BURN_RATE (empty windows, as
    #: while suspended, are calm).
    calm: bool
    reason: str
    alerts: tuple[AlertResult, ...] = ()
    notes: tuple[str, ...] = ()
    error: str | None = None
    min_requests: int = DEFAULT_MIN_REQUESTS

    @property
    def firing(self) -> tuple[AlertResult, ...]:
        return tuple(a for a in self.alerts if a.firing)

    def figures(self) -> dict[str, float | str]:
        """Flat figures for Events, records and logs: burn rates and request counts per
        objective and window, e.g. `availability.1h.burnRate`."""
        out: dict[str, float | str] = {"verdict": self.verdict.value}
        for result in self.alerts:
            for window in (result.long, result.short):
                key = f"{result.objective.value}.{human_duration(window.window)}"
                if window.requests is not None:
                    out[f"{key}.requests"] = round(window.requests, 3)
                if (burn := window.burn_rate) is not None:
                    out[f"{key}.burnRate"] = round(burn, 3)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"service": self.service, "verdict": self.verdict.value,
                "violating": self.violating, "calm": self.calm, "reason": self.reason,
                "figures": self.figures(), "notes": list(self.notes), "error": self.error}


def _objective_text(objective: Objective, slo: Slo) -> tuple[str, float]:
    if objective is Objective.AVAILABILITY:
        assert slo.availability is not None
        return f"availability {slo.availability.objective:.4g}", slo.availability.objective
    assert slo.latency is not None
    return (f"latency {slo.latency.objective:.4g} under {slo.latency.threshold}",
            slo.latency.objective)


def _window_figures(per_window: Mapping[timedelta, Counts | None], window: timedelta,
                    budget: float) -> WindowFigures:
    counts = per_window.get(window)
    return WindowFigures(window, counts.requests if counts else None,
                         counts.bad if counts else None, budget)


def judge(service: str, slo: Slo, suspension: Suspension | None, alerts: Iterable[Alert],
          measured: Measurements, *, min_requests: int = DEFAULT_MIN_REQUESTS,
          notes: Iterable[str] = ()) -> SloEvaluation:
    """The verdict from measured counts: pure arithmetic (see the module doc)."""
    notes = list(notes)
    results: list[AlertResult] = []
    any_data = False
    for objective, per_window in measured.items():
        text, target = _objective_text(objective, slo)
        budget = 1.0 - target
        for alert in alerts:
            if alert.factor * budget > 1.0:
                notes.append(f"alert {alert.name} cannot fire for {text}: its threshold, "
                             f"{alert.factor:g} x the budget {budget:.4g}, exceeds 100% errors")
            long = _window_figures(per_window, alert.long, budget)
            short = _window_figures(per_window, alert.short, budget)
            any_data = any_data or long.has_data or short.has_data
            why = ""
            if not long.has_data or not short.has_data:
                why = "no data"
            elif (long.requests or 0) < min_requests:
                why = (f"{long.requests:.0f} requests in {human_duration(alert.long)}, fewer "
                       f"than {min_requests}")
            judged = not why
            firing = judged and (long.burn_rate or 0) > alert.factor and \
                (short.burn_rate or 0) > alert.factor
            results.append(AlertResult(objective, text, alert, long, short, judged, firing, why))
    windows = [w for r in results for w in (r.long, r.short)]
    calm = any_data and all((w.burn_rate or 0.0) <= CALM_BURN_RATE for w in windows
                            if w.requests)
    no_data_policy = suspension.no_data if suspension is not None else NoDataPolicy.KEEP
    fired = [r for r in results if r.firing]
    if fired:
        verdict = Verdict.VIOLATING
        reason = "; ".join(r.describe() for r in fired) + _bad_share(fired[0]) + (
            " (Art.13); sustained, this is grounds for suspension (Art.21)")
    elif not any_data:
        verdict = Verdict.NO_DATA
        consequence = ("noData is Suspend: silence counts as a violation (Art.21)"
                       if no_data_policy is NoDataPolicy.SUSPEND else
                       "noData is Keep: missing data never suspends (Art.21)")
        reason = (f"no SLI data in Prometheus for {service} ({SLI_REQUESTS} / "
                  f"{SLI_LATENCY_BUCKETS} with {SERVICE_LABEL}={service!r}): is the sidecar "
                  f"scraped? The objectives are not judged (Art.13); {consequence}")
    elif not any(r.judged for r in results):
        verdict = Verdict.INSUFFICIENT_TRAFFIC
        reason = ("too little traffic to judge the objectives (Art.13): "
                  + "; ".join(f"{r.objective_text}: {r.not_judged}" for r in results
                              if r.not_judged) + "; this never suspends (Art.21)")
    else:
        verdict = Verdict.HEALTHY
        reason = "objectives met (Art.13): " + "; ".join(
            f"{r.objective_text} burns {r.long.describe()}, {r.short.describe()}, below "
            f"{r.alert.factor:g}x" for r in results if r.judged)
    violating = verdict is Verdict.VIOLATING or (
        verdict is Verdict.NO_DATA and no_data_policy is NoDataPolicy.SUSPEND)
    return SloEvaluation(service, verdict, violating, calm, reason, tuple(results),
                         tuple(notes), min_requests=min_requests)


def _bad_share(result: AlertResult) -> str:
    long = result.long
    what = "failed" if result.objective is Objective.AVAILABILITY else "were slower"
    return (f": {100 * (long.ratio or 0):.1f}% of {long.requests:.0f} requests {what} over "
            f"{human_duration(long.window)}")


def evaluate(prometheus: PrometheusClient | str, service: str, slo: Slo,
             suspension: Suspension | None = None, *,
             min_requests: int = DEFAULT_MIN_REQUESTS,
             min_window: timedelta = DEFAULT_MIN_WINDOW,
             at: datetime | None = None) -> SloEvaluation:
    """Judge `service` ("namespace/name") against its objectives from Prometheus.

    `prometheus` is a client or the URL of CompliancePolicy.spec.prometheus; `suspension`
    supplies declared burn-rate alerts and the noData policy (absent: the workbook's alerts
    scaled to `slo.window`, noData Keep). `min_window` should be at least four scrape intervals
    of that Prometheus. `at` evaluates at a past instant (default: Prometheus' now).

    Never raises for Prometheus failures: they give the verdict Error, with the cause in
    `error` and `reason`. Raises ValueError for an invalid URL or SLO.
    """
    if not service:
        raise ValueError("service must be namespace/name")
    alerts, notes = alerts_for(slo, suspension, min_window=min_window)
    client = prometheus if isinstance(prometheus, PrometheusClient) else \
        PrometheusClient(prometheus)
    try:
        measured, measure_notes = measure(client, service, slo, alerts, at=at)
    except PrometheusError as failure:
        log.warning("SLO of %s not evaluated: %s", service, failure)
        return SloEvaluation(
            service, Verdict.ERROR, violating=False, calm=False,
            reason=f"the objectives could not be read (Art.13): {failure}; nothing is judged "
                   "and nothing is suspended or resumed (Art.21)",
            notes=notes, error=str(failure), min_requests=min_requests)
    return judge(service, slo, suspension, alerts, measured, min_requests=min_requests,
                 notes=[*notes, *measure_notes])


__all__ = ["CALM_BURN_RATE", "DEFAULT_MIN_REQUESTS", "DEFAULT_MIN_WINDOW", "Alert",
           "AlertResult", "Counts", "Objective", "PrometheusClient", "PrometheusError",
           "SloEvaluation", "Verdict", "WindowFigures", "alerts_for", "availability_query",
           "detection_time",
           "evaluate", "incidents_query", "judge", "latency_query", "measure"]
