"""The sidecar's Prometheus metrics, on /metrics. One registry per app, so tests stay apart.

Two metrics exist for the operator's SLO engine (`hegui.operator.slo`, Art.13) and carry the
service as the label `hegui_service` (`namespace/name`, constant per process: a sidecar serves
one GenerativeService). It is not called `service` because Prometheus' Kubernetes discovery and
ServiceMonitors attach a `service` target label (the Kubernetes Service), which would rename ours
to `exported_service`.

- `hegui_sidecar_sli_requests_total{hegui_service, route, outcome}`: requests on the model routes
  (chat, completions, images, ...) by outcome, which says whose doing it was: `served` (2xx/3xx),
  `refused` (the client's doing: 4xx for bad input, blocked prompts, limits, and any 5xx the
  handler marks `client_caused`; the service worked as intended) or `failed` (the provider's:
  5xx of the model, the sidecar or Triton, or a response cut by a model or moderator failure
  after its headers were sent; a client that hangs up cuts nothing). The operator's availability
  ratio is `failed / (served + failed)` (`hegui.operator.slo`): refusals count for neither side,
  so no client can drive a service towards suspension (Art.21) with bad requests. Requests
  refused because the service is suspended are not counted: they say nothing about the model,
  and counting them as failures would keep a suspended service failing forever.
- `hegui_sidecar_sli_latency_seconds{hegui_service, route}`: for served requests, the time to the
  first token reaching the client for moderated streams, else to the end of the response. The
  declared latency threshold is one of its buckets, so the share slower than it is exact.

- `hegui_sidecar_incidents_total{hegui_service, direction}`: prohibited content blocked, by
  direction. Only `direction="output"` (what the model said) is the service's incident that the
  operator's `maxIncidentsPerHour` counts; `input` (a user's blocked prompt) is the user's and is
  answered with strikes against that user (Art.14), never with the service's suspension.

Both are created at zero for every route and outcome at start, so "no traffic" (a zero series)
reads differently from "not scraped" (no series) in Prometheus.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            10.0, 30.0)
# Thresholds people declare for a model's answer or first token, up to minutes for long answers.
SLI_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0,
               20.0, 30.0, 45.0, 60.0, 120.0, 300.0)
SLI_ROUTES = ("chat", "completions", "images")
OUTCOMES = ("served", "refused", "failed")


def sli_buckets(threshold: float | None) -> tuple[float, ...]:
    """The SLI histogram's buckets, with the declared latency threshold among them."""
    if threshold is None or threshold <= 0 or threshold in SLI_BUCKETS:
        return SLI_BUCKETS
    return tuple(sorted({*SLI_BUCKETS, threshold}))


def outcome(status: int, cut: bool, client_caused: bool = False) -> str:
    """Whose doing a request's end was (see the module doc): `client_caused` marks a 5xx or a
    cut that the client provoked (it is `refused`, never the provider's failure)."""
    if client_caused and (status >= 400 or cut):
        return "refused"
    if status >= 500 or cut:
        return "failed"
    return "refused" if status >= 400 else "served"


class SidecarMetrics:
    def __init__(self, registry: CollectorRegistry | None = None, *, service: str = "",
                 latency_threshold: float | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.service = service
        r = self.registry
        self.requests = Counter("hegui_sidecar_requests", "Requests by route and status.",
                                ["route", "status"], registry=r)
        self.latency = Histogram("hegui_sidecar_request_seconds",
                                 "Time from request to the end of the response.", ["route"],
                                 buckets=_LATENCY, registry=r)
        self.model_latency = Histogram("hegui_sidecar_model_seconds",
                                       "Time the model server took (to the response headers).",
                                       ["route"], buckets=_LATENCY, registry=r)
        self.moderation_latency = Histogram("hegui_sidecar_moderation_seconds",
                                            "Time one moderation call took.", ["direction"],
                                            buckets=_LATENCY, registry=r)
        self.decisions = Counter("hegui_sidecar_moderation_decisions",
                                 "Block, mask and flag decisions by category and direction "
                                 "(Art.4, Art.14).", ["action", "category", "direction"],
                                 registry=r)
        # Per service, for the operator's incident-rate rule (Art.14, Art.21): blocked content;
        # only direction="output" is the service's (see the module doc).
        self.incidents = Counter("hegui_sidecar_incidents",
                                 "Prohibited content blocked, by direction (Art.14); the "
                                 "operator's suspension rule counts only the model's blocked "
                                 "outputs, never users' blocked prompts.",
                                 ["hegui_service", "direction"], registry=r)
        for direction in ("input", "output"):  # at zero, so the first block is an increase
            self.incidents.labels(service, direction)
        self.moderator_errors = Counter("hegui_sidecar_moderator_errors",
                                        "Failed calls to the moderation model (Triton).",
                                        ["direction"], registry=r)
        self.fail_mode = Counter("hegui_sidecar_fail_mode_activations",
                                 "Requests served (Open) or refused (Closed) while the "
                                 "moderator was unreachable.", ["mode", "direction"], registry=r)
        self.strikes = Counter("hegui_sidecar_strikes", "Strikes against users, by the level "
                               "they lead to (Art.14).", ["level"], registry=r)
        # The chain's head outside the pod: a scrape history shows any later truncation (Art.11).
        self.records_head = Gauge("hegui_sidecar_records_head_seq",
                                  "Sequence number of the last incident record written.",
                                  registry=r)
        self.stream_cuts = Counter("hegui_sidecar_stream_cuts",
                                   "Streams stopped by a violation (Art.14) or a model error.",
                                   ["reason"], registry=r)
        # --- the SLIs of the service's objectives (Art.13) and its suspension (Art.21) ---------
        self.sli_requests = Counter("hegui_sidecar_sli_requests",
                                    "Requests on the model routes by outcome (served, refused, "
                                    "failed), not counting those refused while suspended "
                                    "(Art.13).", ["hegui_service", "route", "outcome"],
                                    registry=r)
        self.sli_latency = Histogram("hegui_sidecar_sli_latency_seconds",
                                     "Latency of served requests: to the first token for "
                                     "moderated streams, else to the end (Art.13).",
                                     ["hegui_service", "route"],
                                     buckets=sli_buckets(latency_threshold), registry=r)
        for route in SLI_ROUTES:
            self.sli_latency.labels(service, route)
            for result in OUTCOMES:
                self.sli_requests.labels(service, route, result)
        self.suspended = Gauge("hegui_sidecar_suspended",
                               "1 while the service is suspended and every model route answers "
                               "503 (Art.21), else 0.", ["hegui_service"], registry=r)
        self.suspended.labels(service).set(0)
        self.suspension_file_errors = Counter(
            "hegui_sidecar_suspension_file_errors",
            "Unreadable or invalid suspension files; the last valid state is kept.", registry=r)

    def observe_sli(self, route: str, status: int, seconds: float, *, cut: bool = False,
                    client_caused: bool = False) -> None:
        """Count one request of a model route for the SLIs (Art.13)."""
        result = outcome(status, cut, client_caused)
        self.sli_requests.labels(self.service, route, result).inc()
        if result == "served":
            self.sli_latency.labels(self.service, route).observe(seconds)
