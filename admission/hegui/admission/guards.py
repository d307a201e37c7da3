"""NetworkPolicies a team cannot use to widen what hegui closes (Art.14, Art.21).

NetworkPolicies add up: a pod selected by several may receive whatever any of them admits. The
operator keeps one per service (`hegui-<service>`) that admits ingress only on the sidecar's
port (Art.14: nothing reaches the model around moderation) and nothing at all while the service
is suspended with `IsolateNetwork` (Art.21). A team with `edit` could add its own policy that
admits the model's port, or anything during isolation, and undo both. So the webhook refuses a
NetworkPolicy, written by anyone but hegui and the platform, that admits ingress to pods a
GenerativeService may select, when hegui keeps that service's policy (the CompliancePolicy's
sidecar has `networkPolicy: true`) or the service is suspended; and one that admits egress from
them when the policy restricts egress (`spec.sidecar.egress`, Restricted by default: a model
that dials out serves around the sidecar, which sees only what comes in) or the service is
suspended. What hegui closes, and what widens it, is decided in `hegui.rules.network`, which
the operator's report of older policies shares.

Why the webhook and not an AdminNetworkPolicy: AdminNetworkPolicy (sig-network's
policy.networking.k8s.io) would let hegui deny with a priority teams cannot override, but it is
an alpha API that few CNI plugins implement and no managed cluster enables by default; a guard
at admission holds on every cluster with any NetworkPolicy implementation. Policies that existed
before hegui (or were written while the webhook was down) are not undone by it: the guard keeps
new ones out, and `hegui.operator.workloads` only reports the rest.

"May select" is decided on the selectors alone, without listing pods (the webhook answers from
memory): two label selectors overlap unless some key is constrained by both in incompatible
ways (different required values, a value required by one and excluded by the other, a key
required by one and absent in the other). Pods are created later, so only a provable disjoint
selector is admitted. The apiserver sends only the policies that can widen anything: ones that
admit ingress or egress (`networkpolicies.validate.hegui.io` in `hegui.admission.configuration`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hegui.admission import review
from hegui.api.articles import Rule
from hegui.api.common import LabelSelector
from hegui.api.generativeservice import GenerativeService
from hegui.rules.index import ComplianceIndex
from hegui.rules.network import admits, closed_by_hegui, widens

#: key -> (values it must take or None for any, values it must not take, must exist, must not)
_Constraint = tuple[set[str] | None, set[str], bool, bool]


def _requirements(selector: Mapping[str, Any]) -> list[tuple[str, str, list[str]]]:
    found: list[tuple[str, str, list[str]]] = []
    labels = selector.get("matchLabels")
    if isinstance(labels, Mapping):
        found += [(str(k), "In", [str(v)]) for k, v in labels.items()]
    for expression in selector.get("matchExpressions") or []:
        if isinstance(expression, Mapping):
            values = expression.get("values")
            found.append((str(expression.get("key")), str(expression.get("operator")),
                          [str(v) for v in values] if isinstance(values, list) else []))
    return found


def selectors_overlap(first: Mapping[str, Any], second: Mapping[str, Any]) -> bool:
    """Whether some set of labels satisfies both Kubernetes label selectors (dict form)."""
    constraints: dict[str, _Constraint] = {}
    for key, operator, values in _requirements(first) + _requirements(second):
        allowed, excluded, exists, absent = constraints.get(key, (None, set(), False, False))
        if operator == "In":
            allowed = set(values) if allowed is None else allowed & set(values)
            exists = True
        elif operator == "NotIn":
            excluded = excluded | set(values)
        elif operator == "Exists":
            exists = True
        elif operator == "DoesNotExist":
            absent = True
        else:  # an operator the apiserver would refuse: assume the worst
            continue
        constraints[key] = (allowed, excluded, exists, absent)
    for allowed, excluded, exists, absent in constraints.values():
        if absent and exists:
            return False
        if allowed is not None and not (allowed - excluded):
            return False
    return True


def _selector(service: GenerativeService) -> dict[str, Any]:
    selector: LabelSelector = service.spec.selector
    return {"matchLabels": dict(selector.match_labels),
            "matchExpressions": [{"key": r.key, "operator": r.operator.value,
                                  "values": list(r.values or [])}
                                 for r in selector.match_expressions]}


def check_network_policy(request: review.AdmissionRequest,
                         index: ComplianceIndex) -> review.Decision:
    """Refuse a NetworkPolicy that would admit traffic hegui keeps out of, or in, a service's
    pods: ingress around the sidecar, egress beyond what the policy allows, anything while
    suspended."""
    spec = request.obj.get("spec")
    if request.operation not in ("CREATE", "UPDATE") or not isinstance(spec, Mapping):
        return review.Decision(True)
    if not (admits(spec, "Ingress") or admits(spec, "Egress")):
        return review.Decision(True)
    pod_selector = spec.get("podSelector")
    pods = pod_selector if isinstance(pod_selector, Mapping) else {}
    effective = index.policy_for(request.namespace)
    # Any sidecar that may be injected here: which one a pod gets depends on its workload
    # (spec.workloads), and the policy's pod selector does not say what that is.
    sidecars = [p.spec.sidecar for p in (effective.policies if effective else ())]
    for name, service in sorted(index.services_by_namespace.get(request.namespace, {}).items()):
        suspended = service.is_suspended
        widened = widens(spec, closed_by_hegui(sidecars, suspended=suspended))
        if widened is None or not selectors_overlap(pods, _selector(service)):
            continue
        rule = Rule.SUSPENSION if suspended else Rule.INJECTION
        direction = f"its {widened.lower()}"
        if suspended:
            why = ("it is suspended (Art.21): while hegui isolates it nothing may reach its pods "
                   "and they may dial only cluster DNS and hegui's namespace")
        elif widened == "Ingress":
            why = ("hegui admits ingress to its pods only on the sidecar's port (Art.14), and "
                   "NetworkPolicies add up, so this one would let traffic reach the model around "
                   "moderation")
        else:
            why = ("its CompliancePolicy restricts egress (spec.sidecar.egress, Art.14: a model "
                   "that dials out, a tunnel or a queue it pulls prompts from, serves around "
                   "the sidecar), and NetworkPolicies add up, so this one would let its pods "
                   "dial elsewhere; a destination the model needs is named by the platform in "
                   "the CompliancePolicy's spec.sidecar.egress.to")
        return review.Decision(False, (
            f"hegui refused NetworkPolicy {request.namespace}/{request.name}: "
            f"[{rule.value}, {rule.article}] spec.podSelector may select the pods of "
            f"GenerativeService {name}, and {why}. Fix: select other pods, or drop {direction} "
            f"rules; hegui keeps NetworkPolicy hegui-{name} for these pods"), code=403)
    return review.Decision(True)
