"""The mutating webhook's decision: inject the sidecar into pods of a covered service.

Only Pods are mutated (never the workloads Git owns). A pod is injected when a CompliancePolicy
enforces its namespace, the policy declares a sidecar, the pod runs a generative model and exactly
one GenerativeService selects it, unless a current ComplianceException waives rule `injection`
for the pod's workload. A pod that cannot be patched safely is refused when the policy enforces
the injection rule, and admitted unmodified with a warning otherwise; pods that slip through are
the operator's to find (a later issue).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from typing import Any

from hegui.admission import review
from hegui.admission.injection import InjectionConflict, inject
from hegui.admission.server import Validator
from hegui.api.articles import Rule
from hegui.api.policy import EnforcementMode
from hegui.rules import workloads
from hegui.rules.index import ComplianceIndex


def _owners(pod: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """The workloads an exception may name for this pod: itself, its owner, and the Deployment
    behind a ReplicaSet (whose name is the Deployment's plus the pod-template-hash)."""
    metadata = pod.get("metadata") if isinstance(pod.get("metadata"), Mapping) else {}
    assert isinstance(metadata, Mapping)
    if name := metadata.get("name"):
        yield "Pod", str(name)
    template_hash = (metadata.get("labels") or {}).get("pod-template-hash")
    for owner in metadata.get("ownerReferences") or []:
        if not isinstance(owner, Mapping):
            continue
        kind, name = str(owner.get("kind")), str(owner.get("name"))
        yield kind, name
        if kind == "ReplicaSet" and template_hash and name.endswith(f"-{template_hash}"):
            yield "Deployment", name.removesuffix(f"-{template_hash}")


def make_mutator(index: ComplianceIndex) -> Validator:
    def mutate(request: review.AdmissionRequest) -> review.Decision:
        if request.kind != "Pod" or request.operation != "CREATE":
            return review.Decision(True)
        policy = index.policy_for(request.namespace)
        if policy is None:
            return review.Decision(True)
        pod = request.obj
        [template] = workloads.pod_templates({**pod, "kind": "Pod"})
        if not workloads.generative_evidence(template, request.namespace, index.claim_classes,
                                             policy.detection):
            return review.Decision(True)
        services = index.services_selecting(request.namespace, [template.labels])
        if len(services) != 1:
            return review.Decision(True)  # the validating webhook reports coverage
        now = dt.datetime.now(dt.UTC)
        for kind, name in _owners(pod):
            if exception := index.exemption_for(request.namespace, kind, name, Rule.INJECTION,
                                                now):
                return review.Decision(True, warnings=[
                    f"[injection, Art.14] no sidecar: ComplianceException {exception} waives "
                    f"injection for {kind} {name}"])
        enforcing = [p for p in policy.policies if p.spec.sidecar is not None]
        if not enforcing:
            return review.Decision(True)
        try:
            injection = inject(pod, enforcing[0], services[0].name)
        except InjectionConflict as conflict:
            message = (f"[injection, Art.14] Pod {request.namespace}/{request.name or '(new)'}: "
                       f"{conflict}")
            if policy.mode_for(Rule.INJECTION) is EnforcementMode.ENFORCE:
                return review.Decision(False, f"hegui cannot inject its sidecar: {message}",
                                       code=403)
            return review.Decision(True, warnings=[message])
        return review.Decision(True, warnings=injection.warnings,
                               patch=injection.patch or None)

    return mutate
