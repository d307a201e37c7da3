"""`hegui check` for GitOps pipelines: same rules, pipeline-friendly output and exit codes."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from hegui import cli

SAMPLES = Path(__file__).resolve().parents[2] / "samples"

GPU_DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: llm, namespace: ai}
spec:
  template:
    metadata: {labels: {app: chat}}
    spec:
      containers:
        - name: model
          image: m:1
          resources: {limits: {nvidia.com/gpu: 1}}
"""

SERVICE = """
apiVersion: hegui.io/v1alpha1
kind: GenerativeService
metadata: {name: chat, namespace: ai}
spec:
  selector: {matchLabels: {app: chat}}
  filing:
    publicOpinion: false
    service: {number: Beijing-HeguiChat-202504020031}
  labeling:
    modalities: [text]
    implicit: {contentProducer: Example AI Co.}
"""


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["check", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_compliant_stream_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "all.yaml").write_text(SERVICE + "---" + GPU_DEPLOYMENT)
    code, out, _ = _run(capsys, str(tmp_path))
    assert code == 0
    assert "ok       Deployment ai/llm" in out
    assert "judging as if every namespace were enforced" in out


def test_a_refused_workload_exits_1_and_names_rule_article_and_fix(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "deploy.yaml").write_text(GPU_DEPLOYMENT)
    code, out, _ = _run(capsys, str(tmp_path / "deploy.yaml"))
    assert code == 1
    assert "REFUSED  Deployment ai/llm" in out and "[coverage, Art.17]" in out and "Fix:" in out


def test_json_output_carries_every_finding(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "deploy.yaml").write_text(GPU_DEPLOYMENT)
    code, out, _ = _run(capsys, "-o", "json", str(tmp_path))
    report = json.loads(out)
    assert code == 1 and report["assumedPolicy"] is True
    [workload] = report["workloads"]
    assert workload["allowed"] is False
    assert workload["findings"][0]["article"] == "Art.17"
    assert workload["line"] == 2


def test_junit_marks_refusals_as_failures(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "deploy.yaml").write_text(GPU_DEPLOYMENT)
    _, out, _ = _run(capsys, "-o", "junit", str(tmp_path))
    suite = ET.fromstring(out)
    assert suite.get("failures") == "1"
    assert "[coverage, Art.17]" in (suite.find("testcase/failure").text or "")  # type: ignore[union-attr]


def test_sarif_results_point_at_the_file_and_line(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "deploy.yaml"
    path.write_text(SERVICE.replace("  labeling:\n    modalities: [text]\n    implicit: "
                                    "{contentProducer: Example AI Co.}\n", "")
                    + "---" + GPU_DEPLOYMENT)
    _, out, _ = _run(capsys, "-o", "sarif", str(path))
    sarif = json.loads(out)
    [result] = sarif["runs"][0]["results"]
    assert result["ruleId"] == "labeling" and result["level"] == "error"
    region = result["locations"][0]["physicalLocation"]
    assert region["artifactLocation"]["uri"] == str(path) and region["region"]["startLine"] > 8
    assert {r["id"] for r in sarif["runs"][0]["tool"]["driver"]["rules"]} >= {"labeling",
                                                                              "filing"}


def test_policy_in_the_input_sets_the_modes(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    policy = ("apiVersion: hegui.io/v1alpha1\nkind: CompliancePolicy\nmetadata: {name: p}\n"
              "spec: {namespaces: [ai], defaultMode: Warn}\n")
    (tmp_path / "all.yaml").write_text(policy + "---" + GPU_DEPLOYMENT)
    code, out, _ = _run(capsys, str(tmp_path))
    assert code == 0 and "WARN     Deployment ai/llm" in out


@pytest.mark.parametrize(("content", "says"), [
    ("kind: [", "not YAML"),
    (SERVICE.replace("publicOpinion: false", "publicOpinion: maybe"),
     "spec.filing.publicOpinion"),
])
def test_unreadable_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  content: str, says: str) -> None:
    (tmp_path / "bad.yaml").write_text(content)
    code, _, err = _run(capsys, str(tmp_path))
    assert code == 2 and says in err


def test_missing_path_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "/no/such/manifests")
    assert code == 2 and "no such file" in err


def test_the_shipped_samples_are_judged(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, str(SAMPLES / "workloads"), str(SAMPLES / "compliance" /
                                                                 "chat-service.yaml"))
    # No policy in the input: enforced everywhere; the referenced SafetyAssessment is absent.
    assert code == 1 and "[assessment, Art.17]" in out and "does not exist" in out
