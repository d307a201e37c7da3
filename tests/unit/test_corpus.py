"""Detection and injection scored over tests/corpus: manifests in the shapes public projects deploy
(rule coverage Art.17, rule injection Art.14).

Each corpus file names the project and path it follows and, in its header, the truth:

    # truth: Deployment/name generative            (or not-generative)
    # truth: Pod/name not-generative (hegui: false-positive)   a known, measured gap
    # reach: Service/name:port fronted serving     (or direct; serving or metrics)

Detection ("needs a posture") is what `hegui check` decides under tests/corpus/policy.yaml: a
finding not waived by the policy's workload scope. For each detected workload the pods it runs
are injected as the mutating webhook would, and every port of every Service in the file that
selects them is resolved: `fronted` when it reaches hegui's sidecar, `direct` when it reaches
the model (or its metrics) around it.

`python tests/unit/test_corpus.py` prints the figures the README reports.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonpatch
import pytest

from hegui.admission.check import Document, documents, judge
from hegui.admission.injection import SIDECAR_NAME, InjectionConflict, inject
from hegui.api.policy import CompliancePolicy
from hegui.rules import workloads
from hegui.rules.index import detection_of

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
POLICY = CORPUS / "policy.yaml"
FILES = sorted(p for p in CORPUS.glob("*.yaml") if p != POLICY)

_TRUTH = re.compile(r"^# truth: (\S+) (generative|not-generative)"
                    r"(?: \(hegui: (miss|false-positive)\))?$")
_REACH = re.compile(r"^# reach: Service/(\S+):(\d+) (fronted|direct) (serving|metrics)$")
#: Labels a controller adds to the pods it creates, which Services in the corpus select on.
_CONTROLLER_LABELS = {"LeaderWorkerSet": "leaderworkerset.sigs.k8s.io/name"}


@dataclass
class Case:
    path: Path
    follows: str
    #: "Kind/name" -> (truly generative, known gap or None)
    truth: dict[str, tuple[bool, str | None]]
    #: (service, port) -> (expected reach, serving or metrics)
    reach: dict[tuple[str, int], tuple[str, str]]


def _case(path: Path) -> Case:
    follows, truth, reach = "", {}, {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# follows: "):
            follows = line.removeprefix("# follows: ")
        elif match := _TRUTH.match(line):
            truth[match[1]] = (match[2] == "generative", match[3])
        elif match := _REACH.match(line):
            reach[(match[1], int(match[2]))] = (match[3], match[4])
    return Case(path, follows, truth, reach)


CASES = [_case(p) for p in FILES]


@dataclass
class Judged:
    case: Case
    #: "Kind/name" -> detected as needing a posture
    detected: dict[str, bool]
    #: (service, port) -> fronted | direct | unresolved | conflict: <why>
    reached: dict[tuple[str, int], str] = field(default_factory=dict)


def _policy_docs() -> list[Document]:
    return documents([str(POLICY)])


def _injected_pods(obj: Mapping[str, Any], policy: CompliancePolicy
                   ) -> list[dict[str, Any] | str]:
    """The pods a detected workload runs, injected; a string where injection refuses."""
    detection = detection_of([policy])
    meta = obj.get("metadata") or {}
    extra = ({_CONTROLLER_LABELS[obj["kind"]]: meta.get("name", "")}
             if obj.get("kind") in _CONTROLLER_LABELS else {})
    pods: list[dict[str, Any] | str] = []
    for template in workloads.pod_templates(obj, detection):
        if not workloads.generative_evidence(template, detection=detection):
            continue
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "p", "labels": {**template.labels, **extra}},
               "spec": dict(template.spec)}
        try:
            patch = inject(pod, policy, "corpus").patch
        except InjectionConflict as conflict:
            pods.append(f"conflict: {conflict}")
            continue
        pods.append(jsonpatch.apply_patch(pod, patch))
    return pods


def _reach(pod: Mapping[str, Any], target: object) -> str:
    for group in ("initContainers", "containers"):
        for container in pod["spec"].get(group) or []:
            for port in container.get("ports") or []:
                if (isinstance(target, str) and port.get("name") == target) or (
                        isinstance(target, int) and port.get("containerPort") == target):
                    return "fronted" if container.get("name") == SIDECAR_NAME else "direct"
    # A number no container declares still reaches whatever listens there: the model.
    return "direct" if isinstance(target, int) else "unresolved"


_RUNS: dict[Path, Judged] = {}


def run_case(case: Case) -> Judged:
    if case.path not in _RUNS:
        _RUNS[case.path] = _run_case(case)
    return _RUNS[case.path]


def _run_case(case: Case) -> Judged:
    policy_docs = _policy_docs()
    policy = CompliancePolicy.from_dict(policy_docs[0].obj)
    docs = documents([str(case.path)])
    judgement = judge([*policy_docs, *docs], "default")
    assert not judgement.invalid, judgement.invalid
    detected = {f"{j.workload.kind}/{j.workload.name}": any(
        not (f.exempted_by or "").startswith("CompliancePolicy ") for f in j.findings)
        for j in judgement.judged}
    result = Judged(case, detected)
    services = [d.obj for d in docs if d.obj.get("kind") == "Service"
                and d.obj.get("apiVersion") == "v1"]
    for doc in docs:
        key = f"{doc.obj.get('kind')}/{(doc.obj.get('metadata') or {}).get('name')}"
        if not detected.get(key):
            continue
        for pod in _injected_pods(doc.obj, policy):
            for service in services:
                selector = service["spec"].get("selector") or {}
                labels = pod["metadata"]["labels"] if isinstance(pod, dict) else {}
                if isinstance(pod, dict) and not all(labels.get(k) == v
                                                     for k, v in selector.items()):
                    continue
                for port in service["spec"].get("ports") or []:
                    where = (service["metadata"]["name"], int(port["port"]))
                    result.reached[where] = pod if isinstance(pod, str) else _reach(
                        pod, port.get("targetPort", port["port"]))
    return result


@pytest.mark.parametrize("case", CASES, ids=[c.path.stem for c in CASES])
def test_each_manifest_is_judged_as_its_header_says(case: Case) -> None:
    assert case.follows, f"{case.path.name} names no project and path it follows"
    judged = run_case(case)
    assert set(judged.detected) == set(case.truth), "every workload has a truth, and only those"
    for key, (generative, gap) in case.truth.items():
        # A known gap is measured, not hidden: the test fails when it is closed, so the
        # header (and the README's figures) are updated with it.
        assert judged.detected[key] == (generative if gap is None else not generative), key
    assert judged.reached == {k: v[0] for k, v in case.reach.items()}


@dataclass(frozen=True)
class Score:
    files: int
    workloads: int
    true_positives: int
    false_positives: int
    false_negatives: int
    serving_ports: int
    serving_fronted: int

    @property
    def precision(self) -> float:
        return self.true_positives / (self.true_positives + self.false_positives)

    @property
    def recall(self) -> float:
        return self.true_positives / (self.true_positives + self.false_negatives)


def score() -> Score:
    tp = fp = fn = total = ports = fronted = 0
    for case in CASES:
        judged = run_case(case)
        for key, (generative, _) in case.truth.items():
            total += 1
            found = judged.detected[key]
            tp += generative and found
            fp += found and not generative
            fn += generative and not found
        for where, (_, role) in case.reach.items():
            if role == "serving":
                ports += 1
                fronted += judged.reached.get(where) == "fronted"
    return Score(len(CASES), total, tp, fp, fn, ports, fronted)


def test_the_corpus_is_large_and_mixed_enough_to_mean_something() -> None:
    result = score()
    assert result.files >= 40
    negatives = result.workloads - result.true_positives - result.false_negatives
    assert negatives >= 12 and result.true_positives >= 30
    # The figures the README reports (update both together).
    assert (result.true_positives, result.false_positives, result.false_negatives) == (36, 1, 0)
    assert (result.serving_fronted, result.serving_ports) == (9, 15)


if __name__ == "__main__":
    result = score()
    print(f"{result.files} files, {result.workloads} workloads: precision "
          f"{result.precision:.3f} ({result.true_positives}/"
          f"{result.true_positives + result.false_positives}), recall {result.recall:.3f} "
          f"({result.true_positives}/{result.true_positives + result.false_negatives}); "
          f"serving ports through the sidecar {result.serving_fronted}/{result.serving_ports}")
