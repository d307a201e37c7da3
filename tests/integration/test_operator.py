"""The operator keeps a GenerativeService's status true, article by article (Art.12, Art.17)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hegui.localcluster.cluster import _CHECKOUT, LocalCluster

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def operator(local_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[subprocess.Popen[bytes]]:
    local_cluster.kubectl("apply", "--server-side", "-f", str(_CHECKOUT / "crds"))
    local_cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    log = (tmp_path_factory.mktemp("operator") / "operator.log").open("wb")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "hegui"), "operator", "run",
         "--kubeconfig", str(local_cluster.kubeconfig)],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HEGUI_RECONCILE_SECONDS": "1"})
    yield process
    process.terminate()
    process.wait(20)
    log.close()


@pytest.fixture
def namespace(local_cluster: LocalCluster) -> Iterator[str]:
    name = f"op-{uuid.uuid4().hex[:8]}"
    local_cluster.kubectl("create", "namespace", name)
    yield name
    local_cluster.kubectl("delete", "namespace", name, "--wait=false")


def _apply(cluster: LocalCluster, obj: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / f"{uuid.uuid4().hex}.yaml"
    path.write_text(yaml.safe_dump(obj, allow_unicode=True))
    cluster.kubectl("apply", "-f", str(path))


def _service(namespace: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "selector": {"matchLabels": {"app": "chat"}},
        "filing": {"publicOpinion": True,
                   "algorithm": {"number": "网信算备110108823483901230011号"}},
        "assessment": {"safetyAssessmentRef": {"name": "chat-run"}},
    }
    body.update(spec)
    return {"apiVersion": "hegui.io/v1alpha1", "kind": "GenerativeService",
            "metadata": {"name": "chat", "namespace": namespace}, "spec": body}


def _status(cluster: LocalCluster, namespace: str) -> dict[str, Any]:
    obj = json.loads(cluster.kubectl("-n", namespace, "get", "gsvc", "chat", "-o",
                                     "json").stdout)
    status: dict[str, Any] = obj.get("status") or {}
    status["_generation"] = obj["metadata"]["generation"]
    return status


def _conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status.get("conditions", [])}


def _until(cluster: LocalCluster, namespace: str, holds: Callable[[dict[str, Any]], bool],
           timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = _status(cluster, namespace)
        if holds(status) or time.monotonic() > deadline:
            return status
        time.sleep(0.3)


def _assessment(namespace: str) -> dict[str, Any]:
    return {"apiVersion": "hegui.io/v1alpha1", "kind": "SafetyAssessment",
            "metadata": {"name": "chat-run", "namespace": namespace},
            "spec": {"serviceRef": {"name": "chat"}, "questionBanks": [
                {"name": "refuse", "kind": "ShouldRefuse",
                 "configMapRef": {"name": "banks", "key": "refuse.jsonl"}},
                {"name": "answer", "kind": "ShouldAnswer",
                 "configMapRef": {"name": "banks", "key": "answer.jsonl"}}]}}


def _record_pass(cluster: LocalCluster, namespace: str, expires_in: dt.timedelta) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def iso(moment: dt.datetime) -> str:
        return moment.isoformat().replace("+00:00", "Z")

    status = {"status": {"verdict": "Pass", "startedAt": iso(now - dt.timedelta(hours=1)),
                         "completedAt": iso(now), "expiresAt": iso(now + expires_in)}}
    cluster.kubectl("-n", namespace, "patch", "safetyassessment", "chat-run",
                    "--subresource=status", "--type=merge", "-p", json.dumps(status))


@pytest.mark.usefixtures("operator")
def test_status_names_the_missing_rule_and_follows_the_fix(
        local_cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    _apply(local_cluster, _assessment(namespace), tmp_path)
    _record_pass(local_cluster, namespace, dt.timedelta(days=30))
    _apply(local_cluster, _service(namespace), tmp_path)
    status = _until(local_cluster, namespace, lambda s: "Labeled" in _conditions(s))
    conditions = _conditions(status)
    assert conditions["Labeled"]["status"] == "False"
    assert conditions["Labeled"]["article"] == "Art.12"
    assert "spec.labeling" in conditions["Labeled"]["message"]
    assert conditions["Filed"]["status"] == "True" and conditions["Assessed"]["status"] == "True"
    assert conditions["Compliant"]["status"] == "False"
    assert status["observedGeneration"] == status["_generation"]
    assert [f["rule"] for f in status["findings"]] == ["labeling"]
    filed_since = conditions["Filed"]["lastTransitionTime"]

    _apply(local_cluster, _service(namespace, labeling={
        "modalities": ["text"], "implicit": {"contentProducer": "Example AI Co."}}), tmp_path)
    status = _until(local_cluster, namespace,
                    lambda s: _conditions(s).get("Compliant", {}).get("status") == "True")
    conditions = _conditions(status)
    assert conditions["Compliant"]["status"] == "True", status
    assert status["observedGeneration"] == status["_generation"] == 2
    assert conditions["Filed"]["lastTransitionTime"] == filed_since  # it did not change
    assert status["findings"] == []
    printed = local_cluster.kubectl("-n", namespace, "get", "gsvc").stdout
    assert "True" in printed.splitlines()[1]


@pytest.mark.usefixtures("operator")
def test_an_assessment_that_expires_flips_the_status_without_any_edit(
        local_cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    _apply(local_cluster, _assessment(namespace), tmp_path)
    _record_pass(local_cluster, namespace, dt.timedelta(seconds=4))
    _apply(local_cluster, _service(namespace, labeling={
        "modalities": ["text"], "implicit": {"contentProducer": "Example AI Co."}}), tmp_path)
    status = _until(local_cluster, namespace,
                    lambda s: _conditions(s).get("Assessed", {}).get("status") == "True")
    assert _conditions(status)["Assessed"]["status"] == "True"
    status = _until(local_cluster, namespace,
                    lambda s: _conditions(s).get("Assessed", {}).get("status") == "False")
    assessed = _conditions(status)["Assessed"]
    assert assessed["status"] == "False" and "expired" in assessed["message"]
    assert status["observedGeneration"] == 1  # nobody edited the service


@pytest.mark.usefixtures("operator")
def test_the_sidecars_configuration_is_rendered_from_the_service(
        local_cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    from hegui.api.generativeservice import GenerativeService

    implicit = {"contentProducer": "Example AI Co."}
    labeling: dict[str, Any] = {"modalities": ["text"], "implicit": implicit}
    _apply(local_cluster, _service(namespace, labeling=labeling), tmp_path)

    def rendered() -> dict[str, Any] | None:
        result = local_cluster.kubectl("-n", namespace, "get", "configmap",
                                       "hegui-sidecar-chat", "-o", "json", check=False)
        return json.loads(result.stdout) if result.returncode == 0 else None

    deadline = time.monotonic() + 30
    while (config_map := rendered()) is None and time.monotonic() < deadline:
        time.sleep(0.3)
    assert config_map is not None
    owner = config_map["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("GenerativeService", "chat")
    posture = GenerativeService.from_dict(yaml.safe_load(config_map["data"]["service.yaml"]))
    assert posture.spec.labeling is not None
    assert posture.spec.labeling.implicit.content_producer == "Example AI Co."

    implicit["contentProducer"] = "Renamed AI Co."
    _apply(local_cluster, _service(namespace, labeling=labeling), tmp_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        config_map = rendered()
        if config_map and "Renamed AI Co." in config_map["data"]["service.yaml"]:
            break
        time.sleep(0.3)
    assert config_map is not None and "Renamed AI Co." in config_map["data"]["service.yaml"]
