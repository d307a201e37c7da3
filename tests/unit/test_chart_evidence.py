"""The chart's evidence parts (Art.11, Art.19): the operator may read only the store's Secret and
write, never read, the services' evidence Secrets; the chart's own MinIO runs restricted, keeps
its generated credentials across upgrades, and the init Job prepares the bucket through the same
command as the local cluster."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from hegui.localcluster.cluster import default_home

CHART = Path(__file__).resolve().parents[2] / "charts" / "hegui"
NAMESPACE = "hegui-system"


def _render(tmp_path: Path, values: dict[str, Any]) -> list[dict[str, Any]]:
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values), encoding="utf-8")
    out = subprocess.run(
        [str(default_home() / "controlplane" / "bin" / "helm"), "template", "hegui", str(CHART),
         "--namespace", NAMESPACE, "--kube-version", "1.36.0", "-f", str(tmp_path / "values.yaml")],
        capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _secret_rules(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(role["kind"], rule) for role in docs if role["kind"] in ("Role", "ClusterRole")
            for rule in role["rules"] if "secrets" in rule["resources"]]


def test_off_by_default_and_then_nothing_touches_secrets(tmp_path: Path) -> None:
    docs = _render(tmp_path, {})
    assert _secret_rules(docs) == []
    assert not [d for d in docs if "evidence" in d["metadata"]["name"]]


def test_the_operator_writes_but_never_reads_services_secrets(tmp_path: Path) -> None:
    docs = _render(tmp_path, {"evidence": {"enabled": True}, "networkPolicy": {"enabled": True}})
    rules = _secret_rules(docs)
    assert ("Role", {"apiGroups": [""], "resources": ["secrets"],
                     "resourceNames": ["hegui-evidence"], "verbs": ["get"]}) in rules
    assert ("ClusterRole", {"apiGroups": [""], "resources": ["secrets"],
                            "verbs": ["create", "patch"]}) in rules
    assert len(rules) == 2
    guard = next(d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"
                 and d["metadata"]["name"].endswith("-evidence-secrets"))
    assert "startsWith('hegui-evidence-')" in guard["spec"]["validations"][0]["expression"]
    assert not [d for d in docs if d["kind"] == "StatefulSet"]  # an external store
    egress = next(d for d in docs if d["kind"] == "NetworkPolicy"
                  and d["metadata"]["name"].endswith("-evidence-operator"))
    assert egress["spec"]["egress"][0]["ports"] == [{"port": 443, "protocol": "TCP"}]


def test_the_charts_own_store_runs_restricted_and_is_prepared(tmp_path: Path) -> None:
    docs = _render(tmp_path, {"evidence": {"enabled": True, "objectStore": {"enabled": True}}})
    store = next(d for d in docs if d["kind"] == "StatefulSet")
    job = next(d for d in docs if d["kind"] == "Job")
    for pod in (store["spec"]["template"]["spec"], job["spec"]["template"]["spec"]):
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] and not context["allowPrivilegeEscalation"]
            assert context["capabilities"] == {"drop": ["ALL"]}
    assert store["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "registry.example.cn/hegui/minio:0.1.0"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "records", "init-store", "--store",
        f"http://hegui-evidence.{NAMESPACE}.svc:9000/hegui-evidence", "--wait", "300"]
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    kept = secrets["hegui-evidence"]
    # The operator anchors as its own user: the sidecars' user may not write anchors (Art.11).
    assert set(kept["data"]) == {"accessKey", "secretKey", "evidenceKey", "anchorKey",
                                 "anchorAccessKey", "anchorSecretKey"}
    assert kept["data"]["accessKey"] != kept["data"]["anchorAccessKey"]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"]["key"]
           for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["HEGUI_EVIDENCE_ANCHOR_ACCESS_KEY"] == "anchorAccessKey"
    assert kept["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
