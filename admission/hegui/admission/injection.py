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
  pod that already carries the policy's sidecar is left alone. "Carries" means equal to what
  hegui renders, field by field (after the apiserver's defaults and the fields the policy's
  userOverrides allow), fronting the renamed model port, with hegui's volumes mounted by the
  sidecar alone (`injection_gaps`). Anything else the pod itself names hegui-sidecar is replaced
  by the policy's, keeping only the fields the policy lets a pod set (Istio's istio-proxy
  override, without the bypass): no annotation or look-alike container a team writes turns
  injection off. hostNetwork, hostPort and other containers mounting hegui's volumes are
  refused on every pod, injected already or not.
- Traffic capture (the policy's sidecar.capture, Redirect by default): a second init container,
  hegui-capture, runs once after the sidecar is up and before the model starts; in the pod's
  network namespace it redirects every inbound TCP connection to the sidecar's port, except
  the ports the GenerativeService declares open (spec.traffic.openPorts: the model's own metrics
  port, NCCL/Ray/NIXL between the service's pods). A Service that targets the model's port by
  number then reaches the sidecar too (as Istio's istio-init). It is root with NET_ADMIN and
  NET_RAW, nothing else; where Pod Security forbids that, capture PortName keeps the port-name
  takeover and the NetworkPolicy alone, which cuts (never leaks) traffic by number.
- Configuration is *mounted*: a ConfigMap `hegui-sidecar-<service>` that the operator renders
  from the GenerativeService. The sidecar then needs no API access at all (least privilege), and
  a posture change reaches running pods without a restart (kubelet refreshes the volume).
- Desired state, then a diff (as Istio's injector): `render` is a pure function from the
  incoming pod and the policy and posture to the pod as injected, and `json_patch` is the
  generic RFC 6902 difference between the two, which the mutating webhook returns. No operation
  is written by hand, so no index arithmetic and no empty/non-empty branches; a pod that
  carries the sidecar renders as itself, an empty patch. Golden pods in and out:
  tests/unit/golden/injection/ (tests/unit/test_injection_golden.py).
Opting out is only possible through a ComplianceException for rule `injection`; labels and
annotations on the pod are not consulted.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hegui.api.common import SecretKeyReference
from hegui.api.generativeservice import GenerativeService, OpenPort, PortPurpose
from hegui.api.policy import CompliancePolicy, RulesPlacement, Sidecar, TrafficCapture
from hegui.evidence import config as evidence_config
from hegui.rules import workloads
from hegui.rules.injection import (
    CAPTURE_NAME,
    CONFIG_VOLUME,
    DATA_VOLUME,
    FRONTED_LABEL,
    KEYS_VOLUME,
    SIDECAR_NAME,
    foreign_mounts,
)

STATUS_ANNOTATION = "hegui.io/sidecar-status"
MODEL_PORT_NAME = "hegui-model"  # port names are at most 15 characters
KEYS_DIR = "/etc/hegui-keys"
#: Where the sidecar finds the evidence store's credentials (hegui.evidence.config).
EVIDENCE_DIR = f"{KEYS_DIR}/evidence"
EVIDENCE_FILES = (evidence_config.ACCESS_KEY_FILE, evidence_config.SECRET_KEY_FILE,
                  evidence_config.KEY_FILE, evidence_config.CONFIG_FILE)
SIDECAR_USER = 65532  # the distroless "nonroot" user
#: hegui's containers: a pod may not declare its own under these names (they are replaced).
OUR_CONTAINERS = (SIDECAR_NAME, CAPTURE_NAME)
#: Ports whose protocol the sidecar (HTTP/1.1) does not speak: their clients are refused.
_H2_PROTOCOLS = ("grpc", "h2c", "kubernetes.io/h2c", "http2")


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


def secret_keys(posture: GenerativeService | None) -> dict[str, SecretKeyReference]:
    """The Secrets the sidecar needs, by file name under /etc/hegui-keys: the pseudonymisation
    key of its records (dataProtection, Art.11) and the image watermark key (labeling.watermark,
    Art.12). More credentials (the evidence store's, from a hegui-owned Secret) are more entries
    here: they join the same projected volume, mounted by the sidecar alone, and the comparison
    of an injected pod with what hegui renders covers them without further code."""
    keys: dict[str, SecretKeyReference] = {}
    if posture is None:
        return keys
    protection = posture.spec.data_protection
    if protection is not None and protection.pseudonymisation_key_ref is not None:
        keys["pseudonymisation.key"] = protection.pseudonymisation_key_ref
    labeling = posture.spec.labeling
    if labeling is not None and labeling.watermark is not None and labeling.watermark.enabled \
            and labeling.watermark.key_secret_ref is not None:
        keys["watermark.key"] = labeling.watermark.key_secret_ref
    moderation = posture.spec.moderation
    identity = moderation.users.identity if moderation is not None else None
    if identity is not None and identity.jwt_key_secret_ref is not None:
        # The key that verifies users' JWTs (hegui.sidecar.identity, Art.14).
        keys["user-jwt.key"] = identity.jwt_key_secret_ref
    return keys


def evidence_source(service: str) -> dict[str, Any]:
    """The evidence store's credentials (Art.11): the hegui-owned Secret the operator keeps in
    the service's namespace (hegui.evidence.config.secret_name), projected under
    EVIDENCE_DIR. Optional: it exists only where a CompliancePolicy declares a store, and the
    sidecar then waits for it (its fail mode decides, hegui.evidence.sidecar.attach); projected
    into every injected pod, so declaring a store later needs no re-injection."""
    return {"secret": {"name": evidence_config.secret_name(service), "optional": True,
                       "items": [{"key": name, "path": f"evidence/{name}"}
                                 for name in EVIDENCE_FILES]}}


def keys_volume(keys: Mapping[str, SecretKeyReference], service: str) -> dict[str, Any]:
    """One projected volume for all of them. Mode 0444: without a pod fsGroup (hegui does not
    change the team's pod security context) the kubelet writes them root-owned, so 0400 would
    lock out the sidecar's non-root user; only the sidecar mounts this volume (others are
    refused, `_mounts_of_ours`), so no other container sees the files whatever their mode."""
    return {"name": KEYS_VOLUME, "projected": {"defaultMode": 0o444, "sources": [
        {"secret": {"name": ref.name, "items": [{"key": ref.key, "path": path}]}}
        for path, ref in sorted(keys.items())] + [evidence_source(service)]}}


def sidecar_container(sidecar: Sidecar, *, service: str, port_name: str,
                      upstream_port: int | None,
                      keys: Mapping[str, SecretKeyReference] | None = None) -> dict[str, Any]:
    """The container, speaking `python -m hegui.sidecar`'s command line."""
    # All interfaces: the Service's traffic arrives on the pod's IP.
    args = ["--service", "/etc/hegui/service.yaml", "--host", "0.0.0.0",  # noqa: S104
            "--port", str(sidecar.port),
            "--records", "/var/lib/hegui/records.jsonl",
            "--strikes", "/var/lib/hegui/strikes.json"]
    keys = keys or {}
    if "pseudonymisation.key" in keys:
        args += ["--key-file", f"{KEYS_DIR}/pseudonymisation.key"]
    if "watermark.key" in keys:
        args += ["--watermark-key-file", f"{KEYS_DIR}/watermark.key"]
    if "user-jwt.key" in keys:
        args += ["--user-jwt-key-file", f"{KEYS_DIR}/user-jwt.key"]
    args += ["--evidence-credentials-dir", EVIDENCE_DIR]
    if sidecar.rules is RulesPlacement.TRITON:
        args += ["--rules", "triton"]
    elif sidecar.lexicon is not None:
        # The provider's lexicon, which the operator renders into the mounted ConfigMap
        # (*.tsv.gz beside service.yaml); the kubelet's update reaches the running sidecar,
        # whose LexiconStore reloads it (issue 19, Art.4(1), Art.14).
        args += ["--lexicon", "/etc/hegui"]
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
                         {"name": DATA_VOLUME, "mountPath": "/var/lib/hegui"},
                         {"name": KEYS_VOLUME, "mountPath": KEYS_DIR, "readOnly": True}],
    }


def open_ports(posture: GenerativeService | None) -> list[OpenPort]:
    """The ports the GenerativeService leaves out of the capture (spec.traffic.openPorts)."""
    traffic = posture.spec.traffic if posture is not None else None
    return list(traffic.open_ports) if traffic is not None else []


def _port_text(port: OpenPort) -> str:
    return str(port.port) if port.last == port.port else f"{port.port}:{port.last}"


def capture_container(sidecar: Sidecar, ports: list[OpenPort],
                      model_port: int | None = None) -> dict[str, Any]:
    """The init container that redirects the pod's inbound TCP to the sidecar
    (`python -m hegui.sidecar capture`, hegui.sidecar.capture): root in the pod's network
    namespace with NET_ADMIN and NET_RAW, which iptables needs, and no other capability; it
    exits once the rules are in, before the model starts. With the model's port known, loopback
    connections to it from any user but the sidecar's reach the sidecar too (kubectl
    port-forward). Only PodToPod ports are left out: a Metrics port is captured like any other,
    and the sidecar serves nothing there but the model's `GET /metrics`, moderated
    (hegui.sidecar.original_dst), so a second API the team declares "Metrics" is no way
    around it."""
    args = ["capture", "--to-port", str(sidecar.port)]
    for port in sorted((p for p in ports if p.purpose is PortPurpose.POD_TO_POD),
                       key=lambda p: (p.port, p.last)):
        args += ["--open", _port_text(port)]
    if model_port is not None:
        args += ["--model-port", str(model_port), "--sidecar-uid", str(SIDECAR_USER)]
    return {
        "name": CAPTURE_NAME,
        "image": sidecar.image,
        "args": args,
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                      "limits": {"cpu": "500m", "memory": "128Mi"}},
        "securityContext": {
            "runAsNonRoot": False, "runAsUser": 0, "runAsGroup": 0,
            "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}},
    }


def _declared_port(model: Mapping[str, Any]) -> int | None:
    """The port a model serves on without declaring it: TGI's and many runtimes' PORT
    variable, or a --port/--http-port/--http_port argument (KServe runtimes)."""
    for entry in model.get("env") or []:
        if isinstance(entry, Mapping) and entry.get("name") == "PORT" \
                and str(entry.get("value", "")).isdigit():
            return int(entry["value"])
    words = [str(w) for key in ("command", "args") for w in model.get(key) or []]
    for i, word in enumerate(words):
        flag, equals, value = word.partition("=")
        if flag in ("--port", "--http-port", "--http_port"):
            value = value if equals else (words[i + 1] if i + 1 < len(words) else "")
            if value.isdigit() and 0 < int(value) < 65536:
                return int(value)
    return None


def _speaks_h2(port: Mapping[str, Any]) -> bool:
    name = str(port.get("name") or "").lower()
    return name.startswith(("grpc", "h2c")) or str(port.get("appProtocol") or "").lower() in \
        _H2_PROTOCOLS


def _model_container(spec: Mapping[str, Any]) -> tuple[int, Mapping[str, Any], list[int]]:
    """The container that serves the model: the first one asking for a GPU, else the first
    (a GPU asked for only by an init container, e.g. to convert weights, leaves the first
    regular container serving). Also the other regular containers that ask for a GPU."""
    containers = [c for c in spec.get("containers") or [] if isinstance(c, Mapping)]
    if not containers:
        raise InjectionConflict("the pod has no containers")
    template = workloads.PodTemplate({}, {"containers": containers}, "spec")
    with_gpu = sorted({int(e.field.split("[")[1].split("]")[0])
                       for e in workloads.generative_evidence(template)
                       if e.field.startswith("spec.containers[")})
    index = with_gpu[0] if with_gpu else 0
    return index, containers[index], with_gpu[1:]


def _declared_sidecar(spec: Mapping[str, Any], name: str = SIDECAR_NAME
                      ) -> tuple[str, int, Mapping[str, Any]] | None:
    """The pod's own container named `name`, as (list, index, container), if any."""
    found = [(group, i, c) for group in ("initContainers", "containers")
             for i, c in enumerate(spec.get(group) or [])
             if isinstance(c, Mapping) and c.get("name") == name]
    if len(found) > 1:
        raise InjectionConflict(f"the pod declares {len(found)} containers named {name}")
    return found[0] if found else None


#: Where the ServiceAccount admission plugin mounts the pod's token (in every container).
_SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
#: What the apiserver fills in on a probe the injector left unset.
_PROBE_DEFAULTS = {"timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3,
                   "periodSeconds": 10}
#: Environment a pod's own hegui-sidecar may never set, even where the policy allows env: hegui's
#: own settings, and what changes which code the interpreter or the loader runs.
_FORBIDDEN_ENV_PREFIXES = ("HEGUI_", "PYTHON", "LD_", "SSL_", "REQUESTS_CA", "HTTP_PROXY",
                           "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY")


def _default_pull_policy(image: Any) -> str:
    """The imagePullPolicy the apiserver defaults for `image`."""
    text = str(image or "")
    if "@" in text:
        return "IfNotPresent"
    tag = text.rsplit("/", 1)[-1].partition(":")[2]
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def _canonical(container: Mapping[str, Any]) -> dict[str, Any]:
    """`container` without what the apiserver adds to every container: defaulted fields, the
    service account token's mount, requests defaulted from limits. Two containers are the same
    sidecar when their canonical forms are equal."""
    out: dict[str, Any] = {}
    for key, value in container.items():
        if (key, value) in (("terminationMessagePath", "/dev/termination-log"),
                            ("terminationMessagePolicy", "File")):
            continue
        if key == "imagePullPolicy" and value == _default_pull_policy(container.get("image")):
            continue
        if key.endswith("Probe") and isinstance(value, Mapping):
            probe = {k: v for k, v in value.items() if _PROBE_DEFAULTS.get(k, object()) != v}
            get = probe.get("httpGet")
            if isinstance(get, Mapping):
                probe["httpGet"] = {k: v for k, v in get.items()
                                    if (k, v) != ("scheme", "HTTP")}
            value = probe
        elif key == "ports" and isinstance(value, list):
            value = [{"protocol": "TCP", **p} if isinstance(p, Mapping) else p for p in value]
        elif key == "env" and isinstance(value, list):
            value = [_canonical_env(e) for e in value]
        elif key == "volumeMounts" and isinstance(value, list):
            value = [m for m in value if not (
                isinstance(m, Mapping) and m.get("mountPath") == _SERVICE_ACCOUNT_DIR
                and str(m.get("name", "")).startswith("kube-api-access-")
                and m.get("readOnly") is True and set(m) == {"name", "mountPath", "readOnly"})]
        elif key == "resources" and isinstance(value, Mapping):
            limits = value.get("limits") if isinstance(value.get("limits"), Mapping) else {}
            requests = value.get("requests") if isinstance(value.get("requests"), Mapping) else {}
            assert isinstance(limits, Mapping) and isinstance(requests, Mapping)
            value = {k: v for k, v in (("limits", dict(limits)),
                                       ("requests", {**limits, **requests})) if v}
        out[key] = value
    return out


def _canonical_env(entry: Any) -> Any:
    if not isinstance(entry, Mapping):
        return entry
    field_ref = (entry.get("valueFrom") or {}).get("fieldRef") \
        if isinstance(entry.get("valueFrom"), Mapping) else None
    if isinstance(field_ref, Mapping) and field_ref.get("apiVersion") == "v1":
        return {**entry, "valueFrom": {**entry["valueFrom"], "fieldRef": {
            k: v for k, v in field_ref.items() if k != "apiVersion"}}}
    return entry


#: Port names that mark the serving one among several: KubeRay names Ray Serve's HTTP port on
#: the head `serve` (its serve Service targets that name), after gcs-server, dashboard, client.
_SERVING_PORT_NAMES = frozenset({"serve"})


def _serving_index(ports: list[Mapping[str, Any]]) -> int:
    """Which of the model container's ports serves: one already renamed by injection, else one
    named as serving ports are, else the first."""
    for wanted in ({MODEL_PORT_NAME}, _SERVING_PORT_NAMES):
        for i, port in enumerate(ports):
            if port.get("name") in wanted:
                return i
    return 0


def _model_port(spec: Mapping[str, Any]) -> tuple[Mapping[str, Any] | None, int | None]:
    """The model container's serving port (`_serving_index`) and the number the sidecar
    forwards to: that port's, else the one its PORT variable or --port argument names."""
    try:
        _, model, _ = _model_container(spec)
    except InjectionConflict:
        return None, None
    ports = [p for p in model.get("ports") or [] if isinstance(p, Mapping)]
    if ports:
        serving = ports[_serving_index(ports)]
        return serving, int(serving.get("containerPort", 0)) or None
    return None, _declared_port(model)


def _mounts_of_ours(spec: Mapping[str, Any]) -> list[str]:
    """Containers other than hegui's sidecar that mount hegui's volumes (the rule's
    `foreign_mounts`), as the refusal names them."""
    return [f"{group.partition('[')[0]}[{name}] mounts {volume} at {path}"
            for group, name, volume, path in foreign_mounts(spec)]


def injection_gaps(spec: Mapping[str, Any], sidecar: Sidecar, service: str,
                   keys: Mapping[str, SecretKeyReference], *,
                   any_image: bool = False, opened: list[OpenPort] | None = None) -> list[str]:
    """Why the pod spec does not carry hegui's sidecar exactly as hegui renders it; empty when
    it does. The sidecar must equal the rendered container (after the apiserver's defaults and
    the fields the policy's userOverrides let a pod set), be a native sidecar, front the model's
    port (renamed hegui-model), mount hegui's own volumes, and be the only container that mounts
    them; with capture Redirect, hegui-capture must be there as rendered for the service's
    `opened` ports. The mutating webhook (is there anything to do?) and the operator (is this
    running pod injected?) both ask this: a look-alike container cannot switch injection off."""
    try:
        declared = _declared_sidecar(spec)
    except InjectionConflict as conflict:
        return [str(conflict)]
    if declared is None:
        return [f"no container named {SIDECAR_NAME}"]
    group, _, container = declared
    gaps = []
    if group != "initContainers" or container.get("restartPolicy") != "Always":
        gaps.append(f"{SIDECAR_NAME} is not a native sidecar (an init container with "
                    "restartPolicy Always)")
    port, upstream = _model_port(spec)
    if port is not None and port.get("name") != MODEL_PORT_NAME:
        gaps.append(f"the model's serving port is named {port.get('name')!r}, not "
                    f"{MODEL_PORT_NAME}: Services that target its name reach the model "
                    "around the sidecar")
    ports = container.get("ports")
    first = ports[0] if isinstance(ports, list) and ports and isinstance(ports[0], Mapping) \
        else {}
    assert isinstance(first, Mapping)
    port_name = str(first.get("name") or "hegui")
    wanted = sidecar_container(sidecar, service=service, port_name=port_name,
                               upstream_port=upstream, keys=keys)
    have = _canonical({**container, "image": sidecar.image} if any_image else container)
    merged, ignored = _overrides(have, _canonical(wanted), sidecar)
    if ignored or _canonical(merged) != have:
        differing = sorted({k for k in {*have, *merged} if have.get(k) != merged.get(k)})
        gaps.append(f"{SIDECAR_NAME} differs from the sidecar hegui renders in "
                    f"{', '.join(differing)}")
    volumes = [v for v in spec.get("volumes") or [] if isinstance(v, Mapping)]
    ours = _our_volumes(service, keys)
    for volume in ours:
        if not any(_is_ours(v, [volume]) for v in volumes):
            gaps.append(f"volume {volume['name']} is not hegui's")
    gaps += _mounts_of_ours(spec)
    if sidecar.capture is TrafficCapture.REDIRECT:
        gaps += _capture_gaps(spec, sidecar, opened or [], any_image=any_image)
    return gaps


def _capture_gaps(spec: Mapping[str, Any], sidecar: Sidecar, ports: list[OpenPort], *,
                  any_image: bool) -> list[str]:
    """Why the pod's hegui-capture is not the one hegui renders (a look-alike that installs
    nothing, or opens more ports, is not capture)."""
    try:
        declared = _declared_sidecar(spec, CAPTURE_NAME)
    except InjectionConflict as conflict:
        return [str(conflict)]
    if declared is None:
        return [f"no init container {CAPTURE_NAME}: traffic sent to the model's port by "
                "number would reach the model around the sidecar"]
    group, _, container = declared
    gaps = []
    if group != "initContainers" or "restartPolicy" in container:
        gaps.append(f"{CAPTURE_NAME} is not an init container that runs to completion")
    wanted = _canonical(capture_container(sidecar, ports, _model_port(spec)[1]))
    have = _canonical({**container, "image": sidecar.image} if any_image else container)
    if have != wanted:
        differing = sorted({k for k in {*have, *wanted} if have.get(k) != wanted.get(k)})
        gaps.append(f"{CAPTURE_NAME} differs from the one hegui renders in "
                    f"{', '.join(differing)}")
    return gaps


def carries_sidecar(pod: Mapping[str, Any], sidecar: Sidecar, service: str,
                    posture: GenerativeService | None = None, *, any_image: bool = True) -> bool:
    """Whether a pod has hegui's sidecar as the policy injects it; on a running pod its image
    aside (`any_image`: an older image is an upgrade to roll out, not a pod that bypasses
    moderation)."""
    spec = pod.get("spec")
    if not isinstance(spec, Mapping) or not all(
            isinstance(spec.get(group) or [], list)
            for group in ("initContainers", "containers", "volumes")):
        return False  # not a pod the apiserver would store (a hostile review's)
    return not injection_gaps(spec, sidecar, service, secret_keys(posture), any_image=any_image,
                              opened=open_ports(posture))


def _overrides(declared: Mapping[str, Any], wanted: dict[str, Any],
               sidecar: Sidecar) -> tuple[dict[str, Any], list[str]]:
    """The policy's container with the fields the policy lets a pod set taken from the pod's own
    hegui-sidecar container; the other fields it set are named in a warning and dropped."""
    allowed = {override.value for override in sidecar.user_overrides}
    merged, ignored = dict(wanted), []
    for key, value in declared.items():
        if key == "name" or value == wanted.get(key):
            continue
        if key == "resources" and "resources" in allowed and isinstance(value, Mapping):
            merged["resources"] = dict(value)
        elif key == "env" and "env" in allowed and isinstance(value, list):
            ours = {e["name"] for e in wanted["env"]}
            extra = [e for e in value if isinstance(e, Mapping) and e.get("name") not in ours]
            kept = [e for e in extra
                    if not str(e.get("name", "")).upper().startswith(_FORBIDDEN_ENV_PREFIXES)]
            merged["env"] = wanted["env"] + kept
            if len(kept) != len(extra):
                ignored.append("env (" + ", ".join(sorted(
                    str(e.get("name")) for e in extra if e not in kept)) + ")")
        else:
            ignored.append(key)
    warnings = []
    if ignored:
        warnings.append(
            f"[injection, Art.14] the pod's own {SIDECAR_NAME} container sets "
            f"{', '.join(sorted(ignored))}, which the CompliancePolicy does not let a pod "
            f"override (userOverrides: {', '.join(sorted(allowed)) or 'none'}); hegui's values "
            "are used")
    return merged, warnings


def _our_volumes(service: str,
                 keys: Mapping[str, SecretKeyReference]) -> list[dict[str, Any]]:
    return [{"name": CONFIG_VOLUME, "configMap": {"name": sidecar_config_map(service),
                                                  "optional": True}},
            {"name": DATA_VOLUME, "emptyDir": {"sizeLimit": "256Mi"}},
            keys_volume(keys, service)]


#: What the apiserver adds to hegui's volumes; anything else a pod sets on them (a configMap's
#: items remapping another key onto service.yaml, a medium) makes them not hegui's.
_VOLUME_DEFAULTS = {"configMap": {"defaultMode": 420}, "projected": {}, "emptyDir": {}}


def _is_ours(volume: Mapping[str, Any], ours: list[dict[str, Any]]) -> bool:
    """Whether `volume` is one hegui injected, exactly (defaults the apiserver added
    notwithstanding): the configuration volume is the service's own ConfigMap
    hegui-sidecar-<service> and nothing else."""
    for wanted in ours:
        if volume.get("name") != wanted["name"]:
            continue
        source = next(k for k in wanted if k != "name")
        found = volume.get(source)
        if set(volume) != {"name", source} or not isinstance(found, Mapping):
            return False
        defaults = _VOLUME_DEFAULTS.get(source, {})
        extra = {k: v for k, v in found.items() if k not in wanted[source]}
        return all(found.get(k) == v for k, v in wanted[source].items()) and all(
            k in defaults and defaults[k] == v for k, v in extra.items())
    return False


def _covers(port: OpenPort, number: int) -> bool:
    return port.port <= number <= port.last


def _check_open_ports(spec: Mapping[str, Any], sidecar: Sidecar, ports: list[OpenPort]) -> None:
    """Neither the sidecar's port nor the model's serving port may be declared open: either
    would let users' traffic reach the model around the sidecar."""
    _, upstream = _model_port(spec)
    for port in ports:
        for number, what in ((sidecar.port, "the sidecar's port"),
                             (upstream, "the model's serving port")):
            if number is not None and _covers(port, number):
                raise InjectionConflict(
                    f"the GenerativeService's spec.traffic.openPorts declares "
                    f"{_port_text(port)} ({port.purpose.value}), which includes {number}, "
                    f"{what}: users' traffic would reach the model around the sidecar; open "
                    "only ports that carry no generation (metrics, pod-to-pod)")


def _port_warnings(spec: Mapping[str, Any], model_index: int, serving_index: int,
                   sidecar: Sidecar, ports: list[OpenPort]) -> list[str]:
    """What becomes of the pod's ports other than the model's serving one: with capture they reach
    the sidecar unless declared open (say so, so that a metrics or NCCL port is declared, not
    found broken); a gRPC/h2c port is refused by the sidecar, which speaks HTTP/1.1."""
    warnings = []
    for c_index, container in enumerate(spec.get("containers") or []):
        if not isinstance(container, Mapping):
            continue
        for p_index, port in enumerate(container.get("ports") or []):
            if not isinstance(port, Mapping) or (c_index, p_index) == (model_index,
                                                                       serving_index):
                continue
            number = int(port.get("containerPort", 0) or 0)
            if any(_covers(p, number) for p in ports):
                continue
            what = f"container {container.get('name')} port {number}" + (
                f" ({port.get('name')})" if port.get("name") else "")
            if sidecar.capture is not TrafficCapture.REDIRECT:
                if c_index == model_index:
                    warnings.append(
                        f"[injection, Art.14] {what} is not fronted by the sidecar and "
                        "hegui's NetworkPolicy admits no traffic to it; declare it in the "
                        "GenerativeService's spec.traffic.openPorts if it carries no "
                        "generation (Metrics, PodToPod)")
                continue
            if _speaks_h2(port):
                warnings.append(
                    f"[injection, Art.14] {what} speaks gRPC/h2c: its traffic is captured by "
                    "the sidecar, which moderates HTTP/1.1 only, so gRPC clients are refused. "
                    "Fix: serve generation over HTTP on the model's serving port")
            else:
                warnings.append(
                    f"[injection, Art.14] {what} is captured: its traffic reaches the sidecar, "
                    "which forwards to the model's serving port. If it carries no generation "
                    "(the model's metrics, NCCL, Ray, NIXL between pods), declare it in the "
                    "GenerativeService's spec.traffic.openPorts")
    return warnings


@dataclass(frozen=True)
class Rendered:
    """The pod as hegui injects it, and what the team should hear about it. `pod` shares the
    subtrees injection leaves alone with the incoming pod (copy it before changing it); it is
    the incoming pod itself when there is nothing to inject."""

    pod: Mapping[str, Any]
    warnings: list[str] = field(default_factory=list)


def render(pod: Mapping[str, Any], policy: CompliancePolicy, service: str,
           posture: GenerativeService | None = None) -> Rendered:
    """The desired state: `pod` with the policy's sidecar injected (the sidecar and capture
    init containers first, the model's serving port renamed, hegui's volumes, the status
    annotation), or `pod` itself if it carries it already or the policy injects nothing.
    Pure: `pod` is not changed. `posture` is the service itself, for the Secrets its sidecar
    mounts and the ports it leaves open. Raises InjectionConflict when the pod cannot be
    injected safely. The patch is `json_patch(pod, render(...).pod)`."""
    sidecar = policy.spec.sidecar
    if sidecar is None:
        return Rendered(pod)  # the policy injects nothing
    metadata = pod.get("metadata") if isinstance(pod.get("metadata"), Mapping) else {}
    spec = pod.get("spec") if isinstance(pod.get("spec"), Mapping) else {}
    assert isinstance(metadata, Mapping) and isinstance(spec, Mapping)
    annotations = metadata.get("annotations") or {}
    # These hold for every pod, injected already or not: a pod copied from an injected one
    # (or carrying a look-alike) is checked like any other.
    if spec.get("hostNetwork"):
        raise InjectionConflict(
            "spec.hostNetwork is true: the sidecar's port would be the node's, and nothing "
            "could keep traffic from reaching the model directly (Art.14); run the model "
            "without hostNetwork")
    if host_ports := [f"{c.get('name')} port {p.get('containerPort')}"
                      for group in ("initContainers", "containers")
                      for c in spec.get(group) or [] if isinstance(c, Mapping)
                      and c.get("name") != SIDECAR_NAME
                      for p in c.get("ports") or [] if isinstance(p, Mapping)
                      and p.get("hostPort")]:
        raise InjectionConflict(
            f"{', '.join(host_ports)} sets hostPort: the node's port would reach the container "
            "around the sidecar and its NetworkPolicy (Art.14); remove hostPort and reach the "
            "service through a Service")
    if mounted := _mounts_of_ours(spec):
        # Refused, not stripped: a container that expects the mount would run broken.
        raise InjectionConflict(
            f"{'; '.join(mounted)}: hegui's volumes ({CONFIG_VOLUME}, {DATA_VOLUME}, "
            f"{KEYS_VOLUME}) are the sidecar's alone (its configuration, records, strikes and "
            "keys); remove the mount")
    # The status annotation alone proves nothing: a team could set it on its own pod template;
    # containers named hegui-sidecar and hegui-capture count only if exactly what hegui renders.
    keys = secret_keys(posture)
    ports_open = open_ports(posture)
    _check_open_ports(spec, sidecar, ports_open)
    capturing = sidecar.capture is TrafficCapture.REDIRECT
    declared = _declared_sidecar(spec)
    declared_capture = _declared_sidecar(spec, CAPTURE_NAME)
    gaps = injection_gaps(spec, sidecar, service, keys, opened=ports_open)
    if declared is not None and not gaps:
        return Rendered(pod)
    warnings: list[str] = []
    mine = [name for name, found in ((SIDECAR_NAME, declared), (CAPTURE_NAME, declared_capture))
            if found is not None]
    if mine:
        warnings.append(
            f"[injection, Art.14] what the pod declares as {' and '.join(mine)} is not "
            f"hegui's ({'; '.join(gaps)}); replaced by the CompliancePolicy's")
    # The pod's own hegui containers go; the policy's take their place, the sidecar with what
    # the pod may set.
    spec = {**spec, **{group: [c for c in spec.get(group) or []
                               if not (isinstance(c, Mapping) and c.get("name") in mine)]
                       for group in {d[0] for d in (declared, declared_capture) if d}}}

    index, model, other_gpu = _model_container(spec)
    for other in other_gpu:
        serving = spec["containers"][other]
        if serving.get("ports") and not capturing:
            # One sidecar fronts one serving port; say so rather than guess which is public.
            warnings.append(
                f"[injection, Art.14] container {serving.get('name')} also uses a GPU and "
                f"declares ports; hegui's sidecar fronts only {model.get('name')}'s port "
                f"{(model.get('ports') or [{}])[0].get('containerPort', '(none)')}. Fix: serve "
                "the service's traffic from one container, or split the pod")
    ports = [p for p in model.get("ports") or [] if isinstance(p, Mapping)]
    at = _serving_index(ports)
    warnings += _port_warnings(spec, index, at, sidecar, ports_open)
    # A pod copied from an injected one already has the model's port renamed and our volumes.
    renamed = bool(ports) and ports[at].get("name") == MODEL_PORT_NAME
    taken = {str(p.get("name")) for c in spec.get("containers") or [] if isinstance(c, Mapping)
             for p in c.get("ports") or [] if isinstance(p, Mapping) and p.get("name")}
    if MODEL_PORT_NAME in taken and not renamed:
        raise InjectionConflict(f"a container already has a port named {MODEL_PORT_NAME}, the "
                                "name the model's serving port is given under the sidecar")
    new_volumes = _our_volumes(service, keys)
    existing = [v for v in spec.get("volumes") or [] if isinstance(v, Mapping)]
    if clash := {str(v.get("name")) for v in existing if not _is_ours(v, new_volumes)} & {
            CONFIG_VOLUME, DATA_VOLUME, KEYS_VOLUME}:
        raise InjectionConflict(
            f"the pod already has a volume named {', '.join(sorted(clash))} that is not "
            f"hegui's (the configuration volume is ConfigMap {sidecar_config_map(service)} and "
            "nothing else); remove it")
    if any(int(p.get("containerPort", 0)) == sidecar.port for c in spec.get("containers") or []
           if isinstance(c, Mapping) for p in c.get("ports") or [] if isinstance(p, Mapping)):
        raise InjectionConflict(f"a container already listens on port {sidecar.port}, the "
                                "sidecar's port in the CompliancePolicy")

    containers = list(spec["containers"])
    port_name, upstream = "hegui", _declared_port(model)
    if ports:
        serving = ports[at]
        upstream = int(serving.get("containerPort", 0)) or None
        if renamed:
            previous = declared[2].get("ports") if declared is not None else None
            if isinstance(previous, list) and previous and isinstance(previous[0], Mapping):
                port_name = str(previous[0].get("name") or "hegui")
        else:
            # The sidecar takes the serving port's name; the model keeps the port, renamed.
            port_name = str(serving.get("name") or "hegui")
            renamed_ports = list(model["ports"])
            renamed_ports[at] = {**serving, "name": MODEL_PORT_NAME}
            containers[index] = {**model, "ports": renamed_ports}
    elif upstream is None or not capturing:
        warnings.append(
            f"[injection, Art.14] container {model.get('name')} declares no serving port"
            + (f" (it serves on {upstream}, by its PORT or --port)" if upstream else "")
            + ", so hegui cannot route its traffic through the sidecar"
            + ("" if upstream else " nor forward to it")
            + ". Fix: declare the port the model serves on")

    container = sidecar_container(sidecar, service=service, port_name=port_name,
                                  upstream_port=upstream, keys=keys)
    if declared is not None:
        container, ignored = _overrides(declared[2], container, sidecar)
        warnings += ignored
    # The sidecar first (started, and Ready, before anything else), then the capture step, which
    # runs to completion before the pod's own init containers and the model.
    ours = [container] + ([capture_container(sidecar, ports_open, upstream)] if capturing
                          else [])
    present = {v.get("name") for v in existing if _is_ours(v, new_volumes)}
    status = json.dumps({"container": SIDECAR_NAME, "image": sidecar.image,
                         "policy": policy.name,
                         "policyGeneration": policy.metadata.generation,
                         "service": service}, separators=(",", ":"), sort_keys=True)
    return Rendered({
        **pod,
        # The label makes the pod a peer on the service's ports between pods (its
        # NetworkPolicy admits only fronted pods there).
        "metadata": {**metadata, "annotations": {**annotations, STATUS_ANNOTATION: status},
                     "labels": {**(metadata.get("labels") or {}), FRONTED_LABEL: "true"}},
        "spec": {**spec, "containers": containers,
                 "initContainers": ours + list(spec.get("initContainers") or []),
                 "volumes": list(spec.get("volumes") or [])
                 + [v for v in new_volumes if v["name"] not in present]}}, warnings)


def inject(pod: Mapping[str, Any], policy: CompliancePolicy, service: str,
           posture: GenerativeService | None = None) -> Injection:
    """The JSON patch that injects the sidecar into `pod`, or an empty one if it has it: the
    difference between `pod` and what `render` makes of it."""
    rendered = render(pod, policy, service, posture)
    return Injection(json_patch(pod, rendered.pod), rendered.warnings)


# --- the generic difference of two JSON documents as an RFC 6902 patch --------------------------
# Not jsonpatch.make_patch: its move detection emits patches that do not apply (python-json-patch
# issues 124, 138, 160, 179), and a malformed patch makes the apiserver refuse the pod. This one
# uses add, remove and replace only, so every operation's path exists when it runs.

def json_patch(original: Any, desired: Any) -> list[dict[str, Any]]:
    """The RFC 6902 operations that turn `original` into `desired` (JSON values: mappings,
    lists, strings, numbers, booleans, null); empty when they are equal. Objects are compared
    key by key; lists are aligned on their longest common runs (difflib), so an element
    inserted before others is one `add` at its index, and an element changed in place is
    patched inside."""
    ops: list[dict[str, Any]] = []
    _diff(original, desired, "", ops)
    return ops


def _pointer(path: str, key: str | int) -> str:
    if isinstance(key, str) and ("~" in key or "/" in key):
        return f"{path}/{_escape(key)}"
    return f"{path}/{key}"


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _equal(a: Any, b: Any) -> bool:
    """Equal as JSON: True is not 1, 1 is not 1.0."""
    return a is b or (type(a) is type(b) and a == b
                      and (not isinstance(a, Mapping | list)
                           or _canonical_json(a) == _canonical_json(b)))


def _diff(a: Any, b: Any, path: str, ops: list[dict[str, Any]]) -> None:
    if a is b:
        return
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key, before in a.items():
            if key not in b:
                ops.append({"op": "remove", "path": _pointer(path, key)})
            elif b[key] is not before:  # shared subtrees (what render left alone) are skipped
                _diff(before, b[key], _pointer(path, key), ops)
        ops += [{"op": "add", "path": _pointer(path, key), "value": value}
                for key, value in b.items() if key not in a]
    elif isinstance(a, list) and isinstance(b, list):
        _diff_lists(a, b, path, ops)
    elif not _equal(a, b):
        ops.append({"op": "replace", "path": path, "value": b})


def _same_item(a: Any, b: Any) -> bool:
    """Whether list elements at one place are one item changed (patched inside) rather than one
    item in place of another (replaced whole): two objects unless both are named (the key of
    Kubernetes' lists of containers, volumes, env) and differently, or two lists."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return "name" not in a or "name" not in b or a["name"] == b["name"]
    return isinstance(a, list) and isinstance(b, list)


def _diff_lists(a: list[Any], b: list[Any], path: str, ops: list[dict[str, Any]]) -> None:
    # The common head and tail first, by identity or value (cheap: injection shares them).
    head = 0
    while head < min(len(a), len(b)) and _equal(a[head], b[head]):
        head += 1
    tail = 0
    while tail < min(len(a), len(b)) - head and _equal(a[-1 - tail], b[-1 - tail]):
        tail += 1
    old, new = a[head:len(a) - tail], b[head:len(b) - tail]
    blocks: Sequence[tuple[str, int, int, int, int]]
    if old and len(old) == len(new) and all(_same_item(x, y)
                                            for x, y in zip(old, new, strict=True)):
        blocks = [("replace", 0, len(old), 0, len(new))]  # the same items, each changed inside
    elif old and new and (len(old) > 1 or len(new) > 1):
        blocks = difflib.SequenceMatcher(None, [_canonical_json(x) for x in old],
                                         [_canonical_json(x) for x in new],
                                         autojunk=False).get_opcodes()
    else:
        blocks = [("replace", 0, len(old), 0, len(new))] if old or new else []
    shift, length = head, len(a)  # where old[0] now is; the list's length as patched so far
    for tag, i1, i2, j1, j2 in blocks:
        at = i1 + shift
        if tag == "equal":
            continue
        paired = min(i2 - i1, j2 - j1)
        for k in range(paired):  # changed in place: patched inside if the same item, else replaced
            before, after = old[i1 + k], new[j1 + k]
            if _same_item(before, after):
                _diff(before, after, _pointer(path, at + k), ops)
            else:
                ops.append({"op": "replace", "path": _pointer(path, at + k), "value": after})
        for _ in range(i2 - i1 - paired):  # left over in `a`: removed
            ops.append({"op": "remove", "path": _pointer(path, at + paired)})
            length -= 1
        for k in range(paired, j2 - j1):  # left over in `b`: added
            where = at + k
            ops.append({"op": "add", "path": f"{path}/-" if where == length
                        else _pointer(path, where), "value": new[j1 + k]})
            length += 1
        shift += (j2 - j1) - (i2 - i1)
