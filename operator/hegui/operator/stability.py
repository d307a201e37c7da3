"""A service's stability (Art.13) and suspension (Art.21), judged once per reconcile.

`hegui.operator.slo` reads the objectives from the Prometheus the CompliancePolicy names;
`hegui.operator.suspension` decides, from that and the previous status, whether the service is
suspended now. This module joins them for the operator: deliberate requests are the
SuspensionOrders and ResumeRequests naming the service (`kubectl hegui suspend|resume`, created
by the compliance group; the apiserver stamps their time and checks their creator), and the
result becomes the SLOMet and Suspended conditions, the status, the sidecars' notice, the
transitions to announce and each request's outcome.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from hegui.api.common import parse_duration
from hegui.api.generativeservice import (
    GenerativeService,
    ServiceConditionType,
    SuspensionAction,
)
from hegui.api.policy import PrometheusSource
from hegui.api.suspension import ResumeRequest, SuspensionOrder
from hegui.operator import slo, suspension
from hegui.sidecar.suspension import SuspensionNotice

#: (condition, status True/False/Unknown, reason, message)
ConditionFacts = tuple[ServiceConditionType, str, str, str]


@dataclass
class Stability:
    step: suspension.Step
    evaluation: slo.SloEvaluation | None = None
    conditions: list[ConditionFacts] = field(default_factory=list)

    @property
    def suspended(self) -> bool:
        return self.step.state.suspended

    def notice(self) -> str:
        """The sidecars' `suspension.yaml` (RejectRequests answers 503 while it says so)."""
        state = self.step.state
        return SuspensionNotice(state.suspended, state.since, state.reason).to_yaml()


def judge(service: GenerativeService, prometheus: PrometheusSource | None,
          now: datetime, requests: Iterable[SuspensionOrder | ResumeRequest] = ()
          ) -> Stability:
    """Evaluate the objectives (when declared and a Prometheus is configured) and step the
    suspension state machine with the requests naming the service; never raises for Prometheus
    trouble (that is no verdict)."""
    name = f"{service.namespace}/{service.name}"
    evaluation = None
    if service.spec.slo is not None and prometheus is not None:
        client = slo.PrometheusClient(prometheus.url, timeout=prometheus.timeout)
        evaluation = slo.evaluate(
            client, name, service.spec.slo, service.spec.suspension,
            min_requests=(service.spec.suspension.min_requests if service.spec.suspension
                          else slo.DEFAULT_MIN_REQUESTS),
            min_window=parse_duration(prometheus.min_window))
    notes: list[str] = []
    previous = service.status.suspension if service.status else None
    pending, earlier = pending_requests(service, requests, previous.consumed_requests
                                        if previous else [])
    orders = [r for r in pending if isinstance(r, SuspensionOrder)]
    resumes = [r for r in pending if isinstance(r, ResumeRequest)]
    suspend = _suspend_request(orders[-1]) if orders else None
    resume = _resume_request(resumes[-1]) if resumes else None
    superseded = {r.metadata.uid or "": (suspension.Outcome.IGNORED,
                                         f"superseded by the later {type(r).__name__} "
                                         f"{latest.name}")
                  for group in (orders, resumes) if group
                  for latest in (group[-1],) for r in group[:-1]}
    incidents = None
    limit = service.spec.suspension.max_incidents_per_hour if service.spec.suspension else None
    if limit is not None and prometheus is not None:
        window = _incident_window(service, prometheus)
        client = slo.PrometheusClient(prometheus.url, timeout=prometheus.timeout)
        if (rate := slo.incidents_per_hour(client, name, window)) is not None:
            incidents = suspension.IncidentRate(round(rate, 3), limit)
    stepped = suspension.step(previous, spec=service.spec.suspension, evaluation=evaluation,
                              now=now, suspend=suspend, resume=resume, incidents=incidents)
    if superseded or earlier:
        for uid, why in earlier.items():
            superseded[uid] = (suspension.Outcome.IGNORED, why)
        stepped = replace(stepped, state=stepped.state.consuming(list(superseded)),
                          outcomes={**superseded, **stepped.outcomes})
    result = Stability(stepped, evaluation)
    result.conditions = _conditions(service, prometheus, evaluation, stepped, notes)
    return result


def pending_requests(service: GenerativeService,
                     requests: Iterable[SuspensionOrder | ResumeRequest],
                     consumed: Iterable[str]) -> tuple[list[SuspensionOrder | ResumeRequest],
                                                       dict[str, str]]:
    """The requests naming `service` not yet acted on, oldest first by their server-stamped
    creationTimestamp; and, by uid, those made before the service itself was created (a
    request names the service that existed when it was made: an old order never suspends a
    re-created service), which are consumed without effect."""
    done = set(consumed)
    created = service.metadata.creation_timestamp
    pending: list[SuspensionOrder | ResumeRequest] = []
    earlier: dict[str, str] = {}
    for request in requests:
        uid, made = request.metadata.uid, request.metadata.creation_timestamp
        if (request.spec.service_ref.name != service.name or not uid or made is None
                or uid in done or request.namespace != service.namespace):
            continue
        if created is not None and made < created:
            earlier[uid] = (f"made at {made.isoformat()}, before this GenerativeService was "
                            f"created ({created.isoformat()}): it named an earlier one")
            continue
        pending.append(request)
    pending.sort(key=lambda r: (r.metadata.creation_timestamp, r.name))
    return pending, earlier


def _suspend_request(order: SuspensionOrder) -> suspension.SuspendRequest:
    authority = order.spec.authority
    assert order.metadata.creation_timestamp is not None
    return suspension.SuspendRequest(
        order.spec.requested_by, order.spec.reason, order.metadata.creation_timestamp,
        uid=order.metadata.uid or "", order=order.name,
        authority=f"{authority.name} ({authority.reference})" if authority else None,
        issuer_group=order.spec.issuer_group)


def _resume_request(request: ResumeRequest) -> suspension.ResumeRequest:
    assert request.metadata.creation_timestamp is not None
    return suspension.ResumeRequest(
        request.spec.requested_by, request.spec.reason, request.metadata.creation_timestamp,
        uid=request.metadata.uid or "", groups=tuple(request.spec.groups))


def _incident_window(service: GenerativeService, prometheus: PrometheusSource) -> timedelta:
    """The first burn-rate alert's long window (scaled like the SLO's), else one hour."""
    if service.spec.slo is None:
        return timedelta(hours=1)
    alerts, _ = slo.alerts_for(service.spec.slo, service.spec.suspension,
                               min_window=parse_duration(prometheus.min_window))
    return alerts[0].long if alerts else timedelta(hours=1)


def _conditions(service: GenerativeService, prometheus: PrometheusSource | None,
                evaluation: slo.SloEvaluation | None, stepped: suspension.Step,
                notes: list[str]) -> list[ConditionFacts]:
    facts: list[ConditionFacts] = []
    if service.spec.slo is not None:
        if prometheus is None:
            facts.append((ServiceConditionType.SLO_MET, "Unknown", "NoPrometheus",
                          "[stability, Art.13] the service declares objectives but no "
                          "CompliancePolicy names a Prometheus (spec.prometheus.url) to read "
                          "them from"))
        elif evaluation is not None:
            verdict = evaluation.verdict
            status = {slo.Verdict.HEALTHY: "True", slo.Verdict.VIOLATING: "False"}.get(
                verdict, "Unknown")
            facts.append((ServiceConditionType.SLO_MET, status, verdict.value,
                          f"[stability, Art.13] {evaluation.reason}"))
    state = stepped.state
    if state.suspended:
        facts.append((ServiceConditionType.SUSPENDED, "True", "Suspended",
                      f"[suspension, Art.21] since {state.since}: {state.reason}"))
    elif service.spec.slo is not None or service.spec.suspension is not None:
        message = "serving"
        if stepped.sustained:
            message = "serving, but the violation is sustained: " + "; ".join(stepped.notes)
        elif stepped.violating:
            message = "serving; " + "; ".join(stepped.notes)
        message += "".join(f"; {note}" for note in notes)
        facts.append((ServiceConditionType.SUSPENDED, "False", "Serving",
                      f"[suspension, Art.21] {message}"))
    return facts


def isolates_network(service: GenerativeService, stability: Stability) -> bool:
    """Whether the NetworkPolicy must deny all ingress: suspended by network isolation."""
    action = service.spec.suspension.action if service.spec.suspension else None
    return stability.suspended and action is SuspensionAction.ISOLATE_NETWORK
