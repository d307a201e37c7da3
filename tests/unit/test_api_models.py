"""The API models: samples validate, YAML round trips are lossless, accessors mean what they say."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from pydantic import ValidationError

from hegui.api import KINDS, ApiObject, Rule, field_errors
from hegui.api.assessment import SafetyAssessment, Verdict
from hegui.api.common import (
    Condition,
    ConditionStatus,
    LabelSelector,
    parse_duration,
)
from hegui.api.exception import ComplianceException
from hegui.api.generativeservice import (
    AssessmentResult,
    ExternalAssessment,
    GenerativeService,
    ServiceConditionType,
)
from hegui.api.policy import CompliancePolicy, EnforcementMode, strictest
from hegui.api.testing import SAMPLES, documents, load_samples

WORKLOAD = SAMPLES.parent / "workloads" / "chat-model.yaml"


def _sample(name: str) -> dict[str, Any]:
    return load_samples()[name]


@pytest.mark.parametrize("name", sorted(load_samples()))
def test_every_sample_validates(name: str) -> None:
    document = _sample(name)
    obj = KINDS[document["kind"]].from_dict(document)
    assert obj.to_dict()["spec"]  # and it serialises back


def test_samples_cover_every_kind() -> None:
    assert {doc["kind"] for doc in load_samples().values()} == set(KINDS)


def test_chat_service_selects_the_chat_model_workload() -> None:
    service = GenerativeService.from_dict(_sample("chat-service.yaml"))
    deployment = next(doc for doc in yaml.safe_load_all(WORKLOAD.read_text())
                      if doc["kind"] == "Deployment")
    assert service.metadata.namespace == deployment["metadata"]["namespace"]
    assert service.spec.selector.matches(deployment["spec"]["template"]["metadata"]["labels"])
    assert not service.spec.selector.matches({"app.kubernetes.io/name": "other"})
    assert service.in_art17_scope
    assert service.spec.filing.algorithm is not None
    assert service.spec.filing.algorithm.parsed().province == "Beijing"


def test_defaults_are_filled_as_the_apiserver_fills_them() -> None:
    image = GenerativeService.from_dict(_sample("image-service.yaml"))
    moderation = image.spec.moderation
    assert moderation is not None
    assert moderation.input.enabled and moderation.output.enabled
    assert moderation.output.stream_window_tokens == 64 and moderation.timeout == "2s"
    assert image.spec.suspension is not None and image.spec.suspension.sustained_for == "15m"


# --- strictness: what the apiserver refuses, the models refuse -----------------------------------

def _chat() -> dict[str, Any]:
    return _sample("chat-service.yaml")


def _errors(document: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as raised:
        GenerativeService.from_dict(document)
    return [str(error) for error in field_errors(raised.value)]


def test_unknown_fields_are_rejected_not_pruned() -> None:
    document = _chat()
    document["spec"]["filing"]["publicOpnion"] = True
    assert _errors(document) == ["spec.filing.publicOpnion: Extra inputs are not permitted"]


def test_values_are_not_coerced() -> None:
    document = _chat()
    document["spec"]["moderation"]["output"]["streamWindowTokens"] = "32"
    document["spec"]["filing"]["publicOpinion"] = "true"
    assert _errors(document) == [
        "spec.filing.publicOpinion: Input should be a valid boolean",
        "spec.moderation.output.streamWindowTokens: Input should be a valid integer"]


def test_null_means_absent_as_for_the_apiserver() -> None:
    document = _chat()
    document["spec"]["moderation"]["failureMode"] = None  # pruned, then defaulted
    document["spec"]["displayName"] = None
    service = GenerativeService.from_dict(document)
    assert service.spec.moderation is not None
    assert service.spec.moderation.failure_mode.value == "Closed"
    assert service.spec.display_name is None


def test_every_broken_rule_is_reported_with_its_field() -> None:
    document = _chat()
    del document["spec"]["filing"]["algorithm"], document["spec"]["assessment"]
    errors = _errors(document)
    assert errors == [
        "spec.filing.algorithm: filing.algorithm (算法备案) is required when filing.publicOpinion "
        "is true (rule filing, Art.17)",
        "spec.assessment: assessment (安全评估) is required when filing.publicOpinion is true "
        "(rule assessment, Art.17)"]


def test_filing_number_errors_name_rule_and_article() -> None:
    document = _chat()
    document["spec"]["filing"]["algorithm"]["number"] = "网信算备110108123456701250012"
    assert _errors(document) == [
        "spec.filing.algorithm.number: must end with 号, as in 网信算备110108823483901230031号 "
        "(rule filing.algorithmNumber, Art.17)"]


# --- round trip ----------------------------------------------------------------------------------

def _yaml_round_trip(obj: ApiObject) -> ApiObject:
    text = yaml.safe_dump(obj.to_dict(), allow_unicode=True, sort_keys=False)
    return type(obj).from_dict(yaml.safe_load(text))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_model_to_yaml_to_model_is_lossless(kind: str) -> None:
    model = KINDS[kind]

    @settings(max_examples=60, deadline=None)
    @given(documents(model, namespace="hegui-demo"))
    def round_trip(document: dict[str, Any]) -> None:
        obj = model.from_dict(document)
        again = _yaml_round_trip(obj)
        assert again == obj
        assert again.to_dict() == obj.to_dict()

    round_trip()


def test_status_round_trips_with_timestamps() -> None:
    service = GenerativeService.from_dict(_chat())
    status = {
        "observedGeneration": 3,
        "conditions": [{"type": "Compliant", "status": "False", "reason": "FilingMissing",
                        "message": "filing missing", "article": "Art.17",
                        "lastTransitionTime": "2026-01-02T03:04:05Z", "observedGeneration": 3}],
        "assessmentExpiresOn": "2026-06-30",
        "suspension": {"suspended": True, "since": "2026-01-02T03:04:05Z", "reason": "burn",
                       "history": [{"suspendedAt": "2026-01-02T03:04:05Z", "trigger": "Auto",
                                    "reason": "burn rate 14.4 over 1h and 5m"}]},
    }
    with_status = GenerativeService.from_dict({**service.to_dict(), "status": status})
    assert with_status.to_dict()["status"]["conditions"][0]["lastTransitionTime"] == (
        "2026-01-02T03:04:05Z")
    assert _yaml_round_trip(with_status) == with_status
    assert with_status.is_suspended and not with_status.is_compliant


# --- accessors the rule engine reads -------------------------------------------------------------

def test_conditions_by_type() -> None:
    service = GenerativeService.from_dict(_chat())
    assert service.condition(ServiceConditionType.COMPLIANT) is None
    assert not service.is_compliant and not service.is_suspended
    assert service.status is None
    now = datetime(2026, 1, 1, tzinfo=UTC)
    ok = GenerativeService.from_dict({**service.to_dict(), "status": {"conditions": [
        Condition(type="Compliant", status=ConditionStatus.TRUE, last_transition_time=now,
                  reason="AllRulesHold", article=ServiceConditionType.COMPLIANT.article
                  ).to_dict()]}})
    assert ok.is_compliant
    assert ServiceConditionType.FILED.article == "Art.17"


@pytest.mark.parametrize(("selector", "labels", "expected"), [
    ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
    ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]}, {"a": "2"},
     True),
    ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
    ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {"a": "1"},
     False),
    ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": ""}, True),
    ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": ""}, False),
    ({}, {"anything": "x"}, True),
])
def test_label_selector_semantics(selector: dict[str, Any], labels: dict[str, str],
                                  expected: bool) -> None:
    assert LabelSelector.from_dict(selector).matches(labels) is expected


def test_selector_requirement_values_follow_the_operator() -> None:
    with pytest.raises(ValidationError, match="values must be non-empty for In"):
        LabelSelector.from_dict({"matchExpressions": [{"key": "a", "operator": "In"}]})
    with pytest.raises(ValidationError, match="values must be non-empty for In"):
        LabelSelector.from_dict(
            {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]})


def test_policy_modes_and_namespaces() -> None:
    policy = CompliancePolicy.from_dict(_sample("policy.yaml"))
    assert policy.spec.mode_for(Rule.TRAINING) is EnforcementMode.WARN
    assert policy.spec.mode_for(Rule.FILING) is EnforcementMode.ENFORCE  # the default mode
    assert policy.spec.selects_namespace("hegui-demo", {})
    assert policy.spec.selects_namespace("team-a", {"hegui.io/enforce": "true"})
    assert not policy.spec.selects_namespace("team-b", {})
    assert not policy.spec.selects_namespace("kube-system", {"hegui.io/enforce": "true"})
    assert strictest([EnforcementMode.AUDIT, EnforcementMode.ENFORCE, EnforcementMode.WARN]) is (
        EnforcementMode.ENFORCE)
    assert policy.spec.exceptions.max_timedelta == timedelta(days=30)


def test_exception_window_counts_from_creation() -> None:
    document = _sample("exception.yaml")
    exception = ComplianceException.from_dict(document)
    assert exception.expires_at() is None  # not created yet: nothing is exempt
    created = datetime(2026, 3, 1, tzinfo=UTC)
    document["metadata"]["creationTimestamp"] = "2026-03-01T00:00:00Z"
    exception = ComplianceException.from_dict(document)
    assert exception.expires_at() == created + timedelta(days=14)
    runner = [("Deployment", "assessment-runner")]
    assert exception.exempts(Rule.COVERAGE, runner, created + timedelta(days=13))
    assert not exception.exempts(Rule.COVERAGE, runner, created + timedelta(days=14))
    assert not exception.exempts(Rule.LABELING, runner, created)
    other = [("Deployment", "chat-model")]
    assert not exception.exempts(Rule.COVERAGE, other, created)


def test_exception_within_the_policy_maximum() -> None:
    policy = CompliancePolicy.from_dict(_sample("policy.yaml"))  # maxDuration 720h
    document = _sample("exception.yaml")
    assert ComplianceException.from_dict(document).within_policy(policy) is None
    document["spec"]["duration"] = "1000h"
    message = ComplianceException.from_dict(document).within_policy(policy)
    assert message is not None and "exceeds 720h" in message and "Art.21" in message


def test_assessment_validity() -> None:
    report = ExternalAssessment(report_id="r", assessed_on=date(2025, 1, 1),
                                expires_on=date(2026, 1, 1), result=AssessmentResult.PASS)
    assert report.valid_on(date(2025, 12, 31)) and not report.valid_on(date(2026, 1, 1))
    assessment = SafetyAssessment.from_dict(_sample("safety-assessment.yaml"))
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert not assessment.passed_at(now)  # no status yet: Pending
    passed = SafetyAssessment.from_dict({**assessment.to_dict(), "status": {
        "verdict": "Pass", "expiresAt": "2026-06-01T00:00:00Z"}})
    assert passed.status is not None and passed.status.verdict is Verdict.PASS
    assert passed.passed_at(now) and not passed.passed_at(now + timedelta(days=200))


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("15m", 900), ("1h30m", 5400), ("720h", 2_592_000), ("1500ms", 1.5)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "30d", "1.5h", "h", "-1h", "1h 30m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


def test_samples_directory_is_where_the_tests_look() -> None:
    assert Path(SAMPLES).is_dir() and WORKLOAD.is_file()
