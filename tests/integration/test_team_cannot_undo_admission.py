"""What a regulated team with only namespace `edit` tries against admission, and why it fails
(issue 15): a look-alike sidecar, a posture below the policy's floor, someone else's or its own
"external" assessment, a standing exemption, and a revoked one. The team is a second identity
with a real client certificate; RBAC is the chart's, rendered by helm."""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from hegui.admission import configuration
from hegui.admission.injection import render, sidecar_container
from hegui.admission.local import LocalWebhook
from hegui.api.generativeservice import GenerativeService
from hegui.api.policy import CompliancePolicy, Sidecar
from hegui.localcluster import pki
from hegui.localcluster.cluster import _CHECKOUT, LocalCluster

pytestmark = pytest.mark.cluster

ALGORITHM_NUMBER = "网信算备110108823483901230011号"
SIDECAR = {"image": "registry.example.cn/hegui/sidecar:0.1.0", "port": 8443}
TRITON = {"address": "triton.hegui-system.svc:8001", "model": "moderation"}
SUFFIX = uuid.uuid4().hex[:6]


class Identity:
    """A user of the cluster by client certificate: `kubectl` as that user."""

    def __init__(self, cluster: LocalCluster, directory: Path, user: str,
                 groups: tuple[str, ...]) -> None:
        self.cluster, self.user = cluster, user
        ca = pki.CertificateAuthority.load(cluster.pki.ca_cert, cluster.pki.ca_key)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, user),
                             *(x509.NameAttribute(NameOID.ORGANIZATION_NAME, g)
                               for g in groups)])
        cert, key = ca.issue(subject, client=True)
        self.kubeconfig = directory / f"{user.replace('@', '-')}.kubeconfig"
        pki.write_kubeconfig(self.kubeconfig, server=cluster.server_url,
                             ca_pem=cluster.pki.ca_cert.read_bytes(), cert_pem=cert,
                             key_pem=key, user=user)

    def kubectl(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.cluster.binary("kubectl")), "--kubeconfig",
                               str(self.kubeconfig), *args],
                              capture_output=True, text=True, check=check, timeout=60)

    def apply(self, *objects: dict[str, Any], extra: tuple[str, ...] = ()
              ) -> subprocess.CompletedProcess[str]:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
            yaml.safe_dump_all(objects, handle, allow_unicode=True)
        try:
            return self.kubectl("apply", "-f", handle.name, *extra)
        finally:
            Path(handle.name).unlink()


def _admin_apply(cluster: LocalCluster, *objects: dict[str, Any],
                 check: bool = True) -> subprocess.CompletedProcess[str]:
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"hegui-{uuid.uuid4().hex}.yaml"
    path.write_text(yaml.safe_dump_all(objects, allow_unicode=True))
    try:
        return cluster.kubectl("apply", "-f", str(path), check=check)
    finally:
        path.unlink()


def _chart_roles(cluster: LocalCluster) -> list[dict[str, Any]]:
    """The chart's ClusterRoles for people (team aggregation, assessor), as helm renders them."""
    rendered = subprocess.run(
        [str(cluster.binary("helm")), "template", "hegui", str(_CHECKOUT / "charts" / "hegui"),
         "--namespace", "hegui-system", "--kube-version", "1.36.0"], capture_output=True,
        text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(rendered) if d and d.get("kind") == "ClusterRole"
            and d["metadata"]["name"] in ("hegui-edit", "hegui-view", "hegui-assessor")]


class Webhook(LocalWebhook):
    """The webhook under configuration names of this module's own, so other modules that
    register and remove the default names at the same time do not take it away."""

    def register(self, *, mutating: bool = True) -> None:
        options: dict[str, Any] = {"ca_bundle": self.cluster.pki.ca_cert.read_bytes(),
                                   "own_namespace": "hegui-system",
                                   "url": f"{self.url}/validate"}
        items = [configuration.validating_webhook_configuration(**options),
                 configuration.mutating_webhook_configuration(**options)]
        for item in items:
            item["metadata"]["name"] += f"-{SUFFIX}"
        _admin_apply(self.cluster, *items)

    def unregister(self) -> None:
        for kind, name in (("validatingwebhookconfiguration", configuration.CONFIGURATION_NAME),
                           ("mutatingwebhookconfiguration",
                            configuration.MUTATING_CONFIGURATION_NAME)):
            self.cluster.kubectl("delete", kind, f"{name}-{SUFFIX}", "--ignore-not-found")


@pytest.fixture(scope="module")
def webhook(local_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Webhook]:
    local_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                          str(_CHECKOUT / "crds"))
    for crd in ("generativeservices", "compliancepolicies", "complianceexceptions",
                "safetyassessments"):
        local_cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                              f"crd/{crd}.hegui.io")
    _admin_apply(local_cluster, *_chart_roles(local_cluster))
    # The controller-manager aggregates hegui-edit into edit: wait for it.
    _until(lambda: local_cluster.kubectl("get", "clusterrole", "edit", "-o", "json").stdout,
           lambda text: "generativeservices" in text, timeout=30)
    hook = Webhook(local_cluster, tmp_path_factory.mktemp("webhook"))
    hook.start()
    hook.register()
    yield hook
    hook.unregister()
    hook.stop()


@pytest.fixture
def namespace(local_cluster: LocalCluster, webhook: Webhook) -> Iterator[str]:
    """A fresh namespace, enforced (Enforce) by its own policy, where the team has `edit` and
    the assessors' group the hegui-assessor role."""
    name = f"team-{uuid.uuid4().hex[:8]}"
    _admin_apply(local_cluster, {"apiVersion": "v1", "kind": "Namespace",
                                 "metadata": {"name": name}}, _policy(name))
    for role, group in (("edit", "team-a"), ("hegui-assessor", "assessors")):
        local_cluster.kubectl("-n", name, "create", "rolebinding", f"{group}-{role}",
                              f"--clusterrole={role}", f"--group={group}")
    yield name
    local_cluster.kubectl("delete", "namespace", name, "--wait=false")
    local_cluster.kubectl("delete", "compliancepolicy", name, "--ignore-not-found")


@pytest.fixture
def team(local_cluster: LocalCluster, tmp_path: Path) -> Identity:
    return Identity(local_cluster, tmp_path, "dev@team-a.example.cn", ("team-a",))


@pytest.fixture
def assessor(local_cluster: LocalCluster, tmp_path: Path) -> Identity:
    return Identity(local_cluster, tmp_path, "auditor@assess.example.cn", ("assessors",))


def _policy(namespace: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "hegui.io/v1alpha1", "kind": "CompliancePolicy",
            "metadata": {"name": namespace},
            "spec": {"namespaces": [namespace], "defaultMode": "Enforce", **spec}}


def _service(namespace: str, name: str = "chat", app: str = "chat",
             **changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": app}},
        "filing": {"publicOpinion": True, "algorithm": {"number": ALGORITHM_NUMBER}},
        "assessment": {"external": {"reportId": f"R-{name}", "assessedOn": "2026-06-01",
                                    "expiresOn": "2099-06-01", "result": "Pass"}},
        "labeling": {"modalities": ["text"], "implicit": {"contentProducer": "Example AI Co."}},
        "moderation": {"categories": [{"name": "subversion", "threshold": 0.5,
                                       "action": "Block"}]},
    }
    spec.update(changes)
    return {"apiVersion": "hegui.io/v1alpha1", "kind": "GenerativeService",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def _assessment(namespace: str, name: str, service: str) -> dict[str, Any]:
    return {"apiVersion": "hegui.io/v1alpha1", "kind": "SafetyAssessment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"serviceRef": {"name": service}, "questionBanks": [
                {"name": "refuse", "kind": "ShouldRefuse",
                 "configMapRef": {"name": "banks", "key": "refuse.txt"}},
                {"name": "answer", "kind": "ShouldAnswer",
                 "configMapRef": {"name": "banks", "key": "answer.txt"}}]}}


def _record(who: Identity, namespace: str, name: str, report_id: str
            ) -> subprocess.CompletedProcess[str]:
    """Write a passing verdict for report `report_id` into the assessment's status."""
    status = {"verdict": "Pass", "reportId": report_id, "assessor": who.user,
              "completedAt": "2026-06-01T00:00:00Z", "expiresAt": "2099-06-01T00:00:00Z"}
    return who.kubectl("-n", namespace, "patch", "safetyassessment", name,
                       "--subresource=status", "--type=merge", "-p",
                       json.dumps({"status": status}))


def _declare(team: Identity, assessor: Identity, namespace: str, name: str = "chat",
             app: str = "chat", **changes: Any) -> None:
    """The team declares a complete service; the assessor records its external report."""
    service = _service(namespace, name, app, **changes)
    assessment = f"{name}-external"
    created = team.apply(_assessment(namespace, assessment, name), service)
    assert created.returncode == 0, created.stderr
    recorded = _record(assessor, namespace, assessment, f"R-{name}")
    assert recorded.returncode == 0, recorded.stderr


def _gpu_deployment(namespace: str, name: str = "llm", app: str = "chat") -> dict[str, Any]:
    labels = {"app": app}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                         "name": "model", "image": "example.invalid/llm:1",
                         "ports": [{"name": "http", "containerPort": 8000}],
                         "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}}}


def _until(attempt: Any, done: Any, timeout: float = 20.0) -> Any:
    """Retry `attempt` until `done(result)`: the webhook learns of objects by its watch."""
    deadline = time.monotonic() + timeout
    while True:
        result = attempt()
        if done(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.3)


def _pods(cluster: LocalCluster, namespace: str, count: int,
          timeout: float = 60.0) -> list[dict[str, Any]]:
    def listed() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = json.loads(cluster.kubectl(
            "-n", namespace, "get", "pods", "-o", "json").stdout)["items"]
        return items
    return list(_until(listed, lambda pods: len(pods) >= count, timeout))


# --- the rules hold for this identity ------------------------------------------------------------

def test_the_team_has_edit_and_nothing_that_writes_a_verdict_or_an_exemption(
        team: Identity, namespace: str) -> None:
    def can(verb: str, resource: str, *extra: str) -> bool:
        answer = team.kubectl("auth", "can-i", verb, resource, "-n", namespace, *extra)
        return answer.stdout.strip() == "yes"

    assert can("create", "deployments") and can("create", "generativeservices.hegui.io")
    assert can("create", "safetyassessments.hegui.io")
    assert not can("patch", "safetyassessments.hegui.io", "--subresource=status")
    assert not can("create", "complianceexceptions.hegui.io")
    assert not can("patch", "compliancepolicies.hegui.io")


# --- injection: a look-alike sidecar (Art.14) ----------------------------------------------------

def test_a_look_alike_sidecar_is_replaced_and_the_model_port_renamed(
        local_cluster: LocalCluster, team: Identity, assessor: Identity,
        namespace: str) -> None:
    _admin_apply(local_cluster, _policy(namespace, sidecar=SIDECAR))
    _declare(team, assessor, namespace)
    # The team copies hegui's sidecar exactly (image, command line, probes, security) and adds
    # one mount over the configuration it reads: its own posture. The model keeps "http".
    look_alike = sidecar_container(Sidecar.from_dict(SIDECAR), service="chat",
                                   port_name="http", upstream_port=8000)
    look_alike["volumeMounts"].append({"name": "team-posture", "subPath": "service.yaml",
                                       "mountPath": "/etc/hegui/service.yaml"})
    pod: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "llm-0", "namespace": namespace, "labels": {"app": "chat"}},
           "spec": {"initContainers": [look_alike],
                    "containers": [{"name": "model", "image": "example.invalid/llm:1",
                                    "ports": [{"name": "http", "containerPort": 8000}],
                                    "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
                    "volumes": [{"name": "team-posture", "configMap": {"name": "mine"}},
                                {"name": "hegui-config", "configMap": {
                                    "name": "hegui-sidecar-chat", "optional": True}},
                                {"name": "hegui-data", "emptyDir": {"sizeLimit": "256Mi"}}]}}
    created = _until(lambda: team.apply(pod), lambda r: r.returncode == 0)
    assert created.returncode == 0, created.stderr
    assert "is not hegui's" in created.stderr  # the warning says why it was replaced
    stored = json.loads(local_cluster.kubectl("-n", namespace, "get", "pod", "llm-0", "-o",
                                              "json").stdout)
    [sidecar] = [c for c in stored["spec"]["initContainers"] if c["name"] == "hegui-sidecar"]
    assert all(m["mountPath"] != "/etc/hegui/service.yaml" for m in sidecar["volumeMounts"])
    assert sidecar["ports"][0]["name"] == "http"
    assert stored["spec"]["containers"][0]["ports"][0]["name"] == "hegui-model"

    # The model container may not mount hegui's records and keys either: refused, said why.
    thief = copy.deepcopy(pod)
    thief["metadata"]["name"] = "llm-1"
    thief["spec"]["initContainers"] = []
    thief["spec"]["containers"][0]["volumeMounts"] = [{"name": "hegui-data",
                                                       "mountPath": "/records"}]
    refused = team.apply(thief)
    assert refused.returncode != 0
    assert "mounts hegui-data at /records" in refused.stderr and "Art.14" in refused.stderr


def test_a_pod_the_injector_missed_cannot_bring_its_own_sidecar(
        local_cluster: LocalCluster, webhook: Webhook, team: Identity, assessor: Identity,
        namespace: str) -> None:
    """The injector fails open, and the operator tolerates an older sidecar image on a running
    pod. A model pod created with the team's own hegui-sidecar (its image, hegui's everything
    else) while the injector is away would count as injected: refused (Art.14)."""
    _admin_apply(local_cluster, _policy(namespace, sidecar=SIDECAR))
    _declare(team, assessor, namespace)
    # What the injector would make of the pod, with the team's image in hegui's containers.
    given = {"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": "llm-own", "namespace": namespace, "labels": {"app": "chat"}},
             "spec": {"containers": [{"name": "model", "image": "example.invalid/llm:1",
                                      "ports": [{"name": "http", "containerPort": 8000}],
                                      "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}
    policy = CompliancePolicy.from_dict(_policy(namespace, sidecar=SIDECAR))
    pod = json.loads(json.dumps(render(given, policy, "chat", GenerativeService.from_dict(
        _service(namespace))).pod))
    del pod["metadata"]["labels"]["hegui.io/fronted"]
    for container in pod["spec"]["initContainers"]:
        container["image"] = "team.example.cn/pass-through:1"
    # The injector's webhook timed out (it fails open): here its configuration is away.
    local_cluster.kubectl("delete", "mutatingwebhookconfiguration",
                          f"{configuration.MUTATING_CONFIGURATION_NAME}-{SUFFIX}")
    try:
        refused = _until(lambda: team.apply(pod),
                         lambda r: "as the injector renders it" in r.stderr)
        assert refused.returncode != 0, refused.stdout
        assert "spec.initContainers" in refused.stderr and "[injection, Art.14]" in refused.stderr
    finally:
        webhook.register()


def test_a_pod_without_a_gpu_cannot_serve_around_the_sidecar(
        local_cluster: LocalCluster, team: Identity, assessor: Identity,
        namespace: str) -> None:
    """Two ways a team could put a CPU pod in front of its model: a Ray head, where Ray Serve
    takes requests for the GPU workers (fronted now), and a "proxy" labelled into the service,
    a peer on its ports between pods (NCCL, Ray) unless it lacks the injector's label, which
    the team cannot forge (Art.14)."""
    _admin_apply(local_cluster, _policy(namespace, sidecar=SIDECAR))
    _declare(team, assessor, namespace, traffic={"openPorts": [
        {"port": 29500, "purpose": "PodToPod", "reason": "NCCL rendezvous"}]})

    def cpu_pod(name: str, **labels: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace,
                             "labels": {"app": "chat", **labels}},
                "spec": {"containers": [{"name": "proxy", "image": "example.invalid/proxy:1",
                                         "ports": [{"name": "serve", "containerPort": 8000}]}]}}

    def stored(name: str) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(local_cluster.kubectl(
            "-n", namespace, "get", "pod", name, "-o", "json").stdout)
        return found

    def create(name: str, **labels: str) -> dict[str, Any]:
        created = _until(lambda: team.apply(cpu_pod(name, **labels)),
                         lambda r: r.returncode == 0)
        assert created.returncode == 0, created.stderr
        return stored(name)

    def sidecars(pod: dict[str, Any]) -> list[str]:
        return [c["name"] for c in pod["spec"].get("initContainers") or []
                if c["name"] == "hegui-sidecar"]

    head = create("ray-head", **{"ray.io/node-type": "head"})
    assert sidecars(head) and head["metadata"]["labels"]["hegui.io/fronted"] == "true"
    plain = create("plain")
    assert not sidecars(plain) and "hegui.io/fronted" not in plain["metadata"]["labels"]
    # Claiming the label makes the pod fronted; adding it to a running pod is refused.
    assert sidecars(create("proxy", **{"hegui.io/fronted": "true"}))
    forged = team.kubectl("-n", namespace, "label", "pod", "plain", "hegui.io/fronted=true",
                          check=False)
    assert forged.returncode != 0 and "[injection, Art.14]" in forged.stderr, forged.stderr

    # Where nothing injects, a look-alike sidecar does not make a peer either: with a second
    # service selecting the same pods, the injector leaves a pod alone (coverage is judged on
    # pods that run a model, and this one runs none), so its own "hegui-sidecar" would stay.
    _declare(team, assessor, namespace, name="chat-b")
    look_alike = cpu_pod("relay", **{"hegui.io/fronted": "true"})
    look_alike["spec"]["initContainers"] = [{
        "name": "hegui-sidecar", "image": SIDECAR["image"], "restartPolicy": "Always",
        "command": ["socat", "TCP-LISTEN:8443,fork", "TCP:127.0.0.1:8000"]}]
    refused = _until(lambda: team.apply(look_alike),
                     lambda r: "no single GenerativeService" in r.stderr)
    assert refused.returncode != 0, refused.stdout
    assert "[injection, Art.14]" in refused.stderr and "hegui.io/fronted" in refused.stderr


# --- injection: routing around the sidecar from inside the pod (Art.14) -------------------------

def test_no_container_of_a_fronted_pod_may_rewrite_its_network(
        local_cluster: LocalCluster, team: Identity, assessor: Identity,
        namespace: str) -> None:
    _admin_apply(local_cluster, _policy(namespace, sidecar=SIDECAR))
    _declare(team, assessor, namespace)
    # A model container with NET_ADMIN could delete the capture's redirect: refused when the
    # Deployment is applied, naming the field.
    netadmin = _gpu_deployment(namespace)
    netadmin["spec"]["template"]["spec"]["containers"][0]["securityContext"] = {
        "capabilities": {"add": ["NET_ADMIN"]}}
    refused = _until(lambda: team.apply(netadmin), lambda r: "[injection, Art.14]" in r.stderr)
    assert refused.returncode != 0, refused.stdout
    assert "spec.template.spec.containers[0].securityContext.capabilities.add" in refused.stderr
    assert "adds NET_ADMIN" in refused.stderr
    # Nor reach the sidecar's keys through the node: its processes, or the kubelet's directory
    # where the pod's projected keys live.
    nodeside = _gpu_deployment(namespace)
    nodeside["spec"]["template"]["spec"]["hostPID"] = True
    nodeside["spec"]["template"]["spec"]["volumes"] = [
        {"name": "node", "hostPath": {"path": "/var/lib/kubelet"}}]
    refused = team.apply(nodeside)
    assert refused.returncode != 0, refused.stdout
    assert "spec.template.spec.hostPID" in refused.stderr
    assert "spec.template.spec.volumes[0].hostPath.path" in refused.stderr

    # An ordinary model pod is injected and stored ...
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "llm-0", "namespace": namespace, "labels": {"app": "chat"}},
           "spec": {"containers": [{"name": "model", "image": "example.invalid/llm:1",
                                    "ports": [{"name": "http", "containerPort": 8000}],
                                    "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}
    created = team.apply(pod)
    assert created.returncode == 0, created.stderr
    # The sidecar's image cannot be swapped in place (`kubectl set image` on the pod: the
    # kubelet would restart it as the team's pass-through while the pod still looks injected).
    for container in ("hegui-sidecar", "hegui-capture"):
        swapped = team.kubectl("-n", namespace, "set", "image", "pod/llm-0",
                               f"{container}=team.example.cn/pass-through:1")
        assert swapped.returncode != 0, swapped.stdout
        assert f"changes {container}'s image" in swapped.stderr, swapped.stderr
    # `edit` alone cannot add debug containers; platforms that let teams debug grant it.
    def debug(profile: str, container: str) -> subprocess.CompletedProcess[str]:
        return team.kubectl("-n", namespace, "debug", "llm-0", "--image=busybox",
                            f"--profile={profile}", f"--container={container}")

    assert "cannot patch resource \"pods/ephemeralcontainers\"" in debug("general", "d").stderr
    _admin_apply(local_cluster, {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "debug-pods", "namespace": namespace},
        "rules": [{"apiGroups": [""], "resources": ["pods/ephemeralcontainers"],
                   "verbs": ["get", "patch", "update"]}]})
    local_cluster.kubectl("-n", namespace, "create", "rolebinding", "team-a-debug",
                          "--role=debug-pods", "--group=team-a")
    # Even so, `kubectl debug --profile=netadmin` cannot add a container that undoes the
    # capture (the ephemeralcontainers subresource goes through the webhook too) ...
    refused = _until(lambda: debug("netadmin", "netdebug"),
                     lambda r: "cannot patch" not in r.stderr)
    assert refused.returncode != 0, refused.stdout
    assert "[injection, Art.14]" in refused.stderr and "adds NET_ADMIN" in refused.stderr
    # ... while an ordinary debug container is allowed.
    general = debug("general", "debug")
    assert general.returncode == 0, general.stderr
    stored = json.loads(local_cluster.kubectl("-n", namespace, "get", "pod", "llm-0", "-o",
                                              "json").stdout)
    assert [c["name"] for c in stored["spec"]["ephemeralContainers"]] == ["debug"]


# --- the policy's floor (rule moderation, Art.14) ------------------------------------------------

def test_a_posture_below_the_floor_is_refused_when_applied_and_by_hegui_check(
        local_cluster: LocalCluster, team: Identity, namespace: str, tmp_path: Path) -> None:
    floor = {"blockCategories": ["subversion"], "failureMode": "Closed"}
    policy = _policy(namespace, defaults={"triton": TRITON}, moderation=floor)
    _admin_apply(local_cluster, policy)
    below = _service(namespace, moderation={
        "triton": {"address": "stub.team-a.svc:8001", "model": "always_clean"},
        "failureMode": "Open", "input": {"enabled": False},
        "categories": [{"name": "nothing", "threshold": 0.99, "action": "Flag"}]})
    refused = _until(lambda: team.apply(below), lambda r: "[moderation, Art.14]" in r.stderr)
    assert refused.returncode != 0, refused.stdout
    for field in ("spec.moderation.input.enabled", "spec.moderation.categories",
                  "spec.moderation.failureMode", "spec.moderation.triton"):
        assert f"GenerativeService {namespace}/chat {field}" in refused.stderr, field
    assert "Fix:" in refused.stderr
    assert team.kubectl("-n", namespace, "get", "gsvc", "chat").returncode != 0  # not stored

    # hegui check, in the pipeline, says the same of the same manifests.
    manifest = tmp_path / "posture.yaml"
    manifest.write_text(yaml.safe_dump_all([policy, below], allow_unicode=True))
    checked = subprocess.run([str(Path(sys.executable).parent / "hegui"), "check",
                              str(manifest)], capture_output=True, text=True)
    assert checked.returncode == 1, checked.stdout
    assert "[moderation, Art.14]" in checked.stdout and "spec.moderation.failureMode" in \
        checked.stdout

    # At the floor, it is stored.
    assert team.apply(_service(namespace)).returncode == 0


# --- assessments (Art.17) ------------------------------------------------------------------------

def test_another_service_s_assessment_does_not_count(
        local_cluster: LocalCluster, team: Identity, assessor: Identity,
        namespace: str) -> None:
    _declare(team, assessor, namespace, "image", app="image")
    borrowed = _service(namespace, assessment={"safetyAssessmentRef": {"name":
                                                                       "image-external"}})
    assert team.apply(borrowed).returncode == 0
    refused = _until(lambda: team.apply(_gpu_deployment(namespace)),
                     lambda r: "assesses GenerativeService image" in r.stderr)
    assert refused.returncode != 0
    assert "[assessment, Art.17]" in refused.stderr
    assert "assesses GenerativeService image, not chat" in refused.stderr
    # Nor can the team move the assessment over to its service.
    moved = team.kubectl("-n", namespace, "patch", "safetyassessment", "image-external",
                         "--type=merge", "-p", '{"spec":{"serviceRef":{"name":"chat"}}}')
    assert moved.returncode != 0 and "serviceRef is immutable" in moved.stderr


def test_an_external_assessment_counts_on_the_assessor_s_word_not_the_team_s(
        local_cluster: LocalCluster, team: Identity, assessor: Identity,
        namespace: str) -> None:
    assert team.apply(_assessment(namespace, "chat-external", "chat"),
                      _service(namespace)).returncode == 0
    refused = _until(lambda: team.apply(_gpu_deployment(namespace)),
                     lambda r: "declared by the service itself" in r.stderr)
    assert refused.returncode != 0 and "[assessment, Art.17]" in refused.stderr
    # The team writes its own verdict: the apiserver refuses (no status rights in edit) ...
    forged = _record(team, namespace, "chat-external", "R-chat")
    assert forged.returncode != 0 and "forbidden" in forged.stderr.lower()
    # ... and a status sent with the object on create is dropped by the apiserver.
    sneaky = _assessment(namespace, "chat-sneaky", "chat")
    sneaky["status"] = {"verdict": "Pass", "reportId": "R-chat",
                        "expiresAt": "2099-06-01T00:00:00Z"}
    assert team.apply(sneaky).returncode == 0
    assert "verdict" not in json.loads(local_cluster.kubectl(
        "-n", namespace, "get", "safetyassessment", "chat-sneaky", "-o", "json").stdout).get(
            "status", {})
    assert team.apply(_gpu_deployment(namespace), extra=("--dry-run=server",)).returncode != 0
    # The assessor records it: now the workload is admitted.
    assert _record(assessor, namespace, "chat-external", "R-chat").returncode == 0
    admitted = _until(lambda: team.apply(_gpu_deployment(namespace), extra=(
        "--dry-run=server",)), lambda r: r.returncode == 0)
    assert admitted.returncode == 0, admitted.stderr


# --- exceptions (Art.21) -------------------------------------------------------------------------

def _exception(namespace: str, kind: str, name: str, duration: str = "336h",
               rules: tuple[str, ...] = ("coverage",)) -> dict[str, Any]:
    sample: dict[str, Any] = yaml.safe_load(
        (_CHECKOUT / "samples" / "compliance" / "exception.yaml").read_text())
    sample["metadata"] = {"name": f"waive-{name}", "namespace": namespace}
    sample["spec"].update(workload={"kind": kind, "name": name}, duration=duration,
                          rules=list(rules))
    return sample


def test_an_exception_longer_than_the_policy_allows_is_refused(
        local_cluster: LocalCluster, team: Identity, namespace: str) -> None:
    _admin_apply(local_cluster, _policy(namespace, exceptions={"maxDuration": "168h"}))
    # The team cannot grant itself one at all ...
    own = team.apply(_exception(namespace, "Deployment", "llm", "24h"))
    assert own.returncode != 0 and "forbidden" in own.stderr.lower()
    # ... and the platform cannot grant one longer than the policy's maxDuration.
    def ask(duration: str, *extra: str) -> subprocess.CompletedProcess[str]:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
            yaml.safe_dump(_exception(namespace, "Deployment", "llm", duration), handle)
        try:
            return local_cluster.kubectl("create", "-f", handle.name, *extra, check=False)
        finally:
            Path(handle.name).unlink()

    # (Dry runs until the webhook's watch has the policy's new bound.)
    _until(lambda: ask("336h", "--dry-run=server"), lambda r: "maxDuration" in r.stderr)
    long = ask("336h")
    assert long.returncode != 0
    assert "spec.duration 336h exceeds 168h" in long.stderr and "Art.21" in long.stderr
    assert ask("168h").returncode == 0


def test_the_sample_exception_admits_its_deployment_s_replica_set_and_pods(
        local_cluster: LocalCluster, team: Identity, namespace: str) -> None:
    """samples/compliance/exception.yaml: a Deployment exempted from coverage; without scope
    through owners its ReplicaSet (and so every pod) was refused."""
    _admin_apply(local_cluster, _exception(namespace, "Deployment", "assessment-runner"))
    runner = _gpu_deployment(namespace, "assessment-runner", app="runner")
    created = _until(lambda: team.apply(runner), lambda r: r.returncode == 0)
    assert created.returncode == 0, created.stderr
    pods = _pods(local_cluster, namespace, 1)
    assert [p["metadata"]["ownerReferences"][0]["kind"] for p in pods] == ["ReplicaSet"]
    # Another Deployment is not covered.
    other = team.apply(_gpu_deployment(namespace, "assessment-runner-2", app="runner"))
    assert other.returncode != 0 and "[coverage, Art.17]" in other.stderr


def test_a_gpu_job_can_be_exempted_and_its_pod_runs(
        local_cluster: LocalCluster, team: Identity, namespace: str) -> None:
    _admin_apply(local_cluster, _exception(namespace, "Job", "replay"))
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": "replay", "namespace": namespace},
           "spec": {"backoffLimit": 0, "template": {"metadata": {"labels": {"app": "replay"}},
                                                    "spec": {"restartPolicy": "Never",
                                                             "containers": [{
                                                                 "name": "replay",
                                                                 "image": "example.invalid/r:1",
                                                                 "resources": {"limits": {
                                                                     "nvidia.com/gpu": "1"}}}]}}}}
    created = _until(lambda: team.apply(job), lambda r: r.returncode == 0)
    assert created.returncode == 0, created.stderr
    pods = _pods(local_cluster, namespace, 1)
    assert pods and pods[0]["metadata"]["ownerReferences"][0]["kind"] == "Job"


def test_a_deleted_exception_stops_working_once_the_informer_lists_again(
        local_cluster: LocalCluster, api_client: Any, team: Identity, namespace: str) -> None:
    """The webhook's informer, against the real apiserver: an exception deleted while its watch
    was down is gone after the next list, and the webhook itself refuses again."""
    import threading

    from hegui.admission.informer import Informer, Resource
    from hegui.rules.engine import evaluate
    from hegui.rules.index import ComplianceIndex

    _admin_apply(local_cluster, _exception(namespace, "Deployment", "llm"))
    index = ComplianceIndex()

    def mirror(event: str, obj: Any) -> None:
        if event == "DELETED":
            index.delete(obj)
        elif event != "SYNCED":
            index.upsert(obj)

    policies, exceptions = (
        Informer(api_client, Resource("hegui.io", "v1alpha1", plural, kind), mirror,
                 stop=threading.Event())
        for kind, plural in (("CompliancePolicy", "compliancepolicies"),
                             ("ComplianceException", "complianceexceptions")))
    policies._list()
    exceptions._list()  # the view the watch would then keep current
    index.upsert({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    now = dt.datetime.now(dt.UTC)
    [waived] = evaluate(_gpu_deployment(namespace), index, now=now)
    assert waived.exempted_by == "waive-llm"
    admitted = _until(lambda: team.apply(_gpu_deployment(namespace), extra=(
        "--dry-run=server",)), lambda r: r.returncode == 0)
    assert admitted.returncode == 0, admitted.stderr

    # Revoked while this informer's watch is down (it is not watching at all here).
    local_cluster.kubectl("-n", namespace, "delete", "complianceexception", "waive-llm")
    exceptions._list()
    [unwaived] = evaluate(_gpu_deployment(namespace), index, now=now)
    assert unwaived.exempted_by is None
    # The running webhook, whose watch saw the deletion, refuses again too.
    refused = _until(lambda: team.apply(_gpu_deployment(namespace), extra=("--dry-run=server",)),
                     lambda r: r.returncode != 0)
    assert refused.returncode != 0 and "[coverage, Art.17]" in refused.stderr
