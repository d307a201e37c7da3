"""A service's stability (Art.13) and suspension (Art.21), judged once per reconcile.

`hegui.operator.slo` reads the objectives from the Prometheus the CompliancePolicy names;
`hegui.operator.suspension` decides, from that and the previous status, whether the service is
suspended now. This module joins them for the operator: deliberate requests come from the
`hegui.io/suspend` and `hegui.io/resume` annotations (`kubectl hegui suspend|resume`, admitted by
the webhook only from the user they name), and the result becomes the SLOMet and Suspended
conditions, the status, the sidecars' notice and the transitions to announce.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from hegui.api.common import parse_duration
from hegui.api.generativeservice import (
    RESUME_ANNOTATION,
    SUSPEND_ANNOTATION,
    DeliberateRequest,
    GenerativeService,
    ServiceConditionType,
    SuspensionAction,
)
from hegui.api.policy import PrometheusSource
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
          now: datetime) -> Stability:
    """Evaluate the objectives (when declared and a Prometheus is configured) and step the
    suspension state machine; never raises for Prometheus trouble (that is no verdict)."""
    name = f"{service.namespace}/{service.name}"
    evaluation = None
    if service.spec.slo is not None and prometheus is not None:
        client = slo.PrometheusClient(prometheus.url, timeout=prometheus.timeout)
        evaluation = slo.evaluate(
            client, name, service.spec.slo, service.spec.suspension,
            min_requests=(service.spec.suspension.min_requests if service.spec.suspension
                          else slo.DEFAULT_MIN_REQUESTS),
            min_window=parse_duration(prometheus.min_window))
    requests: dict[str, DeliberateRequest] = {}
    notes: list[str] = []
    for annotation in (SUSPEND_ANNOTATION, RESUME_ANNOTATION):
        if raw := service.metadata.annotations.get(annotation):
            try:
                requests[annotation] = DeliberateRequest.parse(raw, annotation)
            except ValueError as error:
                notes.append(str(error))
    suspend = resume = None
    if asked := requests.get(SUSPEND_ANNOTATION):
        suspend = suspension.SuspendRequest(asked.by, asked.reason, asked.at)
    if asked := requests.get(RESUME_ANNOTATION):
        resume = suspension.ResumeRequest(asked.by, asked.reason, asked.at)
    incidents = None
    limit = service.spec.suspension.max_incidents_per_hour if service.spec.suspension else None
    if limit is not None and prometheus is not None:
        window = _incident_window(service, prometheus)
        client = slo.PrometheusClient(prometheus.url, timeout=prometheus.timeout)
        if (rate := slo.incidents_per_hour(client, name, window)) is not None:
            incidents = suspension.IncidentRate(round(rate, 3), limit)
    previous = service.status.suspension if service.status else None
    stepped = suspension.step(previous, spec=service.spec.suspension, evaluation=evaluation,
                              now=now, suspend=suspend, resume=resume, incidents=incidents)
    result = Stability(stepped, evaluation)
    result.conditions = _conditions(service, prometheus, evaluation, stepped, notes)
    return result


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
