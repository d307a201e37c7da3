"""What NetworkPolicy `hegui-<service>` closes, and whether another NetworkPolicy widens it
(Art.14: nothing reaches the model, or leaves it, around the sidecar; Art.21: nothing at all
while the service is suspended).

NetworkPolicies add up: a pod selected by several may receive, and dial, whatever any of them
admits. So a policy the team writes widens hegui's when it admits a direction hegui closes.
One decision, used where a new policy is refused (`hegui.admission.guards`) and where an older
one is reported (`hegui.operator.workloads`), so that both judge against the policy the
operator renders, not each its own reading of the CompliancePolicies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from hegui.api.policy import EgressMode, Sidecar

Direction = Literal["Ingress", "Egress"]


@dataclass(frozen=True)
class Closed:
    """The directions `hegui-<service>` closes to all but the sidecar's traffic."""

    ingress: bool
    egress: bool


def closed_by_hegui(sidecars: Iterable[Sidecar | None], *, suspended: bool) -> Closed:
    """What `hegui-<service>` closes where it is rendered from one of `sidecars`: the operator
    passes the one it renders from (`hegui.operator.workloads.service_sidecar`: the sidecar
    injection puts into the service's pods, `hegui.rules.injection.injecting_policy`, or the
    strictest of several); the admission guard passes every sidecar the namespace's policies
    declare, since which one a pod gets depends on its workload's kinds and labels
    (spec.workloads), which a NetworkPolicy's selector cannot tell and which change after the
    NetworkPolicy is admitted. Ingress where a sidecar keeps a NetworkPolicy (`networkPolicy:
    true`); egress where one also restricts egress (`spec.sidecar.egress.mode: Restricted`, the
    default); both while the service is suspended (Art.21: a suspended model must not keep
    pulling prompts either)."""
    if suspended:
        return Closed(ingress=True, egress=True)
    kept = [s for s in sidecars if s is not None and s.network_policy]
    return Closed(ingress=bool(kept),
                  egress=any(s.egress.mode is EgressMode.RESTRICTED for s in kept))


def admits(spec: Mapping[str, Any], direction: Direction) -> bool:
    """Whether a NetworkPolicy spec admits any traffic in `direction` (only those can widen
    anything). Without policyTypes, Kubernetes takes Ingress always and Egress when the policy
    has egress rules."""
    types = spec.get("policyTypes")
    rules = spec.get(direction.lower())
    governs = (direction in types if isinstance(types, list)
               else direction == "Ingress" or rules is not None)
    return governs and isinstance(rules, list) and len(rules) > 0


def widens(spec: Mapping[str, Any], closed: Closed) -> Direction | None:
    """The direction in which a NetworkPolicy spec admits what hegui closes (ingress first),
    or None when it only narrows."""
    if closed.ingress and admits(spec, "Ingress"):
        return "Ingress"
    if closed.egress and admits(spec, "Egress"):
        return "Egress"
    return None
