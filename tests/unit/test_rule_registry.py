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
    assert frozenset({Rule.MODERATION, Rule.INJECTION}) == engine.APPLY_TIME_RULES


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


def test_every_rule_is_checked_somewhere_and_none_says_it_is_not() -> None:
    """No rule a policy can name goes unchecked: each has a check in the engine or a condition
    the operator keeps (stability, suspension, injection)."""
    unchecked = {r for r, d in registry.DEFINITIONS.items()
                 if not (d.workload_check or d.service_check or d.condition)}
    assert unchecked == set()
    assert not any("no check" in d.enforced_by for d in registry.DEFINITIONS.values())


def test_the_opt_in_rules_are_the_declarations_each_checked_and_saying_so() -> None:
    """The duties the cluster only sees declared (Art.7-11, 15, 23) are opt-in: explain and the
    README say that a policy turns them on by naming them."""
    opt_in = {r for r in Rule if r.opt_in}
    assert opt_in == {Rule.AUDIENCE, Rule.DATA_PROTECTION, Rule.COMPLAINTS,
                      Rule.USER_AGREEMENT, Rule.TRAINING, Rule.ANNOTATION, Rule.LICENCES}
    for rule in opt_in:
        found = registry.DEFINITIONS[rule]
        assert found.service_check is not None and found.cel is not None, rule
        assert found.enforced_by.startswith(f"opt-in: where a CompliancePolicy names {rule.value}")
        assert "opt-in" in explain(rule.value)
