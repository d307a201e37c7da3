"""The webhook configurations hegui ships (never kopf's auto-managed ones).

Scoping follows what Kyverno, Gatekeeper and Istio learned: a webhook on the workload path is part
of the control plane, so it is reached only by what it must see.
- namespaceSelector: never kube-system, kube-node-lease, kube-public or hegui's own namespace.
- matchConditions (CEL, evaluated by the apiserver): only objects whose pods hold an accelerator
  (any signal set of `hegui.rules.workloads`, or the opt-in label) and the serving custom
  resources reach the webhook. The CEL is generated from the same constants as
  `hegui.rules.workloads`, so the apiserver's filter and the webhook's detection cannot drift
  (where CEL cannot see as far, e.g. into a DRA claim, it lets more through, never less).
- timeoutSeconds 5, sideEffects None (dry-run requests are safe), admissionReviewVersions v1.
- failurePolicy Fail: a GPU workload whose posture cannot be checked is not started (Art.17 is a
  condition of service, not a best effort). This is safe because the filter above keeps every
  non-GPU workload and every system namespace off the webhook, and the chart runs the webhook with
  several replicas and a PodDisruptionBudget. Shape checks also live in a ValidatingAdmissionPolicy
  that holds while the webhook is down.
"""

from __future__ import annotations

import base64
from typing import Any

from hegui.api.common import GROUP, VERSION
from hegui.api.policy import ALWAYS_EXCLUDED_NAMESPACES
from hegui.rules.injection import FRONTED_LABEL
from hegui.rules.workloads import BUILTIN, Detection

WEBHOOK_NAME = "workloads.validate.hegui.io"
CONFIGURATION_NAME = "hegui-validating"
NETWORK_POLICY_WEBHOOK_NAME = "networkpolicies.validate.hegui.io"
#: CEL: a NetworkPolicy that admits some ingress or egress (only those can widen what hegui
#: closes); without policyTypes Kubernetes governs Egress when the policy has egress rules.
ADMITS_TRAFFIC = ("(has(object.spec.ingress) && size(object.spec.ingress) > 0 && "
                  "(!has(object.spec.policyTypes) || 'Ingress' in object.spec.policyTypes)) || "
                  "(has(object.spec.egress) && size(object.spec.egress) > 0 && "
                  "(!has(object.spec.policyTypes) || 'Egress' in object.spec.policyTypes))")
#: The control plane's controllers (garbage collector, namespace deletion): never a team.
CONTROLLERS = ("system:kube-controller-manager",
               "system:serviceaccount:kube-system:generic-garbage-collector",
               "system:serviceaccount:kube-system:namespace-controller")


def not_hegui_nor_platform(own_namespace: str) -> str:
    """CEL: the request comes from neither hegui's own ServiceAccounts, the platform
    (system:masters) nor the control plane's controllers: a team, or anyone else."""
    return (f"!('system:serviceaccounts:{own_namespace}' in request.userInfo.groups) && "
            "!('system:masters' in request.userInfo.groups) && "
            f"!(request.userInfo.username in {_quoted(frozenset(CONTROLLERS))})")


TIMEOUT_SECONDS = 5
POSTURE_WEBHOOK_NAME = "posture.validate.hegui.io"
#: CEL: a GenerativeService or ComplianceException is created or its spec changes.
SPEC_CHANGED = "request.operation == 'CREATE' || object.spec != oldObject.spec"

#: (apiGroup, version, resource) of the built-in workload kinds the rules read; the serving
#: custom resources (`hegui.rules.workloads.SERVING_KINDS`, plus those policies add) follow.
WORKLOAD_RESOURCES: tuple[tuple[str, str, str], ...] = (
    ("", "v1", "pods"),
    ("", "v1", "pods/ephemeralcontainers"),  # `kubectl debug` can hand a pod every GPU
    ("apps", "v1", "deployments"),
    ("apps", "v1", "statefulsets"),
    ("apps", "v1", "daemonsets"),
    ("apps", "v1", "replicasets"),
    ("batch", "v1", "jobs"),
    ("batch", "v1", "cronjobs"),
)


#: CEL: the object is not being deleted.
NOT_BEING_DELETED = "!has(object.metadata.deletionTimestamp)"


def workload_resources(detection: Detection = BUILTIN) -> list[tuple[str, str, str]]:
    """Every (group, version, resource) the workload webhook judges."""
    return [*WORKLOAD_RESOURCES, *((k.group, version, k.plural) for k in detection.kinds
                                   for version in k.versions)]


def _quoted(values: frozenset[str]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in sorted(values)) + "]"


def _resource_name(detection: Detection) -> str:
    """CEL on `k`: an accelerator's extended resource name (the chart's sentinels replace the
    list and the prefix calls, so keep the variable `k`)."""
    names = f"k in {_quoted(detection.resources)}"
    if detection.resource_prefixes:
        names += " || " + " || ".join(f"k.startsWith('{prefix}')"
                                      for prefix in sorted(detection.resource_prefixes))
    return names


def _node_label(key: str, detection: Detection) -> str:
    return " || ".join(f"{key}.startsWith('{prefix}')"
                       for prefix in sorted(detection.node_label_prefixes)) or "false"


def _gpu_in_containers(containers: str, detection: Detection) -> str:
    """A container asks for an accelerator, or for every device through the runtime's env."""
    per_section = " || ".join(
        f"(has(c.resources.{section}) && c.resources.{section}.exists(k, "
        f"{_resource_name(detection)}))" for section in ("limits", "requests"))
    env = (f"(has(c.env) && c.env.exists(e, e.name in {_quoted(detection.visible_devices_env)}"
           " && has(e.value) && !(e.value in ['', 'void', 'none'])))")
    return f"{containers}.exists(c, (has(c.resources) && ({per_section})) || {env})"


def _privileged(containers: str) -> str:
    return (f"{containers}.exists(c, has(c.securityContext) && "
            "has(c.securityContext.privileged) && c.securityContext.privileged)")


def pod_spec_uses_gpu(spec: str, detection: Detection = BUILTIN) -> str:
    """CEL: the pod spec at `spec` holds an accelerator (mirrors workloads.generative_evidence,
    as a superset where CEL cannot see as far: a DRA claim counts whatever its device class,
    since CEL here cannot read the claim; any privileged container on an accelerator node)."""
    groups = ("containers", "initContainers", "ephemeralContainers")
    node = (f"((has({spec}.nodeSelector) && {spec}.nodeSelector.exists(n, "
            f"{_node_label('n', detection)})) || (has({spec}.affinity) && "
            f"has({spec}.affinity.nodeAffinity) && has({spec}.affinity.nodeAffinity."
            "requiredDuringSchedulingIgnoredDuringExecution) && "
            f"{spec}.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution."
            "nodeSelectorTerms.exists(t, has(t.matchExpressions) && t.matchExpressions.exists("
            f"x, {_node_label('x.key', detection)}))))")
    toleration = (f"(has({spec}.tolerations) && {spec}.tolerations.exists(t, has(t.key) && "
                  f"[t.key].exists(k, {_resource_name(detection)} || "
                  f"{_node_label('k', detection)})))")
    privileged = " || ".join(f"(has({spec}.{g}) && {_privileged(f'{spec}.{g}')})"
                             for g in groups)
    markers = " || ".join(f"{spec}.runtimeClassName.contains('{m}')"
                          for m in sorted(detection.runtime_class_markers))
    return " || ".join([
        f"(has({spec}.runtimeClassName) && ({spec}.runtimeClassName in "
        f"{_quoted(detection.runtime_classes)}{' || ' + markers if markers else ''}))",
        f"(has({spec}.resourceClaims) && size({spec}.resourceClaims) > 0)",
        *(f"(has({spec}.{g}) && {_gpu_in_containers(f'{spec}.{g}', detection)})"
          for g in groups),
        f"({node} && {toleration})",
        f"(({privileged}) && ({node} || {toleration}))",
    ])


def _opted_in(metadata: str, detection: Detection) -> str:
    return (f"(has({metadata}.labels) && {_quoted(detection.labels)}.exists(l, "
            f"l in {metadata}.labels && {metadata}.labels[l] == 'true'))")


def generative_workload_condition(detection: Detection = BUILTIN) -> str:
    """CEL for matchConditions: true when the object runs a generative model. Serving custom
    resources always reach the webhook (their pods live at kind-specific paths)."""
    template = "object.spec.template"
    cron_template = "object.spec.jobTemplate.spec.template"
    serving = _quoted(frozenset(k.kind for k in detection.kinds))
    return (
        f"object.kind in {serving} || "
        f"(object.kind == 'Pod' ? ({_opted_in('object.metadata', detection)} || "
        f"{pod_spec_uses_gpu('object.spec', detection)}) : "
        f"object.kind == 'CronJob' ? (has({cron_template}.spec) && "
        f"((has({cron_template}.metadata) && "
        f"{_opted_in(cron_template + '.metadata', detection)}) || "
        f"{pod_spec_uses_gpu(cron_template + '.spec', detection)})) : "
        f"(has(object.spec) && has({template}) && has({template}.spec) && "
        f"((has({template}.metadata) && {_opted_in(template + '.metadata', detection)}) || "
        f"{pod_spec_uses_gpu(template + '.spec', detection)})))"
    )


#: CEL: the Pod carries the label hegui's injector puts on the pods it fronts.
FRONTED_POD = (f"has(object.metadata.labels) && '{FRONTED_LABEL}' in "
               "object.metadata.labels")


def serving_entry_pod_condition(detection: Detection = BUILTIN) -> str:
    """CEL: the Pod may be a serving kind's entry (a Ray head, any pod a RayCluster owns), as
    `hegui.rules.workloads.serving_entry` decides. Its own spec asks for no GPU, so only the
    injector sees it (a GenerativeService selecting it decides); the validating webhook and the
    CEL twins keep to pods that run a model, or a CPU-only Ray cluster's head would need a
    posture."""
    labels = [f"(has(object.metadata.labels) && '{key}' in object.metadata.labels && "
              f"object.metadata.labels['{key}'] == '{value}')"
              for kind in detection.kinds for key, value in kind.entry_pod_labels]
    owners = sorted({o for kind in detection.kinds for o in kind.entry_owners})
    if owners:
        labels.append("(has(object.metadata.ownerReferences) && object.metadata."
                      f"ownerReferences.exists(o, o.kind in {_quoted(frozenset(owners))}))")
    return " || ".join(sorted(set(labels))) or "false"


def validating_webhook_configuration(
    *, ca_bundle: bytes, own_namespace: str, url: str | None = None,
    service: dict[str, Any] | None = None, detection: Detection = BUILTIN,
) -> dict[str, Any]:
    """The ValidatingWebhookConfiguration; reach the webhook by `url` (local) or `service`.

    `detection` must include what the cluster's CompliancePolicies add (`detection_of`), or
    workloads marked only by those signals never reach the webhook."""
    if (url is None) == (service is None):
        raise ValueError("give exactly one of url and service")
    client_config: dict[str, Any] = {"caBundle": base64.b64encode(ca_bundle).decode()}
    if url is not None:
        client_config["url"] = url
    else:
        client_config["service"] = service
    groups: dict[tuple[str, str], list[str]] = {}
    for group, version, resource in workload_resources(detection):
        groups.setdefault((group, version), []).append(resource)
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": CONFIGURATION_NAME,
                     "labels": {"app.kubernetes.io/part-of": "hegui"}},
        "webhooks": [{
            "name": WEBHOOK_NAME,
            "admissionReviewVersions": ["v1"],
            "clientConfig": client_config,
            "rules": [{
                "apiGroups": [group], "apiVersions": [version], "resources": resources,
                "operations": ["CREATE", "UPDATE"], "scope": "Namespaced",
            } for (group, version), resources in groups.items()],
            "namespaceSelector": {"matchExpressions": [{
                "key": "kubernetes.io/metadata.name", "operator": "NotIn",
                "values": sorted({*ALWAYS_EXCLUDED_NAMESPACES, own_namespace})}]},
            "matchPolicy": "Equivalent",
            "matchConditions": [
                # And a Pod that claims the label the injector sets on the pods it fronts:
                # refused unless fronted (hegui.admission.mutate.false_fronting).
                {"name": "generative-workload",
                 "expression": f"{generative_workload_condition(detection)} || "
                               f"(object.kind == 'Pod' && {FRONTED_POD})"},
                # An object being deleted (a controller or the garbage collector removing its
                # finalizers) is never judged: a refusal there would leave it stuck forever.
                {"name": "not-being-deleted", "expression": NOT_BEING_DELETED}],
            "sideEffects": "None",
            "timeoutSeconds": TIMEOUT_SECONDS,
            "failurePolicy": "Fail",
        }, {
            # A NetworkPolicy that admits ingress or egress, written by a team: refused when it
            # may select pods whose traffic hegui closes (Art.14, Art.21; hegui.admission.guards).
            # NetworkPolicies are not on a pod's start-up path, so failing closed costs little.
            "name": NETWORK_POLICY_WEBHOOK_NAME,
            "admissionReviewVersions": ["v1"],
            "clientConfig": dict(client_config),
            "rules": [{"apiGroups": ["networking.k8s.io"], "apiVersions": ["v1"],
                       "resources": ["networkpolicies"], "operations": ["CREATE", "UPDATE"],
                       "scope": "Namespaced"}],
            "namespaceSelector": {"matchExpressions": [{
                "key": "kubernetes.io/metadata.name", "operator": "NotIn",
                "values": sorted({*ALWAYS_EXCLUDED_NAMESPACES, own_namespace})}]},
            "matchPolicy": "Equivalent",
            "matchConditions": [
                {"name": "admits-traffic", "expression": ADMITS_TRAFFIC},
                {"name": "not-hegui-nor-platform",
                 "expression": not_hegui_nor_platform(own_namespace)}],
            "sideEffects": "None",
            "timeoutSeconds": TIMEOUT_SECONDS,
            "failurePolicy": "Fail",
        }, {
            # A GenerativeService whose spec is created or changed is judged against the
            # policy's moderation floor (rule moderation, Art.14), a ComplianceException against
            # the policy's exceptions.maxDuration (Art.21); metadata and status writes (the
            # operator's) never reach the webhook.
            "name": POSTURE_WEBHOOK_NAME,
            "admissionReviewVersions": ["v1"],
            "clientConfig": dict(client_config),
            "rules": [{"apiGroups": [GROUP], "apiVersions": [VERSION],
                       "resources": ["generativeservices", "complianceexceptions"],
                       "operations": ["CREATE", "UPDATE"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchExpressions": [{
                "key": "kubernetes.io/metadata.name", "operator": "NotIn",
                "values": sorted({*ALWAYS_EXCLUDED_NAMESPACES, own_namespace})}]},
            "matchPolicy": "Equivalent",
            "matchConditions": [{"name": "posture-changed", "expression": SPEC_CHANGED}],
            "sideEffects": "None",
            "timeoutSeconds": TIMEOUT_SECONDS,
            "failurePolicy": "Fail",
        }],
    }


MUTATING_CONFIGURATION_NAME = "hegui-mutating"
MUTATING_WEBHOOK_NAME = "pods.inject.hegui.io"


def mutating_webhook_configuration(
    *, ca_bundle: bytes, own_namespace: str, url: str | None = None,
    service: dict[str, Any] | None = None, detection: Detection = BUILTIN,
) -> dict[str, Any]:
    """The MutatingWebhookConfiguration that injects the sidecar into Pods (never workloads).

    failurePolicy Ignore: a pod must not stay unscheduled because the injector is down; pods that
    slip through are found and reported by the operator (the lesson Istio and Linkerd paid for).
    reinvocationPolicy IfNeeded: another mutating webhook adding containers later gets ours
    re-run, which is idempotent."""
    base = validating_webhook_configuration(ca_bundle=ca_bundle, own_namespace=own_namespace,
                                            url=url, service=service, detection=detection)
    hook = base["webhooks"][0]
    client = hook["clientConfig"]
    if "url" in client:
        client["url"] = client["url"].removesuffix("/validate") + "/mutate"
    else:
        client["service"] = {**client["service"], "path": "/mutate"}
    for condition in hook["matchConditions"]:
        if condition["name"] == "generative-workload":
            condition["expression"] += (" || (object.kind == 'Pod' && "
                                        f"({serving_entry_pod_condition(detection)}))")
    hook.update({
        "name": MUTATING_WEBHOOK_NAME,
        "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"],
                   "operations": ["CREATE"], "scope": "Namespaced"}],
        "failurePolicy": "Ignore",
        "reinvocationPolicy": "IfNeeded",
    })
    return {"apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": MUTATING_CONFIGURATION_NAME,
                         "labels": {"app.kubernetes.io/part-of": "hegui"}},
            "webhooks": [hook]}
