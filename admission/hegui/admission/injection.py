"""Sidecar injection: the moderation and labeling sidecar in every pod of a covered service.

What Istio and Linkerd learned, applied to GPU model pods:
- Pods are mutated at admission, never the Deployments Git owns (no GitOps drift).
- The sidecar is a native sidecar (an init container with restartPolicy Always) placed first,
  with a startupProbe, so the model container starts only once the sidecar serves, and a Job's
  pod still completes when its model container exits.
- It takes over the model container's serving port *name* (the model's port is renamed), so a
  Service that targets the port by name reaches the sidecar, not the model (Art.14: traffic
  cannot bypass moderation). The sidecar forwards to the model on localhost.
- Non-root, read-only root filesystem, no capabilities, no privilege escalation, no GPU; requests
  and limits from the CompliancePolicy so quotas and LimitRanges admit the pod.
- Idempotent: a status annotation records what was injected and from which policy generation; a
  pod that already carries the sidecar is left alone.
- Configuration is *mounted*: a ConfigMap `hegui-sidecar-<service>` that the operator renders
  from the GenerativeService. The sidecar then needs no API access at all (least privilege), and
  a posture change reaches running pods without a restart (kubelet refreshes the volume).
Opting out is only possible through a ComplianceException for rule `injection`; labels and
annotations on the pod are not consulted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hegui.api.policy import CompliancePolicy, Sidecar
from hegui.rules import workloads

SIDECAR_NAME = "hegui-sidecar"
STATUS_ANNOTATION = "hegui.io/sidecar-status"
MODEL_PORT_NAME = "hegui-model"  # port names are at most 15 characters
CONFIG_VOLUME = "hegui-config"
DATA_VOLUME = "hegui-data"
SIDECAR_USER = 65532  # the distroless "nonroot" user


def sidecar_config_map(service: str) -> str:
    """The ConfigMap the operator renders from GenerativeService `service` for its sidecars."""
    return f"hegui-sidecar-{service}"


class InjectionConflict(ValueError):
    """The pod cannot be patched safely; the message names the conflict."""


@dataclass
class Injection:
    patch: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _escape(key: str) -> str:
    """A JSON Pointer segment (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


def _quantities(values: Mapping[str, Any]) -> dict[str, str]:
    return {name: str(value) for name, value in values.items() if value is not None}


def sidecar_container(sidecar: Sidecar, *, service: str, port_name: str,
                      upstream_port: int | None) -> dict[str, Any]:
    """The container, speaking `python -m hegui.sidecar`'s command line."""
    # All interfaces: the Service's traffic arrives on the pod's IP.
    args = ["--service", "/etc/hegui/service.yaml", "--host", "0.0.0.0",  # noqa: S104
            "--port", str(sidecar.port),
            "--records", "/var/lib/hegui/records.jsonl",
            "--strikes", "/var/lib/hegui/strikes.json"]
    if upstream_port is not None:
        args += ["--upstream", f"http://127.0.0.1:{upstream_port}"]
    env = [{"name": "HEGUI_SERVICE", "value": service},
           {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
           {"name": "POD_NAMESPACE",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]
    resources = {"requests": _quantities(sidecar.resources.requests.model_dump()),
                 "limits": _quantities(sidecar.resources.limits.model_dump())}
    health = {"httpGet": {"path": "/hegui/healthz", "port": sidecar.port}}
    return {
        "name": SIDECAR_NAME,
        "image": sidecar.image,
        "args": args,
        "restartPolicy": "Always",
        "ports": [{"name": port_name, "containerPort": sidecar.port, "protocol": "TCP"}],
        "env": env,
        "resources": {k: v for k, v in resources.items() if v},
        "startupProbe": {**health, "periodSeconds": 1, "failureThreshold": 120},
        "readinessProbe": {**health, "periodSeconds": 5},
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": SIDECAR_USER, "runAsGroup": SIDECAR_USER,
            "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}},
        "volumeMounts": [{"name": CONFIG_VOLUME, "mountPath": "/etc/hegui", "readOnly": True},
                         {"name": DATA_VOLUME, "mountPath": "/var/lib/hegui"}],
    }


def _model_container(spec: Mapping[str, Any]) -> tuple[int, Mapping[str, Any]]:
    """The container that serves the model: the first one asking for a GPU, else the first."""
    containers = [c for c in spec.get("containers") or [] if isinstance(c, Mapping)]
    if not containers:
        raise InjectionConflict("the pod has no containers")
    template = workloads.PodTemplate({}, {"containers": containers}, "spec")
    with_gpu = {e.field.split("[")[1].split("]")[0]
                for e in workloads.generative_evidence(template) if "containers[" in e.field}
    index = min((int(i) for i in with_gpu), default=0)
    return index, containers[index]


def inject(pod: Mapping[str, Any], policy: CompliancePolicy, service: str) -> Injection:
    """The JSON patch that injects the sidecar into `pod`, or an empty one if it has it."""
    sidecar = policy.spec.sidecar
    result = Injection()
    if sidecar is None:
        return result  # the policy injects nothing
    metadata = pod.get("metadata") if isinstance(pod.get("metadata"), Mapping) else {}
    spec = pod.get("spec") if isinstance(pod.get("spec"), Mapping) else {}
    assert isinstance(metadata, Mapping) and isinstance(spec, Mapping)
    annotations = metadata.get("annotations") or {}
    present = [c for group in ("initContainers", "containers") for c in spec.get(group) or []
               if isinstance(c, Mapping) and c.get("name") == SIDECAR_NAME]
    if STATUS_ANNOTATION in annotations or present:
        return result  # already injected (or declared by the user): never twice
    if spec.get("hostNetwork"):
        raise InjectionConflict(
            "spec.hostNetwork is true: the sidecar's port would be the node's, and nothing "
            "could keep traffic from reaching the model directly (Art.14); run the model "
            "without hostNetwork")

    index, model = _model_container(spec)
    ports = [p for p in model.get("ports") or [] if isinstance(p, Mapping)]
    taken = {str(p.get("name")) for c in spec.get("containers") or [] if isinstance(c, Mapping)
             for p in c.get("ports") or [] if isinstance(p, Mapping) and p.get("name")}
    if MODEL_PORT_NAME in taken:
        raise InjectionConflict(f"a container already has a port named {MODEL_PORT_NAME}, the "
                                "name the model's serving port is given under the sidecar")
    volumes = {str(v.get("name")) for v in spec.get("volumes") or [] if isinstance(v, Mapping)}
    if clash := volumes & {CONFIG_VOLUME, DATA_VOLUME}:
        raise InjectionConflict(f"the pod already has a volume named {', '.join(sorted(clash))}")
    if any(int(p.get("containerPort", 0)) == sidecar.port for c in spec.get("containers") or []
           if isinstance(c, Mapping) for p in c.get("ports") or [] if isinstance(p, Mapping)):
        raise InjectionConflict(f"a container already listens on port {sidecar.port}, the "
                                "sidecar's port in the CompliancePolicy")

    port_name, upstream = "hegui", None
    if ports:
        serving = ports[0]
        upstream = int(serving.get("containerPort", 0)) or None
        port_name = str(serving.get("name") or "hegui")
        name_op = "replace" if serving.get("name") else "add"
        result.patch.append({"op": name_op, "path": f"/spec/containers/{index}/ports/0/name",
                             "value": MODEL_PORT_NAME})
    else:
        result.warnings.append(
            f"[injection, Art.14] container {model.get('name')} declares no serving port, so "
            "hegui cannot route its traffic through the sidecar. Fix: declare the port the model "
            "serves on")

    container = sidecar_container(sidecar, service=service, port_name=port_name,
                                  upstream_port=upstream)
    if spec.get("initContainers"):
        result.patch.append({"op": "add", "path": "/spec/initContainers/0", "value": container})
    else:
        result.patch.append({"op": "add", "path": "/spec/initContainers", "value": [container]})
    new_volumes = [
        {"name": CONFIG_VOLUME, "configMap": {"name": sidecar_config_map(service),
                                              "optional": True}},
        {"name": DATA_VOLUME, "emptyDir": {"sizeLimit": "256Mi"}},
    ]
    if spec.get("volumes"):
        result.patch += [{"op": "add", "path": "/spec/volumes/-", "value": v}
                         for v in new_volumes]
    else:
        result.patch.append({"op": "add", "path": "/spec/volumes", "value": new_volumes})
    status = json.dumps({"container": SIDECAR_NAME, "image": sidecar.image,
                         "policy": policy.name,
                         "policyGeneration": policy.metadata.generation,
                         "service": service}, separators=(",", ":"), sort_keys=True)
    if annotations:
        result.patch.append({"op": "add",
                             "path": f"/metadata/annotations/{_escape(STATUS_ANNOTATION)}",
                             "value": status})
    else:
        result.patch.append({"op": "add", "path": "/metadata/annotations",
                             "value": {STATUS_ANNOTATION: status}})
    return result
