"""What a workload is, as far as the rules care: its pod template, and whether it runs a
generative model.

Every workload kind hegui admits (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob,
Pod, and KServe InferenceService) is reduced to the pod it will run. A pod runs a generative model
when it asks for an NVIDIA GPU in any of the ways a cluster can hand one out: an extended resource
(whole GPU, MIG slice, shared GPU), a DRA resource claim, the `nvidia` runtime class, or, for
models on other accelerators, an explicit opt-in label.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

#: Label a team sets on a pod (template) to say "this is a generative model" without a GPU.
OPT_IN_LABEL = "hegui.io/generative"

GPU_RESOURCE = "nvidia.com/gpu"
SHARED_GPU_RESOURCE = "nvidia.com/gpu.shared"
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
GPU_RUNTIME_CLASS = "nvidia"
GPU_DEVICE_CLASSES = frozenset({"gpu.nvidia.com", "mig.nvidia.com"})


@dataclass(frozen=True)
class Detection:
    """The signals that mark a generative workload. The built-in NVIDIA ones are always in
    force; a CompliancePolicy can add more (other accelerators), never remove any."""

    resources: frozenset[str] = frozenset({GPU_RESOURCE, SHARED_GPU_RESOURCE})
    resource_prefixes: frozenset[str] = frozenset({MIG_RESOURCE_PREFIX})
    runtime_classes: frozenset[str] = frozenset({GPU_RUNTIME_CLASS})
    device_classes: frozenset[str] = GPU_DEVICE_CLASSES
    labels: frozenset[str] = frozenset({OPT_IN_LABEL})

    def extended(self, *, resources: Iterable[str] = (), runtime_classes: Iterable[str] = (),
                 device_classes: Iterable[str] = (), labels: Iterable[str] = ()) -> Detection:
        """These signals plus more; a resource name ending in '-' is a prefix."""
        names = list(resources)
        return Detection(
            self.resources | {n for n in names if not n.endswith("-")},
            self.resource_prefixes | {n for n in names if n.endswith("-")},
            self.runtime_classes | set(runtime_classes),
            self.device_classes | set(device_classes),
            self.labels | set(labels))

    def is_gpu_resource(self, name: str) -> bool:
        return name in self.resources or name.startswith(tuple(self.resource_prefixes))


BUILTIN = Detection()

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
WORKLOAD_KINDS = frozenset(_TEMPLATE_PATHS) | {"InferenceService"}

#: Looks up the device classes a DRA claim (or claim template) requests:
#: (namespace, "ResourceClaim" | "ResourceClaimTemplate", name) -> classes, or None if unknown.
ClaimResolver = Callable[[str, str, str], frozenset[str] | None]


@dataclass(frozen=True)
class PodTemplate:
    """The pod a workload runs: its labels and spec, and where the spec sits in the object."""

    labels: Mapping[str, str]
    spec: Mapping[str, Any]
    #: JSON path of the spec inside the workload, e.g. "spec.template.spec", for messages.
    spec_path: str


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def pod_templates(workload: Mapping[str, Any]) -> list[PodTemplate]:
    """The pod templates of a workload; empty for kinds that run no pods."""
    kind = workload.get("kind")
    if kind == "InferenceService":
        return list(_inference_service_templates(workload))
    if kind not in _TEMPLATE_PATHS:
        return []
    path = _TEMPLATE_PATHS[kind]
    if path is None:
        return [PodTemplate(_labels(workload), _mapping(workload.get("spec")), "spec")]
    node: object = workload
    for key in path:
        node = _mapping(node).get(key)
    template = _mapping(node)
    return [PodTemplate(_labels(template), _mapping(template.get("spec")),
                        ".".join((*path, "spec")))]


def _labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    labels = _mapping(_mapping(obj.get("metadata")).get("labels"))
    return {str(k): str(v) for k, v in labels.items()}


def _inference_service_templates(isvc: Mapping[str, Any]) -> Iterator[PodTemplate]:
    """KServe puts pod-spec fields inline in each component (predictor, transformer, ...)."""
    labels = _labels(isvc)
    spec = _mapping(isvc.get("spec"))
    for component in ("predictor", "transformer", "explainer"):
        body = _mapping(spec.get(component))
        if not body:
            continue
        pod_spec: dict[str, Any] = dict(body)
        containers = _list(body.get("containers"))
        # A model format (e.g. predictor.model) is one more container in the generated pod.
        for key, value in body.items():
            if isinstance(value, Mapping) and "resources" in value and key != "containers":
                containers = [*containers, value]
        pod_spec["containers"] = containers
        yield PodTemplate(labels, pod_spec, f"spec.{component}")


@dataclass(frozen=True)
class GpuEvidence:
    """Why a pod counts as a generative model workload: the field and what it holds."""

    field: str
    reason: str


def generative_evidence(
    template: PodTemplate, namespace: str = "", resolve_claim: ClaimResolver | None = None,
    detection: Detection = BUILTIN,
) -> list[GpuEvidence]:
    """Every reason the pod runs a generative model; empty when it does not."""
    evidence: list[GpuEvidence] = []
    spec = template.spec
    for label in sorted(detection.labels):
        if template.labels.get(label) == "true":
            evidence.append(GpuEvidence("metadata.labels", f"label {label}=true"))
    if (runtime_class := spec.get("runtimeClassName")) in detection.runtime_classes:
        evidence.append(GpuEvidence(f"{template.spec_path}.runtimeClassName",
                                    f"runtimeClassName {runtime_class}"))
    for group in ("initContainers", "containers"):
        for index, container in enumerate(_list(spec.get(group))):
            resources = _mapping(_mapping(container).get("resources"))
            for section in ("limits", "requests"):
                for name in _mapping(resources.get(section)):
                    if detection.is_gpu_resource(str(name)):
                        evidence.append(GpuEvidence(
                            f"{template.spec_path}.{group}[{index}].resources.{section}",
                            f"{section} on {name}"))
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
            evidence.append(GpuEvidence(f"{template.spec_path}.resourceClaims[{index}]",
                                        f"DRA {kind} {name} ({shown})"))
    return evidence


def device_classes_of(claim_or_template: Mapping[str, Any]) -> frozenset[str]:
    """Device classes requested by a ResourceClaim or ResourceClaimTemplate (resource.k8s.io/v1,
    and the v1beta1 shape where `exactly` was not yet a wrapper)."""
    spec = _mapping(claim_or_template.get("spec"))
    if claim_or_template.get("kind") == "ResourceClaimTemplate":
        spec = _mapping(spec.get("spec"))
    classes: set[str] = set()
    for request in _list(_mapping(spec.get("devices")).get("requests")):
        request = _mapping(request)
        for shape in (request, _mapping(request.get("exactly"))):
            if name := shape.get("deviceClassName"):
                classes.add(str(name))
        for alternative in _list(request.get("firstAvailable")):
            if name := _mapping(alternative).get("deviceClassName"):
                classes.add(str(name))
    return frozenset(classes)
