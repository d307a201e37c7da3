"""The operator evicts only what comes back (issue 15): of the pods that slipped past the
injector, only the service's own pods that a controller recreates are evicted (then injected);
a bare pod, or another service's pod, is reported and never evicted (Art.14)."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

from hegui.operator.workloads import observe
from hegui.rules.index import ComplianceIndex, ObjectKey

NOW = dt.datetime(2026, 11, 29, tzinfo=dt.UTC)
POLICY: dict[str, Any] = {
    "apiVersion": "hegui.io/v1alpha1", "kind": "CompliancePolicy",
    "metadata": {"name": "default", "generation": 1},
    "spec": {"namespaces": ["ai"], "defaultMode": "Enforce",
             "sidecar": {"image": "registry.example.cn/hegui/sidecar:0.1.0", "port": 8443,
                         "evictUninjected": True}}}
SERVICE: dict[str, Any] = {
    "apiVersion": "hegui.io/v1alpha1", "kind": "GenerativeService",
    "metadata": {"name": "chat", "namespace": "ai", "generation": 1},
    "spec": {"selector": {"matchLabels": {"app": "chat"}},
             "filing": {"publicOpinion": False,
                        "algorithm": {"number": "网信算备110108823483901230011号"}},
             "labeling": {"modalities": ["text"],
                          "implicit": {"contentProducer": "Example AI Co."}}}}
OTHER = copy.deepcopy(SERVICE)
OTHER["metadata"]["name"] = "search"
OTHER["spec"]["selector"] = {"matchLabels": {"app": "search"}}


def _pod(name: str, app: str = "chat", owner: dict[str, Any] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ai", "labels": {"app": app}}
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"containers": [{"name": "model", "image": "llm:1",
                                     "ports": [{"name": "http", "containerPort": 8000}],
                                     "resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
            "status": {"phase": "Running"}}


REPLICASET = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "chat-5d4f",
              "controller": True}


def test_only_the_services_controlled_pods_are_evicted() -> None:
    index = ComplianceIndex.from_objects([
        POLICY, SERVICE, OTHER, {"apiVersion": "v1", "kind": "Namespace",
                                 "metadata": {"name": "ai"}}])
    pods = [_pod("chat-a", owner=REPLICASET),
            _pod("bare"),  # nothing recreates it: evicting it would delete the workload
            _pod("owned-not-controlled", owner={**REPLICASET, "controller": False}),
            _pod("search-a", app="search", owner=REPLICASET)]  # another service's
    seen = observe(index.services[ObjectKey("ai", "chat")], index, pods=pods, now=NOW)
    assert seen.evict
    assert sorted(seen.uninjected) == ["bare", "chat-a", "owned-not-controlled"]
    assert seen.evictable == ["chat-a"]
    [bare] = [f for f in seen.findings if f.get("workload", {}).get("name") == "bare"]
    assert "never evicts it" in bare["message"] and bare["article"] == "Art.14"


# --- NetworkPolicies older than the guard (issue 15) ---------------------------------------------

def _network_policy(name: str, selector: dict[str, Any], ingress: list[Any]) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ai"},
            "spec": {"podSelector": selector, "policyTypes": ["Ingress"], "ingress": ingress}}


def test_a_teams_policy_that_reopens_the_services_pods_is_reported() -> None:
    suspended = copy.deepcopy(SERVICE)
    suspended["spec"]["suspension"] = {"mode": "Manual", "action": "IsolateNetwork"}
    suspended["status"] = {"suspension": {"suspended": True, "since": "2026-11-29T00:00:00Z",
                                          "reason": "an authority's order"}}
    index = ComplianceIndex.from_objects([
        POLICY, suspended, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ai"}}])
    service = index.services[ObjectKey("ai", "chat")]
    assert service.is_suspended
    policies = [
        _network_policy("allow-all", {}, [{}]),  # every pod of the namespace, from anywhere
        _network_policy("team-chat", {"matchLabels": {"app": "chat"}},
                        [{"ports": [{"port": 8000}]}]),
        _network_policy("deny-only", {}, []),  # admits nothing: widens nothing
        _network_policy("search-only", {"matchLabels": {"app": "search"}}, [{}]),
        _network_policy("hegui-chat", {"matchLabels": {"app": "chat"}}, []),  # hegui's own
        _network_policy("unreadable", {"matchLabels": "not a map"}, [{}]),  # worst case
    ]
    seen = observe(service, index, pods=[_pod("chat-a", owner=REPLICASET)],
                   network_policies=policies, now=NOW)
    assert seen.widening == ["allow-all", "team-chat", "unreadable"]
    [finding] = [f for f in seen.findings if "team-chat" in f["message"]]
    assert finding["rule"] == "suspension" and finding["article"] == "Art.21"
    assert "widens hegui-chat" in finding["message"] and "chat-a" in finding["message"]
    assert "admits nothing while the service is suspended" in finding["message"]
    # Not suspended: the same policy still reopens the model's port around the sidecar.
    index = ComplianceIndex.from_objects([
        POLICY, SERVICE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ai"}}])
    seen = observe(index.services[ObjectKey("ai", "chat")], index,
                   pods=[_pod("chat-a", owner=REPLICASET)], network_policies=policies, now=NOW)
    [finding] = [f for f in seen.findings if "team-chat" in f["message"]]
    assert finding["rule"] == "injection" and finding["article"] == "Art.14"


def test_a_teams_policy_that_lets_the_pods_dial_out_is_reported() -> None:
    """Egress is Restricted by default (Art.14): a team's older policy that lets the service's
    pods dial anywhere widens hegui-chat and is reported; with egress Open it is the team's."""
    dial_out = {"metadata": {"name": "dial-out", "namespace": "ai"},
                "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}}
    index = ComplianceIndex.from_objects([
        POLICY, SERVICE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ai"}}])
    seen = observe(index.services[ObjectKey("ai", "chat")], index,
                   pods=[_pod("chat-a", owner=REPLICASET)], network_policies=[dial_out], now=NOW)
    assert seen.widening == ["dial-out"]
    [finding] = [f for f in seen.findings if "dial-out" in f["message"]]
    assert finding["article"] == "Art.14" and "egress from pods" in finding["message"]
    assert "spec.sidecar.egress" in finding["message"]
    opened = copy.deepcopy(POLICY)
    opened["spec"]["sidecar"]["egress"] = {"mode": "Open"}
    index = ComplianceIndex.from_objects([
        opened, SERVICE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ai"}}])
    seen = observe(index.services[ObjectKey("ai", "chat")], index,
                   pods=[_pod("chat-a", owner=REPLICASET)], network_policies=[dial_out], now=NOW)
    assert seen.widening == []


def test_where_hegui_keeps_no_policy_a_teams_policy_widens_nothing() -> None:
    """With `networkPolicy: false` hegui renders no hegui-chat: the team's ingress rules are its
    own business, not a finding (`hegui.rules.network`, the rule the admission guard shares)."""
    unkept = copy.deepcopy(POLICY)
    unkept["spec"]["sidecar"]["networkPolicy"] = False
    index = ComplianceIndex.from_objects([
        unkept, SERVICE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ai"}}])
    seen = observe(index.services[ObjectKey("ai", "chat")], index,
                   pods=[_pod("chat-a", owner=REPLICASET)],
                   network_policies=[_network_policy("allow-all", {}, [{}])], now=NOW)
    assert seen.widening == []
    assert not [f for f in seen.findings if "allow-all" in f["message"]]
