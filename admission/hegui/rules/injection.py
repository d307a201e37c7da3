"""Rule injection (Art.14): the sidecar carries the data path's moderation and labels; a pod
without it serves unmoderated.

The sidecar is put in where pods are made (the mutating webhook) and checked where they run (the
operator). What this module checks, at admission, in the background audit and in `hegui check`,
is that no other container of a pod hegui fronts can take the sidecar's place or read its keys:
- a container that may change the pod's network (NET_ADMIN, SYS_ADMIN, all capabilities, or
  privileged) can delete the capture's redirect or send the sidecar's port to the model, so
  clients reach the model unmoderated; `kubectl debug --profile=netadmin` is such a container;
- a container that mounts hegui's volumes reads the keys that make records tamper-evident and
  the object store's credentials (Art.11), or rewrites what the sidecar reads;
- a shared process namespace, or a debug container that targets the sidecar, sees the
  sidecar's processes and through /proc its files and memory;
- the node's processes (hostPID) show the sidecar's, and a hostPath onto the node's kubelet or
  container runtime directories (or /proc, or a directory above them) reaches the sidecar's
  projected keys and configuration where the kubelet keeps them, from outside its container;
- the pod's own name resolution is the sidecar's too: a hostAlias for Triton's or the evidence
  store's name (or any cluster Service name), or `dnsPolicy: None`, sends the sidecar's
  moderation to an always-clean stub of the team's and its records nowhere.
Ephemeral containers count too: they are added to running pods, where the mutating webhook never
looks again.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from hegui.api.articles import Rule
from hegui.api.generativeservice import ServiceConditionType, TritonEndpoint
from hegui.api.policy import (
    CompliancePolicy,
    EgressDestination,
    EgressMode,
    RulesPlacement,
    Sidecar,
    TrafficCapture,
)
from hegui.rules.base import Context, RuleDefinition, ServiceContext, Violation, service_location
from hegui.rules.index import ComplianceIndex, EffectivePolicy, ObjectKey

SIDECAR_NAME = "hegui-sidecar"
#: The init container that redirects inbound TCP to the sidecar: the one that needs NET_ADMIN.
CAPTURE_NAME = "hegui-capture"
CONFIG_VOLUME = "hegui-config"
DATA_VOLUME = "hegui-data"
KEYS_VOLUME = "hegui-keys"  # the Secrets the posture names, projected read-only
SIDECAR_VOLUMES = frozenset({CONFIG_VOLUME, DATA_VOLUME, KEYS_VOLUME})
#: The label the injector puts on every pod it fronts. A service's NetworkPolicy admits its
#: ports between pods (PodToPod) only from pods that carry it, so a pod the team labels into
#: the service without the sidecar (a CPU "proxy") is no peer; the validating webhook refuses
#: the label on a pod hegui does not front (`hegui.admission.mutate.false_fronting`).
FRONTED_LABEL = "hegui.io/fronted"

#: Capabilities that rewrite the pod's network namespace (its nat table, routes).
NETWORK_CAPABILITIES = frozenset({"NET_ADMIN", "SYS_ADMIN", "ALL"})
_GROUPS = ("initContainers", "containers", "ephemeralContainers")

#: Where a node keeps what its pods' containers hold: the kubelet's volumes (a pod's projected
#: Secrets and ConfigMaps, under /var/lib/kubelet/pods), the container runtimes' root
#: filesystems and sockets, and every process's memory and files (/proc). A hostPath at, under
#: or above one of them reads or rewrites the sidecar's keys and configuration.
NODE_PATHS = ("/proc", "/var/lib/kubelet", "/var/lib/containerd", "/run/containerd",
              "/var/run/containerd", "/var/lib/docker", "/run/docker.sock",
              "/var/run/docker.sock", "/var/lib/containers", "/run/crio", "/var/run/crio")

FIX = ("leave the pod's network, name resolution, processes and volumes to hegui: drop the "
       "capability or privileged, the volume mount, the hostAlias, dnsPolicy None, "
       "shareProcessNamespace and hostPID, mount model weights from their own host directory "
       "(never the kubelet's, the runtime's or /proc), and debug the model container "
       "(`kubectl debug --profile=general --target=<model>`)")


def injecting_policy(effective: EffectivePolicy | None, kinds: frozenset[str],
                     label_sets: list[Mapping[str, str]]
                     ) -> tuple[CompliancePolicy, EffectivePolicy] | None:
    """The CompliancePolicy whose sidecar injection puts into the pods of a workload, and the
    policies whose workload scope (spec.workloads) takes the workload in (whose modes its pods
    are judged by), or None when no policy that takes it declares a sidecar. `kinds`: what the
    pods count as (`hegui.rules.workloads.owner_kinds` of a pod: Pod, its owners, the Deployment
    behind a ReplicaSet); `label_sets`: their labels (the workload's pod templates).

    One rule, one place (Art.14): the mutating webhook injects this policy's sidecar
    (`hegui.admission.mutate.sidecar_duty`), and the operator renders the service's
    `hegui-sidecar-<service>` ConfigMap and `hegui-<service>` NetworkPolicy, judges its running
    pods and asks them in a SafetyAssessment by the sidecar this gives for the service's
    workloads. It is the first (by name, as `ComplianceIndex.policy_for` sorts them) of the
    policies that take the workload in and declare a sidecar: not the first of the namespace's,
    which a policy scoped to other workloads may be."""
    if effective is None:
        return None
    scoped, _ = effective.scoped(kinds, label_sets)
    if scoped is None:
        return None  # outside every policy's workload scope
    policy = next((p for p in scoped.policies if p.spec.sidecar is not None), None)
    return (policy, scoped) if policy is not None else None


def injected_sidecar(effective: EffectivePolicy | None, kinds: frozenset[str],
                     label_sets: list[Mapping[str, str]]) -> Sidecar | None:
    """The sidecar declaration injection puts into the workload's pods (`injecting_policy`)."""
    found = injecting_policy(effective, kinds, label_sets)
    return found[0].spec.sidecar if found is not None else None


def strictest_sidecar(sidecars: Sequence[Sidecar]) -> Sidecar:
    """The one sidecar declaration a service's `hegui-sidecar-<service>` ConfigMap and
    `hegui-<service>` NetworkPolicy are rendered from when its pods get the sidecars of
    different policies (their workloads fall under different scoped policies): both objects
    are one per service, and the NetworkPolicy selects all its pods. The first (by policy
    name), closed as far as any of them closes (Art.14, fail closed: no pod is left open that
    its own policy closes, at the cost of cutting some pods off):
    - a NetworkPolicy where any keeps one (`networkPolicy`), and among those:
    - ingress on the sidecar's port alone (capture PortName, at the first such sidecar's port)
      where any captures by port name: a PortName pod's model port must stay closed, while a
      Redirect pod's capture sends that port to its sidecar all the same;
    - egress Restricted where any restricts it, to the destinations every restricting one
      names;
    - eviction of uninjected pods where any asks (the operator evicts by each pod's own);
    - the lexicon of the first that runs the rules in-process with one (the ConfigMap carries
      one; sidecars without `spec.sidecar.lexicon` never read it).
    The service's status says its pods carry different sidecars (`hegui.operator.workloads`)."""
    first = sidecars[0]
    if all(s == first for s in sidecars[1:]):
        return first
    kept = [s for s in sidecars if s.network_policy] or [first]
    by_name = [s for s in kept if s.capture is TrafficCapture.PORT_NAME]
    restricted = [s for s in kept if s.egress.mode is EgressMode.RESTRICTED]

    def key(to: EgressDestination) -> tuple[object, ...]:
        return (to.cidr, to.namespace, tuple((p.port, p.end_port, p.protocol) for p in to.ports))

    egress = first.egress if not restricted else restricted[0].egress.model_copy(update={"to": [
        to for to in restricted[0].egress.to
        if all(key(to) in {key(t) for t in other.egress.to} for other in restricted[1:])]})
    lexicon = next((s for s in sidecars
                    if s.rules is RulesPlacement.IN_PROCESS and s.lexicon is not None), first)
    return first.model_copy(update={
        "network_policy": any(s.network_policy for s in sidecars),
        "capture": TrafficCapture.PORT_NAME if by_name else first.capture,
        "port": by_name[0].port if by_name else first.port,
        "egress": egress,
        "evict_uninjected": any(s.evict_uninjected for s in sidecars),
        "rules": lexicon.rules, "lexicon": lexicon.lexicon})


def reaches_node_secrets(path: str) -> str | None:
    """The NODE_PATHS entry a hostPath `path` is at, under or above, or None."""
    normal = posixpath.normpath("/" + path.lstrip("/"))
    for root in NODE_PATHS:
        if normal == root or normal.startswith(root + "/") or root.startswith(
                normal.rstrip("/") + "/"):
            return root
    return None


def _mapping(value: object) -> Mapping[str, Any]:
    # A dict (JSON's) or nothing, nearly always: both known without the Mapping ABC's check,
    # which costs more than the rest of a lookup.
    if type(value) is dict:
        return value
    return {} if value is None or not isinstance(value, Mapping) else value


def _is_mapping(value: object) -> bool:
    return type(value) is dict or isinstance(value, Mapping)


def _capabilities(container: Mapping[str, Any]) -> set[str]:
    added = _mapping(_mapping(container.get("securityContext")).get("capabilities")).get("add")
    return {str(c).upper().removeprefix("CAP_") for c in added or []}


def _hegui_own(group: str, name: object) -> bool:
    # hegui's own init containers, which injection renders (and replaces when a pod's own
    # differ). An ephemeral container is never hegui's, whatever its name.
    return group == "initContainers" and name in (SIDECAR_NAME, CAPTURE_NAME)


#: Names only the cluster's DNS may answer for: its Services, whatever the cluster domain.
_CLUSTER_NAME_SUFFIXES = (".svc", ".cluster.local")


def _shadowed(hostname: str, endpoints: frozenset[str]) -> bool:
    name = hostname.lower().rstrip(".")
    return (name in endpoints or name.endswith(_CLUSTER_NAME_SUFFIXES)
            or ".svc." in name)


def sidecar_endpoints(index: ComplianceIndex, namespace: str,
                      services: Iterable[ObjectKey]) -> frozenset[str]:
    """The hosts the sidecars of `services` talk to: Triton (the policies' default and floor,
    the services' own) and the evidence store."""
    tritons: list[TritonEndpoint | None] = []
    hosts: set[str] = set()
    effective = index.policy_for(namespace)
    for policy in effective.policies if effective else ():
        spec = policy.spec
        tritons += [spec.defaults.triton,
                    *(spec.moderation.triton_endpoints if spec.moderation else [])]
        if spec.evidence is not None:
            hosts.add(urlsplit(spec.evidence.store.endpoint).hostname or "")
    for key in services:
        service = index.services.get(key)
        if service is not None and service.spec.moderation is not None:
            tritons.append(service.spec.moderation.triton)
    hosts.update(t.address.rsplit(":", 1)[0] for t in tritons if t is not None)
    return frozenset(h.lower() for h in hosts if h)


def foreign_mounts(spec: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """(path of the container, its name, the volume, where it is mounted) for each mount of
    hegui's volumes by a container other than hegui's sidecar: each would let the team read
    the keys or rewrite what the sidecar reads and writes."""
    found = []
    for group in _GROUPS:
        containers = spec.get(group)
        for at, container in enumerate(containers if isinstance(containers, list) else []):
            if not _is_mapping(container) or (
                    group == "initContainers" and container.get("name") == SIDECAR_NAME):
                continue
            for mount in container.get("volumeMounts") or []:
                if _is_mapping(mount) and mount.get("name") in SIDECAR_VOLUMES:
                    found.append((f"{group}[{at}]", str(container.get("name")),
                                  str(mount.get("name")), str(mount.get("mountPath"))))
    return found


def swapped_own_containers(old: Mapping[str, Any], new: Mapping[str, Any]
                           ) -> list[tuple[str, str]]:
    """(path under the pod spec, what changed) for each of hegui's own init containers that an
    update of a running pod changes. The apiserver lets a pod's container images change in
    place, and the kubelet restarts the container with the new one: `kubectl set image
    pod/<p> hegui-sidecar=<the team's>` would swap the moderation for whatever that image does
    while the pod keeps looking injected. hegui renders these containers when a pod is made;
    nothing changes them afterwards."""
    before = {c.get("name"): c for c in _init_containers(old) if _hegui_own("initContainers",
                                                                           c.get("name"))}
    found = []
    for at, container in enumerate(_init_containers(new)):
        name = container.get("name")
        if name in before and container != before[name]:
            changed = sorted(k for k in {*container, *before[name]}
                             if container.get(k) != before[name].get(k))
            found.append((f"initContainers[{at}]", f"changes {name}'s {', '.join(changed)}: "
                          "hegui's containers are rendered when the pod is made and never "
                          "changed in place"))
    return found


def _init_containers(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    init = _mapping(pod.get("spec")).get("initContainers")
    return [c for c in (init if isinstance(init, list) else []) if isinstance(c, Mapping)]


def pod_tampering(spec: Mapping[str, Any],
                  endpoints: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """(path under the pod spec, what it allows) for each way a container of this pod could
    take the sidecar's place, read its keys or redirect what it talks to (`endpoints`: the
    hosts of its Triton and evidence store); empty when there is none."""
    found: list[tuple[str, str]] = [
        (f"{where}.volumeMounts", f"container {name} mounts {volume} at {path}: hegui's "
         "volumes (configuration, records, keys) are the sidecar's")
        for where, name, volume, path in foreign_mounts(spec)]
    if spec.get("dnsPolicy") == "None":
        found.append(("dnsPolicy", "None: the sidecar would resolve Triton and the evidence "
                      "store through nameservers the pod names"))
    aliases = spec.get("hostAliases")
    for at, alias in enumerate(aliases if isinstance(aliases, list) else []):
        names = _mapping(alias).get("hostnames")
        for name in names if isinstance(names, list) else []:
            if isinstance(name, str) and _shadowed(name, endpoints):
                found.append((f"hostAliases[{at}].hostnames", f"{name} is mapped to "
                              f"{_mapping(alias).get('ip')}: the sidecar resolves names "
                              "through the pod's /etc/hosts, so it would send moderation or "
                              "evidence there"))
    if spec.get("hostPID") is True:
        found.append(("hostPID", "shares the node's processes, the sidecar's among them: "
                      "through /proc a container reads its files, keys and memory"))
    volumes = spec.get("volumes")
    for at, volume in enumerate(volumes if isinstance(volumes, list) else []):
        host = _mapping(_mapping(volume).get("hostPath")).get("path")
        if isinstance(host, str) and (root := reaches_node_secrets(host)):
            found.append((f"volumes[{at}].hostPath.path", f"mounts the node's {host}, which "
                          f"reaches {root}: there the node keeps the sidecar's projected keys "
                          "and configuration, its files or its memory"))
    if spec.get("shareProcessNamespace") is True:
        found.append(("shareProcessNamespace", "shares the pod's processes: every container "
                      "can read the sidecar's files and memory through /proc"))
    for group in _GROUPS:
        containers = spec.get(group)
        for at, container in enumerate(containers if isinstance(containers, list) else []):
            if not _is_mapping(container):
                continue
            name = container.get("name")
            if _hegui_own(group, name):
                continue
            # Most containers set no securityContext: neither privileged nor a capability then.
            if (security := container.get("securityContext")) and _is_mapping(security):
                if security.get("privileged") is True:
                    found.append((f"{group}[{at}].securityContext.privileged",
                                  f"container {name} is privileged: it can rewrite the pod's "
                                  "traffic capture and reach the model around the sidecar"))
                if network := sorted(_capabilities(container) & NETWORK_CAPABILITIES):
                    found.append((f"{group}[{at}].securityContext.capabilities.add",
                                  f"container {name} adds {', '.join(network)}: it can rewrite "
                                  "the pod's traffic capture and reach the model around the "
                                  "sidecar"))
            if container.get("targetContainerName") in (SIDECAR_NAME, CAPTURE_NAME):
                found.append((f"{group}[{at}].targetContainerName",
                              f"container {name} targets {container['targetContainerName']}:"
                              " it sees the sidecar's processes, and through /proc its files "
                              "and keys"))
    return found


def check(ctx: Context) -> Iterator[Violation]:
    effective = ctx.policy
    if effective is None or not any(p.spec.sidecar for p in effective.policies):
        return  # no sidecar to protect
    # Only hostAliases are judged against the endpoints: most pods have none, and this runs
    # on every admission review.
    endpoints = (sidecar_endpoints(ctx.index, ctx.workload.namespace, ctx.services)
                 if any(t.spec.get("hostAliases") for t in ctx.templates) else frozenset())
    for template in ctx.templates:
        for path, what in pod_tampering(template.spec, endpoints):
            yield (f"{ctx.workload} {template.spec_path}.{path}", what, FIX)


def check_open_ports(ctx: ServiceContext) -> Iterator[Violation]:
    """A port the service declares open (spec.traffic.openPorts) is left out of the capture:
    the sidecar's own port there would let users reach the model around it. Judged when the
    GenerativeService is applied and by `hegui check`, before any pod exists (the model's
    serving port, known only from the pod, is judged at injection)."""
    effective = ctx.policy
    traffic = ctx.service.spec.traffic
    if effective is None or traffic is None:
        return
    sidecars = {(p.spec.sidecar.port, p.name) for p in effective.policies if p.spec.sidecar}
    for at, opened in enumerate(traffic.open_ports):
        for port, policy in sorted(sidecars):
            if opened.port <= port <= opened.last:
                yield (service_location(ctx.key, f"spec.traffic.openPorts[{at}]"),
                       f"declares {opened.port}" + (f"-{opened.last}" if opened.end_port
                                                    else "")
                       + f" open ({opened.purpose.value}), which includes {port}, the sidecar's"
                       f" port (CompliancePolicy {policy} spec.sidecar.port): users' traffic "
                       "would reach the model around the sidecar",
                       "open only ports that carry no generation (the model's metrics, "
                       "pod-to-pod ports), never the sidecar's or the model's serving port")


RULE = RuleDefinition(
    Rule.INJECTION,
    summary="the moderation and labeling sidecar runs in every pod of the service, and no "
            "other container can route around it or read its keys",
    fix="let hegui's webhook inject the sidecar: recreate pods that lack it, serve through "
        "the serving port's name, never by number; give no other container NET_ADMIN, "
        "privileged or hegui's volumes, and debug the model, not the sidecar",
    enforced_by="the mutating webhook injects the sidecar into every pod a GenerativeService "
                "selects (hegui.admission.mutate); the rule engine refuses containers, "
                "ephemeral ones included, that could undo its traffic capture or read its keys "
                "(hegui.rules.injection); the validating webhook refuses a NetworkPolicy that "
                "would let traffic around it (hegui.admission.guards); the operator reports and "
                "evicts pods without it, condition Moderated (hegui.operator.workloads)",
    workload_check=check,
    service_check=check_open_ports,
    apply_time=True,
    condition=ServiceConditionType.MODERATED,
)
