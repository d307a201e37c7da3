"""The mutating webhook's decision: inject the sidecar into pods of a covered service.

Only Pods are mutated (never the workloads Git owns). A pod is injected when a CompliancePolicy
enforces its namespace, the policy declares a sidecar, the pod runs a generative model (or is a
serving kind's entry, a Ray head, in front of pods that do, or asks to be fronted with the label
hegui.io/fronted) and exactly one GenerativeService selects it, unless a current
ComplianceException waives rule `injection` for the pod's workload. A pod that cannot be
patched safely is refused when the policy enforces the injection rule, and admitted unmodified
with a warning otherwise; pods that slip through (webhook down, or created before hegui) are
found by the operator with the same `sidecar_duty`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hegui.admission import review
from hegui.admission.injection import InjectionConflict, carries_sidecar, json_patch, render
from hegui.api.articles import Rule
from hegui.api.policy import CompliancePolicy, EnforcementMode
from hegui.rules import workloads
from hegui.rules.index import ComplianceIndex, EffectivePolicy, ObjectKey, exemption_scope
from hegui.rules.injection import CAPTURE_NAME, FRONTED_LABEL, SIDECAR_NAME, injecting_policy
from hegui.rules.workloads import labels


@dataclass(frozen=True)
class SidecarDuty:
    """A pod that must carry the sidecar: the policy that declares it and the service it serves.
    `waived_by` names a current ComplianceException for rule injection, if one applies."""

    policy: CompliancePolicy
    effective: EffectivePolicy
    service: str
    waived_by: str | None = None
    waived_for: str = ""


def sidecar_duty(pod: Mapping[str, Any], namespace: str, index: ComplianceIndex,
                 now: dt.datetime) -> SidecarDuty | None:
    """Whether `pod` must carry hegui's sidecar, by the rules the mutating webhook applies at
    admission and the operator applies to running pods (one rule, one place)."""
    effective = index.policy_for(namespace)
    if effective is None:
        return None
    [template] = workloads.pod_templates({**pod, "kind": "Pod"})
    serves = bool(workloads.generative_evidence(template, namespace, index.claim_classes,
                                                effective.detection)
                  or workloads.serving_entry(pod, effective.detection))
    if not serves and not index.selectors.get(namespace):
        return None
    # The policy whose sidecar goes in: the first that declares one among those whose workload
    # scope (spec.workloads) takes the pod; the operator renders from the same one.
    injecting = injecting_policy(effective, workloads.owner_kinds({**pod, "kind": "Pod"}),
                                 [template.labels])
    if injecting is None:
        return None  # outside the policies' workload scope, or none of those injects
    policy, effective = injecting
    services = index.services_selecting(namespace, [template.labels])
    if len(services) != 1:
        return None  # the validating webhook reports coverage
    if not serves and FRONTED_LABEL not in template.labels:
        # A serving entry (a Ray head) counts only where a service selects it; so does a pod
        # that asks to be fronted (a peer on the service's ports between pods).
        return None
    duty = SidecarDuty(policy, effective, services[0].name)
    if exception := index.exemption_for(namespace, exemption_scope({**pod, "kind": "Pod"}),
                                        Rule.INJECTION, now):
        waived = index.exceptions.get(ObjectKey(namespace, exception))
        return SidecarDuty(duty.policy, effective, duty.service, exception,
                           f"{waived.spec.workload.kind} {waived.spec.workload.name}"
                           if waived else "its workload")
    return duty


def false_fronting(pod: Mapping[str, Any], namespace: str, index: ComplianceIndex,
                   now: dt.datetime, *, created: bool) -> str | None:
    """Why a pod that claims hegui fronts it is not fronted, or None. Two claims count:
    - FRONTED_LABEL makes a pod a peer on its service's ports between pods (PodToPod), around
      the sidecar. It is honest only on a pod that must carry the sidecar (`sidecar_duty`, not
      waived) and carries it as the injector renders it (`carries_sidecar`): where nothing
      injects (a pod two services select, one outside the policies' scope or waived) a
      container merely named hegui-sidecar would stay.
    - hegui's container names on a pod that must carry the sidecar: when the pod is made
      (`created`) they must be exactly what the injector renders, image included. Otherwise a
      look-alike of the team's image, on a pod the injector missed (its webhook timed out and
      fails open), would count as injected for the operator, which tolerates older images on
      running pods (a policy's new image is an upgrade to roll out, and images never change in
      place: `swapped_own_containers`)."""
    labelled = FRONTED_LABEL in labels(pod)
    spec = pod.get("spec")
    init = spec.get("initContainers") if isinstance(spec, Mapping) else None
    named = any(isinstance(c, Mapping) and c.get("name") in (SIDECAR_NAME, CAPTURE_NAME)
                for c in (init if isinstance(init, list) else []))
    if not labelled and not (created and named):
        return None
    duty = sidecar_duty(pod, namespace, index, now)
    if duty is None or duty.waived_by:
        if not labelled:
            return None  # hegui fronts nothing here, and nothing claims it does
        why = (f"ComplianceException {duty.waived_by} waives its sidecar" if duty
               else "hegui injects no sidecar into it (no single GenerativeService selects it, "
                    "it is outside the CompliancePolicy's workloads, or no policy declares a "
                    "sidecar)")
    else:
        sidecar = duty.policy.spec.sidecar
        posture = index.services.get(ObjectKey(namespace, duty.service))
        if sidecar is not None and carries_sidecar(pod, sidecar, duty.service, posture,
                                                   any_image=not created):
            return None
        if not labelled:
            return (f"spec.initContainers: a container named {SIDECAR_NAME} or {CAPTURE_NAME} "
                    "is not hegui's as the injector renders it (the injector did not run on "
                    "this pod): it would count as the sidecar without being it")
        why = "it does not carry hegui's sidecar as the injector renders it"
    return (f"metadata.labels[{FRONTED_LABEL}] marks a pod hegui fronts, and {why}: the label "
            "admits it to its service's ports between pods, around the sidecar")


def make_mutator(index: ComplianceIndex) -> review.Validator:
    def mutate(request: review.AdmissionRequest) -> review.Decision:
        if request.kind != "Pod" or request.operation != "CREATE":
            return review.Decision(True)
        pod = request.obj
        duty = sidecar_duty(pod, request.namespace, index, dt.datetime.now(dt.UTC))
        if duty is None:
            return review.Decision(True)
        if duty.waived_by:
            return review.Decision(True, warnings=[
                f"[injection, Art.14] no sidecar: ComplianceException {duty.waived_by} waives "
                f"injection for {duty.waived_for}"])
        try:
            posture = index.services.get(ObjectKey(request.namespace, duty.service))
            # The desired pod, then the difference: the patch is whatever turns one into the
            # other (empty when the pod carries the sidecar already).
            rendered = render(pod, duty.policy, duty.service, posture)
        except InjectionConflict as conflict:
            message = (f"[injection, Art.14] Pod {request.namespace}/{request.name or '(new)'}: "
                       f"{conflict}")
            if duty.effective.mode_for(Rule.INJECTION) is EnforcementMode.ENFORCE:
                return review.Decision(False, f"hegui cannot inject its sidecar: {message}",
                                       code=403)
            return review.Decision(True, warnings=[message])
        return review.Decision(True, warnings=rendered.warnings,
                               patch=json_patch(pod, rendered.pod) or None)

    return mutate
