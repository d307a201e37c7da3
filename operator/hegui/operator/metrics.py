"""The operator's cluster-wide compliance metrics (prometheus-client).

Labels are bounded: per service (namespace, service), per rule (rule, article, severity: a fixed
vocabulary), never per pod or per user. An explicit state gauge per service means a stopped or
suspended service is never silent (the lesson of Flagger and Argo Rollouts).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter as Tally
from collections.abc import Iterable, Mapping
from enum import IntEnum
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge


class ServiceState(IntEnum):
    COMPLIANT = 0
    NON_COMPLIANT = 1
    SUSPENDED = 2
    ERROR = 3


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.service_state = Gauge(
            "hegui_service_state", "Each GenerativeService: 0 compliant, 1 non-compliant, "
            "2 suspended (Art.21), 3 error (the operator could not judge it).",
            ["namespace", "service"], registry=self.registry)
        self.findings = Gauge(
            "hegui_findings", "Findings on all services, by rule, article and severity.",
            ["rule", "article", "severity"], registry=self.registry)
        self.injection_gaps = Gauge(
            "hegui_injection_gaps", "Running pods of a service without hegui's sidecar (Art.14).",
            ["namespace", "service"], registry=self.registry)
        self.suspensions = Counter(
            "hegui_suspensions", "Suspensions of a service (Art.21), by who suspended it.",
            ["namespace", "service", "trigger"], registry=self.registry)
        self.evictions = Counter(
            "hegui_uninjected_pod_evictions", "Pods evicted so they come back with the sidecar.",
            ["namespace", "service"], registry=self.registry)
        self.last_reconcile = Gauge(
            "hegui_last_successful_reconcile_timestamp_seconds",
            "When the operator last finished judging a service.", registry=self.registry)
        self.audit_results = Gauge(
            "hegui_audit_results", "Results of the background audit of running workloads, by "
            "namespace and outcome (pass, fail, warn, error, skip).",
            ["namespace", "result"], registry=self.registry)
        self._findings: dict[tuple[str, str], Tally[tuple[str, str, str]]] = {}
        self._total: Tally[tuple[str, str, str]] = Tally()  # the sum of _findings' tallies
        self._lock = threading.Lock()

    def observe(self, namespace: str, service: str, *, state: ServiceState,
                findings: Iterable[Mapping[str, Any]], uninjected: int) -> None:
        self.service_state.labels(namespace, service).set(int(state))
        self.injection_gaps.labels(namespace, service).set(uninjected)
        tally = Tally((str(f.get("rule")), str(f.get("article")), str(f.get("severity")))
                      for f in findings)
        with self._lock:
            self._shift(self._findings.get((namespace, service)) or Tally(), tally)
            self._findings[(namespace, service)] = tally
        if state is not ServiceState.ERROR:
            self.last_reconcile.set(time.time())

    def audit(self, namespace: str, summary: Mapping[str, int]) -> None:
        for result, count in summary.items():
            self.audit_results.labels(namespace, result).set(count)

    def forget(self, namespace: str, service: str) -> None:
        for gauge in (self.service_state, self.injection_gaps):
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, service)
        with self._lock:
            self._shift(self._findings.pop((namespace, service), Tally()), Tally())

    def _shift(self, old: Tally[tuple[str, str, str]],
               new: Tally[tuple[str, str, str]]) -> None:
        """Move the totals from one service's old findings to its new ones: only the labels
        that changed are touched, so a reconcile costs the same with 10 or 10,000 services
        (summing every service's tally each time made a pass over N services O(N^2))."""
        for labels in old.keys() | new.keys():
            delta = new[labels] - old[labels]
            if not delta:
                continue
            count = self._total[labels] + delta
            if count > 0:
                self._total[labels] = count
                self.findings.labels(*labels).set(count)
            else:  # no service has it any more: the series goes, as before
                self._total.pop(labels, None)
                with contextlib.suppress(KeyError):
                    self.findings.remove(*labels)

