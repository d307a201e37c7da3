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
