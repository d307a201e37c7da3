"""ValidatingAdmissionPolicies: the shape checks that hold even while the webhook is down.

Some of the rules only need the workload and the GenerativeServices of its namespace, and the
apiserver can check those itself with CEL, using each GenerativeService as a policy parameter
(`paramKind`). They are generated here from the rule modules' CEL twins (`hegui.rules.coverage`,
`filing`, `labeling` and the opt-in declaration rules) and the same detection constants as the
rule engine, so a refusal reads the same whoever makes it. What each twin leaves to the webhook is
said in its module.

One policy per rule; one binding per CompliancePolicy and rule, scoped to the namespaces that
policy enforces and acting as its mode says (Enforce: Deny, Warn: Warn, Audit: Audit). An opt-in
rule (`Rule.opt_in`) is bound only by the policies that name it: they are the ones that require
its declaration.
"""

from __future__ import annotations

from typing import Any

from hegui.admission.configuration import WORKLOAD_RESOURCES, generative_workload_condition
from hegui.api.articles import Rule
from hegui.api.policy import ALWAYS_EXCLUDED_NAMESPACES, CompliancePolicy, EnforcementMode
from hegui.rules.base import CelTwin
from hegui.rules.registry import DEFINITIONS
from hegui.rules.workloads import BUILTIN, Detection

API = "admissionregistration.k8s.io/v1"
#: The rules with a CEL twin, each declared in its rule module (`hegui.rules.registry`).
NATIVE_RULES = tuple(d.rule for d in DEFINITIONS.values() if d.cel is not None)
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


def _twin(rule: Rule) -> CelTwin:
    twin = DEFINITIONS[rule].cel
    if twin is None:
        raise ValueError(f"rule {rule.value} has no CEL twin")
    return twin


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
            "validations": [dict(v) for v in _twin(rule).validations],
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
        if rule.opt_in and not policy.spec.names(rule):
            continue  # off in this policy's namespaces: the webhook only audits it there
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
                                 "parameterNotFoundAction": _twin(rule).when_no_service},
                    "matchResources": {"namespaceSelector": scope},
                },
            })
    return found


def all_policies(detection: Detection = BUILTIN) -> list[dict[str, Any]]:
    return [validating_admission_policy(rule, detection) for rule in NATIVE_RULES]
