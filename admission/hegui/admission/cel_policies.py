"""ValidatingAdmissionPolicies: the shape checks that hold even while the webhook is down.

Some of the rules only need the workload and the GenerativeServices of its namespace, and the
apiserver can check those itself with CEL, using each GenerativeService as a policy parameter
(`paramKind`). They are generated here, from the same rule ids, articles and detection constants
as the rule engine, so a refusal reads the same whoever makes it:

- coverage (Art.17): the namespace has at least one GenerativeService; that it selects the pods
  is left to the webhook.
- filing (Art.17): a selecting service declares a filing, the algorithm filing (算法备案) when it
  has public-opinion attributes; the numbers' formats are left to the CRD and the webhook.
- labeling (Art.12): a selecting service configures labeling.
- assessment (Art.17): webhook only: it needs the SafetyAssessment's verdict and the date.

One policy per rule; one binding per CompliancePolicy and rule, scoped to the namespaces that
policy enforces and acting as its mode says (Enforce: Deny, Warn: Warn, Audit: Audit).
"""

from __future__ import annotations

from typing import Any

from hegui.admission.configuration import WORKLOAD_RESOURCES, generative_workload_condition
from hegui.api.articles import Rule
from hegui.api.policy import ALWAYS_EXCLUDED_NAMESPACES, CompliancePolicy, EnforcementMode
from hegui.rules.workloads import BUILTIN, Detection

API = "admissionregistration.k8s.io/v1"
NATIVE_RULES = (Rule.COVERAGE, Rule.FILING, Rule.LABELING)
_ACTIONS = {EnforcementMode.ENFORCE: ["Deny"], EnforcementMode.WARN: ["Warn"],
            EnforcementMode.AUDIT: ["Audit"]}

# The pod template's labels, whatever the workload kind.
_LABELS = (
    "object.kind == 'Pod' || object.kind == 'InferenceService' ? "
    "(has(object.metadata.labels) ? object.metadata.labels : {}) : "
    "object.kind == 'CronJob' ? "
    "(has(object.spec.jobTemplate.spec.template.metadata) && "
    "has(object.spec.jobTemplate.spec.template.metadata.labels) ? "
    "object.spec.jobTemplate.spec.template.metadata.labels : {}) : "
    "(has(object.spec.template.metadata) && has(object.spec.template.metadata.labels) ? "
    "object.spec.template.metadata.labels : {})"
)

# Does the parameter (a GenerativeService) select those labels? (metav1.LabelSelector semantics)
_SELECTED = (
    "(!has(params.spec.selector.matchLabels) || params.spec.selector.matchLabels.all(k, "
    "k in variables.labels && variables.labels[k] == params.spec.selector.matchLabels[k])) && "
    "(!has(params.spec.selector.matchExpressions) || "
    "params.spec.selector.matchExpressions.all(e, "
    "e.operator == 'In' ? (e.key in variables.labels && variables.labels[e.key] in e.values) : "
    "e.operator == 'NotIn' ? !(e.key in variables.labels && variables.labels[e.key] in e.values) : "
    "e.operator == 'Exists' ? e.key in variables.labels : !(e.key in variables.labels)))"
)


def _prefix(rule: Rule, field: str) -> str:
    """CEL for the start of a message, as `Finding.render` writes it."""
    return (f"'[{rule.value}, {rule.article}] GenerativeService ' + params.metadata.namespace + "
            f"'/' + params.metadata.name + ' {field}: '")


_VALIDATIONS: dict[Rule, list[dict[str, str]]] = {
    # The binding's parameterNotFoundAction (Deny) makes the refusal when no service exists.
    Rule.COVERAGE: [{"expression": "true"}],
    Rule.FILING: [{
        "expression": "!variables.selected || (params.spec.filing.publicOpinion ? "
                      "has(params.spec.filing.algorithm) : (has(params.spec.filing.algorithm) "
                      "|| has(params.spec.filing.service)))",
        "messageExpression": _prefix(Rule.FILING, "spec.filing") + " + 'no filing (算法备案 for "
                             "public-opinion services) is declared. Fix: set "
                             "spec.filing.algorithm.number or spec.filing.service.number'",
    }],
    Rule.LABELING: [{
        "expression": "!variables.selected || has(params.spec.labeling)",
        "messageExpression": _prefix(Rule.LABELING, "spec.labeling") + " + 'no content labeling "
                             "(标识) is configured for generated content. Fix: set "
                             "spec.labeling'",
    }],
}


def policy_name(rule: Rule) -> str:
    return f"hegui-{rule.value.lower()}-{rule.article.lower().replace('.', '')}"


def validating_admission_policy(rule: Rule, detection: Detection = BUILTIN) -> dict[str, Any]:
    groups: dict[tuple[str, str], list[str]] = {}
    for group, version, resource in WORKLOAD_RESOURCES:
        groups.setdefault((group, version), []).append(resource)
    return {
        "apiVersion": API, "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": policy_name(rule),
                     "labels": {"app.kubernetes.io/part-of": "hegui"},
                     "annotations": {"hegui.io/article": rule.article}},
        "spec": {
            "failurePolicy": "Fail",
            "paramKind": {"apiVersion": "hegui.io/v1alpha1", "kind": "GenerativeService"},
            "matchConstraints": {
                "resourceRules": [{
                    "apiGroups": [group], "apiVersions": [version], "resources": resources,
                    "operations": ["CREATE", "UPDATE"]}
                    for (group, version), resources in groups.items()],
                "namespaceSelector": {"matchExpressions": [{
                    "key": "kubernetes.io/metadata.name", "operator": "NotIn",
                    "values": list(ALWAYS_EXCLUDED_NAMESPACES)}]},
            },
            "matchConditions": [{"name": "generative-workload",
                                 "expression": generative_workload_condition(detection)}],
            "variables": [{"name": "labels", "expression": _LABELS},
                          {"name": "selected", "expression": _SELECTED}],
            "validations": _VALIDATIONS[rule],
        },
    }


def bindings(policy: CompliancePolicy) -> list[dict[str, Any]]:
    """The bindings that make `policy` hold natively, one per rule (and per namespace scope)."""
    scopes: list[dict[str, Any]] = []
    if policy.spec.namespaces:
        scopes.append({"matchExpressions": [{"key": "kubernetes.io/metadata.name",
                                             "operator": "In",
                                             "values": list(policy.spec.namespaces)}]})
    if policy.spec.namespace_selector is not None:
        scopes.append(policy.spec.namespace_selector.to_dict())
    found = []
    for rule in NATIVE_RULES:
        for index, scope in enumerate(scopes):
            found.append({
                "apiVersion": API, "kind": "ValidatingAdmissionPolicyBinding",
                "metadata": {"name": f"{policy_name(rule)}-{policy.name}-{index}",
                             "labels": {"app.kubernetes.io/part-of": "hegui",
                                        "hegui.io/compliance-policy": policy.name}},
                "spec": {
                    "policyName": policy_name(rule),
                    "validationActions": _ACTIONS[policy.spec.mode_for(rule)],
                    "paramRef": {"selector": {},
                                 "parameterNotFoundAction":
                                     "Deny" if rule is Rule.COVERAGE else "Allow"},
                    "matchResources": {"namespaceSelector": scope},
                },
            })
    return found


def all_policies(detection: Detection = BUILTIN) -> list[dict[str, Any]]:
    return [validating_admission_policy(rule, detection) for rule in NATIVE_RULES]
