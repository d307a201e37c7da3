"""Where is Article N enforced? One module per rule answers it, and everything that speaks of a
rule (the engine, the ValidatingAdmissionPolicies, `kubectl hegui explain`, the README) is made
from that module, so none can say something the others do not."""

from __future__ import annotations

from pathlib import Path

from hegui.admission import cel_policies
from hegui.api.articles import Rule
from hegui.api.generativeservice import ServiceConditionType
from hegui.kubectl_plugin import explain
from hegui.rules import engine, registry

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_table_is_the_registry_s() -> None:
    text = README.read_text(encoding="utf-8")
    assert registry.refreshed(text) == text, (
        "README.md's rules table differs from the rule modules; refresh it with "
        "`.venv/bin/python -m hegui.rules.registry --write README.md`")


def test_every_rule_has_one_module_naming_its_article_what_it_asks_and_the_fix() -> None:
    assert list(registry.DEFINITIONS) == [d.rule for d in registry.DEFINITIONS.values()]
    assert set(registry.DEFINITIONS) == set(Rule)
    for rule, found in registry.DEFINITIONS.items():
        assert found.article == rule.article
        assert found.summary and found.fix and found.enforced_by, rule
        text = explain(rule.value)
        assert rule.article in text and found.fix in text and found.enforced_by in text


def test_the_engine_runs_exactly_the_modules_checks() -> None:
    checks = {rule for rule, _ in engine.WORKLOAD_CHECKS + engine.SERVICE_CHECKS}
    assert checks == {r for r, d in registry.DEFINITIONS.items()
                      if d.workload_check or d.service_check}
    assert frozenset({Rule.MODERATION}) == engine.APPLY_TIME_RULES


def test_the_conditions_that_are_one_rule_s_verdict_follow_the_rule_modules() -> None:
    assert registry.posture_conditions() == {ServiceConditionType.FILED: Rule.FILING,
                                             ServiceConditionType.ASSESSED: Rule.ASSESSMENT,
                                             ServiceConditionType.LABELED: Rule.LABELING}
    for rule in (Rule.MODERATION, Rule.INJECTION):
        assert registry.DEFINITIONS[rule].condition is ServiceConditionType.MODERATED


def test_each_cel_twin_is_a_policy_citing_its_rule_and_article() -> None:
    policies = {p["metadata"]["name"]: p for p in cel_policies.all_policies()}
    twins = [r for r, d in registry.DEFINITIONS.items() if d.cel is not None]
    assert [cel_policies.policy_name(r) for r in twins] == list(policies)
    for rule in twins:
        policy = policies[cel_policies.policy_name(rule)]
        assert policy["metadata"]["annotations"]["hegui.io/article"] == rule.article
        messages = [v.get("messageExpression", "") for v in policy["spec"]["validations"]]
        assert all(f"[{rule.value}, {rule.article}]" in m for m in messages if m)


def test_rules_without_a_check_are_the_ones_the_readme_says_have_none() -> None:
    """A rule a policy can name but nothing checks must say so, in explain and the README;
    implementing one (or removing it) changes this list."""
    unchecked = {r for r, d in registry.DEFINITIONS.items()
                 if not (d.workload_check or d.service_check or d.condition)}
    assert unchecked == {Rule.AUDIENCE, Rule.DATA_PROTECTION, Rule.COMPLAINTS,
                         Rule.USER_AGREEMENT, Rule.TRAINING, Rule.ANNOTATION, Rule.LICENCES}
    assert all("no check yet" in registry.DEFINITIONS[r].enforced_by for r in unchecked)
