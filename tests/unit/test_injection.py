"""Sidecar injection as a JSON patch (Art.14): native sidecar, port takeover, idempotence."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hegui.admission.injection import (
    MODEL_PORT_NAME,
    STATUS_ANNOTATION,
    InjectionConflict,
    carries_sidecar,
    inject,
)
from hegui.api.policy import CompliancePolicy
from hegui.rules.injection import CAPTURE_NAME, FRONTED_LABEL, SIDECAR_NAME

POLICY = CompliancePolicy.from_dict({
    "apiVersion": "hegui.io/v1alpha1", "kind": "CompliancePolicy",
    "metadata": {"name": "default", "generation": 3},
    "spec": {"namespaces": ["ai"], "defaultMode": "Enforce",
             "sidecar": {"image": "registry.example.cn/hegui/sidecar:0.1.0", "port": 8443,
                         "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                                       "limits": {"cpu": "1", "memory": "512Mi"}}}}})


def _pod(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"containers": [{
        "name": "model", "image": "llm:1",
        "ports": [{"name": "http", "containerPort": 8000}],
        "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}
    body.update(spec)
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ai", "labels": {"app": "chat"}},
            "spec": body}


def _applied(pod: dict[str, Any]) -> dict[str, Any]:
    patch = inject(pod, POLICY, "chat").patch
    patched: dict[str, Any] = jsonpatch.apply_patch(copy.deepcopy(pod), patch)
    return patched


def test_the_sidecar_is_a_hardened_native_sidecar_in_front_of_the_model() -> None:
    pod = _applied(_pod())
    sidecar = pod["spec"]["initContainers"][0]
    assert sidecar["name"] == SIDECAR_NAME and sidecar["restartPolicy"] == "Always"
    assert "startupProbe" in sidecar
    security = sidecar["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert not security["allowPrivilegeEscalation"]
    assert sidecar["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"},
                                    "limits": {"cpu": "1", "memory": "512Mi"}}
    assert not any(k.startswith("nvidia.com/") for k in sidecar["resources"]["limits"])
    assert not any(e["name"] == "NVIDIA_VISIBLE_DEVICES" for e in sidecar["env"])
    # The sidecar takes the serving port's name; the model keeps its port under another name.
    assert sidecar["ports"] == [{"name": "http", "containerPort": 8443, "protocol": "TCP"}]
    assert pod["spec"]["containers"][0]["ports"][0]["name"] == MODEL_PORT_NAME
    args = sidecar["args"]
    assert args[args.index("--upstream") + 1] == "http://127.0.0.1:8000"
    assert args[args.index("--port") + 1] == "8443"
    assert sidecar["startupProbe"]["httpGet"] == {"path": "/hegui/healthz", "port": 8443}
    status = json.loads(pod["metadata"]["annotations"][STATUS_ANNOTATION])
    assert status["policyGeneration"] == 3 and status["service"] == "chat"


def test_injection_is_idempotent() -> None:
    once = _applied(_pod())
    assert inject(once, POLICY, "chat").patch == []


def _sidecars(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for group in ("initContainers", "containers") for c in pod["spec"].get(group, [])
            if c["name"] == SIDECAR_NAME]


@pytest.mark.parametrize("group", ["initContainers", "containers"])
def test_a_user_declared_sidecar_overrides_only_what_the_policy_allows(group: str) -> None:
    mine = {"name": SIDECAR_NAME, "image": "mine:1", "command": ["sleep", "inf"],
            "resources": {"limits": {"cpu": "2", "memory": "1Gi"}}}
    pod = _pod()
    pod["spec"].setdefault(group, []).append(mine)
    injection = inject(pod, POLICY, "chat")
    patched = jsonpatch.apply_patch(copy.deepcopy(pod), injection.patch)
    [sidecar] = _sidecars(patched)
    # The policy's image and command line run; the pod's resources are kept (userOverrides).
    assert sidecar["image"] == POLICY.spec.sidecar.image  # type: ignore[union-attr]
    assert "command" not in sidecar and sidecar["restartPolicy"] == "Always"
    assert sidecar["resources"] == {"limits": {"cpu": "2", "memory": "1Gi"}}
    assert patched["spec"]["initContainers"][0] is sidecar
    assert [c["name"] for c in patched["spec"]["containers"]] == ["model"]
    assert any("command, image" in w and "userOverrides: resources" in w
               for w in injection.warnings)
    # Once replaced, the pod is left alone.
    assert inject(patched, POLICY, "chat").patch == []


def test_an_injected_pod_copied_into_a_new_manifest_is_not_injected_twice() -> None:
    once = _applied(_pod())
    copied = copy.deepcopy(once)
    copied["metadata"] = {"name": "copy", "namespace": "ai", "labels": {"app": "chat"}}
    assert inject(copied, POLICY, "chat").patch == []


def test_a_pod_the_apiserver_added_to_after_injection_is_left_alone() -> None:
    """The apiserver re-invokes the injector after its own plugins ran (reinvocationPolicy
    IfNeeded): the service account token's mount and defaulted fields are not a reason to
    inject again."""
    pod = _applied(_pod())
    pod["spec"]["initContainers"][0]["volumeMounts"].append(
        {"name": "kube-api-access-x1", "mountPath": "/var/run/secrets/kubernetes.io/"
                                                   "serviceaccount", "readOnly": True})
    pod["spec"]["initContainers"][0]["terminationMessagePolicy"] = "File"
    pod["spec"]["volumes"][0]["configMap"]["defaultMode"] = 420
    assert inject(pod, POLICY, "chat").patch == []


def test_the_status_annotation_alone_does_not_turn_injection_off() -> None:
    pod = _pod()
    pod["metadata"]["annotations"] = {STATUS_ANNOTATION: '{"container":"hegui-sidecar"}'}
    assert len(_sidecars(_applied(pod))) == 1


def test_two_containers_named_like_the_sidecar_are_a_conflict() -> None:
    pod = _pod(initContainers=[{"name": SIDECAR_NAME, "image": "a:1"}])
    pod["spec"]["containers"].append({"name": SIDECAR_NAME, "image": "b:1"})
    with pytest.raises(InjectionConflict, match="2 containers named hegui-sidecar"):
        inject(pod, POLICY, "chat")


def test_existing_init_containers_and_volumes_are_kept_after_the_sidecar() -> None:
    pod = _applied(_pod(initContainers=[{"name": "fetch-weights", "image": "f:1"}],
                        volumes=[{"name": "weights", "emptyDir": {}}]))
    assert [c["name"] for c in pod["spec"]["initContainers"]] == [SIDECAR_NAME, CAPTURE_NAME,
                                                                  "fetch-weights"]
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["weights", "hegui-config",
                                                           "hegui-data", "hegui-keys"]


def test_the_gpu_container_is_the_model_even_when_it_is_not_first() -> None:
    pod = _pod()
    pod["spec"]["containers"].insert(0, {"name": "logger", "image": "l:1",
                                         "ports": [{"name": "metrics", "containerPort": 9100}]})
    patched = _applied(pod)
    assert patched["spec"]["containers"][0]["ports"][0]["name"] == "metrics"
    assert patched["spec"]["containers"][1]["ports"][0]["name"] == MODEL_PORT_NAME


def test_a_model_without_a_port_is_injected_with_a_warning() -> None:
    pod = _pod()
    del pod["spec"]["containers"][0]["ports"]
    result = inject(pod, POLICY, "chat")
    assert result.patch and "declares no serving port" in result.warnings[0]


@pytest.mark.parametrize(("spec", "says"), [
    ({"hostNetwork": True}, "hostNetwork"),
    ({"volumes": [{"name": "hegui-data", "emptyDir": {}}]}, "volume named hegui-data"),
])
def test_unsafe_pods_are_refused_with_the_conflict_named(spec: dict[str, Any],
                                                         says: str) -> None:
    with pytest.raises(InjectionConflict, match=says):
        inject(_pod(**spec), POLICY, "chat")


def test_port_clash_with_the_sidecar_is_named() -> None:
    pod = _pod()
    pod["spec"]["containers"][0]["ports"].append({"containerPort": 8443})
    with pytest.raises(InjectionConflict, match="port 8443"):
        inject(pod, POLICY, "chat")


def test_a_gpu_asked_for_only_by_an_init_container_still_injects_in_front_of_the_server() -> None:
    pod = _pod(initContainers=[{"name": "convert-weights", "image": "c:1",
                                "resources": {"limits": {"nvidia.com/gpu": "1"}}}])
    del pod["spec"]["containers"][0]["resources"]
    patched = _applied(pod)
    assert [c["name"] for c in patched["spec"]["initContainers"]] == [
        SIDECAR_NAME, CAPTURE_NAME, "convert-weights"]
    assert patched["spec"]["containers"][0]["ports"][0]["name"] == MODEL_PORT_NAME


def _policy(**sidecar: Any) -> CompliancePolicy:
    body = POLICY.to_dict()
    body["spec"]["sidecar"].update(sidecar)
    return CompliancePolicy.from_dict(body)


PORT_NAME_ONLY = _policy(capture="PortName")


def test_two_gpu_containers_put_the_sidecar_before_the_first_and_warn_about_the_second() -> None:
    pod = _pod()
    pod["spec"]["containers"].append({
        "name": "embedder", "image": "e:1", "ports": [{"name": "grpc", "containerPort": 9000}],
        "resources": {"limits": {"nvidia.com/gpu": "1"}}})
    injection = inject(pod, PORT_NAME_ONLY, "chat")
    patched = jsonpatch.apply_patch(copy.deepcopy(pod), injection.patch)
    assert patched["spec"]["containers"][0]["ports"][0]["name"] == MODEL_PORT_NAME
    assert patched["spec"]["containers"][1]["ports"][0]["name"] == "grpc"  # untouched
    [warning] = injection.warnings
    assert "embedder also uses a GPU" in warning and "port 8000" in warning
    # Captured, the second container's gRPC port reaches the sidecar, which refuses gRPC: said.
    [warning] = inject(pod, POLICY, "chat").warnings
    assert "embedder port 9000 (grpc) speaks gRPC/h2c" in warning and "refused" in warning


_names = st.sampled_from(["model", "hegui-sidecar", "hegui-capture", "logger", "hegui-model",
                          "http"])
_ports = st.lists(st.fixed_dictionaries(
    {"containerPort": st.sampled_from([8000, 8443, 9000])},
    optional={"name": st.sampled_from(["http", "hegui-model", "grpc"])}), max_size=2)
_containers = st.lists(st.fixed_dictionaries(
    {"name": _names, "image": st.just("x:1")},
    optional={"ports": _ports, "restartPolicy": st.just("Always"),
              "resources": st.just({"limits": {"nvidia.com/gpu": "1"}})}), max_size=3)
_volumes = st.lists(st.fixed_dictionaries(
    {"name": st.sampled_from(["hegui-config", "hegui-data", "weights"]),
     "emptyDir": st.just({})}), max_size=2)


@settings(max_examples=150, deadline=None)
@given(containers=_containers.filter(bool), init=_containers, volumes=_volumes,
       annotated=st.booleans())
def test_any_pod_gets_a_patch_that_applies_or_a_named_conflict(
        containers: list[dict[str, Any]], init: list[dict[str, Any]],
        volumes: list[dict[str, Any]], annotated: bool) -> None:
    """Never a malformed JSONPatch: whatever the pod, the patch applies cleanly and leaves one
    hegui sidecar in front, or the conflict is named."""
    spec: dict[str, Any] = {"containers": containers}
    if init:
        spec["initContainers"] = init
    if volumes:
        spec["volumes"] = volumes
    pod: dict[str, Any] = {"metadata": {"name": "p", "labels": {"app": "chat"}}, "spec": spec}
    if annotated:
        pod["metadata"]["annotations"] = {STATUS_ANNOTATION: "{}"}
    # As the apiserver sends it: a tree. The strategies hand the same `resources` object to
    # several containers, and a patch applied in place to one would change the others.
    pod = json.loads(json.dumps(pod))
    try:
        patch = inject(pod, POLICY, "chat").patch
    except InjectionConflict as conflict:
        assert str(conflict)
        return
    patched = jsonpatch.apply_patch(copy.deepcopy(pod), patch)
    assert len(_sidecars(patched)) == 1
    assert POLICY.spec.sidecar is not None
    assert patched["spec"]["initContainers"][0]["image"] == POLICY.spec.sidecar.image
    assert inject(patched, POLICY, "chat").patch == []  # and once is enough


def _service(name: str = "chat") -> dict[str, Any]:
    return {"apiVersion": "hegui.io/v1alpha1", "kind": "GenerativeService",
            "metadata": {"name": name, "namespace": "ai"},
            "spec": {"selector": {"matchLabels": {"app": "chat"}},
                     "filing": {"publicOpinion": False,
                                "algorithm": {"number": "网信算备110108823483901230011号"}}}}


def _index(policy_rules: list[dict[str, str]] | None = None,
           services: tuple[str, ...] = ("chat",)) -> Any:
    from hegui.rules.index import ComplianceIndex

    policy = POLICY.to_dict()
    policy["spec"]["rules"] = policy_rules or []
    return ComplianceIndex.from_objects([
        policy, *(_service(name) for name in services),
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ai"}}])


def _mutate(policy_rules: list[dict[str, str]], pod: dict[str, Any]) -> Any:
    from hegui.admission.mutate import make_mutator
    from hegui.admission.review import AdmissionRequest

    request = AdmissionRequest(uid="u", kind="Pod", group="", namespace="ai", name="p",
                               operation="CREATE", dry_run=False, obj=pod, old_obj=None,
                               user="system:serviceaccount:kube-system:replicaset-controller")
    return make_mutator(_index(policy_rules))(request)


def _validate(index: Any, pod: dict[str, Any], old: dict[str, Any] | None = None) -> Any:
    """The validating webhook's answer to the team creating `pod` (or updating `old` to it)."""
    from prometheus_client import CollectorRegistry

    from hegui.admission.review import AdmissionRequest
    from hegui.admission.validate import make_validator

    return make_validator(index, CollectorRegistry())(AdmissionRequest(
        uid="u", kind="Pod", group="", namespace="ai", name="p",
        operation="UPDATE" if old else "CREATE", dry_run=False, obj=pod, old_obj=old,
        user="dev@team-a.example.cn"))


def test_an_unsafe_pod_is_refused_when_injection_is_enforced_and_admitted_with_a_warning_else(
        ) -> None:
    pod = _pod(hostNetwork=True)
    refused = _mutate([], pod)
    assert not refused.allowed and "hostNetwork" in refused.message
    assert "[injection, Art.14]" in refused.message
    admitted = _mutate([{"rule": "injection", "mode": "Warn"}], pod)
    assert admitted.allowed and admitted.patch is None
    assert any("hostNetwork" in w for w in admitted.warnings)


def _ray_head(**labels: str) -> dict[str, Any]:
    """A head pod as KubeRay makes it from the sample RayService: CPU only, Serve on `serve`."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ai", "labels": labels},
            "spec": {"containers": [{
                "name": "ray-head", "image": "rayproject/ray-ml:2.33.0",
                "ports": [{"containerPort": 6379, "name": "gcs-server"},
                          {"containerPort": 8265, "name": "dashboard"},
                          {"containerPort": 10001, "name": "client"},
                          {"containerPort": 8000, "name": "serve"}]}]}}


def test_a_ray_head_a_service_selects_is_fronted_on_its_serve_port() -> None:
    """The head of a Ray cluster serving a model takes the requests (Ray Serve's proxy) and hands
    them to the GPU workers over Ray's transport: the sidecar fronts `serve`, not the GCS port
    listed first (Art.14)."""
    mutated = _mutate([], _ray_head(**{"app": "chat", "ray.io/node-type": "head"}))
    assert mutated.allowed and mutated.patch, mutated
    pod = jsonpatch.apply_patch(_ray_head(**{"app": "chat", "ray.io/node-type": "head"}),
                                mutated.patch)
    [sidecar] = [c for c in pod["spec"]["initContainers"] if c["name"] == SIDECAR_NAME]
    assert sidecar["ports"][0]["name"] == "serve"  # KubeRay's serve Service targets the name
    assert sidecar["args"][sidecar["args"].index("--upstream") + 1] == "http://127.0.0.1:8000"
    ports = {p["containerPort"]: p["name"] for p in pod["spec"]["containers"][0]["ports"]}
    assert ports == {6379: "gcs-server", 8265: "dashboard", 10001: "client",
                     8000: MODEL_PORT_NAME}
    # GCS, dashboard and client are captured unless declared open, and the team is told so.
    assert sum("is captured" in w for w in mutated.warnings) == 3, mutated.warnings
    # A head whose template relabels it `worker` is still a node of its RayCluster.
    relabelled = _ray_head(**{"app": "chat", "ray.io/node-type": "worker"})
    relabelled["metadata"]["ownerReferences"] = [
        {"apiVersion": "ray.io/v1", "kind": "RayCluster", "name": "llama", "uid": "u",
         "controller": True}]
    assert _mutate([], relabelled).patch
    # A head no service selects, and a plain CPU pod a service selects, are left alone.
    assert _mutate([], _ray_head(**{"ray.io/node-type": "head"})).patch is None
    assert _mutate([], _ray_head(app="chat")).patch is None


def test_only_fronted_pods_carry_the_label_that_makes_them_peers() -> None:
    """A service's NetworkPolicy admits its ports between pods (PodToPod) only from pods with
    the injector's label; a CPU "proxy" the team labels into the service is no peer, and one
    that claims the label is fronted too, or refused when nothing fronts it (Art.14)."""
    assert _applied(_pod())["metadata"]["labels"][FRONTED_LABEL] == "true"
    proxy = _pod()
    del proxy["spec"]["containers"][0]["resources"]
    assert _mutate([], proxy).patch is None  # a CPU pod of the service: none of hegui's
    claiming = copy.deepcopy(proxy)
    claiming["metadata"]["labels"][FRONTED_LABEL] = "true"
    mutated = _mutate([], claiming)
    assert mutated.patch, mutated  # it asked to be a peer: it is fronted
    fronted = jsonpatch.apply_patch(copy.deepcopy(claiming), mutated.patch)
    assert SIDECAR_NAME in [c["name"] for c in fronted["spec"]["initContainers"]]

    index = _index()
    refused = _validate(index, claiming, old=proxy)  # the label added to a running pod
    assert not refused.allowed and FRONTED_LABEL in refused.message
    assert "[injection, Art.14]" in refused.message
    assert _validate(index, fronted).allowed and _validate(index, proxy).allowed
    # Labelled already and fronted: its later updates (a controller's) are not judged again.
    touched = copy.deepcopy(fronted)
    touched["metadata"]["annotations"]["team"] = "x"
    assert _validate(index, touched, old=fronted).allowed


def _look_alike_peer() -> dict[str, Any]:
    """A CPU pod the team labels fronted, carrying its own container named like hegui's
    sidecar (restartPolicy Always, the name, even hegui's image) that forwards around it."""
    pod = _pod()
    del pod["spec"]["containers"][0]["resources"]
    pod["metadata"]["labels"][FRONTED_LABEL] = "true"
    assert POLICY.spec.sidecar is not None
    pod["spec"]["initContainers"] = [{
        "name": SIDECAR_NAME, "image": POLICY.spec.sidecar.image, "restartPolicy": "Always",
        "command": ["socat", "TCP-LISTEN:8443,fork", "TCP:127.0.0.1:8000"]}]
    return pod


def test_a_look_alike_sidecar_does_not_make_a_peer_where_nothing_injects() -> None:
    """Where the injector leaves a pod alone, its look-alike sidecar stays: the label must then
    be refused, or the pod is a peer on the service's ports between pods and reaches the model
    around the sidecar (Art.14). Two services selecting the pod is one such place."""
    pod = _look_alike_peer()
    two = _index(services=("chat", "chat-b"))
    assert _mutate([], pod).patch  # one service: the injector replaces the look-alike ...
    refused = _validate(two, pod)  # ... two: nothing injects, and the label is refused
    assert not refused.allowed, refused
    assert "no single GenerativeService selects it" in refused.message
    assert f"metadata.labels[{FRONTED_LABEL}]" in refused.message
    # One service, but the look-alike as created (say the mutating webhook was skipped).
    assert not _validate(_index(), pod).allowed
    # Outside the policy's workload scope the injector does not look either.
    policy = POLICY.to_dict()
    policy["spec"]["workloads"] = {"exclude": [{"selector": {"matchLabels": {"app": "chat"}}}]}
    from hegui.rules.index import ComplianceIndex
    scoped = ComplianceIndex.from_objects([
        policy, _service(), {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ai"}}])
    assert not _validate(scoped, pod).allowed


def test_a_pod_the_injector_missed_cannot_bring_its_own_sidecar() -> None:
    """The injector fails open (its webhook may time out) and the operator tolerates older
    sidecar images on running pods: a model pod created with the team's own hegui-sidecar (its
    image, hegui's everything else) would then count as injected. Refused when it is created,
    naming the field (Art.14); the injector's own output passes."""
    injected = _applied(_pod())
    own = copy.deepcopy(injected)
    del own["metadata"]["labels"][FRONTED_LABEL]
    for container in own["spec"]["initContainers"]:
        container["image"] = "team.example.cn/pass-through:1"
    refused = _validate(_index(), own)
    assert not refused.allowed, refused
    assert "spec.initContainers" in refused.message and "[injection, Art.14]" in refused.message
    assert "[injection, Art.14]" not in _validate(_index(), injected).message
    # A CPU pod no service fronts may name a container as it likes.
    bystander = copy.deepcopy(own)
    bystander["metadata"]["labels"] = {"app": "other"}
    del bystander["spec"]["containers"][0]["resources"]
    assert _validate(_index(), bystander).allowed


def test_hegui_s_containers_cannot_be_swapped_in_a_running_pod() -> None:
    """`kubectl set image pod/<p> hegui-sidecar=<the team's>` changes a running pod's sidecar
    in place (the kubelet restarts it with the new image) while the pod still looks injected:
    refused, naming the field (Art.14). Anything else the apiserver lets change passes."""
    injected = _applied(_pod())
    index = _index()
    for name in (SIDECAR_NAME, CAPTURE_NAME):
        swapped = copy.deepcopy(injected)
        [container] = [c for c in swapped["spec"]["initContainers"] if c["name"] == name]
        container["image"] = "team.example.cn/pass-through:1"
        refused = _validate(index, swapped, old=injected)
        assert not refused.allowed, name
        assert f"changes {name}'s image" in refused.message
        assert "[injection, Art.14]" in refused.message
    model = copy.deepcopy(injected)
    model["spec"]["containers"][0]["image"] = "llm:2"
    # (This sample service lacks labeling and the rest, which the rule engine reports.)
    assert "[injection, Art.14]" not in _validate(index, model, old=injected).message


def test_the_secrets_the_posture_names_are_mounted_for_the_sidecar_alone() -> None:
    """Pseudonymised records need their key (Art.11) and an enabled watermark its key (Art.12):
    both come from the Secrets the GenerativeService names, projected read-only for the sidecar;
    without them the injected sidecar could not start."""
    from hegui.admission.injection import carries_sidecar
    from hegui.api.generativeservice import GenerativeService

    posture = GenerativeService.from_dict({
        "apiVersion": "hegui.io/v1alpha1", "kind": "GenerativeService",
        "metadata": {"name": "chat", "namespace": "ai"},
        "spec": {"selector": {"matchLabels": {"app": "chat"}},
                 "filing": {"publicOpinion": False,
                            "algorithm": {"number": "网信算备110108823483901230011号"}},
                 "labeling": {"modalities": ["image"],
                              "implicit": {"contentProducer": "Example AI Co."},
                              "watermark": {"enabled": True,
                                            "keySecretRef": {"name": "wm", "key": "k"}}},
                 "dataProtection": {"retentionDays": 180,
                                    "pseudonymisationKeyRef": {"name": "pseudo", "key": "hmac"},
                                    "userRequests": {"channel": "https://example.cn/privacy",
                                                     "deadlineDays": 15}}}})
    pod = _pod()
    patched = jsonpatch.apply_patch(copy.deepcopy(pod), inject(pod, POLICY, "chat",
                                                               posture).patch)
    sidecar = patched["spec"]["initContainers"][0]
    args = sidecar["args"]
    assert args[args.index("--key-file") + 1] == "/etc/hegui-keys/pseudonymisation.key"
    assert args[args.index("--watermark-key-file") + 1] == "/etc/hegui-keys/watermark.key"
    assert {"name": "hegui-keys", "mountPath": "/etc/hegui-keys",
            "readOnly": True} in sidecar["volumeMounts"]
    [keys] = [v for v in patched["spec"]["volumes"] if v["name"] == "hegui-keys"]
    # Root-owned without a pod fsGroup: readable by the sidecar's non-root user, and by no
    # other container, since only the sidecar may mount the volume.
    assert keys["projected"]["defaultMode"] == 0o444
    assert {s["secret"]["name"] for s in keys["projected"]["sources"]} == {
        "pseudo", "wm", "hegui-evidence-chat"}
    # The model container mounts none of it.
    assert "volumeMounts" not in patched["spec"]["containers"][0]
    assert inject(patched, POLICY, "chat", posture).patch == []
    assert POLICY.spec.sidecar is not None
    assert carries_sidecar(patched, POLICY.spec.sidecar, "chat", posture)


def test_the_evidence_stores_credentials_reach_the_sidecar_once_the_operator_writes_them() -> None:
    """The operator's Secret hegui-evidence-<service> (Art.11) is projected, optional, into
    every injected sidecar where hegui.evidence reads it: a store declared after the pod
    started needs no re-injection, and a pod whose store is not declared starts all the same."""
    from hegui.evidence import config as evidence_config

    pod = _applied(_pod())
    sidecar = pod["spec"]["initContainers"][0]
    args = sidecar["args"]
    directory = args[args.index("--evidence-credentials-dir") + 1]
    [keys] = [v for v in pod["spec"]["volumes"] if v["name"] == "hegui-keys"]
    [source] = [s["secret"] for s in keys["projected"]["sources"]]
    assert source["name"] == evidence_config.secret_name("chat") and source["optional"]
    mount = next(m for m in sidecar["volumeMounts"] if m["name"] == "hegui-keys")
    projected = {f"{mount['mountPath']}/{item['path']}" for item in source["items"]}
    assert projected == {f"{directory}/{name}" for name in (
        evidence_config.ACCESS_KEY_FILE, evidence_config.SECRET_KEY_FILE,
        evidence_config.KEY_FILE, evidence_config.CONFIG_FILE)}


# --- a look-alike sidecar does not switch injection off (Art.14) ---------------------------------

def _look_alike(change: Any) -> dict[str, Any]:
    """A pod that copies an injected pod's sidecar (image, command line, everything) and then
    changes one thing about it."""
    pod = _applied(_pod())
    change(pod["spec"]["initContainers"][0])
    return pod


def _extra_mount(sidecar: dict[str, Any]) -> None:
    sidecar["volumeMounts"].append({"name": "team-posture", "mountPath":
                                    "/etc/hegui/service.yaml", "subPath": "service.yaml"})


@pytest.mark.parametrize("change", [
    _extra_mount,
    lambda c: c["env"].append({"name": "HEGUI_DEBUG_BYPASS", "value": "1"}),
    lambda c: c.update(lifecycle={"postStart": {"exec": {"command": ["rm", "-rf", "/x"]}}}),
    lambda c: c.update(livenessProbe={"exec": {"command": ["true"]}}),
    lambda c: c["ports"].append({"name": "extra", "containerPort": 9999}),
    lambda c: c.update(command=["/bin/sh", "-c", "exec sleep inf"]),
    lambda c: c["securityContext"].update(runAsUser=0, runAsNonRoot=False),
    lambda c: c.update(restartPolicy="OnFailure"),
], ids=["mount-over-service-yaml", "env", "lifecycle", "liveness-probe", "port", "command",
        "root", "restart-policy"])
def test_a_look_alike_sidecar_is_replaced_by_hegui_s(change: Any) -> None:
    pod = _look_alike(change)
    assert POLICY.spec.sidecar is not None
    assert not carries_sidecar(pod, POLICY.spec.sidecar, "chat")
    injection = inject(pod, POLICY, "chat")
    assert injection.patch, "a look-alike must not count as injected"
    assert any("is not hegui's" in w for w in injection.warnings)
    patched = jsonpatch.apply_patch(copy.deepcopy(pod), injection.patch)
    [sidecar] = _sidecars(patched)
    assert sidecar == _applied(_pod())["spec"]["initContainers"][0]
    assert carries_sidecar(patched, POLICY.spec.sidecar, "chat")
    assert inject(patched, POLICY, "chat").patch == []


def test_a_look_alike_whose_model_port_keeps_its_name_is_renamed() -> None:
    pod = _applied(_pod())
    pod["spec"]["containers"][0]["ports"][0]["name"] = "http"  # Services reach the model
    injection = inject(pod, POLICY, "chat")
    patched = jsonpatch.apply_patch(copy.deepcopy(pod), injection.patch)
    assert patched["spec"]["containers"][0]["ports"][0]["name"] == MODEL_PORT_NAME
    assert _sidecars(patched)[0]["ports"][0]["name"] == "http"


def test_what_the_apiserver_defaults_on_an_injected_pod_still_counts_as_injected() -> None:
    pod = _applied(_pod())
    sidecar = pod["spec"]["initContainers"][0]
    sidecar.update(terminationMessagePath="/dev/termination-log",
                   terminationMessagePolicy="File", imagePullPolicy="IfNotPresent")
    for probe in ("startupProbe", "readinessProbe"):
        sidecar[probe].update(timeoutSeconds=1, successThreshold=1)
        sidecar[probe].setdefault("failureThreshold", 3)
        sidecar[probe]["httpGet"]["scheme"] = "HTTP"
    for entry in sidecar["env"]:
        if "valueFrom" in entry:
            entry["valueFrom"]["fieldRef"]["apiVersion"] = "v1"
    sidecar["volumeMounts"].append({"name": "kube-api-access-abcde", "readOnly": True,
                                    "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"})
    assert POLICY.spec.sidecar is not None
    assert carries_sidecar(pod, POLICY.spec.sidecar, "chat")
    assert inject(pod, POLICY, "chat").patch == []
    # A different image is an upgrade to roll out for the operator, a re-injection at admission.
    sidecar["image"] = "registry.example.cn/hegui/sidecar:0.0.9"
    assert carries_sidecar(pod, POLICY.spec.sidecar, "chat")
    assert inject(pod, POLICY, "chat").patch


@pytest.mark.parametrize("group", ["containers", "initContainers"])
@pytest.mark.parametrize("volume", ["hegui-data", "hegui-config"])
def test_no_other_container_may_mount_hegui_s_volumes(group: str, volume: str) -> None:
    """The model reading the records' key or rewriting strikes and records: refused (not
    stripped, which would leave a container running without a mount it expects), on injected
    pods too; the operator does not count such a pod as injected."""
    pod = _applied(_pod())
    target = pod["spec"]["containers"][0] if group == "containers" else \
        pod["spec"]["initContainers"][0]
    if group == "initContainers":
        pod["spec"]["initContainers"].append({"name": "copy", "image": "c:1"})
        target = pod["spec"]["initContainers"][1]
    target.setdefault("volumeMounts", []).append({"name": volume, "mountPath": "/mnt"})
    with pytest.raises(InjectionConflict, match=f"mounts {volume} at /mnt"):
        inject(pod, POLICY, "chat")
    assert POLICY.spec.sidecar is not None
    assert not carries_sidecar(pod, POLICY.spec.sidecar, "chat")


@pytest.mark.parametrize("spec", [{"hostNetwork": True}, {"hostPort": True}])
def test_host_checks_run_on_pods_that_already_carry_the_sidecar(spec: dict[str, Any]) -> None:
    pod = _applied(_pod())
    if spec.get("hostNetwork"):
        pod["spec"]["hostNetwork"] = True
    else:
        pod["spec"]["containers"][0]["ports"][0]["hostPort"] = 8000
    with pytest.raises(InjectionConflict, match=r"hostNetwork|hostPort"):
        inject(pod, POLICY, "chat")


def test_env_overrides_cannot_change_what_code_the_sidecar_runs() -> None:
    policy = POLICY.to_dict()
    policy["spec"]["sidecar"]["userOverrides"] = ["resources", "env"]
    allowing = CompliancePolicy.from_dict(policy)
    pod = _pod()
    pod["spec"]["initContainers"] = [{"name": SIDECAR_NAME, "image": "x:1", "env": [
        {"name": "PYTHONPATH", "value": "/tmp/evil"}, {"name": "LOG_LEVEL", "value": "debug"},
        {"name": "LD_PRELOAD", "value": "/tmp/x.so"}]}]
    injection = inject(pod, allowing, "chat")
    patched = jsonpatch.apply_patch(copy.deepcopy(pod), injection.patch)
    names = [e["name"] for e in _sidecars(patched)[0]["env"]]
    assert "LOG_LEVEL" in names and "PYTHONPATH" not in names and "LD_PRELOAD" not in names
    assert any("env (LD_PRELOAD, PYTHONPATH)" in w for w in injection.warnings)
    assert inject(patched, allowing, "chat").patch == []


# --- traffic capture: a Service by number reaches the sidecar too (Art.14, issue 16) -------------

def _posture(open_ports: list[dict[str, Any]]) -> Any:
    from hegui.api.generativeservice import GenerativeService

    return GenerativeService.from_dict({
        "apiVersion": "hegui.io/v1alpha1", "kind": "GenerativeService",
        "metadata": {"name": "chat", "namespace": "ai"},
        "spec": {"selector": {"matchLabels": {"app": "chat"}},
                 "filing": {"publicOpinion": False,
                            "algorithm": {"number": "网信算备110108823483901230011号"}},
                 "traffic": {"openPorts": open_ports}}})


TRITON_OPEN = [{"port": 8002, "purpose": "Metrics", "reason": "Triton's metrics"},
               {"port": 29500, "endPort": 29509, "purpose": "PodToPod", "reason": "NCCL"}]


def _capture(pod: dict[str, Any]) -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in pod["spec"]["initContainers"]
                                   if c["name"] == CAPTURE_NAME]
    assert len(found) == 1
    return found[0]


def test_the_capture_step_runs_after_the_sidecar_is_up_and_before_anything_else() -> None:
    posture = _posture(TRITON_OPEN)
    pod = _pod(initContainers=[{"name": "fetch-weights", "image": "f:1"}])
    patched = jsonpatch.apply_patch(copy.deepcopy(pod),
                                    inject(pod, POLICY, "chat", posture).patch)
    names = [c["name"] for c in patched["spec"]["initContainers"]]
    assert names == [SIDECAR_NAME, CAPTURE_NAME, "fetch-weights"]
    capture = _capture(patched)
    # A plain init container (runs to completion), the sidecar's image and entrypoint.
    assert "restartPolicy" not in capture and "command" not in capture
    assert capture["image"] == POLICY.spec.sidecar.image  # type: ignore[union-attr]
    # Everything inbound goes to the sidecar's port, except what the posture declares open
    # between its pods (the Metrics port is captured too: the sidecar serves only the model's
    # GET /metrics there); so does loopback to the model's port from anyone but the sidecar
    # (kubectl port-forward).
    assert capture["args"] == ["capture", "--to-port", "8443",
                               "--open", "29500:29509", "--model-port", "8000",
                               "--sidecar-uid", "65532"]
    # Root for iptables, with exactly the two capabilities it needs and nothing else.
    security = capture["securityContext"]
    assert security["runAsUser"] == 0 and security["runAsNonRoot"] is False
    assert security["capabilities"] == {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]}
    assert not security["allowPrivilegeEscalation"] and security["readOnlyRootFilesystem"]
    assert capture["resources"]["limits"] and "volumeMounts" not in capture
    assert inject(patched, POLICY, "chat", posture).patch == []
    assert POLICY.spec.sidecar is not None
    assert carries_sidecar(patched, POLICY.spec.sidecar, "chat", posture)
    # Another posture (a port opened since) is not what this pod was injected with.
    assert not carries_sidecar(patched, POLICY.spec.sidecar, "chat", _posture(TRITON_OPEN[:1]))


def test_port_name_capture_renders_no_privileged_step() -> None:
    """For namespaces whose Pod Security forbids NET_ADMIN: the port-name takeover alone."""
    patched = jsonpatch.apply_patch(_pod(), inject(_pod(), PORT_NAME_ONLY, "chat").patch)
    assert [c["name"] for c in patched["spec"]["initContainers"]] == [SIDECAR_NAME]
    assert patched["spec"]["containers"][0]["ports"][0]["name"] == MODEL_PORT_NAME
    assert inject(patched, PORT_NAME_ONLY, "chat").patch == []
    # The same pod under a capturing policy lacks its capture step: injected again.
    assert POLICY.spec.sidecar is not None
    assert not carries_sidecar(patched, POLICY.spec.sidecar, "chat")


@pytest.mark.parametrize("change", [
    lambda c: c.update(args=["capture", "--to-port", "8443", "--open", "8000"]),
    lambda c: c.update(command=["/bin/true"]),
    lambda c: c.update(restartPolicy="Always"),
    lambda c: c["securityContext"]["capabilities"]["add"].append("SYS_ADMIN"),
], ids=["opens-the-model-port", "does-nothing", "native-sidecar", "more-capabilities"])
def test_a_look_alike_capture_step_is_replaced(change: Any) -> None:
    pod = _applied(_pod())
    change(_capture(pod))
    assert POLICY.spec.sidecar is not None
    assert not carries_sidecar(pod, POLICY.spec.sidecar, "chat")
    injection = inject(pod, POLICY, "chat")
    assert any(f"{CAPTURE_NAME} is not hegui's" in w for w in injection.warnings)
    patched = jsonpatch.apply_patch(copy.deepcopy(pod), injection.patch)
    assert _capture(patched) == _capture(_applied(_pod()))
    assert [c["name"] for c in patched["spec"]["initContainers"]] == [SIDECAR_NAME, CAPTURE_NAME]
    assert carries_sidecar(patched, POLICY.spec.sidecar, "chat")


def test_a_pod_that_drops_the_capture_step_is_injected_again() -> None:
    pod = _applied(_pod())
    pod["spec"]["initContainers"] = [c for c in pod["spec"]["initContainers"]
                                     if c["name"] != CAPTURE_NAME]
    injection = inject(pod, POLICY, "chat")
    assert any(f"no init container {CAPTURE_NAME}" in w for w in injection.warnings)
    patched = jsonpatch.apply_patch(copy.deepcopy(pod), injection.patch)
    assert [c["name"] for c in patched["spec"]["initContainers"]] == [SIDECAR_NAME, CAPTURE_NAME]


@pytest.mark.parametrize(("opened", "says"), [
    ({"port": 8000, "purpose": "Metrics", "reason": "vLLM's /metrics"}, "model's serving port"),
    ({"port": 8000, "endPort": 9000, "purpose": "PodToPod", "reason": "Ray"}, "8443"),
])
def test_the_serving_and_sidecar_ports_cannot_be_declared_open(opened: dict[str, Any],
                                                               says: str) -> None:
    with pytest.raises(InjectionConflict, match=f"spec.traffic.openPorts.*{says}"):
        inject(_pod(), POLICY, "chat", _posture([opened]))
    with pytest.raises(InjectionConflict, match="openPorts"):  # the NetworkPolicy admits them
        inject(_pod(), PORT_NAME_ONLY, "chat", _posture([opened]))


def test_other_ports_are_captured_unless_declared_open_and_grpc_is_refused_clearly() -> None:
    """Triton: HTTP 8000 (fronted), gRPC 8001 (the sidecar speaks HTTP/1.1: refused, said so),
    metrics 8002 (declared open: scraped directly, no warning)."""
    pod = _pod()
    pod["spec"]["containers"][0]["ports"] = [
        {"name": "http", "containerPort": 8000}, {"name": "grpc", "containerPort": 8001},
        {"name": "metrics", "containerPort": 8002}]
    warnings = inject(pod, POLICY, "chat", _posture(TRITON_OPEN)).warnings
    [grpc] = warnings
    assert "port 8001 (grpc) speaks gRPC/h2c" in grpc and "refused" in grpc
    undeclared = inject(pod, POLICY, "chat").warnings
    assert any("port 8002 (metrics) is captured" in w and "openPorts" in w for w in undeclared)


def test_a_model_that_declares_no_port_is_forwarded_to_by_its_port_variable() -> None:
    """TGI serves on $PORT and KServe runtimes on --http_port without declaring a port: with
    capture, every inbound connection reaches the sidecar, which forwards there."""
    for model in ({"env": [{"name": "PORT", "value": "80"}]},
                  {"args": ["--model", "m", "--http_port=80"]}):
        pod = _pod()
        del pod["spec"]["containers"][0]["ports"]
        pod["spec"]["containers"][0].update(model)
        injection = inject(pod, POLICY, "chat")
        patched = jsonpatch.apply_patch(copy.deepcopy(pod), injection.patch)
        args = patched["spec"]["initContainers"][0]["args"]
        assert args[args.index("--upstream") + 1] == "http://127.0.0.1:80"
        assert injection.warnings == []
        assert inject(patched, POLICY, "chat").patch == []


@pytest.mark.parametrize("volume", [
    {"name": "hegui-config", "configMap": {"name": "hegui-sidecar-chat", "optional": True,
                                           "items": [{"key": "team.yaml",
                                                      "path": "service.yaml"}]}},
    {"name": "hegui-config", "configMap": {"name": "hegui-sidecar-other", "optional": True}},
    {"name": "hegui-config", "configMap": {"name": "hegui-sidecar-chat", "optional": True},
     "secret": {"secretName": "x"}},
], ids=["items-remap", "another-service", "two-sources"])
def test_the_configuration_volume_is_the_service_s_own_config_map_and_nothing_else(
        volume: dict[str, Any]) -> None:
    pod = _applied(_pod())
    pod["spec"]["volumes"] = [volume if v["name"] == "hegui-config" else v
                              for v in pod["spec"]["volumes"]]
    assert POLICY.spec.sidecar is not None
    assert not carries_sidecar(pod, POLICY.spec.sidecar, "chat")
    with pytest.raises(InjectionConflict, match="ConfigMap hegui-sidecar-chat and nothing else"):
        inject(pod, POLICY, "chat")


# --- the patch is a generic diff of the pod and the rendered pod (RFC 6902) -----------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3)
    | st.floats(allow_nan=False, allow_infinity=False).map(lambda f: f + 0.0) | st.sampled_from(
        ["", "a", "b", "a/b", "~0", "name"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["a", "b", "name", "x/y", "~"]), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(original=_json, desired=_json)
def test_the_diff_turns_any_document_into_any_other(original: Any, desired: Any) -> None:
    """Whatever the two documents, the patch applies (jsonpatch, as the apiserver would) and
    gives the desired one, with add, remove and replace only; equal documents give none."""
    from hegui.admission.injection import json_patch

    patch = json_patch(original, desired)
    assert {op["op"] for op in patch} <= {"add", "remove", "replace"}
    patched = jsonpatch.apply_patch(json.loads(json.dumps(original)), patch)
    assert json.dumps(patched, sort_keys=True) == json.dumps(desired, sort_keys=True)
    assert json_patch(desired, json.loads(json.dumps(desired))) == []


def test_the_diff_says_what_changed_where() -> None:
    """Inserted before others: one add at its index; a field changed inside a list element:
    patched there, not the element replaced; an element appended: added at the end."""
    from hegui.admission.injection import json_patch

    pod = {"spec": {"initContainers": [{"name": "fetch"}],
                    "containers": [{"name": "model", "ports": [{"containerPort": 8000}]}],
                    "volumes": [{"name": "w"}]}}
    desired = {"spec": {"initContainers": [{"name": "s"}, {"name": "fetch"}],
                        "containers": [{"name": "model", "ports": [
                            {"containerPort": 8000, "name": MODEL_PORT_NAME}]}],
                        "volumes": [{"name": "w"}, {"name": "v"}]}}
    assert json_patch(pod, desired) == [
        {"op": "add", "path": "/spec/initContainers/0", "value": {"name": "s"}},
        {"op": "add", "path": "/spec/containers/0/ports/0/name", "value": MODEL_PORT_NAME},
        {"op": "add", "path": "/spec/volumes/-", "value": {"name": "v"}}]
    assert json_patch({"a": {"x/y": 1}}, {"a": {"x/y": True}}) == [
        {"op": "replace", "path": "/a/x~1y", "value": True}]  # JSON's true is not 1


_HOSTILE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(
        ["metadata", "labels", "spec", "initContainers", "containers", "volumes", "name",
         "image", FRONTED_LABEL, "app", "resources", "limits", "nvidia.com/gpu"]), inner,
        max_size=4),
    max_leaves=16)


def test_a_hostile_pod_gets_an_answer_not_an_exception() -> None:
    """A review sent straight to the webhook (not through the apiserver, which would have
    refused the shape) claiming hegui's label over an injected pod's fields: an answer."""
    from prometheus_client import CollectorRegistry

    from hegui.admission.review import AdmissionRequest
    from hegui.admission.validate import make_validator

    validate, injected = make_validator(_index(), CollectorRegistry()), _applied(_pod())

    @settings(max_examples=150, deadline=None)
    @given(_HOSTILE, _HOSTILE)
    def review(spec: Any, old: Any) -> None:
        answer = validate(AdmissionRequest(
            uid="u", kind="Pod", group="", namespace="ai", name="p", operation="UPDATE",
            dry_run=False, obj={**injected, "spec": spec},
            old_obj=old if isinstance(old, dict) else None, user="dev@team-a.example.cn"))
        assert isinstance(answer.allowed, bool)

    review()
