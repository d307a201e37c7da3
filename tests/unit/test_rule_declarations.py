"""The declaration rules (Art.7-11, 15, 23): what a GenerativeService declares of its duties is
checked, and a CompliancePolicy that names a rule requires the declaration. Opt-in, so a
policy's defaultMode never turns them on: an upgrade refuses no workload that was admitted."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from hegui.admission import cel_policies
from hegui.api.articles import Rule
from hegui.api.policy import CompliancePolicy, EnforcementMode
from hegui.operator.status import compute
from hegui.rules.engine import Finding, Verdict, evaluate
from hegui.rules.index import ComplianceIndex, ObjectKey

NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "compliance"
DECLARATIONS = (Rule.AUDIENCE, Rule.DATA_PROTECTION, Rule.COMPLAINTS, Rule.USER_AGREEMENT,
                Rule.TRAINING, Rule.ANNOTATION, Rule.LICENCES)
#: The sample chat service declares every duty; the tests take parts away from it.
CHAT = yaml.safe_load((SAMPLES / "chat-service.yaml").read_text(encoding="utf-8"))


def _deployment() -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "llm", "namespace": "hegui-demo"},
            "spec": {"template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "chat-model"}},
                "spec": {"containers": [{"name": "model", "image": "m:1", "resources": {
                    "limits": {"nvidia.com/gpu": "1"}}}]}}}}


def _policy(rules: dict[Rule, str] | None = None, *, name: str = "default",
            evidence_days: int | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "namespaces": ["hegui-demo"], "defaultMode": "Enforce",
        "rules": [{"rule": r.value, "mode": m} for r, m in (rules or {}).items()]}
    if evidence_days is not None:
        spec["evidence"] = {"store": {"endpoint": "http://minio:9000", "bucket": "evidence",
                                      "credentialsSecretName": "store",
                                      "retentionDays": evidence_days}}
    return {"apiVersion": "hegui.io/v1alpha1", "kind": "CompliancePolicy",
            "metadata": {"name": name}, "spec": spec}


def _service(*, drop: tuple[str, ...] = (), **changes: Any) -> dict[str, Any]:
    service: dict[str, Any] = copy.deepcopy(CHAT)
    for key in drop:
        service["spec"].pop(key)
    service["spec"].update(changes)
    return service


def _findings(*objects: dict[str, Any]) -> list[Finding]:
    """The declaration rules' findings for the sample workload (the sample's assessment is a
    SafetyAssessment that is not in the index: its finding is another rule's)."""
    return [f for f in evaluate(_deployment(), ComplianceIndex.from_objects(objects), now=NOW)
            if f.rule in DECLARATIONS]


def _seen(findings: list[Finding]) -> list[tuple[str, str, str, EnforcementMode]]:
    return [(f.rule.value, f.article, f.location.split(" ", 2)[2], f.mode) for f in findings]


ENFORCE_ALL = {rule: "Enforce" for rule in DECLARATIONS}


def test_the_complete_sample_meets_every_declaration_rule_a_policy_can_name() -> None:
    assert _findings(_policy(ENFORCE_ALL), _service()) == []


@pytest.mark.parametrize(("rule", "field", "article"), [
    (Rule.AUDIENCE, "audience", "Art.10"),
    (Rule.DATA_PROTECTION, "dataProtection", "Art.11"),
    (Rule.COMPLAINTS, "complaints", "Art.15"),
    (Rule.USER_AGREEMENT, "userAgreement", "Art.9"),
    (Rule.TRAINING, "training", "Art.7"),
    (Rule.LICENCES, "licences", "Art.23"),
])
def test_a_policy_that_names_a_rule_refuses_a_service_that_does_not_declare_it(
        rule: Rule, field: str, article: str) -> None:
    [finding] = _findings(_policy({rule: "Enforce"}), _service(drop=(field,)))
    assert _seen([finding]) == [(rule.value, article, f"spec.{field}", EnforcementMode.ENFORCE)]
    assert "CompliancePolicy default requires it" in finding.message
    assert not Verdict.of([finding]).allowed
    assert f"[{rule.value}, {article}] GenerativeService hegui-demo/chat spec.{field}: " in (
        finding.render())


@pytest.mark.parametrize("field", ["audience", "dataProtection", "complaints", "userAgreement",
                                   "training", "licences"])
def test_where_no_policy_names_the_rule_a_missing_declaration_is_no_finding(field: str) -> None:
    """defaultMode Enforce does not turn a declaration rule on: a service declared before
    hegui checked these keeps its workloads."""
    assert _findings(_policy(), _service(drop=(field,))) == []


def test_the_mode_is_the_naming_policy_s_and_warn_admits_with_the_finding() -> None:
    findings = _findings(_policy({Rule.AUDIENCE: "Warn"}), _service(drop=("audience",)))
    verdict = Verdict.of(findings)
    assert verdict.allowed and [f.rule for f in verdict.warned] == [Rule.AUDIENCE]


def test_unnamed_declaration_rules_are_audit_whatever_the_default_mode() -> None:
    policy = CompliancePolicy.from_dict(_policy({Rule.TRAINING: "Warn"})).spec
    assert policy.mode_for(Rule.TRAINING) is EnforcementMode.WARN
    assert policy.mode_for(Rule.FILING) is EnforcementMode.ENFORCE
    for rule in set(DECLARATIONS) - {Rule.TRAINING}:
        assert policy.mode_for(rule) is EnforcementMode.AUDIT, rule


# --- what a declaration says is checked, named or not (Audit where no policy names it) ---------

def test_records_kept_with_user_ids_in_the_clear_are_a_data_protection_finding() -> None:
    protection = {**CHAT["spec"]["dataProtection"], "pseudonymise": False}
    protection.pop("pseudonymisationKeyRef")
    assert _seen(_findings(_policy(), _service(dataProtection=protection))) == [
        ("dataProtection", "Art.11", "spec.dataProtection.pseudonymise", EnforcementMode.AUDIT)]
    named = _findings(_policy({Rule.DATA_PROTECTION: "Enforce"}),
                      _service(dataProtection=protection))
    assert [f.mode for f in named] == [EnforcementMode.ENFORCE]
    # Nothing kept, nothing to pseudonymise.
    assert _findings(_policy(ENFORCE_ALL),
                     _service(dataProtection={**protection, "retentionDays": 0})) == []


def test_a_retention_shorter_than_the_evidence_store_s_lock_is_untrue() -> None:
    """The store locks every shipped record for its retentionDays (Object Lock, COMPLIANCE): a
    service that says it keeps records 180 days keeps them a year there."""
    [finding] = _findings(_policy(ENFORCE_ALL, evidence_days=365), _service())
    assert _seen([finding]) == [("dataProtection", "Art.11", "spec.dataProtection.retentionDays",
                                 EnforcementMode.ENFORCE)]
    assert "CompliancePolicy default's evidence store locks every shipped record for 365 days" \
        in finding.message and "at least 365" in finding.fix
    assert _findings(_policy(ENFORCE_ALL, evidence_days=180), _service()) == []


def test_an_agreement_that_takes_effect_later_is_no_agreement_yet() -> None:
    later = {**CHAT["spec"]["userAgreement"], "effectiveOn": "2026-12-01"}
    [finding] = _findings(_policy(ENFORCE_ALL), _service(userAgreement=later))
    assert _seen([finding]) == [("userAgreement", "Art.9", "spec.userAgreement.effectiveOn",
                                 EnforcementMode.ENFORCE)]
    assert "takes effect only on 2026-12-01" in finding.message
    today = {**later, "effectiveOn": NOW.date().isoformat()}
    assert _findings(_policy(ENFORCE_ALL), _service(userAgreement=today)) == []


def test_a_base_model_without_licence_or_filing_has_no_lawful_source_shown() -> None:
    training = copy.deepcopy(CHAT["spec"]["training"])
    training["baseModels"].append({"name": "mystery-7b", "provider": "unknown"})
    training["baseModels"].append({"name": "filed-13b", "provider": "Example",
                                   "serviceFilingNumber": "Beijing-ExampleModel-20250101"})
    [finding] = _findings(_policy(ENFORCE_ALL), _service(training=training))
    assert _seen([finding]) == [("training", "Art.7", "spec.training.baseModels",
                                 EnforcementMode.ENFORCE)]
    assert "mystery-7b" in finding.message and "filed-13b" not in finding.message


def test_declared_annotation_needs_trained_annotators_and_a_quality_sampling() -> None:
    training = copy.deepcopy(CHAT["spec"]["training"])
    training["annotation"]["annotatorsTrained"] = False
    del training["annotation"]["latestSampling"]
    assert _seen(_findings(_policy({Rule.ANNOTATION: "Warn"}), _service(training=training))) == [
        ("annotation", "Art.8", "spec.training.annotation.annotatorsTrained",
         EnforcementMode.WARN),
        ("annotation", "Art.8", "spec.training.annotation.latestSampling", EnforcementMode.WARN)]
    # No annotation declared: no data was annotated, so Art.8 asks nothing.
    del training["annotation"]
    assert _findings(_policy(ENFORCE_ALL), _service(training=training)) == []


def test_a_licence_past_its_expiry_is_not_held() -> None:
    licences = [*CHAT["spec"]["licences"],
                {"kind": "ICP", "number": "京B2-20200000", "issuer": "北京市通信管理局",
                 "expiresOn": NOW.date().isoformat()}]  # the first day it no longer counts
    [finding] = _findings(_policy(), _service(licences=licences))
    assert _seen([finding]) == [("licences", "Art.23", "spec.licences[1].expiresOn",
                                 EnforcementMode.AUDIT)]
    assert "京B2-20200000 expired on 2026-11-29" in finding.message


def test_the_status_reports_what_a_declaration_gets_wrong_even_without_a_policy() -> None:
    licences = [{"kind": "ICP", "number": "1", "issuer": "x", "expiresOn": "2026-01-01"}]
    service = _service(licences=licences)
    status = compute(ObjectKey("hegui-demo", "chat"), ComplianceIndex.from_objects([service]),
                     generation=1, previous=[], now=NOW)
    assert [(f["rule"], f["article"]) for f in status["findings"]
            if f["rule"] in {r.value for r in DECLARATIONS}] == [("licences", "Art.23")]


# --- the CEL twins are bound where the rule is on ----------------------------------------------

def test_a_declaration_rule_s_cel_twin_is_bound_only_by_the_policies_that_name_it() -> None:
    def bound(policy: dict[str, Any]) -> set[str]:
        return {b["spec"]["policyName"] for b in cel_policies.bindings(
            CompliancePolicy.from_dict(policy))}

    unnamed = bound(_policy())
    assert not {cel_policies.policy_name(r) for r in DECLARATIONS} & unnamed
    assert cel_policies.policy_name(Rule.FILING) in unnamed
    named = cel_policies.bindings(CompliancePolicy.from_dict(_policy({Rule.TRAINING: "Warn"})))
    [training] = [b for b in named
                  if b["spec"]["policyName"] == cel_policies.policy_name(Rule.TRAINING)]
    assert training["spec"]["validationActions"] == ["Warn"]
    assert {cel_policies.policy_name(r) for r in DECLARATIONS} <= bound(_policy(ENFORCE_ALL))
