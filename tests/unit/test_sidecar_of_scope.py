"""The operator renders a service from the sidecar its pods get (Art.14: one rule, one place).

Two CompliancePolicies in a namespace: `a-public`, scoped to workloads labelled tier=public, with
a PortName sidecar on 9443 that restricts egress, evicts uninjected pods and runs the provider's
lexicon; `b-platform`, unscoped, with a Redirect sidecar on 8443 whose egress is open. The
mutating webhook puts b-platform's sidecar into a pod without tier=public (a-public's scope does
not take it), so the operator must render that service's `hegui-<service>` NetworkPolicy and
`hegui-sidecar-<service>` ConfigMap, judge its pods' eviction and the team's NetworkPolicies, and
ask its pods in a SafetyAssessment by b-platform's sidecar, not by a-public's (the first of the
namespace's policies by name).
"""

from __future__ import annotations

import copy
import datetime as dt
from types import SimpleNamespace
from typing import Any

import jsonpatch
import kopf
import pytest
from test_operator_reconcile import (  # type: ignore[import-not-found]
    NS,
    _conditions,
    _operator,
    _pass,
    _service,
)

from hegui.admission.injection import inject
from hegui.admission.mutate import sidecar_duty
from hegui.api.policy import CompliancePolicy, Sidecar
from hegui.operator.assessment import Plan, TargetError
from hegui.operator.assessment_handlers import _judge, _targets
from hegui.operator.cluster import CONFIG_MAP, DEPLOYMENT, NETWORK_POLICY, POD
from hegui.operator.workloads import network_policy, observe
from hegui.rules.index import ComplianceIndex, ObjectKey
from hegui.rules.injection import strictest_sidecar

NOW = dt.datetime(2026, 11, 29, tzinfo=dt.UTC)
IMAGE = "registry.example.cn/hegui/sidecar:0.1.0"
WEIGHTS = {"cidr": "10.20.0.0/16", "reason": "model weights from the OSS mirror"}
PUBLIC: dict[str, Any] = {"apiVersion": "hegui.io/v1alpha1", "kind": "CompliancePolicy",
          "metadata": {"name": "a-public", "generation": 1},
          "spec": {"namespaces": [NS], "defaultMode": "Enforce",
                   "workloads": {"include": [{"selector": {"matchLabels": {"tier": "public"}}}]},
                   "sidecar": {"image": IMAGE, "port": 9443, "capture": "PortName",
                               "evictUninjected": True,
                               "egress": {"mode": "Restricted", "to": [WEIGHTS]},
                               "lexicon": {"configMaps": ["provider-lexicon"]}}}}
PLATFORM: dict[str, Any] = {"apiVersion": "hegui.io/v1alpha1", "kind": "CompliancePolicy",
            "metadata": {"name": "b-platform", "generation": 1},
            "spec": {"namespaces": [NS], "defaultMode": "Enforce",
                     "sidecar": {"image": IMAGE, "port": 8443, "egress": {"mode": "Open"}}}}
#: A team's NetworkPolicy that lets the service's pods dial anywhere: it widens hegui's only
#: where hegui restricts egress.
DIAL_OUT: dict[str, Any] = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "dial-out", "namespace": NS},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}}
#: What `_targets` reads of a SafetyAssessment's spec.
SPEC = SimpleNamespace(service_ref=SimpleNamespace(name="chat"))
REPLICASET = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "chat-5d4f",
              "controller": True}


def _pod(name: str, ip: str = "10.0.0.2", **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS,
                         "labels": {"app": "chat", "pod-template-hash": "5d4f", **labels},
                         "ownerReferences": [REPLICASET]},
            "spec": {"containers": [{"name": "model", "image": "llm:1",
                                     "ports": [{"name": "http", "containerPort": 8000}],
                                     "resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
            "status": {"phase": "Running", "podIP": ip,
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def _injected(pod: dict[str, Any], index: ComplianceIndex) -> dict[str, Any]:
    """The pod as the mutating webhook makes it: the sidecar of the policy it picks."""
    duty = sidecar_duty(pod, NS, index, NOW)
    assert duty is not None
    service = index.services.get(ObjectKey(NS, duty.service))
    patched: dict[str, Any] = jsonpatch.apply_patch(
        copy.deepcopy(pod), inject(pod, duty.policy, duty.service, service).patch)
    return patched


def _sidecar(policy: dict[str, Any]) -> Sidecar:
    sidecar = CompliancePolicy.from_dict(policy).spec.sidecar
    assert sidecar is not None
    return sidecar


def _deployment(name: str, **labels: str) -> dict[str, Any]:
    pod = _pod("x", **labels)
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "chat"}},
                     "template": {"metadata": {"labels": {"app": "chat", **labels}},
                                  "spec": pod["spec"]}}}


def test_the_service_is_rendered_from_the_sidecar_the_injector_puts_into_its_pods() -> None:
    service = _service()
    op, cluster = _operator(PUBLIC, PLATFORM, service)
    pod = _injected(_pod("chat-a"), op.index)
    assert sidecar_duty(pod, NS, op.index, NOW).policy.name == "b-platform"  # type: ignore[union-attr]
    cluster.put(POD, pod)
    cluster.put(NETWORK_POLICY, DIAL_OUT)

    status = _pass(op, cluster, service, kopf.Memo(operator=op))

    # hegui-chat admits what b-platform's Redirect capture needs and leaves egress open, as
    # b-platform declares: not a-public's port 9443 alone, which would cut the pod off (its
    # sidecar listens on 8443), nor a-public's egress.
    rendered = cluster.find(NETWORK_POLICY, NS, "hegui-chat")
    assert rendered is not None
    wanted = network_policy(op.index.services[ObjectKey(NS, "chat")], _sidecar(PLATFORM),
                            owner=rendered["metadata"]["ownerReferences"][0],
                            own_namespace=op.settings.own_namespace)
    assert rendered["spec"] == wanted["spec"]
    assert rendered["spec"]["policyTypes"] == ["Ingress"]
    assert {"port": 9443, "protocol": "TCP"} not in rendered["spec"]["ingress"][0]["ports"]
    # The team's dial-out policy widens nothing hegui closes here; b-platform names no lexicon,
    # so the sidecar ConfigMap carries none and nothing is missing.
    assert status["findings"] == [], status["findings"]
    assert _conditions(status)["Moderated"] == "True"
    config_map = cluster.find(CONFIG_MAP, NS, "hegui-sidecar-chat")
    assert config_map is not None and "binaryData" not in config_map


def test_a_pod_a_scoped_policy_takes_is_rendered_from_that_policys_sidecar() -> None:
    service = _service()
    op, cluster = _operator(PUBLIC, PLATFORM, service)
    cluster.put(POD, _injected(_pod("chat-a", tier="public"), op.index))
    cluster.put(NETWORK_POLICY, DIAL_OUT)

    status = _pass(op, cluster, service, kopf.Memo(operator=op))

    rendered = cluster.find(NETWORK_POLICY, NS, "hegui-chat")
    assert rendered is not None
    assert rendered["spec"]["ingress"][0]["ports"] == [{"port": 9443, "protocol": "TCP"}]
    assert rendered["spec"]["egress"][-1]["to"] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]
    messages = " ".join(f["message"] for f in status["findings"])
    assert "NetworkPolicy dial-out is not hegui's" in messages
    assert "provider-lexicon" in messages  # a-public's lexicon is wanted (and missing)


def test_an_uninjected_pod_is_evicted_only_where_the_policy_that_injects_it_asks() -> None:
    service = _service()
    op, cluster = _operator(PUBLIC, PLATFORM, service)
    cluster.put(POD, _pod("chat-a"))  # b-platform's to carry: it does not evict

    status = _pass(op, cluster, service, kopf.Memo(operator=op))

    assert status["uninjectedPods"] == 1
    assert cluster.find(POD, NS, "chat-a") is not None
    assert ("Normal", "EvictedUninjectedPod") not in cluster.events

    cluster.put(POD, _pod("chat-b", tier="public"))  # a-public's: it evicts
    _pass(op, cluster, service, kopf.Memo(operator=op))
    assert cluster.find(POD, NS, "chat-b") is None
    assert cluster.find(POD, NS, "chat-a") is not None


def test_the_assessment_asks_each_pod_at_its_own_sidecar_and_judges_by_its_lexicon() -> None:
    service = _service()
    op, cluster = _operator(PUBLIC, PLATFORM, service)
    cluster.put(POD, _injected(_pod("chat-a"), op.index))

    assert _targets(op, NS, SPEC) == ["http://10.0.0.2:8443"]
    # b-platform's sidecars run the image's lexicon: nothing to read, nothing refused.
    assert _judge(op, NS, Plan((), (), "", {}), "chat").problems("答 你好") == []

    cluster.put(POD, _injected(_pod("chat-b", "10.0.0.3", tier="public"), op.index))
    assert _targets(op, NS, SPEC) == ["http://10.0.0.2:8443", "http://10.0.0.3:9443"]


def test_workloads_split_between_policies_are_rendered_closed_and_reported() -> None:
    index = ComplianceIndex.from_objects([
        PUBLIC, PLATFORM, _service(), {"apiVersion": "v1", "kind": "Namespace",
                                       "metadata": {"name": NS}}])
    service = index.services[ObjectKey(NS, "chat")]
    seen = observe(service, index, pods=[], now=NOW,
                   deployments=[_deployment("front", tier="public"), _deployment("back")])
    [finding] = seen.findings
    assert finding["severity"] == "Error" and finding["rule"] == "injection"
    assert "CompliancePolicy a-public's into Deployment front" in finding["message"]
    assert "CompliancePolicy b-platform's into Deployment back" in finding["message"]
    # Closed as far as either closes: a-public's port alone (b-platform's pods' capture sends
    # it to their sidecar), egress restricted to what every restricting policy names.
    assert seen.sidecar is not None
    assert (seen.sidecar.port, seen.sidecar.capture.value) == (9443, "PortName")
    assert seen.sidecar.egress.mode.value == "Restricted"
    assert [to.cidr for to in seen.sidecar.egress.to] == ["10.20.0.0/16"]
    assert seen.sidecar.network_policy and seen.sidecar.evict_uninjected
    # One workload under one policy: that policy's sidecar, no finding.
    alone = observe(service, index, pods=[], now=NOW, deployments=[_deployment("back")])
    assert alone.sidecar == _sidecar(PLATFORM) and alone.findings == []


def test_with_one_policy_or_only_unscoped_ones_nothing_changes() -> None:
    first = copy.deepcopy(PLATFORM)
    first["metadata"]["name"] = "a-first"
    first["spec"]["sidecar"]["port"] = 7443
    for policies, expected in (([PUBLIC], PUBLIC), ([first, PLATFORM], first)):
        index = ComplianceIndex.from_objects([
            *policies, _service(), {"apiVersion": "v1", "kind": "Namespace",
                                    "metadata": {"name": NS}}])
        service = index.services[ObjectKey(NS, "chat")]
        for pods in ([], [_pod("chat-a")]):
            seen = observe(service, index, pods=pods, now=NOW)
            assert seen.sidecar == _sidecar(expected)
            assert not [f for f in seen.findings if "different sidecars" in f["message"]]


def test_the_strictest_of_restricting_sidecars_allows_only_what_all_name() -> None:
    one = _sidecar(PUBLIC)
    two = one.model_copy(update={"egress": one.egress.model_copy(update={"to": [
        one.egress.to[0].model_copy(update={"cidr": "10.30.0.0/16"})]})})
    assert strictest_sidecar([one, two]).egress.to == []
    assert strictest_sidecar([one, one]) is one


def test_a_deployment_with_no_pods_yet_is_rendered_from_the_sidecar_its_pods_will_get(
        ) -> None:
    service = _service()
    op, cluster = _operator(PUBLIC, PLATFORM, service)
    cluster.put(DEPLOYMENT, _deployment("back"))
    _pass(op, cluster, service, kopf.Memo(operator=op))
    rendered = cluster.find(NETWORK_POLICY, NS, "hegui-chat")
    assert rendered is not None and rendered["spec"]["policyTypes"] == ["Ingress"]
    with pytest.raises(TargetError, match="no running, ready pod"):
        _targets(op, NS, SPEC)
