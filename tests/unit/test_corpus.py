"""Detection and injection scored over tests/corpus: manifests in the shapes public projects deploy
(rule coverage Art.17, rule injection Art.14).

Each corpus file names the project and path it follows and, in its header, the truth:

    # truth: Deployment/name generative            (or not-generative)
    # truth: Pod/name not-generative (hegui: false-positive)   a known, measured gap
    # reach: Service/name:port fronted serving     (or open, refused, direct; serving or metrics)
    # open: 8002 Metrics                           a port the service's posture declares open

Detection ("needs a posture") is what `hegui check` decides under tests/corpus/policy.yaml: a
finding not waived by the policy's workload scope. For each detected workload the pods it runs
are injected as the mutating webhook would, and every port of every Service in the file that
selects them is resolved as the pod's network resolves it: the Service's targetPort (a name
becomes the number of the port so named), then the capture step (every inbound TCP connection
goes to the sidecar except the ports the posture declares open, `# open:`): `fronted` when it
reaches hegui's sidecar (a port declared for Metrics too: the sidecar serves only the model's
GET /metrics there), `open` when it reaches a port declared PodToPod directly,
`refused` when the sidecar gets a gRPC/h2c port's traffic (it speaks HTTP/1.1), `direct` when it
reaches the model around the sidecar.

`python tests/unit/test_corpus.py` prints the figures the README reports.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonpatch
import pytest

from hegui.admission.check import Document, documents, judge
from hegui.admission.injection import InjectionConflict, inject
from hegui.api.generativeservice import GenerativeService
from hegui.api.policy import CompliancePolicy
from hegui.rules import workloads
from hegui.rules.index import detection_of
from hegui.rules.injection import CAPTURE_NAME, SIDECAR_NAME

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
POLICY = CORPUS / "policy.yaml"
FILES = sorted(p for p in CORPUS.glob("*.yaml") if p != POLICY)

_TRUTH = re.compile(r"^# truth: (\S+) (generative|not-generative)"
                    r"(?: \(hegui: (miss|false-positive)\))?$")
_REACH = re.compile(r"^# reach: Service/(\S+):(\d+) (fronted|open|refused|direct) "
                    r"(serving|metrics)$")
_OPEN = re.compile(r"^# open: (\d+) (Metrics|PodToPod)$")
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
    #: The ports the service's posture declares open (spec.traffic.openPorts): port -> purpose
    opened: dict[int, str] = field(default_factory=dict)


def _case(path: Path) -> Case:
    follows, truth, reach, opened = "", {}, {}, {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# follows: "):
            follows = line.removeprefix("# follows: ")
        elif match := _TRUTH.match(line):
            truth[match[1]] = (match[2] == "generative", match[3])
        elif match := _REACH.match(line):
            reach[(match[1], int(match[2]))] = (match[3], match[4])
        elif match := _OPEN.match(line):
            opened[int(match[1])] = match[2]
    return Case(path, follows, truth, reach, opened)


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


def _posture(opened: Mapping[int, str]) -> GenerativeService | None:
    """The service's posture as far as traffic goes: the ports it declares open."""
    if not opened:
        return None
    return GenerativeService.from_dict({
        "apiVersion": "hegui.io/v1alpha1", "kind": "GenerativeService",
        "metadata": {"name": "corpus", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"corpus": "yes"}},
                 "filing": {"publicOpinion": False},
                 "traffic": {"openPorts": [{"port": port, "purpose": purpose,
                                            "reason": "declared in the corpus file"}
                                           for port, purpose in sorted(opened.items())]}}})


def _injected_pods(obj: Mapping[str, Any], policy: CompliancePolicy,
                   posture: GenerativeService | None = None) -> list[dict[str, Any] | str]:
    """The pods a detected workload runs, injected; a string where injection refuses."""
    detection = detection_of([policy])
    meta = obj.get("metadata") or {}
    extra = ({_CONTROLLER_LABELS[obj["kind"]]: meta.get("name", "")}
             if obj.get("kind") in _CONTROLLER_LABELS else {})
    pods: list[dict[str, Any] | str] = []
    for template in workloads.pod_templates(obj, detection):
        if not workloads.generative_evidence(template, detection=detection):
            continue
        if obj.get("kind") in ("RayService", "RayCluster"):  # KubeRay labels its pods by role
            extra = {"ray.io/node-type": "head" if ".headGroupSpec." in template.spec_path
                     else "worker"}
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "p", "labels": {**template.labels, **extra}},
               "spec": dict(template.spec)}
        try:
            patch = inject(pod, policy, "corpus", posture).patch
        except InjectionConflict as conflict:
            pods.append(f"conflict: {conflict}")
            continue
        pods.append(jsonpatch.apply_patch(pod, patch))
    return pods


def _reach(pod: Mapping[str, Any], target: object, opened: Mapping[int, str]) -> str:
    """Where a Service's targetPort lands in `pod`: a name is the number of the port so named;
    with hegui-capture, every number but the sidecar's and the declared open ones is redirected
    to the sidecar."""
    named = [(container, port) for group in ("initContainers", "containers")
             for container in pod["spec"].get(group) or []
             for port in container.get("ports") or []
             if (isinstance(target, str) and port.get("name") == target)
             or (isinstance(target, int) and port.get("containerPort") == target)]
    if isinstance(target, str) and not named:
        return "unresolved"
    container, port = named[0] if named else ({}, {})
    number = int(port.get("containerPort", 0)) if named else int(str(target))
    captured = any(c.get("name") == CAPTURE_NAME for c in pod["spec"].get("initContainers") or [])
    if container.get("name") == SIDECAR_NAME:
        return "fronted"
    if opened.get(number) == "PodToPod":
        return "open"
    if not captured:
        # A number no container declares still reaches whatever listens there: the model.
        return "direct"
    h2 = str(port.get("name", "")).startswith(("grpc", "h2c")) or port.get("appProtocol") in (
        "grpc", "h2c", "kubernetes.io/h2c")
    return "refused" if h2 else "fronted"


_RUNS: dict[tuple[Path, str], Judged] = {}


def run_case(case: Case, capture: str = "Redirect") -> Judged:
    """`capture`: the policy's sidecar.capture; PortName measures the port-name takeover alone
    (for namespaces whose Pod Security forbids the capture step)."""
    if (case.path, capture) not in _RUNS:
        _RUNS[(case.path, capture)] = _run_case(case, capture)
    return _RUNS[(case.path, capture)]


def _run_case(case: Case, capture: str) -> Judged:
    policy_docs = _policy_docs()
    body = copy.deepcopy(policy_docs[0].obj)
    body["spec"]["sidecar"]["capture"] = capture
    policy = CompliancePolicy.from_dict(body)
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
        for pod in _injected_pods(doc.obj, policy, _posture(case.opened)):
            for service in services:
                selector = service["spec"].get("selector") or {}
                labels = pod["metadata"]["labels"] if isinstance(pod, dict) else {}
                if isinstance(pod, dict) and not all(labels.get(k) == v
                                                     for k, v in selector.items()):
                    continue
                for port in service["spec"].get("ports") or []:
                    where = (service["metadata"]["name"], int(port["port"]))
                    result.reached[where] = pod if isinstance(pod, str) else _reach(
                        pod, port.get("targetPort", port["port"]), case.opened)
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
    #: Through the sidecar and refused there (gRPC/h2c: the sidecar speaks HTTP/1.1).
    serving_refused: int
    #: Serving ports fronted with the port-name takeover alone (capture PortName).
    serving_fronted_by_name: int

    @property
    def precision(self) -> float:
        return self.true_positives / (self.true_positives + self.false_positives)

    @property
    def recall(self) -> float:
        return self.true_positives / (self.true_positives + self.false_negatives)


def score() -> Score:
    tp = fp = fn = total = ports = fronted = refused = by_name = 0
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
                refused += judged.reached.get(where) == "refused"
                by_name += run_case(case, "PortName").reached.get(where) == "fronted"
    return Score(len(CASES), total, tp, fp, fn, ports, fronted, refused, by_name)


def test_the_corpus_is_large_and_mixed_enough_to_mean_something() -> None:
    result = score()
    assert result.files >= 40
    negatives = result.workloads - result.true_positives - result.false_negatives
    assert negatives >= 12 and result.true_positives >= 30
    # The figures the README reports (update both together).
    assert (result.true_positives, result.false_positives, result.false_negatives) == (36, 1, 0)
    # Every serving port a Service reaches goes through the sidecar (fronted, or refused when
    # it speaks gRPC); with the port-name takeover alone only those targeted by name do.
    assert (result.serving_fronted, result.serving_refused, result.serving_ports) == (15, 1, 16)
    assert result.serving_fronted_by_name == 10


if __name__ == "__main__":
    result = score()
    print(f"{result.files} files, {result.workloads} workloads: precision "
          f"{result.precision:.3f} ({result.true_positives}/"
          f"{result.true_positives + result.false_positives}), recall {result.recall:.3f} "
          f"({result.true_positives}/{result.true_positives + result.false_negatives}); "
          f"serving ports through the sidecar {result.serving_fronted + result.serving_refused}"
          f"/{result.serving_ports} ({result.serving_fronted} fronted, "
          f"{result.serving_refused} gRPC refused; port-name takeover alone: "
          f"{result.serving_fronted_by_name}/{result.serving_ports})")
