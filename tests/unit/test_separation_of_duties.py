"""Enforcement the regulated team cannot undo, in the pieces that need no cluster (Art.14,
Art.21): NetworkPolicies that would widen what hegui closes, the workloads ScaleToZero reaches,
the sidecar's notice failing closed and its posture followed while it runs, the standby's
liveness, and a ConfigMap someone made immutable."""

from __future__ import annotations

import copy
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from hegui.admission import guards
from hegui.admission.local import free_port
from hegui.admission.review import AdmissionRequest
from hegui.api.generativeservice import GenerativeService
from hegui.operator.leader import LeaseElection, StandbyHealth
from hegui.operator.workloads import scale_targets
from hegui.rules.index import ComplianceIndex
from hegui.sidecar.config import PostureWatch, SidecarConfig
from hegui.sidecar.suspension import SuspensionNotice, SuspensionWatch
from hegui.sidecar.testing import POSTURE

POLICY: dict[str, Any] = {
    "apiVersion": "hegui.io/v1alpha1", "kind": "CompliancePolicy", "metadata": {"name": "p"},
    "spec": {"namespaces": ["ai"], "defaultMode": "Enforce",
             "sidecar": {"image": "registry.example.cn/hegui/sidecar:0.1.0", "port": 8443}}}


def _service(suspended: bool = False, **selector: Any) -> dict[str, Any]:
    service: dict[str, Any] = {
        "apiVersion": "hegui.io/v1alpha1", "kind": "GenerativeService",
        "metadata": {"name": "chat", "namespace": "ai"},
        "spec": {"selector": selector or {"matchLabels": {"app": "chat"}},
                 "filing": {"publicOpinion": False,
                            "algorithm": {"number": "网信算备110108823483901230011号"}},
                 "moderation": copy.deepcopy(POSTURE)}}
    if suspended:
        service["status"] = {"suspension": {"suspended": True, "reason": "order (Art.21)"}}
    return service


def _index(*objects: dict[str, Any]) -> ComplianceIndex:
    return ComplianceIndex.from_objects([
        *objects, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ai"}}])


def _netpol(pod_selector: dict[str, Any], ingress: list[Any] | None = None,
            types: list[str] | None = None) -> AdmissionRequest:
    spec: dict[str, Any] = {"podSelector": pod_selector,
                            "ingress": [{"ports": [{"port": 8000}]}] if ingress is None
                            else ingress}
    if types is not None:
        spec["policyTypes"] = types
    return AdmissionRequest(uid="u", kind="NetworkPolicy", group="networking.k8s.io",
                            namespace="ai", name="team-allow", operation="CREATE", dry_run=False,
                            obj={"metadata": {"name": "team-allow"}, "spec": spec},
                            old_obj=None, user="team-alice")


# --- NetworkPolicies (Art.14, Art.21) ----------------------------------------------------------

@pytest.mark.parametrize(("first", "second", "overlap"), [
    ({}, {"matchLabels": {"app": "chat"}}, True),  # selects every pod
    ({"matchLabels": {"app": "chat"}}, {"matchLabels": {"app": "chat"}}, True),
    ({"matchLabels": {"app": "chat", "tier": "x"}}, {"matchLabels": {"app": "chat"}}, True),
    ({"matchLabels": {"app": "web"}}, {"matchLabels": {"app": "chat"}}, False),
    ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "chat"]}]},
     {"matchLabels": {"app": "chat"}}, True),
    ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["chat"]}]},
     {"matchLabels": {"app": "chat"}}, False),
    ({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]},
     {"matchLabels": {"app": "chat"}}, False),
    ({"matchExpressions": [{"key": "team", "operator": "Exists"}]},
     {"matchLabels": {"app": "chat"}}, True),  # a chat pod may carry a team label
])
def test_selectors_overlap_unless_provably_disjoint(first: dict[str, Any],
                                                    second: dict[str, Any],
                                                    overlap: bool) -> None:
    assert guards.selectors_overlap(first, second) is overlap
    assert guards.selectors_overlap(second, first) is overlap


def test_a_team_policy_admitting_the_models_port_is_refused() -> None:
    decision = guards.check_network_policy(_netpol({"matchLabels": {"app": "chat"}}),
                                           _index(POLICY, _service()))
    assert not decision.allowed and decision.code == 403
    assert "[injection, Art.14]" in decision.message and "spec.podSelector" in decision.message
    assert "GenerativeService chat" in decision.message and "hegui-chat" in decision.message
    # Selecting every pod of the namespace is no way around it.
    assert not guards.check_network_policy(_netpol({}), _index(POLICY, _service())).allowed


def test_while_suspended_even_without_the_sidecars_policy_nothing_may_be_opened() -> None:
    no_sidecar = {**POLICY, "spec": {"namespaces": ["ai"], "defaultMode": "Enforce"}}
    decision = guards.check_network_policy(_netpol({"matchLabels": {"app": "chat"}}),
                                           _index(no_sidecar, _service(suspended=True)))
    assert not decision.allowed and "[suspension, Art.21]" in decision.message
    # Not suspended and hegui keeps no policy there: the team's policies are its own business.
    assert guards.check_network_policy(_netpol({"matchLabels": {"app": "chat"}}),
                                       _index(no_sidecar, _service())).allowed


def test_policies_that_cannot_widen_anything_are_admitted() -> None:
    index = _index(POLICY, _service())
    assert guards.check_network_policy(_netpol({"matchLabels": {"app": "web"}}), index).allowed
    assert guards.check_network_policy(_netpol({}, ingress=[]), index).allowed  # deny all
    assert guards.check_network_policy(_netpol({}, types=["Egress"]), index).allowed


def _egress_netpol(pod_selector: dict[str, Any], egress: list[Any],
                   types: list[str] | None = None) -> AdmissionRequest:
    request = _netpol(pod_selector, ingress=[], types=types)
    request.obj["spec"]["egress"] = egress
    return request


def _policy_with_egress(mode: str) -> dict[str, Any]:
    policy = copy.deepcopy(POLICY)
    policy["spec"]["sidecar"]["egress"] = {"mode": mode}
    return policy


@pytest.mark.parametrize("types", [["Egress"], ["Ingress", "Egress"], None])
def test_a_team_policy_letting_the_model_dial_out_is_refused(types: list[str] | None) -> None:
    """Egress is Restricted by default: a team's policy that lets the model's pods dial
    anywhere (a tunnel out, a queue to pull prompts from) would serve around the sidecar
    (Art.14). Without policyTypes Kubernetes governs Egress because egress rules are there."""
    decision = guards.check_network_policy(
        _egress_netpol({"matchLabels": {"app": "chat"}}, [{}], types), _index(POLICY, _service()))
    assert not decision.allowed and decision.code == 403
    assert "[injection, Art.14]" in decision.message
    assert "spec.sidecar.egress" in decision.message and "egress rules" in decision.message


def test_egress_policies_pass_where_egress_is_open_or_nothing_is_admitted() -> None:
    index = _index(POLICY, _service())
    # Deny-all egress narrows: always admitted.
    assert guards.check_network_policy(_egress_netpol({}, [], ["Egress"]), index).allowed
    # Egress rules the policy does not govern (policyTypes says Ingress only) admit nothing.
    assert guards.check_network_policy(_egress_netpol({}, [{}], ["Ingress"]), index).allowed
    # Open egress in the CompliancePolicy: the team's egress rules are its own business.
    opened = _index(_policy_with_egress("Open"), _service())
    assert guards.check_network_policy(_egress_netpol({}, [{}], ["Egress"]), opened).allowed
    # ... but not while the service is suspended (Art.21): isolation closes egress too.
    suspended = _index(_policy_with_egress("Open"), _service(suspended=True))
    decision = guards.check_network_policy(_egress_netpol({}, [{}], ["Egress"]), suspended)
    assert not decision.allowed and "[suspension, Art.21]" in decision.message


def test_the_guard_judges_every_sidecar_that_may_be_injected() -> None:
    """Two CompliancePolicies over the namespace, one egress Open, one Restricted: which
    sidecar a pod gets depends on its workload (each policy's spec.workloads), which a
    NetworkPolicy's pod selector cannot tell, so a team's egress rules are refused if any
    may be injected restricts egress, whatever the policies' names or order."""
    first = _policy_with_egress("Open")
    first["metadata"]["name"] = "a-platform"
    second = _policy_with_egress("Restricted")
    second["metadata"]["name"] = "b-group"
    for index in (_index(first, second, _service()), _index(second, first, _service())):
        decision = guards.check_network_policy(_egress_netpol({}, [{}], ["Egress"]), index)
        assert not decision.allowed and "spec.sidecar.egress" in decision.message
    # Both Open: the team's egress rules are its own business.
    second["spec"]["sidecar"]["egress"] = {"mode": "Open"}
    assert guards.check_network_policy(_egress_netpol({}, [{}], ["Egress"]),
                                       _index(first, second, _service())).allowed


# --- ScaleToZero reaches every workload kind (Art.21) ------------------------------------------

def _owned(kind: str, name: str, owner: tuple[str, str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": owner[0], "kind": owner[1], "name": owner[2],
                                    "controller": True}]
    return {"kind": kind, "metadata": meta}


def test_scaling_targets_the_topmost_controller_of_each_pod() -> None:
    deployment = ("apps/v1", "Deployment", "llm")
    lws = ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", "big")
    pods = [
        _owned("Pod", "llm-1", ("apps/v1", "ReplicaSet", "llm-5d4f")),
        _owned("Pod", "big-0", ("apps/v1", "StatefulSet", "big")),  # the leader
        _owned("Pod", "big-0-1", ("apps/v1", "StatefulSet", "big-0")),  # a worker
        _owned("Pod", "bare"),
        _owned("Pod", "rs-only-1", ("apps/v1", "ReplicaSet", "rs-only")),
    ]
    listed = {
        "Pod": pods,
        "ReplicaSet": [_owned("ReplicaSet", "llm-5d4f", deployment),
                       _owned("ReplicaSet", "rs-only")],
        "StatefulSet": [_owned("StatefulSet", "big", lws),
                        _owned("StatefulSet", "big-0", ("v1", "Pod", "big-0"))],
        "Deployment": [_owned("Deployment", "llm")],
    }
    assert scale_targets(pods, listed) == {deployment, lws,
                                           ("apps/v1", "ReplicaSet", "rs-only")}
    # A matched Deployment whose pods are gone (scaled to zero) is still a target.
    matched = _owned("Deployment", "llm")
    assert scale_targets([matched], listed, starts={id(matched): "Deployment"}) == {deployment}


# --- the sidecar's notice and posture ----------------------------------------------------------

def test_in_a_pod_a_missing_or_invalid_notice_suspends(tmp_path: Path) -> None:
    notice = tmp_path / "suspension.yaml"
    watch = SuspensionWatch(notice, required=True)
    watch.check()
    assert watch.notice.suspended and "no suspension notice" in watch.notice.reason
    notice.write_text(SuspensionNotice(False).to_yaml())
    assert watch.check() and not watch.notice.suspended
    notice.write_text("suspended: false\nforged: true\n")  # not what the operator writes
    assert watch.check() and watch.notice.suspended and "invalid" in watch.notice.reason
    assert watch.errors == 1
    notice.write_text(SuspensionNotice(False).to_yaml() + "\n")
    assert watch.check() and not watch.notice.suspended
    notice.unlink()  # the ConfigMap (or its key) deleted
    assert watch.check() and watch.notice.suspended
    # Outside a pod (a library user without an operator) a missing file suspends nothing.
    assert not SuspensionWatch(tmp_path / "none.yaml").notice.suspended


def test_the_posture_is_followed_while_the_sidecar_runs(tmp_path: Path) -> None:
    path = tmp_path / "service.yaml"
    service = _service()
    path.write_text(yaml.safe_dump(service))
    config = SidecarConfig.from_service(GenerativeService.from_dict(service), service_file=path)
    watch = PostureWatch(path)
    assert watch.check(config) is None  # unchanged
    service["spec"]["moderation"]["failureMode"] = "Closed"
    service["spec"]["labeling"] = {"modalities": ["text"],
                                   "implicit": {"contentProducer": "Example AI Co."}}
    path.write_text(yaml.safe_dump(service))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    updated = watch.check(config)
    assert updated is not None and updated.labeling is not None
    assert updated.service_file == path and updated.service == config.service
    path.write_text("spec: [garbage")
    assert watch.check(updated) is None and watch.errors == 1  # the last valid one stays
    other = {**service, "metadata": {"name": "other", "namespace": "ai"}}
    path.write_text(yaml.safe_dump(other))
    assert watch.check(updated) is None and watch.errors == 2  # never another service's


def test_the_sidecar_knows_the_ports_its_posture_declares_for_metrics() -> None:
    """Those are captured too, and served with the model's metrics alone
    (hegui.sidecar.original_dst); PodToPod ports never reach the sidecar."""
    service = _service()
    service["spec"]["traffic"] = {"openPorts": [
        {"port": 8002, "purpose": "Metrics", "reason": "Triton metrics"},
        {"port": 9100, "endPort": 9101, "purpose": "Metrics", "reason": "exporters"},
        {"port": 29500, "purpose": "PodToPod", "reason": "NCCL rendezvous"}]}
    config = SidecarConfig.from_service(GenerativeService.from_dict(service))
    assert config.metrics_ports == ((8002, 8002), (9100, 9101))
    assert SidecarConfig.from_service(GenerativeService.from_dict(_service())).metrics_ports == ()


# --- the standby answers its liveness probe (issue 15) -----------------------------------------

class _NoApi:
    def read_namespaced_lease(self, *_: Any, **__: Any) -> Any:
        raise RuntimeError("no apiserver in a unit test")


def test_the_standby_serves_healthz_while_its_election_loop_runs() -> None:
    election = LeaseElection(_NoApi(), "hegui-system", "hegui-operator", "b", retry=0.01)
    port = free_port()
    health = StandbyHealth.serve(f"http://127.0.0.1:{port}/healthz", election)
    try:
        election.last_attempt = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            assert answer.status == 200 and b"waiting" in answer.read()
        election.last_attempt = time.monotonic() - 3600  # the loop is stuck
        with pytest.raises(urllib.error.HTTPError) as stuck:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert stuck.value.code == 500 and "stuck" in json.loads(stuck.value.read())["standby"]
    finally:
        health.close()
