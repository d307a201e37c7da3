"""What the operator sees of a service's running workloads (Art.14, Art.17).

Admission decides on what is created; this module judges what is *running*, with the same rules:
- matched workloads: the Deployments, StatefulSets and bare Pods the service's selector claims;
- pods that slipped through injection (admitted while the webhook was down, failurePolicy Ignore,
  or before hegui was installed): `hegui.admission.mutate.sidecar_duty` says a pod must carry the
  sidecar, exactly as the mutating webhook does, and `carries_sidecar` says whether it does;
- Services that reach the model around the sidecar: without the capture step (sidecar.capture
  PortName), a Service whose targetPort is a number (or the renamed model port) bypasses the
  port-name takeover;
- the NetworkPolicy that admits ingress to the service's pods only on the sidecar's port and the
  ports the service declares open;
- the workloads a ScaleToZero suspension scales: the topmost controller of each of the
  service's pods (Deployment over ReplicaSet, LeaderWorkerSet over StatefulSet, ...).
Everything here is pure (objects in, findings out); handlers.py does the API calls.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hegui.admission.injection import MODEL_PORT_NAME, carries_sidecar
from hegui.admission.mutate import SidecarDuty, sidecar_duty
from hegui.api.articles import Rule
from hegui.api.common import LabelSelector
from hegui.api.generativeservice import GenerativeService, OpenPort, PortPurpose
from hegui.api.policy import EgressDestination, EgressMode, Sidecar, TrafficCapture
from hegui.rules.index import ComplianceIndex, EffectivePolicy
from hegui.rules.injection import FRONTED_LABEL, strictest_sidecar
from hegui.rules.network import closed_by_hegui, widens
from hegui.rules.workloads import labels

MAX_LISTED = 32  # status lists are capped; counts say how many there are in all
#: Pods in these phases hold (or are about to hold) traffic; finished ones cannot bypass anything.
LIVE_PHASES = ("Pending", "Running")


@dataclass
class Observation:
    matched: list[dict[str, str]] = field(default_factory=list)
    matched_count: int = 0
    uninjected: list[str] = field(default_factory=list)  # pod names, all of them
    #: The uninjected pods the operator may evict (evictUninjected): the service's own, on duty
    #: to carry its sidecar, and recreated by a controller. A bare pod would not come back, so
    #: evicting it would delete a workload: it is reported, never evicted (issue 15).
    evictable: list[str] = field(default_factory=list)
    #: NetworkPolicies not hegui's that admit ingress to the service's live pods: older than
    #: the admission guard (or written while it was down), they widen hegui's (see
    #: `widening_policies`).
    widening: list[str] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)
    #: The policy's sidecar when the service's pods must carry it (None: no injection here).
    sidecar: Sidecar | None = None
    evict: bool = False
    #: (apiVersion, kind, name) of the topmost controllers of the service's pods and of its
    #: matched workloads: what ScaleToZero scales through the scale subresource (Art.21).
    scalable: set[tuple[str, str, str]] = field(default_factory=set)


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _template_labels(workload: Mapping[str, Any]) -> Mapping[str, str]:
    spec = workload.get("spec")
    template = spec.get("template") if isinstance(spec, Mapping) else None
    return labels(template) if isinstance(template, Mapping) else {}


def _finding(rule: Rule, severity: str, message: str, pod: str | None = None) -> dict[str, Any]:
    found = {"rule": rule.value, "article": rule.article, "severity": severity,
             "message": message[:512]}
    return found | ({"workload": {"kind": "Pod", "name": pod}} if pod else {})


def observe(service: GenerativeService, index: ComplianceIndex, *,
            pods: Iterable[Mapping[str, Any]], deployments: Iterable[Mapping[str, Any]] = (),
            statefulsets: Iterable[Mapping[str, Any]] = (),
            services: Iterable[Mapping[str, Any]] = (),
            replicasets: Iterable[Mapping[str, Any]] = (),
            network_policies: Iterable[Mapping[str, Any]] = (), now: dt.datetime) -> Observation:
    namespace, name = service.namespace or "", service.name
    selector = service.spec.selector
    found = Observation()
    pods, deployments, statefulsets = list(pods), list(deployments), list(statefulsets)

    matched = [("Deployment", d) for d in deployments if selector.matches(_template_labels(d))]
    matched += [("StatefulSet", s) for s in statefulsets if selector.matches(_template_labels(s))]
    own_pods = [p for p in pods if selector.matches(labels(p))]
    matched += [("Pod", p) for p in own_pods if not _meta(p).get("ownerReferences")]
    found.matched_count = len(matched)
    found.scalable = scale_targets(
        [obj for _, obj in matched] + own_pods,
        {"Pod": pods, "ReplicaSet": list(replicasets), "StatefulSet": statefulsets,
         "Deployment": deployments},
        starts={id(obj): kind for kind, obj in matched})
    found.matched = [{"kind": kind, "name": str(_meta(obj).get("name"))}
                     for kind, obj in sorted(matched, key=lambda m: (m[0],
                                                                     str(_meta(m[1]).get("name"))))
                     ][:MAX_LISTED]

    live = [p for p in own_pods if not _meta(p).get("deletionTimestamp")
            and (p.get("status") or {}).get("phase", "Pending") in LIVE_PHASES]
    duties = {id(pod): sidecar_duty(pod, namespace, index, now) for pod in live}
    found.sidecar, mixed = service_sidecar(service, index, matched=matched, pods=live, now=now,
                                           duties=duties)
    found.findings += mixed
    found.evict = found.sidecar is not None and found.sidecar.evict_uninjected

    for pod in live:
        duty = duties[id(pod)]
        sidecar = duty.policy.spec.sidecar if duty else None
        if duty is None or duty.service != name or sidecar is None:
            continue
        if duty.waived_by or carries_sidecar(pod, sidecar, name, service):
            continue
        pod_name = str(_meta(pod).get("name"))
        found.uninjected.append(pod_name)
        controlled = _controller(pod) is not None
        if controlled and sidecar.evict_uninjected:  # as the policy that injects it asks
            found.evictable.append(pod_name)
        fix = ("delete the pod so its controller recreates it injected, or set evictUninjected "
               "in the CompliancePolicy's sidecar" if controlled else
               "recreate the pod (no controller owns it, so hegui never evicts it: it would not "
               "come back)")
        found.findings.append(_finding(
            Rule.INJECTION, "Error",
            f"pod {pod_name} runs without hegui's sidecar (admitted while the injector was down "
            f"or before hegui): its traffic is not moderated or labeled. Fix: {fix}", pod_name))

    if found.sidecar is not None:
        found.findings += _bypassing_services(services, live, found.sidecar)
    found.widening, widening = widening_policies(service, network_policies, live,
                                                 found.sidecar)
    found.findings += widening
    return found


def _template_pod(kind: str, workload: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    """A pod as `workload` (a Deployment or StatefulSet) makes them, as far as the injector
    looks: its template's labels and spec, owned as its controller owns them (a Deployment's
    through a ReplicaSet, with the pod-template-hash label)."""
    spec = workload.get("spec")
    template = spec.get("template") if isinstance(spec, Mapping) else None
    template = template if isinstance(template, Mapping) else {}
    name = str(_meta(workload).get("name"))
    pod_labels = dict(labels(template))
    owner = {"apiVersion": "apps/v1", "kind": kind, "name": name, "controller": True}
    if kind == "Deployment":
        pod_labels.setdefault("pod-template-hash", "hegui")
        owner = {**owner, "kind": "ReplicaSet", "name": f"{name}-{pod_labels['pod-template-hash']}"}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{name}-template", "namespace": namespace,
                         "labels": pod_labels, "ownerReferences": [owner]},
            "spec": template.get("spec") if isinstance(template.get("spec"), Mapping) else {}}


def namespace_sidecar(effective: EffectivePolicy | None) -> Sidecar | None:
    """The sidecar a service none of whose pods is injected yet is rendered from: the first
    declared where no policy narrows its workload scope (the injector then puts it into every
    pod, `injecting_policy`), else the strictest of all declared (`strictest_sidecar`: its
    pods may come under any of them)."""
    declared = [p.spec.sidecar for p in (effective.policies if effective else ())
                if p.spec.sidecar is not None]
    if effective is None or not declared:
        return None
    return declared[0] if effective.takes_every_workload else strictest_sidecar(declared)


def service_sidecar(service: GenerativeService, index: ComplianceIndex, *,
                    matched: Iterable[tuple[str, Mapping[str, Any]]],
                    pods: Iterable[Mapping[str, Any]], now: dt.datetime,
                    duties: Mapping[int, SidecarDuty | None] | None = None
                    ) -> tuple[Sidecar | None, list[dict[str, Any]]]:
    """The sidecar declaration the service's `hegui-sidecar-<service>` ConfigMap and
    `hegui-<service>` NetworkPolicy are rendered from, the SafetyAssessment's judge reads the
    lexicon of, and a finding when its pods get the sidecars of different policies (Art.14).

    The sidecar injection puts into the service's pods, by the injector's own rule
    (`sidecar_duty`, through `hegui.rules.injection.injecting_policy`: the first policy that
    declares one among those whose spec.workloads takes the pod): of its live `pods` and of
    the pods its `matched` Deployments and StatefulSets make (their templates), those the
    injector puts this service's sidecar in. Where they get different policies' sidecars, the
    strictest reading of them (`strictest_sidecar`: no pod left more open than its own policy
    leaves it) and an Error finding naming which workloads get which. Where none is injected
    yet, the namespace's reading: the first declared sidecar where no policy narrows its
    workload scope (as the injector then picks it for every pod), else the strictest of all
    declared."""
    namespace, name = service.namespace or "", service.name
    effective = index.policy_for(namespace)
    if effective is None or effective.takes_every_workload:
        # No policy narrows its scope (the common case): every pod gets the first declared.
        return namespace_sidecar(effective), []
    given = duties or {}
    taking: dict[str, tuple[Sidecar, list[str]]] = {}
    candidates: list[tuple[str, Mapping[str, Any]]] = [
        (f"{kind} {_meta(obj).get('name')}", _template_pod(kind, obj, namespace))
        for kind, obj in matched if kind in ("Deployment", "StatefulSet")]
    candidates += [(f"Pod {_meta(pod).get('name')}", pod) for pod in pods]
    for what, pod in candidates:
        duty = given[id(pod)] if id(pod) in given else sidecar_duty(pod, namespace, index, now)
        if duty is None or duty.service != name or duty.waived_by:
            continue
        sidecar = duty.policy.spec.sidecar
        if sidecar is not None:
            taking.setdefault(duty.policy.name, (sidecar, []))[1].append(what)
    if not taking:
        return namespace_sidecar(effective), []
    ordered = sorted(taking.items())
    sidecar = strictest_sidecar([s for _, (s, _) in ordered])
    if len({s.model_dump_json() for _, (s, _) in ordered}) == 1:
        return sidecar, []
    which = "; ".join(f"CompliancePolicy {policy}'s into {', '.join(sorted(whats)[:3])}"
                      + (f" (and {len(whats) - 3} more)" if len(whats) > 3 else "")
                      for policy, (_, whats) in ordered)
    ingress = (f"port {sidecar.port} only" if sidecar.capture is TrafficCapture.PORT_NAME
               else "through the capture")
    return sidecar, [_finding(
        Rule.INJECTION, "Error",
        f"the service's pods get different sidecars ({which}): the policies' spec.workloads "
        f"split its workloads, and hegui-sidecar-{name} and NetworkPolicy hegui-{name} are one "
        f"per service, so they are rendered from the strictest (ingress {ingress}, egress "
        f"{sidecar.egress.mode.value}), which may cut some pods off. Fix: scope the policies "
        "so a service's workloads fall under one, or give them the same spec.sidecar")]


def _selects(selector: Any, labels: Mapping[str, str]) -> bool:
    """Whether a NetworkPolicy's podSelector selects a pod; a selector that cannot be read is
    taken to select it (the worst case is reported, never hidden)."""
    if not isinstance(selector, Mapping):
        return True
    try:
        return LabelSelector.from_dict(dict(selector)).matches(labels)
    except ValueError:
        return True


def widening_policies(service: GenerativeService, policies: Iterable[Mapping[str, Any]],
                      pods: list[Mapping[str, Any]], sidecar: Sidecar | None
                      ) -> tuple[list[str], list[dict[str, Any]]]:
    """NetworkPolicies, not hegui's, that admit what `hegui-<service>` (rendered from `sidecar`)
    closes to the service's live pods, and a finding for each (Art.14; Art.21 while suspended):
    ingress where hegui keeps the policy, egress where it also restricts egress
    (`hegui.rules.network`, the rule the admission guard shares).

    NetworkPolicies add up, so such a policy reopens what `hegui-<service>` closes: the model's
    port, or everything while the service is isolated (IsolateNetwork). The admission guard
    (`hegui.admission.guards`) refuses new ones; these predate it or were written while the
    webhook was down. They are reported, not deleted: deleting a team's objects would need
    delete rights on every NetworkPolicy, which the operator-scope admission policy denies the
    operator so that its cluster-wide rights reach only hegui's own objects, and a resume could
    not give them back. What holds regardless of NetworkPolicies: the sidecar refuses every
    request while the service is suspended, and the capture step sends the model's port to the
    sidecar."""
    names: list[str] = []
    findings: list[dict[str, Any]] = []
    isolated = service.is_suspended
    closed = closed_by_hegui([sidecar], suspended=isolated)
    rule = Rule.SUSPENSION if isolated else Rule.INJECTION
    for policy in policies:
        name = str(_meta(policy).get("name") or "")
        spec = policy.get("spec")
        if name.startswith("hegui-") or not isinstance(spec, Mapping):
            continue
        widened = widens(spec, closed)
        if widened is None:
            continue
        selected = sorted(str(_meta(p).get("name")) for p in pods
                          if _selects(spec.get("podSelector"), labels(p)))
        if not selected:
            continue
        names.append(name)
        closes = ("admits nothing while the service is suspended (Art.21)" if isolated else
                  "admits ingress only on the sidecar's port (Art.14)" if widened == "Ingress" else
                  "lets them dial only what the CompliancePolicy's spec.sidecar.egress allows "
                  "(Art.14)")
        admitted = "ingress to" if widened == "Ingress" else "egress from"
        findings.append(_finding(
            rule, "Error",
            f"NetworkPolicy {name} is not hegui's and admits {admitted} pods of this service "
            f"({', '.join(selected[:5])}{', ...' if len(selected) > 5 else ''}): "
            f"NetworkPolicies add up, so it widens hegui-{service.name}, which {closes}. It "
            "predates hegui's admission guard or was written while the webhook was down. Fix: "
            "narrow its podSelector or remove it (the platform); while suspended the sidecar "
            "still refuses every request"))
    return names, findings


def _controller(obj: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """(apiVersion, kind, name) of the object's controlling owner, if any."""
    for ref in _meta(obj).get("ownerReferences") or []:
        if isinstance(ref, Mapping) and ref.get("controller") is True:
            return (str(ref.get("apiVersion")), str(ref.get("kind")), str(ref.get("name")))
    return None


_API_VERSIONS = {"Pod": "v1", "ReplicaSet": "apps/v1", "StatefulSet": "apps/v1",
                 "Deployment": "apps/v1"}


def scale_targets(objects: Iterable[Mapping[str, Any]],
                  listed: Mapping[str, Iterable[Mapping[str, Any]]], *,
                  starts: Mapping[int, str] | None = None) -> set[tuple[str, str, str]]:
    """The topmost controllers above `objects` (pods, or workloads whose kind `starts` gives by
    id), following controller ownerReferences through the objects `listed` by kind: scaling a
    ReplicaSet its Deployment owns, or a StatefulSet a LeaderWorkerSet owns, would be undone
    by that controller. A bare pod has none (it cannot be scaled)."""
    index = {(kind, str(_meta(obj).get("name"))): obj for kind, objs in listed.items()
             for obj in objs}
    kinds = starts or {}
    found: set[tuple[str, str, str]] = set()
    for obj in objects:
        kind = kinds.get(id(obj), "Pod")
        top: tuple[str, str, str] | None = None if kind == "Pod" else (
            _API_VERSIONS.get(kind, "apps/v1"), kind, str(_meta(obj).get("name")))
        ref, seen = _controller(obj), set[tuple[str, str, str]]()
        while ref is not None and ref not in seen and len(seen) < 8:
            seen.add(ref)
            top = ref
            owner = index.get((ref[1], ref[2]))
            ref = _controller(owner) if owner is not None else None
        if top is not None:
            found.add(top)
    return found


def _bypassing_services(services: Iterable[Mapping[str, Any]],
                        pods: list[Mapping[str, Any]], sidecar: Sidecar) -> list[dict[str, Any]]:
    """Services that select the service's pods and target a port by number (other than the
    sidecar's) or the model's renamed port: their traffic would skip moderation (Art.14)."""
    findings = []
    for svc in services:
        spec = svc.get("spec") if isinstance(svc.get("spec"), Mapping) else {}
        assert isinstance(spec, Mapping)
        chooser = spec.get("selector")
        if not isinstance(chooser, Mapping) or not chooser:
            continue  # no selector: endpoints are managed by hand, not ours to judge
        if not any(all(labels(p).get(k) == v for k, v in chooser.items()) for p in pods):
            continue
        svc_name = str(_meta(svc).get("name"))
        for port in spec.get("ports") or []:
            if not isinstance(port, Mapping):
                continue
            target = port.get("targetPort", port.get("port"))
            by_number = isinstance(target, int) or str(target).isdigit()
            if sidecar.capture is TrafficCapture.REDIRECT:
                break  # every inbound connection is redirected to the sidecar (hegui-capture)
            if (by_number and int(str(target)) != sidecar.port) or target == MODEL_PORT_NAME:
                findings.append(_finding(
                    Rule.INJECTION, "Warning",
                    f"Service {svc_name} targets port {target} of the model's pods directly, "
                    "around hegui's sidecar (Art.14); hegui's NetworkPolicy cuts it where the "
                    "network enforces NetworkPolicies. Fix: set targetPort to the serving "
                    "port's name, which the sidecar takes over, or capture Redirect"))
    return findings


#: The label the apiserver sets on every namespace to its name (not writable by anyone else).
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"

#: The namespace label that admits a scraper to the ports services declare open for Metrics.
#: Namespaces are the platform's to label (`edit` cannot), so a team that declares a second
#: API "Metrics" does not open it to its users.
METRICS_SCRAPER_LABEL = "hegui.io/metrics-scraper"


#: Cluster DNS as kubeadm and most distributions run it; a platform with another resolver
#: (NodeLocal DNSCache on 169.254.20.10) names it in the policy's spec.sidecar.egress.to.
DNS_PEER = {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
DNS_PORTS = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]


def _destination(to: EgressDestination) -> dict[str, Any]:
    peer = ({"ipBlock": {"cidr": to.cidr}} if to.cidr is not None else
            {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: to.namespace}}})
    ports = [{"port": p.port, "protocol": p.protocol,
              **({"endPort": p.end_port} if p.end_port not in (None, p.port) else {})}
             for p in to.ports]
    return {"to": [peer], **({"ports": ports} if ports else {})}


def _captured_ports(opened: Iterable[OpenPort]) -> list[dict[str, Any]]:
    """Every TCP port but the declared open ones, as ranges: with capture Redirect each of
    them reaches the sidecar, whatever the model listens on."""
    ranges, start = [], 1
    for first, last in sorted((p.port, p.last) for p in opened):
        if first > start:
            ranges.append((start, first - 1))
        start = max(start, last + 1)
    if start <= 65535:
        ranges.append((start, 65535))
    return [{"port": first, "protocol": "TCP", **({"endPort": last} if last != first else {})}
            for first, last in ranges]


def network_policy(service: GenerativeService, sidecar: Sidecar, *, owner: Mapping[str, Any],
                   own_namespace: str, isolate: bool = False) -> dict[str, Any]:
    """The NetworkPolicy that admits ingress to the service's pods only where it reaches the
    sidecar (Art.14: no bypass): with capture Redirect every TCP port but the declared open
    ones (the capture step sends each to the sidecar, so a Service that targets the model's
    port by number is moderated, not cut), with PortName the sidecar's port alone; none at
    all while the service is suspended by network isolation (Art.21). Ports the service
    declares open (spec.traffic.openPorts) bypass the capture, and the team writes the
    declaration, so each is admitted only from whom its purpose needs: Metrics from namespaces
    the platform labels METRICS_SCRAPER_LABEL=true (its Prometheus), PodToPod from the
    service's own pods that carry the sidecar (NCCL, Ray, NIXL).

    Egress, where the policy restricts it (the default) and always while isolated: the sidecar
    sees only what comes in, so a model that dials out (a reverse tunnel, a queue it pulls
    prompts from) would serve around it. The pods may dial cluster DNS, hegui's namespace
    (Triton, the evidence store), their fronted peers on the PodToPod ports and what the
    policy names (spec.sidecar.egress.to, the platform's); nothing the team writes widens it."""
    opened = service.spec.traffic.open_ports if service.spec.traffic is not None else []

    def ports(purpose: PortPurpose) -> list[dict[str, Any]]:
        return [{"port": p.port, "protocol": "TCP",
                 **({"endPort": p.end_port} if p.end_port not in (None, p.port) else {})}
                for p in opened if p.purpose is purpose]

    # Only the service's pods that hegui fronts (the injector's label, which the webhook
    # refuses on any other pod): a CPU pod the team labels into the service is no peer.
    peers = _k8s_selector(service.spec.selector)
    peers["matchLabels"] = {**peers.get("matchLabels", {}), FRONTED_LABEL: "true"}
    between = ports(PortPurpose.POD_TO_POD)
    rules: list[dict[str, Any]] = [{"ports": (
        _captured_ports(opened) if sidecar.capture is TrafficCapture.REDIRECT
        else [{"port": sidecar.port, "protocol": "TCP"}])}]
    if metrics := ports(PortPurpose.METRICS):
        rules.append({"from": [{"namespaceSelector": {
            "matchLabels": {METRICS_SCRAPER_LABEL: "true"}}}], "ports": metrics})
    if between:
        rules.append({"from": [{"podSelector": peers}], "ports": between})
    spec: dict[str, Any] = {"podSelector": _k8s_selector(service.spec.selector),
                            "policyTypes": ["Ingress"], "ingress": [] if isolate else rules}
    if isolate or sidecar.egress.mode is EgressMode.RESTRICTED:
        egress: list[dict[str, Any]] = [
            {"to": [DNS_PEER], "ports": DNS_PORTS},
            {"to": [{"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL:
                                                           own_namespace}}}]}]
        if between:
            egress.append({"to": [{"podSelector": peers}], "ports": between})
        egress += [_destination(to) for to in sidecar.egress.to]
        spec["policyTypes"] = ["Ingress", "Egress"]
        spec["egress"] = egress
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {
            "name": f"hegui-{service.name}"[:253], "namespace": service.namespace or "",
            "labels": {"app.kubernetes.io/managed-by": "hegui",
                       "hegui.io/generative-service": service.name},
            "ownerReferences": [dict(owner)]},
        "spec": spec,
    }


def _k8s_selector(selector: LabelSelector) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if selector.match_labels:
        body["matchLabels"] = dict(selector.match_labels)
    if selector.match_expressions:
        body["matchExpressions"] = [
            {"key": r.key, "operator": r.operator.value, **({"values": r.values} if r.values
                                                             else {})}
            for r in selector.match_expressions]
    return body
