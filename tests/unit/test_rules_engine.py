"""The rule engine that the webhook, the audit and `hegui check` share (Art.12, Art.17)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from hegui.api.articles import Rule
from hegui.api.policy import CompliancePolicySpec, EnforcementMode
from hegui.rules.engine import evaluate
from hegui.rules.index import ComplianceIndex

NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)


def _deployment(namespace: str = "ai", gpu: bool = True, app: str = "chat") -> dict[str, Any]:
    resources = {"limits": {"nvidia.com/gpu": "1"}} if gpu else {}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "llm", "namespace": namespace},
            "spec": {"template": {"metadata": {"labels": {"app": app}}, "spec": {"containers": [
                {"name": "model", "image": "m:1", "resources": resources}]}}}}


def _policy(namespace: str = "ai", rules: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {"apiVersion": "hegui.io/v1alpha1", "kind": "CompliancePolicy",
            "metadata": {"name": "default"},
            "spec": {"namespaces": [namespace], "defaultMode": "Enforce", "rules": rules or []}}


def _service(name: str = "chat", app: str = "chat", **changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": app}},
        "filing": {"publicOpinion": True,
                   "algorithm": {"number": "网信算备110108823483901230011号"}},
        "assessment": {"external": {"reportId": "R-1", "assessedOn": "2026-06-01",
                                    "expiresOn": "2027-06-01", "result": "Pass"}},
        "labeling": {"modalities": ["text"], "implicit": {"contentProducer": "Example AI Co."}},
    }
    for key, value in changes.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    return {"apiVersion": "hegui.io/v1alpha1", "kind": "GenerativeService",
            "metadata": {"name": name, "namespace": "ai"}, "spec": spec}


def _attestation(report_id: str, service: str = "chat", **status: Any) -> dict[str, Any]:
    """A SafetyAssessment without a target whose status the assessor wrote: what makes an
    external report count (Art.17)."""
    return {"apiVersion": "hegui.io/v1alpha1", "kind": "SafetyAssessment",
            "metadata": {"name": f"external-{report_id.lower()}", "namespace": "ai",
                         "generation": 1},
            "spec": {"serviceRef": {"name": service}, "questionBanks": [
                {"name": "refuse", "kind": "ShouldRefuse",
                 "configMapRef": {"name": "banks", "key": "refuse.txt"}},
                {"name": "answer", "kind": "ShouldAnswer",
                 "configMapRef": {"name": "banks", "key": "answer.txt"}}]},
            "status": {"verdict": "Pass", "reportId": report_id, "observedGeneration": 1,
                       "assessor": "Example Assessment Centre",
                       "completedAt": "2026-06-01T00:00:00Z",
                       "expiresAt": "2027-06-01T00:00:00Z", **status}}


def _index(objects: Any, *, attest: bool = True) -> ComplianceIndex:
    """The objects, and (unless `attest` is false) the assessor's record of every external
    report a service declares."""
    objects = list(objects)
    if attest:
        objects += [_attestation(o["spec"]["assessment"]["external"]["reportId"],
                                 o["metadata"]["name"]) for o in objects
                    if o.get("kind") == "GenerativeService"
                    and "external" in (o["spec"].get("assessment") or {})]
    return ComplianceIndex.from_objects(objects)


def _rules(*objects: dict[str, Any], workload: dict[str, Any] | None = None) -> list[str]:
    findings = evaluate(workload or _deployment(), _index(objects), now=NOW)
    return [f.rule.value for f in findings]


def test_compliant_workload_has_no_findings() -> None:
    assert _rules(_policy(), _service()) == []


def test_no_policy_means_hegui_stays_out() -> None:
    assert _rules(_service(labeling=None)) == []


def test_cpu_workloads_are_not_judged() -> None:
    assert _rules(_policy(), workload=_deployment(gpu=False)) == []


def test_uncovered_gpu_workload_is_a_coverage_finding() -> None:
    [finding] = evaluate(_deployment(), _index([_policy()]), now=NOW)
    assert finding.rule is Rule.COVERAGE and finding.article == "Art.17"
    assert finding.location == "Deployment ai/llm spec.template.metadata.labels"
    assert "limits on nvidia.com/gpu" in finding.message
    assert finding.render().startswith("[coverage, Art.17] Deployment ai/llm")


def test_two_services_selecting_one_workload_is_ambiguous() -> None:
    assert "coverage" in _rules(_policy(), _service("a"), _service("b"))


@pytest.mark.parametrize(("changes", "rule", "field"), [
    ({"filing": {"publicOpinion": False}, "assessment": None}, "filing", "spec.filing"),
    ({"assessment": {"external": {"reportId": "R-0", "assessedOn": "2024-01-01",
                                  "expiresOn": "2025-01-01", "result": "Pass"}}},
     "assessment", "spec.assessment.external.expiresOn"),
    ({"assessment": {"external": {"reportId": "R-0", "assessedOn": "2026-01-01",
                                  "expiresOn": "2027-01-01", "result": "Fail"}}},
     "assessment", "spec.assessment.external.result"),
    ({"assessment": {"safetyAssessmentRef": {"name": "missing"}}}, "assessment",
     "spec.assessment.safetyAssessmentRef"),
    ({"labeling": None}, "labeling", "spec.labeling"),
], ids=["no-filing", "expired-assessment", "failed-assessment", "missing-assessment",
        "no-labeling"])
def test_each_gap_is_its_own_finding(changes: dict[str, Any], rule: str, field: str) -> None:
    index = _index([_policy(), _service(**changes)])
    [finding] = evaluate(_deployment(), index, now=NOW)
    assert finding.rule.value == rule
    assert finding.location == f"GenerativeService ai/chat {field}"


def test_policy_mode_per_rule_applies() -> None:
    index = _index(
        [_policy(rules=[{"rule": "labeling", "mode": "Warn"}]), _service(labeling=None)])
    [finding] = evaluate(_deployment(), index, now=NOW)
    assert finding.mode is EnforcementMode.WARN


def test_a_current_exception_waives_only_its_rules() -> None:
    exception = {"apiVersion": "hegui.io/v1alpha1", "kind": "ComplianceException",
                 "metadata": {"name": "pilot", "namespace": "ai",
                              "creationTimestamp": "2026-11-20T00:00:00Z"},
                 "spec": {"workload": {"kind": "Deployment", "name": "llm"},
                          "rules": ["labeling"], "duration": "720h",
                          "justification": "pilot runs before the label sidecar is ready",
                          "approvedBy": "compliance-office"}}
    index = _index([_policy(), _service(labeling=None), exception])
    [finding] = evaluate(_deployment(), index, now=NOW)
    assert finding.exempted_by == "pilot"
    later = NOW + dt.timedelta(days=60)
    [expired] = evaluate(_deployment(), index, now=later)
    assert expired.exempted_by is None


def test_a_policy_adds_detection_signals_but_cannot_remove_nvidia() -> None:
    npu = _deployment()  # an accelerator hegui does not know by default
    npu["spec"]["template"]["spec"]["containers"][0]["resources"] = {
        "limits": {"example.com/npu": "1"}}
    policy = _policy()
    assert _rules(policy, workload=npu) == []
    policy["spec"]["detection"] = {"gpuResources": ["example.com/npu"]}
    assert _rules(policy, workload=npu) == ["coverage"]
    assert _rules(policy) == ["coverage"]  # nvidia.com/gpu is still detected


@pytest.mark.parametrize(("expires_on", "refused"), [
    ("2026-11-29", True), ("2026-11-30", False)], ids=["expiry-day", "day-before-expiry"])
def test_admission_and_the_model_agree_on_the_expiry_day(expires_on: str, refused: bool) -> None:
    """expiresOn is the first day an external report no longer counts (Art.17): admission (the
    engine) and the model's valid_on, which status and the dossier use, decide it alike."""
    external = {"reportId": "R-2", "assessedOn": "2026-01-01", "expiresOn": expires_on,
                "result": "Pass"}
    service = _service(assessment={"external": external})
    assert ("assessment" in _rules(_policy(), service)) is refused
    from hegui.api.generativeservice import GenerativeService
    report = GenerativeService.from_dict(service).spec.assessment
    assert report is not None and report.external is not None
    assert report.external.valid_on(NOW.date()) is not refused


# --- the policy's moderation floor (rule moderation, Art.14) -------------------------------------

TRITON = {"address": "triton.hegui-system.svc:8001", "model": "moderation"}


def _floored(**floor: Any) -> dict[str, Any]:
    policy = _policy()
    policy["spec"]["defaults"] = {"triton": TRITON}
    policy["spec"]["moderation"] = {"blockCategories": ["subversion"], **floor}
    return policy


def _moderation(**changes: Any) -> dict[str, Any]:
    moderation: dict[str, Any] = {"categories": [
        {"name": "subversion", "threshold": 0.5, "action": "Block"}]}
    moderation.update(changes)
    return moderation


def _floor_findings(policy: dict[str, Any], service: dict[str, Any]) -> list[str]:
    from hegui.rules.engine import evaluate_service_object

    index = _index([policy])
    return [f"{f.location.split(' ', 2)[2]}: {f.message}"
            for f in evaluate_service_object(service, index, now=NOW)]


def test_a_service_at_the_floor_passes_and_a_workload_is_judged_by_it_too() -> None:
    service = _service(moderation=_moderation())
    assert _floor_findings(_floored(), service) == []
    assert _rules(_floored(), service) == []
    below = _service(moderation=_moderation(failureMode="Open"))
    assert _rules(_floored(), below) == ["moderation"]


@pytest.mark.parametrize(("moderation", "labeling", "where"), [
    (None, None, "spec.moderation: no moderation is declared"),
    (_moderation(input={"enabled": False}), None, "spec.moderation.input.enabled: inputs"),
    (_moderation(output={"enabled": False}), None, "spec.moderation.output.enabled: outputs"),
    (_moderation(categories=[{"name": "nothing", "threshold": 0.99, "action": "Flag"}]), None,
     "spec.moderation.categories: category subversion is not scored"),
    (_moderation(categories=[{"name": "subversion", "threshold": 0.5, "action": "Flag"}]),
     None, "spec.moderation.categories[0].action: category subversion has action Flag"),
    (_moderation(categories=[{"name": "subversion", "threshold": 1.0, "action": "Block"}]),
     None, "spec.moderation.categories[0].threshold: category subversion blocks only at 1.0"),
    (_moderation(categories=[{"name": "subversion", "threshold": 0.5, "action": "Block",
                              "directions": ["output"]}]), None,
     "spec.moderation.categories[0].directions: category subversion does not apply to input"),
    (_moderation(failureMode="Open"), None, "spec.moderation.failureMode: failure mode Open"),
    (_moderation(triton={"address": "stub.team-a.svc:8001", "model": "moderation"}), None,
     "spec.moderation.triton: moderation endpoint stub.team-a.svc:8001 model moderation"),
    (_moderation(triton={**TRITON, "model": "always_clean"}), None,
     "spec.moderation.triton: moderation endpoint triton.hegui-system.svc:8001 model "
     "always_clean"),
    (_moderation(), {"modalities": ["text"], "implicit": {"contentProducer": "X",
                                                          "enabled": False}},
     "spec.labeling.implicit.enabled: implicit labels are off"),
    (_moderation(), {"modalities": ["text"], "implicit": {"contentProducer": "X"},
                     "explicit": {"enabled": False}},
     "spec.labeling.explicit.enabled: explicit labels are off"),
], ids=["none", "input-off", "output-off", "do-nothing-category", "flag-only", "threshold-1",
        "output-only", "fail-open", "own-endpoint", "own-model", "implicit-off", "explicit-off"])
def test_a_self_declared_posture_below_the_floor_is_named_field_by_field(
        moderation: dict[str, Any] | None, labeling: dict[str, Any] | None, where: str) -> None:
    changes: dict[str, Any] = {"moderation": moderation}
    if labeling is not None:
        changes["labeling"] = labeling
    found = _floor_findings(_floored(), _service(**changes))
    assert any(f.startswith(where) for f in found), found
    assert all("CompliancePolicy default's moderation floor" in f for f in found)


def test_a_floor_can_require_an_image_classifier_of_services_that_generate_images() -> None:
    """Off by default (an upgrade refuses nothing admitted); on, an image service without
    spec.moderation.images is named, a text one or one that declares it is not (Art.14)."""
    images = {"modalities": ["text", "image"], "implicit": {"contentProducer": "X"}}
    service = _service(moderation=_moderation(), labeling=images)
    assert _floor_findings(_floored(), service) == []
    [found] = _floor_findings(_floored(imageClassifier=True), service)
    assert found.startswith("spec.moderation.images: the service generates images"), found
    by_route = _service(moderation=_moderation(routes=[{"path": "/draw", "family": "images"}]))
    assert _floor_findings(_floored(imageClassifier=True), by_route)
    declared = _service(moderation=_moderation(images={"model": "image_classifier"}),
                        labeling=images)
    assert _floor_findings(_floored(imageClassifier=True), declared) == []
    assert _floor_findings(_floored(imageClassifier=True), _service(moderation=_moderation())) \
        == []


def test_allowed_endpoints_and_a_floor_that_leaves_choices_open() -> None:
    other = {"address": "triton-b.hegui-system.svc:8001", "model": "moderation"}
    policy = _floored(tritonEndpoints=[TRITON, other], failureMode="Open", directions=["output"])
    service = _service(moderation=_moderation(
        triton=other, failureMode="Open", input={"enabled": False},
        categories=[{"name": "subversion", "threshold": 0.5, "action": "Block",
                     "directions": ["output"]}]))
    assert _floor_findings(policy, service) == []


def test_the_floor_s_findings_follow_the_rule_s_mode_and_no_floor_judges_nothing() -> None:
    from hegui.rules.engine import evaluate_service_object

    below = _service(moderation=None)
    assert _floor_findings(_policy(), below) == []  # no floor declared
    warned = _floored()
    warned["spec"]["rules"] = [{"rule": "moderation", "mode": "Warn"}]
    [finding] = evaluate_service_object(below, _index([warned]), now=NOW)
    assert finding.mode is EnforcementMode.WARN and finding.article == "Art.14"
    assert finding.render().startswith("[moderation, Art.14] GenerativeService ai/chat")


# --- exceptions: through owners, every workload kind, within the policy's maxDuration (Art.21) ---

def _exception(kind: str, name: str, rules: list[str], duration: str = "336h",
               created: str = "2026-11-20T00:00:00Z") -> dict[str, Any]:
    return {"apiVersion": "hegui.io/v1alpha1", "kind": "ComplianceException",
            "metadata": {"name": f"waive-{name}", "namespace": "ai",
                         "creationTimestamp": created},
            "spec": {"workload": {"kind": kind, "name": name}, "rules": rules,
                     "justification": "Replays the question banks; serves no users at all.",
                     "approvedBy": "compliance@example.cn", "duration": duration}}


def _owned(kind: str, name: str, owner: tuple[str, str] | None,
           labels: dict[str, str] | None = None) -> dict[str, Any]:
    template: dict[str, Any] = {"metadata": {"labels": {"app": "runner", **(labels or {})}},
                "spec": {"containers": [{"name": "m", "image": "m:1",
                                         "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}
    meta: dict[str, Any] = {"name": name, "namespace": "ai"}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": owner[0], "name": owner[1],
                                    "uid": "u", "controller": True}]
    if kind == "Pod":
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {**meta, "labels": template["metadata"]["labels"]},
                "spec": template["spec"]}
    if kind == "CronJob":
        return {"apiVersion": "batch/v1", "kind": kind, "metadata": meta,
                "spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": template}}}}
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": meta,
            "spec": {"template": template}}


@pytest.mark.parametrize(("exempted", "workload"), [
    (("Deployment", "runner"), _owned("Deployment", "runner", None)),
    (("Deployment", "runner"), _owned("ReplicaSet", "runner-5d8f9", ("Deployment", "runner"))),
    (("Deployment", "runner"), _owned("Pod", "runner-5d8f9-x2x", ("ReplicaSet", "runner-5d8f9"),
                                      {"pod-template-hash": "5d8f9"})),
    (("Job", "replay"), _owned("Job", "replay", None)),
    (("Job", "replay"), _owned("Pod", "replay-abcde", ("Job", "replay"))),
    (("CronJob", "nightly"), _owned("CronJob", "nightly", None)),
    (("CronJob", "nightly"), _owned("Job", "nightly-29412345", ("CronJob", "nightly"))),
    (("CronJob", "nightly"), _owned("Pod", "nightly-29412345-q", ("Job", "nightly-29412345"))),
    (("DaemonSet", "probe"), _owned("DaemonSet", "probe", None)),
    (("StatefulSet", "kv"), _owned("Pod", "kv-0", ("StatefulSet", "kv"))),
], ids=["deployment", "its-replicaset", "its-pod", "job", "job-pod", "cronjob", "cronjob-job",
        "cronjob-pod", "daemonset", "statefulset-pod"])
def test_an_exception_covers_its_workload_and_what_the_workload_owns(
        exempted: tuple[str, str], workload: dict[str, Any]) -> None:
    waiver = _exception(*exempted, ["coverage"])
    assert _rules(_policy(), waiver, workload=workload) == ["coverage"]
    findings = evaluate(workload, _index([_policy(), waiver]), now=NOW)
    assert [f.exempted_by for f in findings] == [f"waive-{exempted[1]}"]


def test_an_exception_does_not_cover_a_look_alike_name_or_another_workload() -> None:
    waiver = _exception("Deployment", "runner", ["coverage"])
    index = _index([_policy(), waiver])
    # A ReplicaSet of another Deployment whose name merely starts with the exempted one's.
    other = _owned("Pod", "runner-extra-5d8f9-x", ("ReplicaSet", "runner-extra-5d8f9"),
                   {"pod-template-hash": "5d8f9"})
    [finding] = evaluate(other, index, now=NOW)
    assert finding.exempted_by is None
    [finding] = evaluate(_owned("Job", "runner", None), index, now=NOW)
    assert finding.exempted_by is None


def test_an_exception_longer_than_the_policy_allows_waives_nothing() -> None:
    """Created before the policy was tightened (the webhook refuses new ones): no longer
    counts, since a standing waiver is what maxDuration rules out."""
    policy = _policy()
    policy["spec"]["exceptions"] = {"maxDuration": "168h"}
    long = _exception("Deployment", "runner", ["coverage"], duration="336h",
                      created="2026-11-25T00:00:00Z")
    [finding] = evaluate(_owned("Deployment", "runner", None),
                         _index([policy, long]), now=NOW)
    assert finding.exempted_by is None
    short = _exception("Deployment", "runner", ["coverage"], duration="168h",
                       created="2026-11-25T00:00:00Z")
    [finding] = evaluate(_owned("Deployment", "runner", None),
                         _index([policy, short]), now=NOW)
    assert finding.exempted_by == "waive-runner"


def test_the_webhook_refuses_an_exception_beyond_the_policy_s_max_duration() -> None:
    from hegui.admission.review import AdmissionRequest
    from hegui.admission.validate import check_exception

    policy = _policy()
    policy["spec"]["exceptions"] = {"maxDuration": "168h"}
    index = _index([policy])

    def ask(duration: str) -> Any:
        return check_exception(AdmissionRequest(
            uid="u", kind="ComplianceException", group="hegui.io", namespace="ai",
            name="waive-runner", operation="CREATE", dry_run=False,
            obj=_exception("Deployment", "runner", ["coverage"], duration), old_obj=None,
            user="team-a"), index)

    refused = ask("336h")
    assert not refused.allowed and refused.code == 403
    assert "spec.duration 336h exceeds 168h" in refused.message
    assert "CompliancePolicy default" in refused.message and "Art.21" in refused.message
    assert ask("168h").allowed


# --- assessments: the service's own, and external ones on the assessor's word (Art.17) ----------

def _assessment_findings(*objects: dict[str, Any], attest: bool = True) -> list[str]:
    return [f"{f.location.split(' ', 2)[2]}: {f.message}"
            for f in evaluate(_deployment(), _index([_policy(), *objects], attest=attest),
                              now=NOW)]


def test_an_external_report_counts_only_as_the_assessor_recorded_it() -> None:
    service = _service()
    [found] = _assessment_findings(service, attest=False)
    assert found.startswith("spec.assessment.external: the external assessment R-1 is declared "
                            "by the service itself")
    assert _assessment_findings(service, _attestation("R-1"), attest=False) == []
    for record in (_attestation("R-1", verdict="Fail"), _attestation("R-9"),
                   _attestation("R-1", service="other"),
                   _attestation("R-1", expiresAt="2026-11-01T00:00:00Z"),
                   _attestation("R-1", observedGeneration=0)):
        assert len(_assessment_findings(service, record, attest=False)) == 1, record
    run_by_hegui = _attestation("R-1")
    run_by_hegui["spec"]["target"] = {"url": "http://chat.ai.svc:8443"}
    assert len(_assessment_findings(service, run_by_hegui, attest=False)) == 1


def test_a_service_may_only_rely_on_its_own_safety_assessment() -> None:
    others = _attestation("R-5", service="image")
    others["metadata"]["name"] = "image-2026"
    service = _service(assessment={"safetyAssessmentRef": {"name": "image-2026"}})
    [found] = _assessment_findings(service, others)
    assert "assesses GenerativeService image, not chat" in found
    own = _attestation("R-6", service="chat")
    own["metadata"]["name"] = "chat-2026"
    mine = _service(assessment={"safetyAssessmentRef": {"name": "chat-2026"}})
    assert _assessment_findings(mine, own) == []
    own["metadata"]["generation"] = 2  # the spec changed after the verdict
    [found] = _assessment_findings(mine, own)
    assert "passed for generation 1, but its spec has changed since" in found


def test_the_policies_enforcing_a_namespace_are_merged_once_until_one_changes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every check reads the effective policy; merging it for each (a dozen times a review, a
    pass over every policy's namespace selector each) was a third of the engine's time at
    admission, and merging it once a review still cost every review a pass (issue 20, the
    tail). The index merges it once per namespace; a changed policy, or a namespace's changed
    labels, is judged by at the next review."""
    index = _index([_policy(rules=[{"rule": r, "mode": "Enforce"} for r in (
        "audience", "complaints", "userAgreement")]), _service()])
    passes: list[str] = []
    real = CompliancePolicySpec.selects_namespace

    def counting(self: CompliancePolicySpec, name: str, labels: dict[str, str]) -> bool:
        passes.append(name)
        return real(self, name, labels)

    monkeypatch.setattr(CompliancePolicySpec, "selects_namespace", counting)
    for _ in range(3):
        findings = evaluate(_deployment(), index, now=NOW)
        assert {(f.rule, f.mode) for f in findings} == {
            (Rule.AUDIENCE, EnforcementMode.ENFORCE), (Rule.COMPLAINTS, EnforcementMode.ENFORCE),
            (Rule.USER_AGREEMENT, EnforcementMode.ENFORCE)}
    assert passes == ["ai"]

    index.upsert(_policy(rules=[{"rule": r, "mode": "Warn"} for r in (
        "audience", "complaints", "userAgreement")]))
    assert {f.mode for f in evaluate(_deployment(), index, now=NOW)} == {EnforcementMode.WARN}
    assert passes == ["ai", "ai"]

    selected = {"apiVersion": "hegui.io/v1alpha1", "kind": "CompliancePolicy",
                "metadata": {"name": "default"},
                "spec": {"namespaceSelector": {"matchLabels": {"hegui.io/enforce": "true"}},
                         "defaultMode": "Enforce",
                         "rules": [{"rule": "audience", "mode": "Enforce"}]}}
    index.upsert(selected)
    assert evaluate(_deployment(), index, now=NOW) == []  # namespace ai has no such label
    index.upsert({"apiVersion": "v1", "kind": "Namespace",
                  "metadata": {"name": "ai", "labels": {"hegui.io/enforce": "true"}}})
    assert [f.rule for f in evaluate(_deployment(), index, now=NOW)] == [Rule.AUDIENCE]
    index.delete(selected)
    assert evaluate(_deployment(), index, now=NOW) == []
