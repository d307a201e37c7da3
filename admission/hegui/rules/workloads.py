"""What a workload is, as far as the rules care: its pod templates, and whether it runs a
generative model.

Every workload kind hegui admits is reduced to the pods it will run: the built-in controllers
(Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, Pod) and the serving custom
resources in `SERVING_KINDS` (KServe, NVIDIA NIM, LeaderWorkerSet, DisaggregatedSet, KubeRay,
SGLang's RoleBasedGroup), each with the paths where its pod templates live. A
CompliancePolicy can add kinds (`spec.detection.workloadKinds`) and signals, never remove any.

A pod runs a generative model when it holds an accelerator in any of the ways a cluster hands one
out (`SIGNAL_SETS`, one per vendor and per virtualisation layer, each naming the project that
publishes the names): an extended resource, a DRA claim whose device class or driver is an
accelerator's, a runtime class that exposes the GPUs, an env variable the device runtime reads
(NVIDIA_VISIBLE_DEVICES=all), a privileged container on a GPU node, or a pod pinned to GPU nodes
and tolerating their taint; or when a team opts in with a label. Each piece of evidence names the
field, what it holds and which signal set it matched, so a finding says why.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

#: Label a team sets on a pod (template) to say "this is a generative model" without a GPU.
OPT_IN_LABEL = "hegui.io/generative"
#: Values of a *_VISIBLE_DEVICES variable that grant no device (the NVIDIA container toolkit's
#: "void" and "none"; an empty value).
NO_DEVICE_VALUES = frozenset({"", "void", "none"})


@dataclass(frozen=True)
class SignalSet:
    """The names one accelerator stack publishes, and the project that publishes them."""

    name: str
    source: str
    resources: frozenset[str] = frozenset()
    #: Extended resource name prefixes (a resource *starting with* one counts).
    resource_prefixes: frozenset[str] = frozenset()
    runtime_classes: frozenset[str] = frozenset()
    #: Substrings of a runtime class name that say its handler exposes the GPUs.
    runtime_class_markers: frozenset[str] = frozenset()
    #: DRA device class names and DRA driver names (matched against a claim's classes and the
    #: drivers those classes select).
    device_classes: frozenset[str] = frozenset()
    #: Node label key prefixes that mark accelerator nodes (nodeSelector, node affinity).
    node_label_prefixes: frozenset[str] = frozenset()
    #: Env variables the device runtime reads to hand devices to a container.
    visible_devices_env: frozenset[str] = frozenset()
    labels: frozenset[str] = frozenset()


def _f(*names: str) -> frozenset[str]:
    return frozenset(names)


#: The built-in signal sets. Sources are the projects that publish the names (device plugins,
#: DRA drivers, operators); the virtualised names are HAMi's (Project-HAMi/HAMi, docs/*-support)
#: and Volcano's (volcano-sh/devices).
SIGNAL_SETS: tuple[SignalSet, ...] = (
    SignalSet(
        "NVIDIA",
        "NVIDIA/k8s-device-plugin (nvidia.com/gpu, nvidia.com/gpu.shared, nvidia.com/mig-*), "
        "NVIDIA/gpu-operator (runtime classes nvidia, nvidia-cdi, nvidia-legacy; node labels "
        "nvidia.com/gpu.*), NVIDIA/k8s-dra-driver-gpu (gpu.nvidia.com, mig.nvidia.com, "
        "compute-domain.nvidia.com), HAMi (nvidia.com/gpumem, gpucores, gpumem-percentage), "
        "NVIDIA/nvidia-container-toolkit (NVIDIA_VISIBLE_DEVICES), NFD (pci-10de)",
        resources=_f("nvidia.com/gpu", "nvidia.com/gpu.shared"),
        resource_prefixes=_f("nvidia.com/gpu", "nvidia.com/mig-"),
        runtime_classes=_f("nvidia", "nvidia-cdi", "nvidia-legacy"),
        runtime_class_markers=_f("nvidia"),
        device_classes=_f("gpu.nvidia.com", "mig.nvidia.com", "compute-domain.nvidia.com"),
        node_label_prefixes=_f("nvidia.com/gpu", "nvidia.com/mig",
                               "feature.node.kubernetes.io/pci-10de"),
        visible_devices_env=_f("NVIDIA_VISIBLE_DEVICES")),
    SignalSet(
        "AMD", "ROCm/k8s-device-plugin (amd.com/gpu), ROCm/gpu-operator (partitioned names), "
        "ROCm/k8s-gpu-dra-driver (gpu.amd.com), NFD (pci-1002)",
        resource_prefixes=_f("amd.com/"), device_classes=_f("gpu.amd.com"),
        node_label_prefixes=_f("amd.com/gpu", "beta.amd.com/gpu",
                               "feature.node.kubernetes.io/pci-1002")),
    SignalSet(
        "Intel", "HabanaAI/habanalabs-k8s-device-plugin (habana.ai/gaudi), "
        "intel/intel-device-plugins-for-kubernetes (gpu.intel.com/*), "
        "intel/intel-resource-drivers-for-kubernetes (gpu.intel.com, gaudi.intel.com), "
        "habana-container-runtime (HABANA_VISIBLE_DEVICES)",
        resource_prefixes=_f("habana.ai/", "gpu.intel.com/"),
        device_classes=_f("gpu.intel.com", "gaudi.intel.com"),
        node_label_prefixes=_f("habana.ai/", "gpu.intel.com",
                               "intel.feature.node.kubernetes.io/gpu"),
        visible_devices_env=_f("HABANA_VISIBLE_DEVICES")),
    SignalSet(
        "Huawei Ascend", "Ascend/ascend-device-plugin (huawei.com/Ascend910, Ascend910B, "
        "Ascend310P and their virtual -Nc slices), HAMi (huawei.com/Ascend910B-memory, "
        "Ascend310P-memory), Ascend/ascend-docker-runtime (ASCEND_VISIBLE_DEVICES; node label "
        "accelerator=huawei-Ascend910)",
        resource_prefixes=_f("huawei.com/Ascend", "huawei.com/npu"),
        node_label_prefixes=_f("accelerator", "huawei.com/"),
        visible_devices_env=_f("ASCEND_VISIBLE_DEVICES")),
    SignalSet("Cambricon MLU", "Cambricon/cambricon-k8s-device-plugin (cambricon.com/mlu, "
              "mlu.smlu.*), HAMi (cambricon.com/vmlu)",
              resource_prefixes=_f("cambricon.com/"), node_label_prefixes=_f("cambricon.com/")),
    SignalSet("Hygon DCU", "HAMi dcu-vgpu-device-plugin (hygon.com/dcunum, dcumem, dcucores)",
              resource_prefixes=_f("hygon.com/"), node_label_prefixes=_f("hygon.com/")),
    SignalSet("Kunlunxin XPU", "Kunlunxin xpu device plugin (kunlunxin.com/xpu), HAMi "
              "(kunlunxin.com/vxpu)",
              resource_prefixes=_f("kunlunxin.com/"), node_label_prefixes=_f("kunlunxin.com/")),
    SignalSet("MetaX", "MetaX gpu-device-plugin (metax-tech.com/gpu), HAMi (metax-tech.com/sgpu, "
              "vcore, vmemory)",
              resource_prefixes=_f("metax-tech.com/"), node_label_prefixes=_f("metax-tech.com/")),
    SignalSet("Moore Threads", "MooreThreads mthreads-gpu device plugin (mthreads.com/gpu), HAMi "
              "(mthreads.com/vgpu, sgpu-memory, sgpu-core)",
              resource_prefixes=_f("mthreads.com/"), node_label_prefixes=_f("mthreads.com/")),
    SignalSet("Iluvatar", "Iluvatar ix-device-plugin (iluvatar.ai/gpu), HAMi (iluvatar.ai/vgpu, "
              "vcuda-core, vcuda-memory)",
              resource_prefixes=_f("iluvatar.ai/"), node_label_prefixes=_f("iluvatar.ai/")),
    SignalSet("Enflame", "Enflame gcu device plugin (enflame.com/gcu), HAMi (enflame.com/vgcu, "
              "vgcu-percentage)",
              resource_prefixes=_f("enflame.com/"), node_label_prefixes=_f("enflame.com/")),
    SignalSet("Volcano vGPU", "volcano-sh/devices (volcano.sh/vgpu-number, vgpu-memory, "
              "vgpu-cores)", resource_prefixes=_f("volcano.sh/vgpu")),
    SignalSet("GPU sharing", "tkestack/gpu-manager (tencent.com/vcuda-core, vcuda-memory), "
              "AliyunContainerService/gpushare-device-plugin (aliyun.com/gpu-mem, gpu-count)",
              resource_prefixes=_f("tencent.com/vcuda", "aliyun.com/gpu")),
    SignalSet("Cloud accelerators", "GKE (google.com/tpu; node label "
              "cloud.google.com/gke-accelerator, gke-tpu-*), aws-neuron/neuron-device-plugin "
              "(aws.amazon.com/neuron, neuroncore, neurondevice; node label "
              "k8s.amazonaws.com/accelerator)",
              resource_prefixes=_f("google.com/tpu", "aws.amazon.com/neuron"),
              node_label_prefixes=_f("cloud.google.com/gke-accelerator",
                                     "cloud.google.com/gke-tpu", "k8s.amazonaws.com/accelerator")),
    SignalSet("hegui", "hegui's opt-in label", labels=_f(OPT_IN_LABEL)),
)


# --- serving custom resources --------------------------------------------------------------------

_PATH = re.compile(r"^[A-Za-z0-9_]+(\[\*\])?(\.[A-Za-z0-9_]+(\[\*\])?)*$")


@dataclass(frozen=True)
class ServingKind:
    """A custom resource that runs pods, and where in it they are described.

    Paths are dotted field names; `[*]` walks every item of a list. `templates` point at
    PodTemplateSpecs (metadata and spec), `pod_specs` at PodSpecs (or KServe-style components:
    pod fields inline, plus container-like fields such as `model`), `containers` at objects that
    are one container and the pod's scheduling fields at once (NIMService's spec)."""

    group: str
    versions: tuple[str, ...]
    kind: str
    plural: str
    templates: tuple[str, ...] = ()
    pod_specs: tuple[str, ...] = ()
    containers: tuple[str, ...] = ()
    #: Where requests come in (documentation; the traffic rules read it).
    entry: str = ""
    source: str = ""
    #: The kind itself says it serves a generative model (e.g. KServe's LLMInferenceService,
    #: whose GPU may be only a DRA annotation the controller resolves).
    generative: bool = False
    #: Templates (among `templates`) that are the serving entry whenever another template of
    #: the object runs a model, though they ask for no GPU themselves; and how a pod the
    #: controller made shows it may be one: a label it sets, or the kind that owns the pod
    #: (see `serving_entry`).
    entries: tuple[str, ...] = ()
    entry_pod_labels: tuple[tuple[str, str], ...] = ()
    entry_owners: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for path in (*self.templates, *self.pod_specs, *self.containers, *self.entries):
            if not _PATH.match(path):
                raise ValueError(f"{self.kind}: bad path {path!r}")


#: The label KubeRay puts on a Ray cluster's head pod (ray-operator/controllers/ray/utils
#: constant RayNodeTypeLabelKey). Ray Serve's HTTP proxy runs there (and, with proxy_location
#: EveryNode, on every node) and reaches the replicas on the GPU workers over Ray's own
#: transport, which no sidecar sees: the head is the entry. KubeRay keeps a label the template
#: sets, so the owner (RayCluster, set by KubeRay) counts as well: a template relabelled
#: `worker` is still a Ray node.
_RAY_HEAD = (("ray.io/node-type", "head"),)

SERVING_KINDS: tuple[ServingKind, ...] = (
    ServingKind("serving.kserve.io", ("v1beta1",), "InferenceService", "inferenceservices",
                pod_specs=("spec.predictor", "spec.predictor.workerSpec", "spec.transformer",
                           "spec.explainer"),
                entry="spec.predictor (the transformer when there is one)",
                source="kserve/kserve pkg/apis/serving/v1beta1"),
    ServingKind("serving.kserve.io", ("v1alpha1",), "LLMInferenceService",
                "llminferenceservices",
                pod_specs=("spec.template", "spec.worker", "spec.prefill.template",
                           "spec.prefill.worker"),
                entry="spec.template (decode; behind spec.router)",
                source="kserve/kserve pkg/apis/serving/v1alpha1/llm_inference_service_types.go",
                generative=True),
    ServingKind("apps.nvidia.com", ("v1alpha1",), "NIMService", "nimservices",
                containers=("spec",), entry="spec.expose.service.port (8000)",
                source="NVIDIA/k8s-nim-operator api/apps/v1alpha1/nimservice_types.go"),
    ServingKind("leaderworkerset.x-k8s.io", ("v1",), "LeaderWorkerSet", "leaderworkersets",
                templates=("spec.leaderWorkerTemplate.leaderTemplate",
                           "spec.leaderWorkerTemplate.workerTemplate"),
                entry="the leader pod (leaderTemplate, else workerTemplate)",
                source="kubernetes-sigs/lws api/leaderworkerset/v1"),
    ServingKind("disaggregatedset.x-k8s.io", ("v1", "v1alpha1"), "DisaggregatedSet",
                "disaggregatedsets",
                templates=("spec.roles[*].spec.leaderWorkerTemplate.leaderTemplate",
                           "spec.roles[*].spec.leaderWorkerTemplate.workerTemplate",
                           "spec.roles[*].leaderWorkerTemplate.leaderTemplate",
                           "spec.roles[*].leaderWorkerTemplate.workerTemplate"),
                entry="each role's leader (behind the router)",
                source="kubernetes-sigs/lws api/disaggregatedset/v1"),
    ServingKind("ray.io", ("v1",), "RayService", "rayservices",
                templates=("spec.rayClusterConfig.headGroupSpec.template",
                           "spec.rayClusterConfig.workerGroupSpecs[*].template"),
                entry="the head pod (Ray Serve on 8000, Service <name>-serve-svc)",
                source="ray-project/kuberay ray-operator/apis/ray/v1",
                entries=("spec.rayClusterConfig.headGroupSpec.template",),
                entry_pod_labels=_RAY_HEAD, entry_owners=("RayCluster",)),
    ServingKind("ray.io", ("v1",), "RayCluster", "rayclusters",
                templates=("spec.headGroupSpec.template", "spec.workerGroupSpecs[*].template"),
                entry="the head pod", source="ray-project/kuberay ray-operator/apis/ray/v1",
                entries=("spec.headGroupSpec.template",), entry_pod_labels=_RAY_HEAD,
                entry_owners=("RayCluster",)),
    ServingKind("workloads.x-k8s.io", ("v1alpha1",), "RoleBasedGroup", "rolebasedgroups",
                templates=("spec.roles[*].template",),
                entry="the router role, else each role", source="sgl-project/rbg api/v1alpha1"),
)

#: kind -> path from the object to its pod template (None: the object is the pod).
_TEMPLATE_PATHS: dict[str, tuple[str, ...] | None] = {
    "Pod": None,
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
#: Built-in controllers, by kind; with the serving kinds, what `hegui check` and the webhook judge.
CORE_KINDS = frozenset(_TEMPLATE_PATHS)
#: kind -> where its pod spec sits, as messages name it (spelled once, not on every review).
_SPEC_PATHS = {kind: ".".join((*path, "spec")) for kind, path in _TEMPLATE_PATHS.items()
               if path is not None}


@dataclass(frozen=True)
class Detection:
    """The signals that mark a generative workload and the kinds that run one. The built-in
    sets are always in force; a CompliancePolicy can add more, never remove any."""

    sets: tuple[SignalSet, ...] = SIGNAL_SETS
    kinds: tuple[ServingKind, ...] = SERVING_KINDS

    def _union(self, attribute: str) -> frozenset[str]:
        return frozenset().union(*(getattr(s, attribute) for s in self.sets))

    @cached_property
    def resources(self) -> frozenset[str]:
        return self._union("resources")

    @cached_property
    def resource_prefixes(self) -> frozenset[str]:
        return self._union("resource_prefixes")

    @cached_property
    def runtime_classes(self) -> frozenset[str]:
        return self._union("runtime_classes")

    @cached_property
    def runtime_class_markers(self) -> frozenset[str]:
        return self._union("runtime_class_markers")

    @cached_property
    def device_classes(self) -> frozenset[str]:
        return self._union("device_classes")

    @cached_property
    def node_label_prefixes(self) -> frozenset[str]:
        return self._union("node_label_prefixes")

    @cached_property
    def visible_devices_env(self) -> frozenset[str]:
        return self._union("visible_devices_env")

    @cached_property
    def labels(self) -> frozenset[str]:
        return self._union("labels")

    @cached_property
    def _kinds(self) -> dict[str, ServingKind]:
        return {k.kind: k for k in self.kinds}

    def extended(self, *, resources: Iterable[str] = (), runtime_classes: Iterable[str] = (),
                 device_classes: Iterable[str] = (), labels: Iterable[str] = (),
                 kinds: Iterable[ServingKind] = (),
                 source: str = "CompliancePolicy spec.detection") -> Detection:
        """These signals plus more; a resource name ending in '-' or '/' is a prefix."""
        names = list(resources)
        extra = SignalSet(
            "policy", source,
            resources=frozenset(n for n in names if not n.endswith(("-", "/"))),
            resource_prefixes=frozenset(n for n in names if n.endswith(("-", "/"))),
            runtime_classes=frozenset(runtime_classes),
            device_classes=frozenset(device_classes), labels=frozenset(labels))
        known = {(k.group, k.kind) for k in self.kinds}
        added = tuple(k for k in kinds if (k.group, k.kind) not in known)
        if not any(getattr(extra, a) for a in ("resources", "resource_prefixes",
                                              "runtime_classes", "device_classes", "labels")):
            return replace(self, kinds=self.kinds + added) if added else self
        return Detection((*self.sets, extra), self.kinds + added)

    @cached_property
    def _resource_prefixes(self) -> tuple[str, ...]:
        return tuple(self.resource_prefixes)  # str.startswith takes a tuple, not a set

    @cached_property
    def _node_label_prefixes(self) -> tuple[str, ...]:
        return tuple(self.node_label_prefixes)

    @cached_property
    def _sorted_labels(self) -> tuple[str, ...]:
        return tuple(sorted(self.labels))

    def is_gpu_resource(self, name: str) -> bool:
        return name in self.resources or name.startswith(self._resource_prefixes)

    def is_gpu_runtime_class(self, name: str) -> bool:
        return name in self.runtime_classes or any(
            marker in name for marker in self.runtime_class_markers)

    def is_gpu_node_label(self, key: str) -> bool:
        return key.startswith(self._node_label_prefixes)

    def signal_set_of(self, attribute: str, names: Iterable[str]) -> str:
        """The name of the first signal set whose `attribute` holds one of `names`, as a name,
        a prefix (resource_prefixes, node_label_prefixes) or a substring (markers)."""
        wanted = set(names)
        for signals in self.sets:
            held: frozenset[str] = getattr(signals, attribute)
            if attribute.endswith("prefixes"):
                if any(n.startswith(tuple(held)) for n in wanted):
                    return signals.name
            elif attribute.endswith("markers"):
                if any(m in n for m in held for n in wanted):
                    return signals.name
            elif held & wanted:
                return signals.name
        return "policy"

    def source_of_resource(self, name: str) -> str:
        if name in self.resources:
            return self.signal_set_of("resources", [name])
        return self.signal_set_of("resource_prefixes", [name])

    def source_of_runtime_class(self, name: str) -> str:
        if name in self.runtime_classes:
            return self.signal_set_of("runtime_classes", [name])
        return self.signal_set_of("runtime_class_markers", [name])

    def serving_kind(self, kind: str) -> ServingKind | None:
        return self._kinds.get(kind)

    def is_workload_kind(self, kind: object) -> bool:
        return kind in CORE_KINDS or (isinstance(kind, str) and kind in self._kinds)


BUILTIN = Detection()
#: Every kind hegui judges by default (the core controllers and the serving resources).
WORKLOAD_KINDS = CORE_KINDS | {k.kind for k in SERVING_KINDS}

#: Looks up the device classes a DRA claim (or claim template) requests, and the drivers those
#: classes select: (namespace, "ResourceClaim" | "ResourceClaimTemplate", name) -> names, or None
#: if unknown.
ClaimResolver = Callable[[str, str, str], frozenset[str] | None]


@dataclass(frozen=True)
class PodTemplate:
    """The pod a workload runs: its labels and spec, and where the spec sits in the object."""

    labels: Mapping[str, str]
    spec: Mapping[str, Any]
    #: JSON path of the spec inside the workload, e.g. "spec.template.spec", for messages.
    spec_path: str
    #: The serving kind says by itself that it is generative (why, for messages).
    generative_kind: str = dataclasses.field(default="", compare=False)


def _mapping(value: object) -> Mapping[str, Any]:
    # A dict (JSON's) or nothing, nearly always: both known without the Mapping ABC's check,
    # which costs more than the rest of a lookup.
    if type(value) is dict:
        return value
    return {} if value is None or not isinstance(value, Mapping) else value


def _is_mapping(value: object) -> bool:
    return type(value) is dict or isinstance(value, Mapping)


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _walk(node: object, path: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every mapping at `path` under `node`, with its concrete path (list indices filled in)."""
    current: list[tuple[str, object]] = [("", node)]
    for part in path.split("."):
        name, every = part.removesuffix("[*]"), part.endswith("[*]")
        following: list[tuple[str, object]] = []
        for where, value in current:
            child = _mapping(value).get(name)
            here = f"{where}.{name}" if where else name
            if every:
                following += [(f"{here}[{i}]", item) for i, item in enumerate(_list(child))]
            elif child is not None:
                following.append((here, child))
        current = following
    for where, value in current:
        if isinstance(value, Mapping) and value:
            yield where, value


def pod_templates(workload: Mapping[str, Any], detection: Detection = BUILTIN
                  ) -> list[PodTemplate]:
    """The pod templates of a workload; empty for kinds that run no pods."""
    kind = workload.get("kind")
    if not isinstance(kind, str):
        return []
    if kind in _TEMPLATE_PATHS:
        return _core_templates(workload, kind)
    serving = detection.serving_kind(kind)
    api_version = workload.get("apiVersion")
    if serving is None or (isinstance(api_version, str)
                           and api_version.split("/")[0] != serving.group):
        return []
    found = list(_serving_templates(workload, serving))
    return _with_entries(workload, serving, found, detection) if serving.entries else found


def _with_entries(workload: Mapping[str, Any], serving: ServingKind, found: list[PodTemplate],
                  detection: Detection) -> list[PodTemplate]:
    """`found`, with the kind's entry templates marked generative when another template runs a
    model: requests come in there, so the entry is what hegui must front (Art.14)."""
    at = {f"{where}.spec" for path in serving.entries for where, _ in _walk(workload, path)}
    if not any(is_generative(t, detection=detection) for t in found
               if t.spec_path not in at):
        return found
    why = (f"the serving entry of a {serving.kind} whose other pods run a model "
           f"({serving.entry}; {serving.source})")
    return [replace(t, generative_kind=t.generative_kind or why) if t.spec_path in at else t
            for t in found]


def serving_entry(pod: Mapping[str, Any], detection: Detection = BUILTIN) -> str:
    """Why `pod` may be a serving kind's entry (a Ray head, or any node of a Ray cluster), or
    "". Its own spec asks for no GPU; it counts where a GenerativeService selects it, which the
    kind's entry template must be (`_with_entries`)."""
    pod_labels = labels(pod)
    owners = {str(_mapping(o).get("kind", "")) for o in
              _list(_mapping(pod.get("metadata")).get("ownerReferences"))}
    for kind in detection.kinds:
        if kind.entry_pod_labels and all(pod_labels.get(k) == v
                                         for k, v in kind.entry_pod_labels):
            return f"the serving entry of a {kind.kind} ({kind.entry})"
        if owners & set(kind.entry_owners):
            return f"a node of a {kind.kind}, where {kind.entry} takes requests"
    return ""


def _core_templates(workload: Mapping[str, Any], kind: str) -> list[PodTemplate]:
    path = _TEMPLATE_PATHS[kind]
    if path is None:
        return [PodTemplate(labels(workload), _mapping(workload.get("spec")), "spec")]
    node: object = workload
    for key in path:
        node = _mapping(node).get(key)
    template = _mapping(node)
    return [PodTemplate(labels(template), _mapping(template.get("spec")), _SPEC_PATHS[kind])]


def labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    """An object's labels as strings; none where a hostile request gives no mapping there."""
    found = _mapping(_mapping(obj.get("metadata")).get("labels"))
    return {str(k): str(v) for k, v in found.items()}


_POD_FIELDS = ("nodeSelector", "tolerations", "affinity", "runtimeClassName", "resourceClaims")


def _serving_templates(obj: Mapping[str, Any], kind: ServingKind) -> Iterator[PodTemplate]:
    found = list(_serving_templates_at_paths(obj, kind))
    if not found and kind.generative:
        # The pods come from a config the controller merges in (e.g. an LLMInferenceService
        # with only baseRefs); the kind alone says what they serve.
        found = [PodTemplate(labels(obj), {}, "spec",
                             f"kind {kind.kind} serves a generative model ({kind.source})")]
    yield from found


def _serving_templates_at_paths(obj: Mapping[str, Any], kind: ServingKind
                                ) -> Iterator[PodTemplate]:
    own = labels(obj)
    why = f"kind {kind.kind} serves a generative model ({kind.source})" if kind.generative else ""
    for path in kind.templates:
        for where, template in _walk(obj, path):
            yield PodTemplate({**own, **labels(template)}, _mapping(template.get("spec")),
                              f"{where}.spec", why)
    for path in kind.pod_specs:
        for where, body in _walk(obj, path):
            # KServe components put pod-spec fields inline; a model format (predictor.model)
            # is one more container in the generated pod.
            pod_spec: dict[str, Any] = dict(body)
            containers = _list(body.get("containers"))
            for key, value in body.items():
                if isinstance(value, Mapping) and "resources" in value and key != "containers":
                    containers = [*containers, value]
            pod_spec["containers"] = containers
            yield PodTemplate(own, pod_spec, where, why)
    for path in kind.containers:
        for where, body in _walk(obj, path):
            container = {k: body[k] for k in ("name", "image", "resources", "env", "ports",
                                              "securityContext", "args", "command")
                         if k in body}
            pod_spec = {k: body[k] for k in _POD_FIELDS if k in body}
            pod_spec["containers"] = [container]
            yield PodTemplate({**own, **{str(k): str(v) for k, v in
                                            _mapping(body.get("labels")).items()}},
                              pod_spec, where, why)


def owner_kinds(obj: Mapping[str, Any]) -> frozenset[str]:
    """The kinds a workload counts as for a policy's scope: its own, and for a pod its direct
    owners' (and the Deployment behind a ReplicaSet, known by the pod-template-hash label)."""
    kinds = {str(obj.get("kind", ""))}
    metadata = _mapping(obj.get("metadata"))
    if obj.get("kind") == "Pod":
        for owner in _list(metadata.get("ownerReferences")):
            owner_kind = str(_mapping(owner).get("kind", ""))
            kinds.add(owner_kind)
            if owner_kind == "ReplicaSet" and "pod-template-hash" in _mapping(
                    metadata.get("labels")):
                kinds.add("Deployment")
    return frozenset(kinds - {""})


@dataclass(frozen=True)
class GpuEvidence:
    """Why a pod counts as a generative model workload: the field, what it holds, and which
    signal set it matched."""

    field: str
    reason: str
    signal: str = dataclasses.field(default="", compare=False)

    def __str__(self) -> str:
        source = f", {self.signal}" if self.signal else ""
        return f"{self.reason} ({self.field}{source})"


_CONTAINER_GROUPS = ("initContainers", "containers", "ephemeralContainers")


def _gpu_node(spec: Mapping[str, Any], detection: Detection) -> str | None:
    """The node selector or required node affinity that pins the pod to accelerator nodes."""
    for key, value in _mapping(spec.get("nodeSelector")).items():
        if detection.is_gpu_node_label(str(key)):
            return f"nodeSelector {key}={value}"
    required = _mapping(_mapping(_mapping(spec.get("affinity")).get("nodeAffinity")).get(
        "requiredDuringSchedulingIgnoredDuringExecution"))
    for term in _list(required.get("nodeSelectorTerms")):
        for expression in _list(_mapping(term).get("matchExpressions")):
            key = str(_mapping(expression).get("key", ""))
            if (detection.is_gpu_node_label(key)
                    and _mapping(expression).get("operator") in ("In", "Exists", "Gt")):
                return f"node affinity on {key}"
    return None


def _gpu_toleration(spec: Mapping[str, Any], detection: Detection) -> str | None:
    """A toleration of the taint accelerator nodes carry (named after the resource or label)."""
    for toleration in _list(spec.get("tolerations")):
        key = str(_mapping(toleration).get("key", ""))
        if key and (detection.is_gpu_resource(key) or detection.is_gpu_node_label(key)):
            return f"toleration {key}"
    return None


def generative_evidence(
    template: PodTemplate, namespace: str = "", resolve_claim: ClaimResolver | None = None,
    detection: Detection = BUILTIN,
) -> list[GpuEvidence]:
    """Every reason the pod runs a generative model; empty when it does not."""
    return list(_evidence(template, namespace, resolve_claim, detection))


def is_generative(
    template: PodTemplate, namespace: str = "", resolve_claim: ClaimResolver | None = None,
    detection: Detection = BUILTIN,
) -> bool:
    """Whether the pod runs a generative model: `generative_evidence`'s first reason, without
    looking for the others (every admission review asks; only a finding says them all)."""
    return next(_evidence(template, namespace, resolve_claim, detection), None) is not None


def _evidence(template: PodTemplate, namespace: str, resolve_claim: ClaimResolver | None,
              detection: Detection) -> Iterator[GpuEvidence]:
    """The reasons, in the order a finding names them: one pass over the containers, each
    field read once, and a field path spelled only for the evidence found."""
    spec, at = template.spec, template.spec_path
    if template.generative_kind:
        yield GpuEvidence(at, template.generative_kind, "serving kind")
    pod_labels = template.labels
    if pod_labels:
        for label in detection._sorted_labels:
            if pod_labels.get(label) == "true":
                yield GpuEvidence("metadata.labels", f"label {label}=true",
                                  detection.signal_set_of("labels", [label]))
    runtime_class = spec.get("runtimeClassName")
    if isinstance(runtime_class, str) and detection.is_gpu_runtime_class(runtime_class):
        yield GpuEvidence(f"{at}.runtimeClassName", f"runtimeClassName {runtime_class}",
                          detection.source_of_runtime_class(runtime_class))
    privileged: str | None = None
    visible_devices_env = detection.visible_devices_env
    for group in _CONTAINER_GROUPS:
        containers = spec.get(group)
        if not isinstance(containers, list):
            continue
        for position, container in enumerate(containers):
            if not _is_mapping(container):
                continue
            resources = _mapping(container.get("resources"))
            for section in ("limits", "requests"):
                for name in _mapping(resources.get(section)):
                    name = str(name)
                    if detection.is_gpu_resource(name):
                        yield GpuEvidence(
                            f"{at}.{group}[{position}].resources.{section}",
                            f"{section} on {name}", detection.source_of_resource(name))
            for index, variable in enumerate(_list(container.get("env"))):
                variable = _mapping(variable)
                name, value = str(variable.get("name", "")), variable.get("value")
                if (name in visible_devices_env and isinstance(value, str)
                        and value.strip().lower() not in NO_DEVICE_VALUES):
                    yield GpuEvidence(
                        f"{at}.{group}[{position}].env[{index}]", f"env {name}={value}",
                        detection.signal_set_of("visible_devices_env", [name]))
            if privileged is None and _mapping(
                    container.get("securityContext")).get("privileged") is True:
                privileged = f"{at}.{group}[{position}].securityContext.privileged"
    # Both are read only where they make evidence: the node with the toleration, or either
    # with a privileged container.
    node = _gpu_node(spec, detection)
    if privileged and (placed := node or _gpu_toleration(spec, detection)):
        yield GpuEvidence(privileged, "privileged container (sees every device) on "
                          f"an accelerator node ({placed})", "node")
    elif node and (toleration := _gpu_toleration(spec, detection)):
        yield GpuEvidence(f"{at}.nodeSelector", f"pinned to accelerator nodes ({node}, "
                          f"{toleration}), where the device runtime hands out the GPUs", "node")
    for index, claim in enumerate(_list(spec.get("resourceClaims"))):
        claim = _mapping(claim)
        if template_name := claim.get("resourceClaimTemplateName"):
            kind, name = "ResourceClaimTemplate", str(template_name)
        elif claim_name := claim.get("resourceClaimName"):
            kind, name = "ResourceClaim", str(claim_name)
        else:
            continue
        classes = resolve_claim(namespace, kind, name) if resolve_claim else None
        # An unresolvable claim counts as a GPU: refusing to look is no way around the rules.
        if classes is None or classes & detection.device_classes:
            shown = (", ".join(sorted(classes & detection.device_classes)) if classes
                     else "unresolved")
            yield GpuEvidence(
                f"{at}.resourceClaims[{index}]", f"DRA {kind} {name} ({shown})",
                detection.signal_set_of("device_classes", classes) if classes else "DRA")


_DRIVER = re.compile(r"""device\.driver\s*==\s*["']([^"']+)["']""")


def device_classes_of(claim_or_template: Mapping[str, Any]) -> frozenset[str]:
    """Device classes requested by a ResourceClaim or ResourceClaimTemplate (resource.k8s.io/v1,
    and the v1beta1 shape where `exactly` was not yet a wrapper), with the drivers the claim
    itself selects (CEL `device.driver == "..."`) or was allocated from."""
    spec = _mapping(claim_or_template.get("spec"))
    if claim_or_template.get("kind") == "ResourceClaimTemplate":
        spec = _mapping(spec.get("spec"))
    classes: set[str] = set()
    for request in _list(_mapping(spec.get("devices")).get("requests")):
        request = _mapping(request)
        for shape in (request, _mapping(request.get("exactly"))):
            if name := shape.get("deviceClassName"):
                classes.add(str(name))
            classes |= _selected_drivers(shape)
        for alternative in _list(request.get("firstAvailable")):
            if name := _mapping(alternative).get("deviceClassName"):
                classes.add(str(name))
            classes |= _selected_drivers(_mapping(alternative))
    allocation = _mapping(_mapping(claim_or_template.get("status")).get("allocation"))
    for result in _list(_mapping(allocation.get("devices")).get("results")):
        if driver := _mapping(result).get("driver"):
            classes.add(str(driver))
    return frozenset(classes)


def _selected_drivers(holder: Mapping[str, Any]) -> set[str]:
    """Drivers named by CEL selectors (`device.driver == "gpu.nvidia.com"`)."""
    found: set[str] = set()
    for selector in _list(holder.get("selectors")):
        expression = _mapping(_mapping(selector).get("cel")).get("expression")
        if isinstance(expression, str):
            found |= set(_DRIVER.findall(expression))
    return found


def device_class_drivers(device_class: Mapping[str, Any]) -> frozenset[str]:
    """The DRA drivers a DeviceClass selects: DRA matches a GPU by its driver, whatever the
    class is called."""
    return frozenset(_selected_drivers(_mapping(device_class.get("spec"))))
