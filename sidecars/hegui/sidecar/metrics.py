"""The sidecar's Prometheus metrics, on /metrics. One registry per app, so tests stay apart."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            10.0, 30.0)


class SidecarMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
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
