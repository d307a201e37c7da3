"""The webhook configuration hegui ships: scoping, failure policy, the CEL filter's inputs."""

from __future__ import annotations

from hegui.admission import cel_policies, configuration
from hegui.rules.workloads import BUILTIN


def test_scoped_away_from_the_control_plane_and_its_own_namespace() -> None:
    config = configuration.validating_webhook_configuration(
        ca_bundle=b"ca", own_namespace="platform-hegui", url="https://127.0.0.1:9443/validate")
    hooks = {hook["name"]: hook for hook in config["webhooks"]}
    workloads = hooks[configuration.WEBHOOK_NAME]
    policies = hooks[configuration.NETWORK_POLICY_WEBHOOK_NAME]
    for hook in hooks.values():
        excluded = hook["namespaceSelector"]["matchExpressions"][0]
        assert excluded["operator"] == "NotIn"
        assert {"kube-system", "kube-node-lease", "kube-public", "hegui-system",
                "platform-hegui"} <= set(excluded["values"])
        assert hook["sideEffects"] == "None" and hook["failurePolicy"] == "Fail"
        assert hook["timeoutSeconds"] <= 10
    resources = {r for rule in workloads["rules"] for r in rule["resources"]}
    assert {"pods", "deployments", "statefulsets", "cronjobs", "inferenceservices"} <= resources
    # No annotation path to suspension any more (Art.21: SuspensionOrder, ResumeRequest).
    assert "hegui.io/resume" not in str(config)
    # NetworkPolicies reach the webhook only when they admit ingress and come from neither
    # hegui's own ServiceAccounts nor the platform.
    assert policies["rules"][0]["resources"] == ["networkpolicies"]
    conditions = " && ".join(c["expression"] for c in policies["matchConditions"])
    assert "size(object.spec.ingress) > 0" in conditions
    assert "'system:serviceaccounts:platform-hegui' in request.userInfo.groups" in conditions
    assert "'system:masters'" in conditions


def test_the_filter_follows_the_detection_signals() -> None:
    builtin = configuration.generative_workload_condition()
    assert "'nvidia.com/gpu'" in builtin and "startsWith('nvidia.com/mig-')" in builtin
    assert "example.com/npu" not in builtin
    extended = configuration.generative_workload_condition(
        BUILTIN.extended(resources=["example.com/npu"]))
    assert "'example.com/npu'" in extended and "'nvidia.com/gpu'" in extended


def test_the_filter_is_generated_from_every_built_in_signal() -> None:
    """One rule, one place: whatever workloads.py knows, the apiserver's filter lets through."""
    cel = configuration.generative_workload_condition()
    for prefix in BUILTIN.resource_prefixes | BUILTIN.node_label_prefixes:
        assert f"startsWith('{prefix}')" in cel
    for name in BUILTIN.visible_devices_env | BUILTIN.runtime_classes:
        assert f"'{name}'" in cel
    for marker in BUILTIN.runtime_class_markers:
        assert f"runtimeClassName.contains('{marker}')" in cel
    assert "ephemeralContainers" in cel and "securityContext.privileged" in cel
    for kind in BUILTIN.kinds:
        assert f"'{kind.kind}'" in cel


def test_serving_custom_resources_reach_the_webhook_where_they_are_applied() -> None:
    from hegui.rules.workloads import ServingKind

    config = configuration.validating_webhook_configuration(
        ca_bundle=b"ca", own_namespace="hegui-system", url="https://127.0.0.1:9443/validate")
    hook = next(h for h in config["webhooks"] if h["name"] == configuration.WEBHOOK_NAME)
    rules = {(r["apiGroups"][0], v, res) for r in hook["rules"] for v in r["apiVersions"]
             for res in r["resources"]}
    assert {("serving.kserve.io", "v1beta1", "inferenceservices"),
            ("serving.kserve.io", "v1alpha1", "llminferenceservices"),
            ("apps.nvidia.com", "v1alpha1", "nimservices"),
            ("leaderworkerset.x-k8s.io", "v1", "leaderworkersets"),
            ("disaggregatedset.x-k8s.io", "v1", "disaggregatedsets"),
            ("ray.io", "v1", "rayservices"), ("ray.io", "v1", "rayclusters"),
            ("", "v1", "pods/ephemeralcontainers")} <= rules
    added = BUILTIN.extended(kinds=[ServingKind("example.com", ("v2",), "ModelServer",
                                                "modelservers", templates=("spec.pod",))])
    config = configuration.validating_webhook_configuration(
        ca_bundle=b"ca", own_namespace="hegui-system", url="https://x/validate",
        detection=added)
    hook = next(h for h in config["webhooks"] if h["name"] == configuration.WEBHOOK_NAME)
    assert {"apiGroups": ["example.com"], "apiVersions": ["v2"], "resources": ["modelservers"],
            "operations": ["CREATE", "UPDATE"], "scope": "Namespaced"} in hook["rules"]
    assert "'ModelServer'" in hook["matchConditions"][0]["expression"]


def test_exactly_one_way_to_reach_the_webhook() -> None:
    import pytest

    with pytest.raises(ValueError, match="exactly one"):
        configuration.validating_webhook_configuration(ca_bundle=b"", own_namespace="x")


def test_native_policies_cite_their_articles() -> None:
    names = {p["metadata"]["name"]: p["metadata"]["annotations"]["hegui.io/article"]
             for p in cel_policies.all_policies()}
    assert names == {"hegui-coverage-art17": "Art.17", "hegui-filing-art17": "Art.17",
                     "hegui-labeling-art12": "Art.12", "hegui-audience-art10": "Art.10",
                     "hegui-dataprotection-art11": "Art.11", "hegui-complaints-art15": "Art.15",
                     "hegui-useragreement-art9": "Art.9", "hegui-training-art7": "Art.7",
                     "hegui-annotation-art8": "Art.8", "hegui-licences-art23": "Art.23"}


def test_a_generative_service_s_spec_reaches_the_webhook_for_the_policy_floor() -> None:
    """Rule moderation, Art.14: a posture below the floor is refused when applied; the operator's
    metadata and status writes do not depend on the webhook."""
    config = configuration.validating_webhook_configuration(
        ca_bundle=b"ca", own_namespace="hegui-system", url="https://127.0.0.1:9443/validate")
    [posture] = [h for h in config["webhooks"]
                 if h["name"] == configuration.POSTURE_WEBHOOK_NAME]
    assert posture["rules"][0]["resources"] == ["generativeservices", "complianceexceptions"]
    assert posture["failurePolicy"] == "Fail"
    assert posture["matchConditions"][0]["expression"] == (
        "request.operation == 'CREATE' || object.spec != oldObject.spec")


def test_the_operator_may_list_every_serving_kind_it_audits() -> None:
    """The chart's RBAC is static YAML: it must name every built-in serving kind."""
    from pathlib import Path

    rbac = (Path(__file__).resolve().parents[2] / "charts" / "hegui" / "templates"
            / "rbac-operator.yaml").read_text()
    for kind in BUILTIN.kinds:
        assert f"apiGroups: [{kind.group}]" in rbac and kind.plural in rbac, kind.kind


def test_an_object_being_deleted_never_reaches_the_workload_webhook() -> None:
    """A finalizer removed from a non-compliant InferenceService must not be refused, or the
    resource could never be deleted."""
    config = configuration.validating_webhook_configuration(
        ca_bundle=b"ca", own_namespace="hegui-system", url="https://x/validate")
    hook = next(h for h in config["webhooks"] if h["name"] == configuration.WEBHOOK_NAME)
    assert {"name": "not-being-deleted",
            "expression": "!has(object.metadata.deletionTimestamp)"} in hook["matchConditions"]
