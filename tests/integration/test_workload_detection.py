"""Detection as the real kube-apiserver applies it: the CEL matchConditions generated from
hegui.rules.workloads compile, let through what the webhook would refuse and keep everything else
off it; a KServe-style custom resource is refused when applied, in front of the person who applied
it; a training Job is kept out by the policy's workload scope (rule coverage, Art.17).

The webhook runs as its own process under its own configuration name, limited to this module's
namespaces by a label, so other modules' webhooks on the shared cluster are not disturbed.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hegui.admission import configuration
from hegui.admission.local import LocalWebhook
from hegui.localcluster.cluster import _CHECKOUT, LocalCluster

pytestmark = pytest.mark.cluster

RUN = uuid.uuid4().hex[:8]
NAMESPACE_LABEL = "hegui.io/test-detection"


def _crd(group: str, version: str, kind: str, plural: str) -> dict[str, Any]:
    """A minimal CRD with the real group, version and names (the schema left open)."""
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {"group": group, "scope": "Namespaced",
                     "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
                     "versions": [{"name": version, "served": True, "storage": True,
                                   "schema": {"openAPIV3Schema": {
                                       "type": "object",
                                       "x-kubernetes-preserve-unknown-fields": True}}}]}}


KSERVE_CRDS = [_crd("serving.kserve.io", "v1beta1", "InferenceService", "inferenceservices"),
               _crd("serving.kserve.io", "v1alpha1", "LLMInferenceService",
                    "llminferenceservices"),
               _crd("ray.io", "v1", "RayService", "rayservices")]


def _apply(cluster: LocalCluster, *objects: dict[str, Any], extra: tuple[str, ...] = (),
           check: bool = True) -> subprocess.CompletedProcess[str]:
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"hegui-detect-{uuid.uuid4().hex}.yaml"
    path.write_text(yaml.safe_dump_all(objects, allow_unicode=True))
    try:
        return cluster.kubectl("apply", "-f", str(path), *extra, check=check)
    finally:
        path.unlink()


class Webhook(LocalWebhook):
    name = f"hegui-detection-{RUN}"

    def reviews(self) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in self.metrics().splitlines()
                   if line.startswith("hegui_admission_requests_total{"))

    def register(self, *, mutating: bool = False) -> None:
        config = configuration.validating_webhook_configuration(
            ca_bundle=self.cluster.pki.ca_cert.read_bytes(), own_namespace="hegui-system",
            url=f"{self.url}/validate")
        config["metadata"]["name"] = self.name
        config["webhooks"] = [h for h in config["webhooks"]
                              if h["name"] == configuration.WEBHOOK_NAME]
        config["webhooks"][0]["namespaceSelector"]["matchExpressions"].append(
            {"key": NAMESPACE_LABEL, "operator": "In", "values": [RUN]})
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
            json.dump(config, handle)
        try:
            # The apiserver compiles every matchCondition (and bounds its cost) here.
            self.cluster.kubectl("apply", "-f", handle.name)
        finally:
            Path(handle.name).unlink()

    def unregister(self) -> None:
        self.cluster.kubectl("delete", "validatingwebhookconfiguration", self.name,
                             "--ignore-not-found")


@pytest.fixture(scope="module")
def webhook(local_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Webhook]:
    local_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                          str(_CHECKOUT / "crds"))
    _apply(local_cluster, *KSERVE_CRDS)
    for crd in ("compliancepolicies.hegui.io", "inferenceservices.serving.kserve.io",
                "llminferenceservices.serving.kserve.io", "rayservices.ray.io"):
        local_cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                              f"crd/{crd}")
    hook = Webhook(local_cluster, tmp_path_factory.mktemp("detection-webhook"))
    hook.start()
    hook.register()
    yield hook
    hook.unregister()
    hook.stop()


def _namespace(cluster: LocalCluster, webhook: Webhook, workloads: dict[str, Any] | None = None
               ) -> str:
    name = f"detect-{uuid.uuid4().hex[:8]}"
    policy = {"apiVersion": "hegui.io/v1alpha1", "kind": "CompliancePolicy",
              "metadata": {"name": name},
              "spec": {"namespaces": [name], "defaultMode": "Enforce",
                       **({"workloads": workloads} if workloads else {})}}
    _apply(cluster, {"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": name, "labels": {NAMESPACE_LABEL: RUN}}}, policy)
    deadline = time.monotonic() + 20  # the webhook's watch brings it the policy
    while time.monotonic() < deadline:
        probe = _apply(cluster, _deployment(name, "probe", {"nvidia.com/gpu": "1"}),
                       extra=("--dry-run=server",), check=False)
        if probe.returncode != 0:
            return name
        time.sleep(0.2)
    raise AssertionError("the webhook never saw the policy")


@pytest.fixture
def namespace(local_cluster: LocalCluster, webhook: Webhook) -> Iterator[str]:
    name = _namespace(local_cluster, webhook)
    yield name
    local_cluster.kubectl("delete", "namespace", name, "--wait=false")
    local_cluster.kubectl("delete", "compliancepolicy", name, "--ignore-not-found")


def _deployment(namespace: str, name: str, limits: dict[str, str] | None = None,
                **pod: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "model", "image": "example.invalid/llm:1",
                                 **pod.pop("container", {})}
    if limits:
        container["resources"] = {"limits": limits}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [container], **pod}}}}


GPU_NODE = {"nodeSelector": {"nvidia.com/gpu.present": "true"}}
GPU_TOLERATION = {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}
PRIVILEGED = {"container": {"securityContext": {"privileged": True}}}

POSITIVES: list[tuple[str, dict[str, Any], str]] = [
    ("ascend", {"limits": {"huawei.com/Ascend910B": "1"}}, "limits on huawei.com/Ascend910B"),
    ("hami", {"limits": {"nvidia.com/gpumem": "8000"}}, "limits on nvidia.com/gpumem"),
    ("volcano", {"limits": {"volcano.sh/vgpu-number": "1"}}, "volcano.sh/vgpu-number"),
    ("cambricon", {"limits": {"cambricon.com/mlu": "1"}}, "limits on cambricon.com/mlu"),
    ("env-all", {"container": {"env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]}},
     "env NVIDIA_VISIBLE_DEVICES=all"),
    ("nvidia-cdi", {"runtimeClassName": "nvidia-cdi"}, "runtimeClassName nvidia-cdi"),
    ("privileged-gpu-node", {**PRIVILEGED, **GPU_NODE}, "privileged container"),
    ("selector-toleration", {**GPU_NODE, **GPU_TOLERATION}, "pinned to accelerator nodes"),
]
NEGATIVES: list[tuple[str, dict[str, Any]]] = [
    ("cpu", {"limits": {"cpu": "1"}}),
    ("env-void", {"container": {"env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"}]}}),
    ("privileged-cpu-node", PRIVILEGED),
    ("gpu-node-no-toleration", GPU_NODE),
]


def test_the_generated_filter_sends_every_signal_and_nothing_else(
        local_cluster: LocalCluster, webhook: Webhook, namespace: str) -> None:
    for name, signals, says in POSITIVES:
        pod = dict(signals)
        limits = pod.pop("limits", None)
        refused = _apply(local_cluster, _deployment(namespace, name, limits, **pod),
                         extra=("--dry-run=server",), check=False)
        assert refused.returncode != 0, name
        assert "[coverage, Art.17]" in refused.stderr and says in refused.stderr, refused.stderr
    before = webhook.reviews()
    for name, pod in NEGATIVES:
        pod = dict(pod)
        limits = pod.pop("limits", None)
        _apply(local_cluster, _deployment(namespace, name, limits, **pod),
               extra=("--dry-run=server",))
    # The apiserver's CEL kept every one of them off the webhook.
    assert webhook.reviews() == before


def test_an_ephemeral_container_with_every_gpu_is_refused(
        local_cluster: LocalCluster, webhook: Webhook, namespace: str) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": namespace},
           "spec": {"containers": [{"name": "web", "image": "example.invalid/web:1"}]}}
    _apply(local_cluster, pod)
    debug = local_cluster.kubectl(
        "-n", namespace, "debug", "web", "--image=example.invalid/cuda:12",
        "--env=NVIDIA_VISIBLE_DEVICES=all", "--container=gpu-debugger", "--", "sleep", "1",
        check=False)
    assert debug.returncode != 0
    assert "[coverage, Art.17]" in debug.stderr and "ephemeralContainers" in debug.stderr


def test_a_kserve_resource_is_refused_when_applied(
        local_cluster: LocalCluster, webhook: Webhook, namespace: str) -> None:
    """The refusal reaches whoever applies the InferenceService, not the controller's events."""
    isvc = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": "llama3", "namespace": namespace},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "huggingface"},
                                             "resources": {"limits": {"nvidia.com/gpu": "1"}}}}}}
    refused = _apply(local_cluster, isvc, check=False)
    assert refused.returncode != 0
    assert "InferenceService" in refused.stderr and "[coverage, Art.17]" in refused.stderr
    assert "spec.predictor.containers[0].resources.limits" in refused.stderr
    llm = {"apiVersion": "serving.kserve.io/v1alpha1", "kind": "LLMInferenceService",
           "metadata": {"name": "qwen", "namespace": namespace},
           "spec": {"model": {"uri": "hf://Qwen/Qwen2.5-7B-Instruct"},
                    "baseRefs": [{"name": "kserve-config-llm-template"}]}}
    refused = _apply(local_cluster, llm, check=False)
    assert refused.returncode != 0 and "kind LLMInferenceService serves" in refused.stderr
    sklearn = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
               "metadata": {"name": "iris", "namespace": namespace},
               "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}}}}}
    _apply(local_cluster, sklearn)  # a CPU predictor is not a generative service


def test_a_rayservice_s_cpu_head_must_be_covered_too(
        local_cluster: LocalCluster, webhook: Webhook, namespace: str) -> None:
    """Ray Serve takes requests on the head (no GPU) and hands them to the GPU workers over
    Ray's transport: the refusal names the head as well, so the person applying the RayService
    learns that its entry needs a posture and a sidecar (Art.14, Art.17)."""
    ray = {"apiVersion": "ray.io/v1", "kind": "RayService",
           "metadata": {"name": "llama", "namespace": namespace},
           "spec": {"rayClusterConfig": {
               "headGroupSpec": {"template": {"spec": {"containers": [{
                   "name": "ray-head", "image": "example.invalid/ray:2.33",
                   "ports": [{"containerPort": 8000, "name": "serve"}]}]}}},
               "workerGroupSpecs": [{"groupName": "gpu", "template": {"spec": {"containers": [{
                   "name": "llm", "image": "example.invalid/ray:2.33",
                   "resources": {"limits": {"nvidia.com/gpu": "2"}}}]}}}]}}}
    refused = _apply(local_cluster, ray, check=False)
    assert refused.returncode != 0 and "[coverage, Art.17]" in refused.stderr
    assert "spec.rayClusterConfig.headGroupSpec.template" in refused.stderr, refused.stderr
    assert "serving entry of a RayService" in refused.stderr, refused.stderr
    assert "spec.rayClusterConfig.workerGroupSpecs[0].template" in refused.stderr


def test_a_training_job_is_kept_out_by_the_policy_scope(
        local_cluster: LocalCluster, webhook: Webhook) -> None:
    namespace = _namespace(local_cluster, webhook, {"exclude": [{"kinds": ["Job"]}]})
    try:
        job = {"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": "lora-sft", "namespace": namespace},
               "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{
                   "name": "train", "image": "example.invalid/trainer:1",
                   "resources": {"limits": {"nvidia.com/gpu": "8"}}}]}}}}
        admitted = _apply(local_cluster, job)
        assert admitted.returncode == 0, admitted.stderr
        refused = _apply(local_cluster, _deployment(namespace, "served",
                                                    {"nvidia.com/gpu": "8"}), check=False)
        assert refused.returncode != 0 and "[coverage, Art.17]" in refused.stderr
    finally:
        local_cluster.kubectl("delete", "namespace", namespace, "--wait=false")
        local_cluster.kubectl("delete", "compliancepolicy", namespace, "--ignore-not-found")
