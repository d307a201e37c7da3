"""The validating webhook, called by the real kube-apiserver over TLS (Art.12, Art.17)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hegui.admission.local import LocalWebhook
from hegui.localcluster.cluster import _CHECKOUT, LocalCluster

pytestmark = pytest.mark.cluster

ALGORITHM_NUMBER = "网信算备110108823483901230011号"


class Webhook(LocalWebhook):
    def reviews_answered(self) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in self.metrics().splitlines()
                   if line.startswith("hegui_admission_requests_total{"))


@pytest.fixture(scope="module")
def webhook(local_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Webhook]:
    local_cluster.kubectl("apply", "--server-side", "-f", str(_CHECKOUT / "crds"))
    for crd in ("generativeservices", "compliancepolicies", "complianceexceptions",
                "safetyassessments"):
        local_cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                              f"crd/{crd}.hegui.io")
    hook = Webhook(local_cluster, tmp_path_factory.mktemp("webhook"))
    hook.start()
    hook.register()
    yield hook
    hook.unregister()
    hook.stop()


def _apply(cluster: LocalCluster, *objects: dict[str, Any], extra: tuple[str, ...] = (),
           check: bool = True) -> subprocess.CompletedProcess[str]:
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"hegui-{uuid.uuid4().hex}.yaml"
    path.write_text(yaml.safe_dump_all(objects, allow_unicode=True))
    try:
        return cluster.kubectl("apply", "-f", str(path), *extra, check=check)
    finally:
        path.unlink()


@pytest.fixture
def namespace(local_cluster: LocalCluster, webhook: Webhook) -> Iterator[str]:
    """A fresh namespace enforced by its own CompliancePolicy (Enforce unless a test changes it)."""
    name = f"adm-{uuid.uuid4().hex[:8]}"
    _apply(local_cluster, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
           _policy(name))
    _wait_for_index(local_cluster, webhook, name)
    yield name
    local_cluster.kubectl("delete", "namespace", name, "--wait=false")
    local_cluster.kubectl("delete", "compliancepolicy", name, "--ignore-not-found")


def _policy(namespace: str, rules: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {"apiVersion": "hegui.io/v1alpha1", "kind": "CompliancePolicy",
            "metadata": {"name": namespace},
            "spec": {"namespaces": [namespace], "defaultMode": "Enforce", "rules": rules or []}}


def _wait_for_index(cluster: LocalCluster, webhook: Webhook, namespace: str) -> None:
    """The webhook watches its objects; give a fresh policy a moment to arrive."""
    probe = _gpu_deployment(namespace, "index-probe")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        result = _apply(cluster, probe, extra=("--dry-run=server",), check=False)
        if result.returncode != 0:
            return
        time.sleep(0.2)
    raise AssertionError("the webhook never saw the policy")


def _gpu_deployment(namespace: str, name: str = "llm", app: str = "chat") -> dict[str, Any]:
    labels = {"app": app}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                         "name": "model", "image": "example.invalid/llm:1",
                         "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}}}


def _service(namespace: str, **changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": "chat"}},
        "filing": {"publicOpinion": True, "algorithm": {"number": ALGORITHM_NUMBER}},
        "assessment": {"external": {"reportId": "TC260-2026-0042", "assessedOn": "2026-06-01",
                                    "expiresOn": "2099-06-01", "result": "Pass"}},
        "labeling": {"modalities": ["text"], "implicit": {"contentProducer": "Example AI Co."}},
    }
    for key, value in changes.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    return {"apiVersion": "hegui.io/v1alpha1", "kind": "GenerativeService",
            "metadata": {"name": "chat", "namespace": namespace}, "spec": spec}


def attest(cluster: LocalCluster, namespace: str, report_id: str, service: str = "chat",
           name: str | None = None) -> str:
    """Record an external report as the assessor does (Art.17): a SafetyAssessment without a
    target whose status (written here by the admin, through the status subresource) names the
    report. Returns its name."""
    name = name or f"external-{report_id.lower()}"
    _apply(cluster, {"apiVersion": "hegui.io/v1alpha1", "kind": "SafetyAssessment",
                     "metadata": {"name": name, "namespace": namespace},
                     "spec": {"serviceRef": {"name": service}, "questionBanks": [
                         {"name": "refuse", "kind": "ShouldRefuse",
                          "configMapRef": {"name": "banks", "key": "refuse.txt"}},
                         {"name": "answer", "kind": "ShouldAnswer",
                          "configMapRef": {"name": "banks", "key": "answer.txt"}}]}})
    cluster.kubectl("-n", namespace, "patch", "safetyassessment", name, "--subresource=status",
                    "--type=merge", "-p", json.dumps({"status": assessor_status(report_id)}))
    return name


def assessor_status(report_id: str) -> dict[str, Any]:
    return {"verdict": "Pass", "reportId": report_id, "assessor": "Example Assessment Centre",
            "completedAt": "2026-06-01T00:00:00Z", "expiresAt": "2099-06-01T00:00:00Z"}


def _apply_service(cluster: LocalCluster, service: dict[str, Any]) -> None:
    """Apply a GenerativeService (and the assessor's record of the external report it declares)
    and wait until the webhook's watch has them: a dry run of its workload is no longer refused
    for want of a service or of the record."""
    namespace = service["metadata"]["namespace"]
    external = (service["spec"].get("assessment") or {}).get("external")
    if external is not None:
        attest(cluster, namespace, external["reportId"], service["metadata"]["name"])
    _apply(cluster, service)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        probe = _apply(cluster, _gpu_deployment(namespace), extra=("--dry-run=server",),
                       check=False)
        if "[coverage, Art.17]" not in probe.stderr and \
                "declared by the service itself" not in probe.stderr:
            return
        time.sleep(0.2)
    raise AssertionError("the webhook never saw the GenerativeService")


def test_gpu_deployment_without_a_service_is_refused_naming_the_article(
        local_cluster: LocalCluster, namespace: str) -> None:
    result = _apply(local_cluster, _gpu_deployment(namespace), check=False)
    assert result.returncode != 0
    assert "[coverage, Art.17]" in result.stderr
    assert "limits on nvidia.com/gpu" in result.stderr
    assert "Fix:" in result.stderr


def test_complete_service_admits_its_deployment(local_cluster: LocalCluster,
                                                namespace: str) -> None:
    _apply_service(local_cluster, _service(namespace))
    result = _apply(local_cluster, _gpu_deployment(namespace), check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("changes", "rule", "says"), [
    ({"filing": {"publicOpinion": False}, "assessment": None}, "[filing, Art.17]",
     "spec.filing"),
    ({"assessment": {"external": {"reportId": "TC260-2024-0001", "assessedOn": "2024-01-01",
                                  "expiresOn": "2025-01-01", "result": "Pass"}}},
     "[assessment, Art.17]", "to 2025-01-01"),
    ({"labeling": None}, "[labeling, Art.12]", "spec.labeling"),
], ids=["missing-filing", "expired-assessment", "missing-labeling"])
def test_each_gap_is_refused_for_its_own_reason(
        local_cluster: LocalCluster, namespace: str, changes: dict[str, Any], rule: str,
        says: str) -> None:
    _apply_service(local_cluster, _service(namespace, **changes))
    result = _apply(local_cluster, _gpu_deployment(namespace), check=False)
    assert result.returncode != 0
    assert rule in result.stderr and says in result.stderr
    others = {"[filing, Art.17]", "[assessment, Art.17]", "[labeling, Art.12]",
              "[coverage, Art.17]"} - {rule}
    assert not any(other in result.stderr for other in others)


def test_warn_mode_admits_with_a_warning_kubectl_shows(local_cluster: LocalCluster,
                                                       namespace: str) -> None:
    _apply(local_cluster, _policy(namespace, [{"rule": "labeling", "mode": "Warn"}]))
    _apply_service(local_cluster, _service(namespace, labeling=None))
    deadline = time.monotonic() + 20
    while True:  # the policy's change reaches the webhook by its watch, too
        result = _apply(local_cluster, _gpu_deployment(namespace), check=False)
        if result.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert result.returncode == 0, result.stderr
    assert "Warning:" in result.stderr and "[labeling, Art.12]" in result.stderr


def test_dry_run_answers_like_the_real_thing_and_writes_nothing(
        local_cluster: LocalCluster, namespace: str) -> None:
    refused = _apply(local_cluster, _gpu_deployment(namespace), extra=("--dry-run=server",),
                     check=False)
    assert refused.returncode != 0 and "[coverage, Art.17]" in refused.stderr
    _apply_service(local_cluster, _service(namespace))
    admitted = _apply(local_cluster, _gpu_deployment(namespace), extra=("--dry-run=server",))
    assert "server dry run" in admitted.stdout
    listed = local_cluster.kubectl("-n", namespace, "get", "deployments", "-o", "json")
    assert json.loads(listed.stdout)["items"] == []


def test_system_namespaces_and_cpu_workloads_never_reach_the_webhook(
        local_cluster: LocalCluster, webhook: Webhook, namespace: str) -> None:
    before = webhook.reviews_answered()
    name = f"gpu-{uuid.uuid4().hex[:6]}"
    _apply(local_cluster, _gpu_deployment("kube-system", name))
    cpu = _gpu_deployment(namespace, "cpu-only")
    cpu["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "1"}}
    _apply(local_cluster, cpu)
    assert webhook.reviews_answered() == before
    local_cluster.kubectl("-n", "kube-system", "delete", "deployment", name)


def test_with_the_webhook_down_gpu_workloads_fail_closed(
        local_cluster: LocalCluster, webhook: Webhook, namespace: str) -> None:
    _apply_service(local_cluster, _service(namespace))
    webhook.stop()
    try:
        gpu = _apply(local_cluster, _gpu_deployment(namespace), check=False)
        cpu = _gpu_deployment(namespace, "cpu-only")
        cpu["spec"]["template"]["spec"]["containers"][0]["resources"] = {}
        admitted = _apply(local_cluster, cpu, check=False)
    finally:
        webhook.start()
    assert gpu.returncode != 0 and "failed calling webhook" in gpu.stderr
    assert admitted.returncode == 0, admitted.stderr


# --- `hegui check` gives the webhook's decisions ------------------------------------------------

SAMPLES = _CHECKOUT / "samples"


def _retarget(obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    """A sample moved into the test's namespace (and a policy enforcing there)."""
    obj = copy.deepcopy(obj)
    if obj["kind"] == "CompliancePolicy":
        return _policy(namespace, obj["spec"].get("rules"))
    if obj["kind"] == "Namespace":
        obj["metadata"]["name"] = namespace
    else:
        obj["metadata"]["namespace"] = namespace
    return obj


def _sample(path: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((SAMPLES / path).read_text()) if d]


def _parity_cases() -> list[tuple[str, list[dict[str, Any]]]]:
    chat = _sample("compliance/chat-service.yaml")[0]
    workload = next(d for d in _sample("workloads/chat-model.yaml") if d["kind"] == "Deployment")
    policy = _sample("compliance/policy.yaml")[0]
    assessment = _sample("compliance/safety-assessment.yaml")[0]
    external = {"external": {"reportId": "TC260-2026-0042", "assessedOn": "2026-06-01",
                             "expiresOn": "2099-06-01", "result": "Pass"}}

    def variant(**spec: Any) -> dict[str, Any]:
        changed = copy.deepcopy(chat)
        for key, value in spec.items():
            if value is None:
                changed["spec"].pop(key, None)
            else:
                changed["spec"][key] = value
        return changed

    return [
        ("samples-as-shipped", [policy, assessment, chat, workload]),
        ("no-service", [policy, workload]),
        ("external-assessment", [policy, variant(assessment=external), workload]),
        ("no-labeling", [policy, variant(assessment=external, labeling=None), workload]),
        ("no-filing", [policy, variant(filing={"publicOpinion": False}, assessment=None),
                       workload]),
        ("labeling-warns", [{**policy, "spec": {**policy["spec"], "rules": [
            {"rule": "labeling", "mode": "Warn"}]}},
            variant(assessment=external, labeling=None), workload]),
    ]


@pytest.mark.parametrize("case", _parity_cases(), ids=lambda c: c[0])
def test_check_decides_like_the_webhook(
        local_cluster: LocalCluster, webhook: Webhook, namespace: str,
        tmp_path: Path, case: tuple[str, list[dict[str, Any]]]) -> None:
    from hegui.admission import check

    objects = [_retarget(o, namespace) for o in case[1]]
    *posture, workload = objects
    manifest = tmp_path / "manifests.yaml"
    manifest.write_text(yaml.safe_dump_all(objects, allow_unicode=True))
    # The workload's judgement (GenerativeServices are judged too, for the policy's floor).
    [judged] = [j for j in check.judge(check.documents([str(manifest)]), "default").judged
                if j.workload.kind == workload["kind"]]
    # Compared by rule, article and location: the apiserver may shorten long warnings.
    offline = sorted(f"[{f.rule.value}, {f.article}] {f.location}:"
                     for f in judged.verdict.denied + judged.verdict.warned)

    # The same objects through the apiserver: posture applied, the workload dry-run.
    _apply(local_cluster, *posture)
    deadline = time.monotonic() + 20
    while True:
        result = _apply(local_cluster, workload, extra=("--dry-run=server",), check=False)
        online = sorted(line[line.index("["):].split(": ", 1)[0] + ":"
                        for line in result.stderr.splitlines()
                        if "[" in line and ", Art." in line)
        if online == offline or time.monotonic() > deadline:
            break
        time.sleep(0.3)  # the webhook's watch is still catching up with the posture
    assert (result.returncode == 0) == judged.verdict.allowed, result.stderr
    assert online == offline


# --- native CEL policies hold while the webhook is down -----------------------------------------

@pytest.fixture
def native_policies(local_cluster: LocalCluster, namespace: str) -> Iterator[None]:
    from hegui.admission import cel_policies
    from hegui.api.policy import CompliancePolicy

    objects = [*cel_policies.all_policies(),
               *cel_policies.bindings(CompliancePolicy.from_dict(_policy(namespace)))]
    _apply(local_cluster, *objects)
    yield
    for obj in reversed(objects):
        local_cluster.kubectl("delete", obj["kind"].lower(), obj["metadata"]["name"],
                              "--ignore-not-found")


def _refusal_while_down(cluster: LocalCluster, webhook: Webhook,
                        namespace: str) -> subprocess.CompletedProcess[str]:
    webhook.stop()
    try:
        deadline = time.monotonic() + 20
        while True:  # the apiserver compiles new policies and bindings asynchronously
            result = _apply(cluster, _gpu_deployment(namespace), check=False)
            if "ValidatingAdmissionPolicy" in result.stderr or time.monotonic() > deadline:
                return result
            time.sleep(0.3)
    finally:
        webhook.start()


@pytest.mark.usefixtures("native_policies")
def test_native_policy_refuses_missing_labeling_without_the_webhook(
        local_cluster: LocalCluster, webhook: Webhook, namespace: str) -> None:
    _apply_service(local_cluster, _service(namespace, labeling=None))
    result = _refusal_while_down(local_cluster, webhook, namespace)
    assert result.returncode != 0
    assert "hegui-labeling-art12" in result.stderr
    assert f"[labeling, Art.12] GenerativeService {namespace}/chat spec.labeling" in result.stderr


@pytest.mark.usefixtures("native_policies")
def test_native_policy_refuses_a_namespace_without_any_service(
        local_cluster: LocalCluster, webhook: Webhook, namespace: str) -> None:
    result = _refusal_while_down(local_cluster, webhook, namespace)
    assert result.returncode != 0
    assert "hegui-coverage-art17" in result.stderr


@pytest.mark.usefixtures("native_policies")
def test_native_policies_pass_a_complete_service_and_the_webhook_still_decides(
        local_cluster: LocalCluster, webhook: Webhook, namespace: str) -> None:
    _apply_service(local_cluster, _service(namespace))
    result = _apply(local_cluster, _gpu_deployment(namespace), check=False)
    assert result.returncode == 0, result.stderr


# The declaration rules' twins (Art.7-11, 15, 23): opt-in, so bound only by a policy that names
# them; with the webhook down the apiserver refuses for the same rule, article and field as the
# Python check.

DECLARATIONS = ("audience", "dataProtection", "complaints", "userAgreement", "training",
                "annotation", "licences")


def _declared(namespace: str, **changes: Any) -> dict[str, Any]:
    """The test's service, declaring every duty as the sample chat service does."""
    chat = _sample("compliance/chat-service.yaml")[0]["spec"]
    return _service(namespace, **{**{k: copy.deepcopy(chat[k]) for k in DECLARATIONS
                                     if k in chat}, **changes})


def _chat_part(key: str, **changes: Any) -> Any:
    part = copy.deepcopy(_sample("compliance/chat-service.yaml")[0]["spec"][key])
    for name, value in changes.items():
        if value is None:
            part.pop(name, None)
        else:
            part[name] = value
    return part


@pytest.fixture
def declaration_policies(local_cluster: LocalCluster, namespace: str) -> Iterator[None]:
    from hegui.admission import cel_policies
    from hegui.api.policy import CompliancePolicy

    policy = _policy(namespace, [{"rule": r, "mode": "Enforce"} for r in DECLARATIONS])
    objects = [*cel_policies.all_policies(),
               *cel_policies.bindings(CompliancePolicy.from_dict(policy))]
    _apply(local_cluster, policy, *objects)
    yield
    for obj in reversed(objects):
        local_cluster.kubectl("delete", obj["kind"].lower(), obj["metadata"]["name"],
                              "--ignore-not-found")


def _training(**annotation: Any) -> dict[str, Any]:
    training: dict[str, Any] = _chat_part("training")
    for name, value in annotation.items():
        if value is None:
            training["annotation"].pop(name, None)
        else:
            training["annotation"][name] = value
    return training


@pytest.mark.parametrize("changes", [
    {"audience": None}, {"dataProtection": None}, {"complaints": None},
    {"userAgreement": None}, {"training": None}, {"licences": []},
    {"dataProtection": _chat_part("dataProtection", pseudonymise=False,
                                  pseudonymisationKeyRef=None)},
    {"training": {**_chat_part("training"), "baseModels": [{"name": "m", "provider": "p"}]}},
    {"training": _training(annotatorsTrained=False)},
    {"training": _training(latestSampling=None)},
], ids=["no-audience", "no-data-protection", "no-complaints", "no-user-agreement",
        "no-training", "no-licences", "records-in-the-clear", "unsourced-base-model",
        "untrained-annotators", "no-annotation-sampling"])
@pytest.mark.usefixtures("declaration_policies")
def test_a_declaration_twin_refuses_like_the_python_check_without_the_webhook(
        local_cluster: LocalCluster, webhook: Webhook, namespace: str,
        changes: dict[str, Any]) -> None:
    from hegui.rules.engine import evaluate
    from hegui.rules.index import ComplianceIndex

    service = _declared(namespace, **changes)
    policy = _policy(namespace, [{"rule": r, "mode": "Enforce"} for r in DECLARATIONS])
    python = [f"[{f.rule.value}, {f.article}] {f.location}:" for f in evaluate(
        _gpu_deployment(namespace), ComplianceIndex.from_objects([policy, service]))
        if f.rule.value in DECLARATIONS]
    assert len(python) == 1, python
    _apply_service(local_cluster, service)
    result = _refusal_while_down(local_cluster, webhook, namespace)
    assert result.returncode != 0
    assert python[0] in result.stderr, result.stderr


@pytest.mark.usefixtures("declaration_policies")
def test_declaration_twins_pass_a_service_that_declares_every_duty(
        local_cluster: LocalCluster, webhook: Webhook, namespace: str) -> None:
    _apply_service(local_cluster, _declared(namespace))
    webhook.stop()
    try:
        time.sleep(2)  # the apiserver compiles the policies asynchronously
        result = _apply(local_cluster, _gpu_deployment(namespace), check=False)
    finally:
        webhook.start()
    assert "ValidatingAdmissionPolicy" not in result.stderr, result.stderr
    assert "failed calling webhook" in result.stderr  # only the webhook, being down, refused


def test_generated_cel_compiles_on_the_apiserver_with_policy_signals(
        local_cluster: LocalCluster) -> None:
    from hegui.admission import cel_policies, configuration
    from hegui.rules.workloads import BUILTIN

    detection = BUILTIN.extended(resources=["amd.com/gpu", "huawei.com/Ascend-"],
                                 runtime_classes=["ascend"], labels=["example.com/llm"])
    config = configuration.validating_webhook_configuration(
        ca_bundle=local_cluster.pki.ca_cert.read_bytes(), own_namespace="hegui-system",
        url="https://127.0.0.1:9/validate", detection=detection)
    config["metadata"]["name"] = "hegui-cel-compile-check"
    result = _apply(local_cluster, config, *cel_policies.all_policies(detection),
                    extra=("--dry-run=server",))
    assert result.stdout.count("created (server dry run)") == 1 + len(cel_policies.NATIVE_RULES)


# --- sidecar injection (Art.14) -----------------------------------------------------------------

SIDECAR = {"image": "registry.example.cn/hegui/sidecar:0.1.0", "port": 8443,
           "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                         "limits": {"cpu": "1", "memory": "512Mi"}}}


def _injecting_policy(namespace: str) -> dict[str, Any]:
    policy = _policy(namespace)
    policy["spec"]["sidecar"] = SIDECAR
    return policy


def _wait_for_injection(cluster: LocalCluster, namespace: str) -> None:
    """Until the webhook's watch has the injecting policy: a dry-run pod comes back injected."""
    probe = {"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": "probe", "namespace": namespace, "labels": {"app": "chat"}},
             "spec": {"containers": [{"name": "model", "image": "example.invalid/llm:1",
                                      "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        result = _apply(cluster, probe, extra=("--dry-run=server", "-o", "json"), check=False)
        if result.returncode == 0 and "hegui-sidecar" in result.stdout:
            return
        time.sleep(0.3)
    raise AssertionError("the webhook never injected the probe pod")


def _served_deployment(namespace: str) -> dict[str, Any]:
    deployment = _gpu_deployment(namespace)
    deployment["spec"]["replicas"] = 2
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"] = [
        {"name": "http", "containerPort": 8000}]
    return deployment


def _pods(cluster: LocalCluster, namespace: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 60
    while True:
        pods = json.loads(cluster.kubectl("-n", namespace, "get", "pods", "-o",
                                          "json").stdout)["items"]
        running = [p for p in pods if p["status"].get("phase") == "Running"
                   and not p["metadata"].get("deletionTimestamp")]
        if len(running) >= count or time.monotonic() > deadline:
            return running
        time.sleep(0.5)


def test_pods_of_a_covered_deployment_run_with_the_sidecar_and_git_sees_no_drift(
        local_cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    _apply(local_cluster, _injecting_policy(namespace))
    _apply_service(local_cluster, _service(namespace))
    _wait_for_injection(local_cluster, namespace)
    manifest = tmp_path / "deployment.yaml"
    deployment = _served_deployment(namespace)
    manifest.write_text(yaml.safe_dump(deployment))
    local_cluster.kubectl("apply", "--server-side", "-f", str(manifest))

    pods = _pods(local_cluster, namespace, 2)
    assert len(pods) == 2
    gpu_nodes = {"kwok-gpu-0", "kwok-gpu-1"}
    for pod in pods:
        sidecar = pod["spec"]["initContainers"][0]
        assert sidecar["name"] == "hegui-sidecar" and sidecar["restartPolicy"] == "Always"
        assert sidecar["ports"][0]["name"] == "http"
        assert pod["spec"]["containers"][0]["ports"][0]["name"] == "hegui-model"
        assert pod["spec"]["nodeName"] in gpu_nodes
        assert "hegui.io/sidecar-status" in pod["metadata"]["annotations"]
    # The Deployment as stored is what was applied: a server-side diff is empty.
    diff = local_cluster.kubectl("diff", "--server-side", "-f", str(manifest), check=False)
    assert diff.returncode == 0, diff.stdout
    stored = json.loads(local_cluster.kubectl("-n", namespace, "get", "deployment", "llm",
                                              "-o", "json").stdout)
    assert "initContainers" not in stored["spec"]["template"]["spec"]

    # Scaling up injects the new pods too.
    local_cluster.kubectl("-n", namespace, "scale", "deployment/llm", "--replicas=3")
    pods = _pods(local_cluster, namespace, 3)
    assert all(p["spec"]["initContainers"][0]["name"] == "hegui-sidecar" for p in pods)

    # So does a rollout: every pod of the new ReplicaSet carries the sidecar, once.
    old_hash = pods[0]["metadata"]["labels"]["pod-template-hash"]
    local_cluster.kubectl("-n", namespace, "set", "env", "deployment/llm", "MODEL_REVISION=2")
    local_cluster.kubectl("-n", namespace, "rollout", "status", "deployment/llm",
                          "--timeout=90s")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pods = _pods(local_cluster, namespace, 3)
        if {p["metadata"]["labels"]["pod-template-hash"] for p in pods} - {old_hash} and all(
                p["metadata"]["labels"]["pod-template-hash"] != old_hash for p in pods):
            break
        time.sleep(0.5)
    assert len(pods) == 3 and all(
        p["metadata"]["labels"]["pod-template-hash"] != old_hash for p in pods)
    assert all([c["name"] for c in p["spec"]["initContainers"]].count("hegui-sidecar") == 1
               for p in pods)


def test_a_pod_that_cannot_be_injected_safely_is_refused_naming_the_conflict(
        local_cluster: LocalCluster, namespace: str) -> None:
    _apply(local_cluster, _injecting_policy(namespace))
    _apply_service(local_cluster, _service(namespace))
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "host-model", "namespace": namespace, "labels": {"app": "chat"}},
           "spec": {"hostNetwork": True, "containers": [{
               "name": "model", "image": "example.invalid/llm:1",
               "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}
    deadline = time.monotonic() + 20
    while True:  # the policy's sidecar reaches the webhook by its watch
        result = _apply(local_cluster, pod, check=False)
        if result.returncode != 0 or time.monotonic() > deadline:
            break
        local_cluster.kubectl("-n", namespace, "delete", "pod", "host-model", "--wait=false")
        time.sleep(0.5)
    assert result.returncode != 0
    assert "[injection, Art.14]" in result.stderr and "hostNetwork" in result.stderr


def test_a_gpu_job_with_the_native_sidecar_still_completes(
        local_cluster: LocalCluster, namespace: str) -> None:
    """kwok stands in for the kubelet here: it completes the pod as a kubelet does once the
    regular containers exit, native sidecars notwithstanding; what this shows is that the
    injected pod is a valid Job pod and the Job controller counts it."""
    _apply(local_cluster, _injecting_policy(namespace))
    _apply_service(local_cluster, _service(namespace))
    _wait_for_injection(local_cluster, namespace)
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": "batch-eval", "namespace": namespace},
           "spec": {"backoffLimit": 0, "template": {
               "metadata": {"labels": {"app": "chat"}},
               "spec": {"restartPolicy": "Never", "containers": [{
                   "name": "model", "image": "example.invalid/llm:1",
                   "ports": [{"name": "http", "containerPort": 8000}],
                   "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}}}
    _apply(local_cluster, job)
    deadline = time.monotonic() + 60
    while True:
        status = json.loads(local_cluster.kubectl("-n", namespace, "get", "job", "batch-eval",
                                                  "-o", "json").stdout)["status"]
        if status.get("succeeded") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert status.get("succeeded") == 1, status
    [pod] = json.loads(local_cluster.kubectl("-n", namespace, "get", "pods", "-l",
                                             "job-name=batch-eval", "-o", "json").stdout)["items"]
    assert pod["spec"]["initContainers"][0]["name"] == "hegui-sidecar"
    assert pod["status"]["phase"] == "Succeeded"


def test_a_namespace_quota_that_demands_limits_admits_the_injected_pod(
        local_cluster: LocalCluster, namespace: str) -> None:
    """A ResourceQuota on cpu and memory limits refuses any container without them, sidecars
    included (quota admission runs after the mutating webhooks): the sidecar carries the
    policy's requests and limits, so the injected pod is admitted and counted."""
    quota = {"apiVersion": "v1", "kind": "ResourceQuota",
             "metadata": {"name": "team", "namespace": namespace},
             "spec": {"hard": {"limits.cpu": "8", "limits.memory": "16Gi",
                               "requests.nvidia.com/gpu": "2"}}}
    _apply(local_cluster, _injecting_policy(namespace))
    _apply_service(local_cluster, _service(namespace))
    _wait_for_injection(local_cluster, namespace)
    _apply(local_cluster, quota)
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "quota-model", "namespace": namespace, "labels": {"app": "chat"}},
           "spec": {"containers": [{
               "name": "model", "image": "example.invalid/llm:1",
               "ports": [{"name": "http", "containerPort": 8000}],
               "resources": {"limits": {"nvidia.com/gpu": "1", "cpu": "2", "memory": "4Gi"}}}]}}
    result = _apply(local_cluster, pod, check=False)
    assert result.returncode == 0, result.stderr
    stored = json.loads(local_cluster.kubectl("-n", namespace, "get", "pod", "quota-model",
                                              "-o", "json").stdout)
    assert stored["spec"]["initContainers"][0]["name"] == "hegui-sidecar"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        used = json.loads(local_cluster.kubectl("-n", namespace, "get", "resourcequota", "team",
                                                "-o", "json").stdout)["status"].get("used", {})
        if used.get("limits.cpu") == "3":
            break
        time.sleep(0.5)
    # The model's 2 CPUs and the sidecar's 1 (CompliancePolicy spec.sidecar.resources.limits).
    assert used.get("limits.cpu") == "3" and used.get("limits.memory") == "4608Mi", used


def test_pod_security_baseline_refuses_the_capture_step_and_port_name_capture_is_admitted(
        local_cluster: LocalCluster, namespace: str) -> None:
    """The baseline Pod Security Standard forbids NET_ADMIN: the apiserver refuses the injected
    pod naming hegui-capture (PodSecurity runs after the mutating webhooks), and a policy with
    sidecar.capture PortName injects no privileged step, so the pod is admitted (Art.14)."""
    _apply(local_cluster, _injecting_policy(namespace))
    _apply_service(local_cluster, _service(namespace))
    _wait_for_injection(local_cluster, namespace)
    local_cluster.kubectl("label", "namespace", namespace,
                          "pod-security.kubernetes.io/enforce=baseline")
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "model", "namespace": namespace, "labels": {"app": "chat"}},
           "spec": {"containers": [{"name": "model", "image": "example.invalid/llm:1",
                                    "ports": [{"name": "http", "containerPort": 8000}],
                                    "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}
    refused = _apply(local_cluster, pod, check=False)
    assert refused.returncode != 0
    assert "PodSecurity" in refused.stderr and "hegui-capture" in refused.stderr
    assert "NET_ADMIN" in refused.stderr
    policy = _injecting_policy(namespace)
    policy["spec"]["sidecar"] = {**policy["spec"]["sidecar"], "capture": "PortName"}
    _apply(local_cluster, policy)
    deadline = time.monotonic() + 20
    while True:  # the policy's change reaches the webhook by its watch
        admitted = _apply(local_cluster, pod, check=False)
        if admitted.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert admitted.returncode == 0, admitted.stderr
    stored = json.loads(local_cluster.kubectl("-n", namespace, "get", "pod", "model", "-o",
                                              "json").stdout)
    assert [c["name"] for c in stored["spec"]["initContainers"]] == ["hegui-sidecar"]
    assert stored["spec"]["containers"][0]["ports"][0]["name"] == "hegui-model"
