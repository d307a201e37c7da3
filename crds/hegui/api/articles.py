"""The rules hegui checks, each tied to the article of the Interim Measures it rests on.

Rule ids are the vocabulary shared by `CompliancePolicy` (a mode per rule), `ComplianceException`
(rules exempted), status findings and, later, the rule engine, metrics and reports. Every message
hegui writes cites an article in the form `Art.17` so that a rejection, a condition and a report
line all point back to the same text (生成式人工智能服务管理暂行办法).
"""

from __future__ import annotations

from enum import StrEnum

#: The pattern of one article citation: `Art.17`, or a clause of it, `Art.4(1)`.
ARTICLE_PATTERN = r"Art\.[0-9]{1,2}(\([1-9]\))?"


class Rule(StrEnum):
    """A check hegui runs, named by what it checks. `rule.article` is the article it enforces;
    what it asks, its check and its fix are in its own module of `hegui.rules` (the registry)."""

    COVERAGE = "coverage"
    FILING = "filing"
    ASSESSMENT = "assessment"
    LABELING = "labeling"
    MODERATION = "moderation"
    INJECTION = "injection"
    STABILITY = "stability"
    SUSPENSION = "suspension"
    AUDIENCE = "audience"
    DATA_PROTECTION = "dataProtection"
    COMPLAINTS = "complaints"
    USER_AGREEMENT = "userAgreement"
    TRAINING = "training"
    ANNOTATION = "annotation"
    LICENCES = "licences"

    @property
    def article(self) -> str:
        return _ARTICLES[self]

    @property
    def opt_in(self) -> bool:
        """A declaration rule (Art.7-11, 15, 23): a CompliancePolicy turns it on by naming it
        in spec.rules, which then requires the declaration. Not named, what a service declares
        is still checked, in mode Audit (its status), whatever the policy's defaultMode."""
        return self in _OPT_IN


_ARTICLES: dict[Rule, str] = {
    Rule.COVERAGE: "Art.17",
    Rule.FILING: "Art.17",
    Rule.ASSESSMENT: "Art.17",
    Rule.LABELING: "Art.12",
    Rule.MODERATION: "Art.14",
    Rule.INJECTION: "Art.14",
    Rule.STABILITY: "Art.13",
    Rule.SUSPENSION: "Art.21",
    Rule.AUDIENCE: "Art.10",
    Rule.DATA_PROTECTION: "Art.11",
    Rule.COMPLAINTS: "Art.15",
    Rule.USER_AGREEMENT: "Art.9",
    Rule.TRAINING: "Art.7",
    Rule.ANNOTATION: "Art.8",
    Rule.LICENCES: "Art.23",
}

assert set(_ARTICLES) == set(Rule), "every rule needs an article"

#: The duties a cluster can only see declared in a GenerativeService's spec. hegui checked
#: none of them before; defaultMode does not turn them on, so an upgrade refuses no workload.
_OPT_IN = frozenset({Rule.AUDIENCE, Rule.DATA_PROTECTION, Rule.COMPLAINTS, Rule.USER_AGREEMENT,
                     Rule.TRAINING, Rule.ANNOTATION, Rule.LICENCES})
