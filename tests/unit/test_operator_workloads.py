"""What the operator sees of running workloads: matched workloads, pods that slipped past the
injector, Services that bypass the sidecar (Art.14), the NetworkPolicy it keeps."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import jsonpatch
import pytest

from hegui.admission.injection import inject
from hegui.api.policy import CompliancePolicy, TrafficCapture
from hegui.operator.status import compute
from hegui.operator.workloads import network_policy, observe
from hegui.rules.index import ComplianceIndex, ObjectKey

NOW = dt.datetime(2026, 11, 29, tzinfo=dt.UTC)
POLICY: dict[str, Any] = {
    "apiVersion": "hegui.io/v1alpha1", "kind": "CompliancePolicy",
    "metadata": {"name": "default", "generation": 1},
    "spec": {"namespaces": ["ai"], "defaultMode": "Enforce",
             "sidecar": {"image": "registry.example.cn/hegui/sidecar:0.1.0", "port": 8443}}}
SERVICE: dict[str, Any] = {
    "apiVersion": "hegui.io/v1alpha1", "kind": "GenerativeService",
    "metadata": {"name": "chat", "namespace": "ai", "generation": 1},
    "spec": {"selector": {"matchLabels": {"app": "chat"}},
             "filing": {"publicOpinion": False,
                        "algorithm": {"number": "网信算备110108823483901230011号"}},
             "labeling": {"modalities": ["text"],
                          "implicit": {"contentProducer": "Example AI Co."}}}}


def _index(policy: dict[str, Any] = POLICY) -> ComplianceIndex:
    return ComplianceIndex.from_objects([
        policy, SERVICE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ai"}}])


def _pod(name: str, *, owner: bool = True, phase: str = "Running") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ai", "labels": {"app": "chat"}}
    if owner:
        meta["ownerReferences"] = [{"kind": "ReplicaSet", "name": "llm-5d4f"}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"containers": [{"name": "model", "image": "llm:1",
                                     "ports": [{"name": "http", "containerPort": 8000}],
                                     "resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
            "status": {"phase": phase}}


def _injected(pod: dict[str, Any]) -> dict[str, Any]:
    policy = CompliancePolicy.from_dict(POLICY)
    patched: dict[str, Any] = jsonpatch.apply_patch(copy.deepcopy(pod),
                                                    inject(pod, policy, "chat").patch)
    return patched


def _service() -> Any:
    return _index().services[ObjectKey("ai", "chat")]


def test_pods_without_the_sidecar_are_findings_and_injected_ones_are_not() -> None:
    pods = [_injected(_pod("a")), _pod("b"), _pod("c", phase="Succeeded")]
    seen = observe(_service(), _index(), pods=pods, now=NOW)
    assert seen.uninjected == ["b"]  # a finished pod holds no traffic
    [finding] = seen.findings
    assert (finding["rule"], finding["article"], finding["severity"]) == (
        "injection", "Art.14", "Error")
    assert finding["workload"] == {"kind": "Pod", "name": "b"}
    assert not seen.evict


def test_eviction_follows_the_policy() -> None:
    policy = copy.deepcopy(POLICY)
    policy["spec"]["sidecar"]["evictUninjected"] = True
    assert observe(_service(), _index(policy), pods=[_pod("b")], now=NOW).evict


def test_an_exempted_pod_is_no_gap() -> None:
    exception = {"apiVersion": "hegui.io/v1alpha1", "kind": "ComplianceException",
                 "metadata": {"name": "debug", "namespace": "ai",
                              "creationTimestamp": "2026-11-28T00:00:00Z"},
                 "spec": {"rules": ["injection"], "workload": {"kind": "Pod", "name": "b"},
                          "justification": "debugging the model server without the proxy "
                                           "for one day, on a pod that serves no users",
                          "approvedBy": "platform@example.cn", "duration": "72h"}}
    index = _index()
    index.upsert(exception)
    assert index.exceptions, index.invalid  # the exception itself is valid
    assert observe(_service(), index, pods=[_pod("b")], now=NOW).uninjected == []


def test_a_look_alike_sidecar_does_not_count_as_injected() -> None:
    pod = _pod("b")
    pod["spec"]["initContainers"] = [{"name": "hegui-sidecar", "image": "busybox",
                                      "restartPolicy": "Always"}]
    assert observe(_service(), _index(), pods=[pod], now=NOW).uninjected == ["b"]


def test_no_injecting_policy_means_no_gap_and_no_sidecar() -> None:
    policy = copy.deepcopy(POLICY)
    del policy["spec"]["sidecar"]
    seen = observe(_service(), _index(policy), pods=[_pod("b")], now=NOW)
    assert seen.uninjected == [] and seen.sidecar is None


@pytest.mark.parametrize("capture", ["Redirect", "PortName"])
def test_services_that_target_the_model_by_number_are_reported_unless_captured(
        capture: str) -> None:
    """With the capture step a Service by number reaches the sidecar like any other (Art.14);
    with the port-name takeover alone it bypasses the sidecar (or is cut by the
    NetworkPolicy): reported."""
    services = [
        {"metadata": {"name": "by-number"},
         "spec": {"selector": {"app": "chat"}, "ports": [{"port": 80, "targetPort": 8000}]}},
        {"metadata": {"name": "by-name"},
         "spec": {"selector": {"app": "chat"}, "ports": [{"port": 80, "targetPort": "http"}]}},
        {"metadata": {"name": "sidecar-port"},
         "spec": {"selector": {"app": "chat"}, "ports": [{"port": 8443}]}},
        {"metadata": {"name": "someone-else"},
         "spec": {"selector": {"app": "other"}, "ports": [{"port": 80, "targetPort": 8000}]}},
    ]
    policy = copy.deepcopy(POLICY)
    policy["spec"]["sidecar"]["capture"] = capture
    pod = _pod("a")
    pod = jsonpatch.apply_patch(pod, inject(pod, CompliancePolicy.from_dict(policy),
                                            "chat").patch)
    seen = observe(_service(), _index(policy), pods=[pod], services=services, now=NOW)
    assert seen.uninjected == []
    if capture == "Redirect":
        assert seen.findings == []
    else:
        assert [f["message"].split()[1] for f in seen.findings] == ["by-number"]
        assert seen.findings[0]["severity"] == "Warning"


def test_matched_workloads_are_listed_and_counted() -> None:
    deployment = {"metadata": {"name": "llm"},
                  "spec": {"template": {"metadata": {"labels": {"app": "chat"}}}}}
    other = {"metadata": {"name": "web"},
             "spec": {"template": {"metadata": {"labels": {"app": "web"}}}}}
    seen = observe(_service(), _index(), pods=[_pod("a"), _pod("bare", owner=False)],
                   deployments=[deployment, other], now=NOW)
    assert seen.matched == [{"kind": "Deployment", "name": "llm"}, {"kind": "Pod", "name": "bare"}]
    assert seen.matched_count == 2


def test_the_status_carries_the_gap_and_the_moderated_condition() -> None:
    index = _index()
    seen = observe(_service(), index, pods=[_pod("b")], now=NOW)
    status = compute(ObjectKey("ai", "chat"), index, generation=1, previous=[], now=NOW,
                     observed=seen)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Moderated"]["status"] == "False"
    assert conditions["Compliant"]["status"] == "False"
    assert "Moderated (Art.14)" in conditions["Compliant"]["message"]
    assert status["uninjectedPods"] == 1

    healed = observe(_service(), index, pods=[_injected(_pod("b"))], now=NOW)
    status = compute(ObjectKey("ai", "chat"), index, generation=1, previous=[], now=NOW,
                     observed=healed)
    assert {c["type"]: c["status"] for c in status["conditions"]}["Compliant"] == "True"


def test_the_network_policy_admits_what_reaches_the_sidecar_or_nothing_when_isolated() -> None:
    """Capture Redirect (the default) sends every TCP port to the sidecar, so the policy admits
    them all (a Service that targets the model's port by number is moderated where the CNI
    enforces policies, not cut); PortName leaves the model's port reachable by number, so only
    the sidecar's port is admitted."""
    sidecar = CompliancePolicy.from_dict(POLICY).spec.sidecar
    assert sidecar is not None
    owner = {"kind": "GenerativeService", "name": "chat"}
    open_policy = network_policy(_service(), sidecar, owner=owner, own_namespace="hegui-system")
    assert open_policy["spec"]["ingress"] == [
        {"ports": [{"port": 1, "endPort": 65535, "protocol": "TCP"}]}]
    by_name = sidecar.model_copy(update={"capture": TrafficCapture.PORT_NAME})
    named = network_policy(_service(), by_name, owner=owner, own_namespace="hegui-system")
    assert named["spec"]["ingress"] == [{"ports": [{"port": 8443, "protocol": "TCP"}]}]
    assert open_policy["spec"]["podSelector"] == {"matchLabels": {"app": "chat"}}
    isolated = network_policy(_service(), sidecar, owner=owner, own_namespace="hegui-system",
                              isolate=True)
    assert isolated["spec"]["ingress"] == []


def test_declared_ports_stay_open_for_their_purpose_only() -> None:
    """Triton's metrics port only from the namespaces the platform labels as its scrapers' (the
    team declares the port, and could serve an API there); NCCL's rendezvous and Ray's worker
    range only from the service's own pods; nothing else beyond the sidecar."""
    from hegui.api.generativeservice import GenerativeService

    sidecar = CompliancePolicy.from_dict(POLICY).spec.sidecar
    assert sidecar is not None
    body = copy.deepcopy(SERVICE)
    body["spec"]["traffic"] = {"openPorts": [
        {"port": 8002, "purpose": "Metrics", "reason": "Triton metrics"},
        {"port": 29500, "purpose": "PodToPod", "reason": "NCCL rendezvous"},
        {"port": 10002, "endPort": 10100, "purpose": "PodToPod", "reason": "Ray workers"}]}
    policy = network_policy(GenerativeService.from_dict(body), sidecar,
                            owner={"kind": "GenerativeService", "name": "chat"},
                            own_namespace="hegui-system")
    assert policy["spec"]["ingress"] == [
        # Every TCP port but the declared ones reaches the sidecar (capture Redirect) ...
        {"ports": [{"port": 1, "endPort": 8001, "protocol": "TCP"},
                   {"port": 8003, "endPort": 10001, "protocol": "TCP"},
                   {"port": 10101, "endPort": 29499, "protocol": "TCP"},
                   {"port": 29501, "endPort": 65535, "protocol": "TCP"}]},
        # ... and the declared ones only from whom their purpose needs.
        {"from": [{"namespaceSelector": {"matchLabels": {"hegui.io/metrics-scraper": "true"}}}],
         "ports": [{"port": 8002, "protocol": "TCP"}]},
        # Only from the service's pods that carry the sidecar (the injector's label).
        {"from": [{"podSelector": {"matchLabels": {"app": "chat", "hegui.io/fronted": "true"}}}],
         "ports": [{"port": 29500, "protocol": "TCP"},
                   {"port": 10002, "endPort": 10100, "protocol": "TCP"}]}]
    isolated = network_policy(GenerativeService.from_dict(body), sidecar,
                              owner={"kind": "GenerativeService", "name": "chat"},
                              own_namespace="hegui-system", isolate=True)
    assert isolated["spec"]["ingress"] == []  # suspension closes declared ports too (Art.21)


DNS = {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
               "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
       "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
HEGUI = {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "hg"}}}]}


def _sidecar_with(egress: dict[str, Any] | None) -> Any:
    body = copy.deepcopy(POLICY)
    if egress is not None:
        body["spec"]["sidecar"]["egress"] = egress
    sidecar = CompliancePolicy.from_dict(body).spec.sidecar
    assert sidecar is not None
    return sidecar


def test_egress_is_restricted_by_default_to_dns_hegui_and_fronted_peers() -> None:
    """A model that dials out (a tunnel, a queue it pulls prompts from) serves around the
    sidecar (Art.14): by default the pods may dial only cluster DNS, hegui's namespace and
    their fronted peers on the PodToPod ports."""
    from hegui.api.generativeservice import GenerativeService

    body = copy.deepcopy(SERVICE)
    body["spec"]["traffic"] = {"openPorts": [
        {"port": 29500, "purpose": "PodToPod", "reason": "NCCL rendezvous"},
        {"port": 8002, "purpose": "Metrics", "reason": "Triton metrics"}]}
    policy = network_policy(GenerativeService.from_dict(body), _sidecar_with(None),
                            owner={"kind": "GenerativeService", "name": "chat"},
                            own_namespace="hg")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["egress"] == [
        DNS, HEGUI,
        {"to": [{"podSelector": {"matchLabels": {"app": "chat", "hegui.io/fronted": "true"}}}],
         "ports": [{"port": 29500, "protocol": "TCP"}]}]


def test_egress_names_the_platforms_destinations_or_stays_open_when_asked() -> None:
    sidecar = _sidecar_with({"to": [
        {"cidr": "10.20.0.0/16", "ports": [{"port": 443}], "reason": "weights from OSS"},
        {"namespace": "object-store", "reason": "the evidence store"},
        {"cidr": "169.254.20.10/32", "ports": [{"port": 53, "protocol": "UDP"}],
         "reason": "NodeLocal DNSCache"}]})
    owner = {"kind": "GenerativeService", "name": "chat"}
    policy = network_policy(_service(), sidecar, owner=owner, own_namespace="hg")
    assert policy["spec"]["egress"] == [
        DNS, HEGUI,
        {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"port": 443,
                                                                   "protocol": "TCP"}]},
        {"to": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "object-store"}}}]},
        {"to": [{"ipBlock": {"cidr": "169.254.20.10/32"}}], "ports": [{"port": 53,
                                                                       "protocol": "UDP"}]}]
    opened = network_policy(_service(), _sidecar_with({"mode": "Open"}), owner=owner,
                            own_namespace="hg")
    assert opened["spec"]["policyTypes"] == ["Ingress"] and "egress" not in opened["spec"]
    # Suspended with IsolateNetwork (Art.21): egress is restricted whatever the mode, and the
    # peers are left out (they are suspended too).
    isolated = network_policy(_service(), _sidecar_with({"mode": "Open"}), owner=owner,
                              own_namespace="hg", isolate=True)
    assert isolated["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert isolated["spec"]["egress"] == [DNS, HEGUI]


def test_an_egress_destination_names_one_place() -> None:
    for wrong in ({"reason": "nowhere"},
                  {"cidr": "10.0.0.0/8", "namespace": "x", "reason": "both"}):
        with pytest.raises(ValueError, match="exactly one of cidr and namespace"):
            _sidecar_with({"to": [wrong]})
    with pytest.raises(ValueError, match="cidr"):
        _sidecar_with({"to": [{"cidr": "10.0.0.0", "reason": "no prefix"}]})
