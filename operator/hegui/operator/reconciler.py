"""The GenerativeService reconciler: judge a service, write its status, keep what it owns.

Everything a reconcile needs comes in an `Operator` (settings, the `Cluster` it talks to, the
ComplianceIndex, metrics), which kopf hands to each handler in its memo; what the handlers of one
service share (a lock, the status last written) is a `ServiceMemory` in that object's own memo.
Only hegui's own objects (and its ConfigMaps and NetworkPolicies) are written: user workloads get
no annotations or finalizers.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import kopf
import yaml
from kubernetes.client.exceptions import ApiException

from hegui.admission.injection import sidecar_config_map
from hegui.api.common import API_VERSION, rfc3339
from hegui.api.generativeservice import (
    GenerativeService,
    GenerativeServiceStatus,
    ModeratedRoute,
    SuspensionAction,
    TritonEndpoint,
)
from hegui.api.suspension import ResumeRequest, SuspensionOrder
from hegui.operator import provider_lexicon, stability, suspension
from hegui.operator.cluster import (
    CONFIG_MAP,
    DEPLOYMENT,
    NETWORK_POLICY,
    POD,
    REPLICA_SET,
    SERVICE,
    STATEFUL_SET,
    Cluster,
    Kind,
    SharedListings,
)
from hegui.operator.metrics import OperatorMetrics, ServiceState
from hegui.operator.settings import OperatorSettings
from hegui.operator.status import MAX_FINDINGS, compute, merge_patch
from hegui.operator.workloads import Observation, network_policy, observe
from hegui.rules.index import ComplianceIndex, ObjectKey
from hegui.sidecar.suspension import FILE_NAME as SUSPENSION_FILE

log = logging.getLogger(__name__)

SUSPENSION_ORDER = Kind(API_VERSION, "suspensionorders", "SuspensionOrder")
RESUME_REQUEST = Kind(API_VERSION, "resumerequests", "ResumeRequest")
_REQUEST_KINDS = ((SuspensionOrder, SUSPENSION_ORDER), (ResumeRequest, RESUME_REQUEST))
#: The posture's YAML is written by libyaml's emitter where PyYAML has it: the same YAML in a
#: third of the pure-Python emitter's time, once a reconcile (issue 20, scale).
_YAML_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
#: Workload kinds known to serve `/scale`; others are found by discovery.
_SCALABLE = {(k.api_version, k.kind): k for k in (DEPLOYMENT, STATEFUL_SET, REPLICA_SET)}


@dataclass
class Operator:
    """What every handler shares: kopf hands it over in the memo (`memo.operator`)."""

    settings: OperatorSettings
    cluster: Cluster
    index: ComplianceIndex = field(default_factory=ComplianceIndex)
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    #: Reconciles in flight and when each began: the liveness probe fails on one that hangs.
    in_flight: dict[tuple[str, str], float] = field(default_factory=dict)
    #: Outcomes still to be written into the requests' status, by uid (retried until written).
    outcomes: dict[str, tuple[str, Kind, str, dict[str, Any]]] = field(default_factory=dict)
    #: Workload kinds with a scale subresource, by (apiVersion, kind).
    scalable: dict[tuple[str, str], Kind] = field(default_factory=lambda: dict(_SCALABLE))
    #: The PolicyReport CRD is not installed (said once).
    reports_missing: bool = False
    #: The provider lexicons the policies name, read and packed once for every service.
    lexicons: provider_lexicon.LexiconCache = field(
        default_factory=provider_lexicon.LexiconCache)

    def __post_init__(self) -> None:
        # The services of a namespace share its listings (see SharedListings).
        if not isinstance(self.cluster, SharedListings):
            self.cluster = SharedListings(self.cluster, self.settings.listing_seconds)

    def stuck_reconciles(self) -> list[str]:
        """Services whose reconcile has run for longer than the settings' stuck_seconds."""
        now = time.monotonic()
        return [f"{ns}/{name}" for (ns, name), began in list(self.in_flight.items())
                if now - began > self.settings.stuck_seconds]


@dataclass
class ServiceMemory:
    """What the handlers of one service share, kept in its kopf memo (dropped with it).

    kopf runs a change handler and the timer of one service in parallel threads, each with its
    own snapshot of the object: without these, the later one would judge from a status older
    than the one the other just wrote (a condition's lastTransitionTime moving back, a
    suspension stepped twice). The operator is the status' only writer and one replica leads,
    so what it wrote last is the freshest; after a restart or a failover the object's own
    status is."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    written: dict[str, Any] = field(default_factory=dict)
    #: The sidecar ConfigMap's data this process last wrote or found in place.
    config_map: dict[str, Any] | None = None
    #: The lexicon this process last put in it (binaryData and lexicon.json), kept when a new
    #: one cannot be rendered and the ConfigMap cannot be read either.
    lexicon: dict[str, Any] | None = None


def operator_of(memo: Any) -> Operator:
    """The Operator in kopf's memo (every object's memo is a shallow copy of the one given to
    kopf.operator, so all of them hold the same Operator)."""
    found = memo["operator"]
    assert isinstance(found, Operator)
    return found


def service_memory(memo: Any) -> ServiceMemory:
    """The service's own ServiceMemory in its kopf memo (created on first use)."""
    found = memo.setdefault("service", ServiceMemory())  # atomic: one wins when two race
    assert isinstance(found, ServiceMemory)
    return found


def _owner(body: kopf.Body) -> dict[str, Any]:
    # Owned objects are deleted with their service by the garbage collector.
    return {"apiVersion": body["apiVersion"], "kind": body["kind"], "name": body.meta["name"],
            "uid": body.meta["uid"], "controller": True, "blockOwnerDeletion": False}


def sidecar_config(body: kopf.Body, notice: str,
                   default_triton: TritonEndpoint | None = None,
                   policy_routes: Sequence[ModeratedRoute] = ()) -> dict[str, Any]:
    """The ConfigMap the injected sidecars mount (`--service /etc/hegui/service.yaml`): the
    service's posture, so sidecars need no API access, and the suspension notice
    (`suspension.yaml`, Art.21) they poll. What the policies add for every service goes in too
    (the sidecar reads one posture): a posture that names no Triton gets the policy's
    `defaults.triton`, the endpoint admission judged it by (rule moderation), or the sidecar
    would dial its loopback default and, failing closed, refuse everything; the policies'
    `defaults.routes` join the service's own `moderation.routes` (its entry for a path wins)."""
    name, namespace = body.meta["name"], body.meta["namespace"]
    spec = dict(body.get("spec") or {})
    if "moderation" in spec:  # a posture without moderation is refused by the sidecar anyway
        moderation = dict(spec.get("moderation") or {})
        if default_triton is not None and not moderation.get("triton"):
            moderation["triton"] = default_triton.to_dict()
        own = list(moderation.get("routes") or [])
        taken = {route.get("path") for route in own if isinstance(route, Mapping)}
        added = [r.to_dict() for r in policy_routes if r.path not in taken]
        if added:
            moderation["routes"] = own + list({r["path"]: r for r in added}.values())
        spec["moderation"] = moderation
    posture = {"apiVersion": body["apiVersion"], "kind": body["kind"],
               "metadata": {"name": name, "namespace": namespace}, "spec": spec}
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {
            "name": sidecar_config_map(name), "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "hegui",
                       "hegui.io/generative-service": name},
            "ownerReferences": [_owner(body)]},
        "data": {"service.yaml": yaml.dump(posture, Dumper=_YAML_DUMPER, allow_unicode=True,
                                           sort_keys=False),
                 SUSPENSION_FILE: notice},
    }


def ensure(cluster: Cluster, kind: Kind, wanted: dict[str, Any], field: str,
           listed: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Create `wanted` (a ConfigMap or NetworkPolicy the operator owns) or replace it when its
    `field` differs. One made `immutable` (by someone before hegui's admission guard, or by
    hand) cannot be replaced: it is deleted and created again, so it never blocks a
    reconcile. `listed` (the namespace's shared listing by name, for the NetworkPolicies it
    lists anyway) spares the read: one listed as wanted is left alone, one listed otherwise
    replaced, one not listed created; one there though not listed takes the read."""
    meta = wanted["metadata"]
    if listed is not None:
        shown = listed.get(meta["name"])
        if shown is None:
            try:
                cluster.create(kind, meta["namespace"], wanted)
                return
            except ApiException as error:
                if error.status != 409:  # there after all: compare it below
                    raise
        elif not shown.get("immutable"):
            if shown.get(field) != wanted[field]:
                cluster.replace(kind, meta["namespace"], meta["name"], wanted)
            return
    try:
        found = cluster.get(kind, meta["namespace"], meta["name"])
    except ApiException as error:
        if error.status != 404:
            raise
        try:
            cluster.create(kind, meta["namespace"], wanted)
        except ApiException as racing:
            # The timer and a change handler of one service may run at once: whoever
            # created it first wins, and the next reconcile compares.
            if racing.status != 409:
                raise
        return
    if found.get("immutable"):
        if found.get(field) == wanted[field] and found.get("immutable") == wanted.get("immutable"):
            return
        log.warning("%s %s/%s was made immutable: deleting and recreating it", kind.kind,
                    meta["namespace"], meta["name"])
        delete(cluster, kind, meta["namespace"], meta["name"])
        cluster.create(kind, meta["namespace"], wanted)
    elif found.get(field) != wanted[field]:
        cluster.replace(kind, meta["namespace"], meta["name"], wanted)


def keep_config_map(cluster: Cluster, memory: ServiceMemory, wanted: dict[str, Any]) -> None:
    """The sidecar ConfigMap as `wanted`. Data this process last wrote (or found) is checked by
    a read, as `ensure` does; other data (a spec change, a notice, the first pass after a
    start) is written straight away by a replace, created when there is none: one request
    where reading first took two (issue 20, scale). One made immutable (the replace is
    refused) goes through `ensure`, which deletes and creates it."""
    meta = wanted["metadata"]
    if memory.config_map != wanted["data"]:
        try:
            cluster.replace(CONFIG_MAP, meta["namespace"], meta["name"], wanted)
            memory.config_map = wanted["data"]
            return
        except ApiException as error:
            if error.status == 404:
                create_or_compare(cluster, CONFIG_MAP, wanted, "data")
                memory.config_map = wanted["data"]
                return
            if error.status != 422:
                raise
    ensure(cluster, CONFIG_MAP, wanted, "data")
    memory.config_map = wanted["data"]


def create_or_compare(cluster: Cluster, kind: Kind, wanted: dict[str, Any], field: str) -> None:
    """Create `wanted`; one created meanwhile (a change handler and the timer racing) is
    compared and replaced as `ensure` does."""
    meta = wanted["metadata"]
    try:
        cluster.create(kind, meta["namespace"], wanted)
    except ApiException as error:
        if error.status != 409:
            raise
        ensure(cluster, kind, wanted, field)


def _by_name(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str((o.get("metadata") or {}).get("name")): o for o in objects}


def delete(cluster: Cluster, kind: Kind, namespace: str, name: str) -> None:
    """Delete the object; one already gone is fine."""
    try:
        cluster.delete(kind, namespace, name)
    except ApiException as error:
        if error.status != 404:
            raise


def _observe(op: Operator, service: GenerativeService,
             now: dt.datetime) -> tuple[Observation, dict[str, dict[str, Any]]]:
    """The service's running workloads, judged (listed per reconcile, the listings shared
    with the namespace's other services: nothing is written to them, no annotations and no
    finalizers), and the namespace's NetworkPolicies by name."""
    namespace = service.namespace or ""
    network_policies = op.cluster.objects(NETWORK_POLICY, namespace)
    return observe(
        service, op.index, now=now,
        pods=op.cluster.objects(POD, namespace),
        deployments=op.cluster.objects(DEPLOYMENT, namespace),
        statefulsets=op.cluster.objects(STATEFUL_SET, namespace),
        replicasets=op.cluster.objects(REPLICA_SET, namespace),
        services=op.cluster.objects(SERVICE, namespace),
        network_policies=network_policies), _by_name(network_policies)


def _evict_one(op: Operator, body: kopf.Body, service: GenerativeService,
               pods: list[str]) -> None:
    """Evict one uninjected pod per reconcile (the Eviction API honours PodDisruptionBudgets), so
    its controller recreates it through the injector; one at a time keeps the service serving."""
    namespace, pod = service.namespace or "", pods[0]
    try:
        op.cluster.evict(namespace, pod)
    except ApiException as error:
        if error.status in (404, 429):  # gone already, or a PodDisruptionBudget says not now
            return
        raise
    op.metrics.evictions.labels(namespace, service.name).inc()
    op.cluster.event(body, type="Normal", reason="EvictedUninjectedPod",
                     message=f"evicted pod {pod}: it ran without hegui's sidecar (Art.14); its "
                             "controller recreates it injected")


def reconcile(op: Operator, memory: ServiceMemory, body: kopf.Body, patch: kopf.Patch,
              name: str, namespace: str | None) -> None:
    """Judge the service and bring its status and owned objects in line (one at a time per
    service: the change handler and the timer share `memory`'s lock)."""
    flight = (namespace or "", name)
    with memory.lock:
        op.in_flight[flight] = time.monotonic()
        try:
            _judge(op, memory, body, patch, name, namespace)
        except Exception:
            op.metrics.observe(flight[0], name, state=ServiceState.ERROR, findings=(),
                               uninjected=0)
            raise
        finally:
            op.in_flight.pop(flight, None)


def _judge(op: Operator, memory: ServiceMemory, body: kopf.Body, patch: kopf.Patch, name: str,
           namespace: str | None) -> None:
    current = {**dict(body.get("status") or {}), **memory.written}
    op.index.upsert({**dict(body), "status": current})  # the freshest copy, status included
    key = ObjectKey(namespace or "", name)
    service = op.index.services.get(key)
    if service is None:  # the CRD's schema admitted what the models refuse
        op.metrics.observe(key.namespace, name, state=ServiceState.ERROR, findings=(),
                           uninjected=0)
        return
    now = dt.datetime.now(dt.UTC)
    observed, network_policies = _observe(op, service, now)
    effective = op.index.policy_for(key.namespace)
    prometheus = next((p.spec.prometheus for p in effective.policies if p.spec.prometheus),
                      None) if effective else None
    # Every step below runs whatever another one does: a failure is collected, reported once
    # all have run, and retried at the next interval (a suspension must not wait on a broken
    # NetworkPolicy, nor evictions on an immutable ConfigMap).
    errors: list[str] = []
    requests: list[SuspensionOrder | ResumeRequest] = _attempt(
        errors, "list suspension requests", lambda: _requests(op, key.namespace), [])
    stable = stability.judge(service, prometheus, now, requests)
    previous = list(current.get("conditions") or [])
    status = compute(key, op.index, generation=body.meta.get("generation"), previous=previous,
                     now=now, observed=observed, stability=stable)
    status["suspension"]["scaledToZero"] = _scale(op, body, current, service, stable, observed,
                                                  errors)
    cluster = op.cluster
    policies = effective.policies if effective else []
    default_triton = next((p.spec.defaults.triton for p in policies if p.spec.defaults.triton),
                          None)
    policy_routes = [route for p in policies for route in p.spec.defaults.routes]
    # Read by name, not listed: the operator may not list ConfigMaps (its RBAC reaches only
    # hegui-sidecar-*, and a listing would read every team's).
    config_map = sidecar_config(body, stable.notice(), default_triton, policy_routes)
    # The provider's lexicon (issue 19), whole or not at all; the status says which is in force.
    lexicon_finding: dict[str, Any] | None = {}
    if names := provider_lexicon.wanted(observed.sidecar):  # the one its pods get (Art.14)
        lexicon_finding = _attempt(errors, "render the lexicon", lambda: _render_lexicon(
            op, memory, config_map, names))
        if lexicon_finding:
            status["findings"] = sorted(
                [lexicon_finding, *status["findings"]],
                key=lambda f: ("Error", "Warning", "Info").index(f["severity"])
                if f["severity"] in ("Error", "Warning", "Info") else 3)[:MAX_FINDINGS]
    _attempt(errors, "write the status", lambda: _write_status(op.index, key, memory, body,
                                                                patch, status))
    # The notice first: a suspension must reach the sidecars whatever fails after it; but not
    # a ConfigMap that lost its lexicon to a failure (neither rendered nor kept: retried).
    if lexicon_finding is not None:
        _attempt(errors, "render the sidecar ConfigMap", lambda: keep_config_map(
            cluster, memory, config_map))
    for transition in stable.step.transitions:
        _attempt(errors, "announce", functools.partial(_announce, op, body, key, transition))
    op.outcomes.update(_outcomes(key.namespace, requests, stable.step.outcomes, now))
    _attempt(errors, "record the requests' outcomes", lambda: _write_outcomes(op))
    if observed.sidecar is not None and (observed.sidecar.network_policy
                                         or stability.isolates_network(service, stable)):
        sidecar, isolate = observed.sidecar, stability.isolates_network(service, stable)
        _attempt(errors, "keep the NetworkPolicy", lambda: ensure(
            cluster, NETWORK_POLICY,
            network_policy(service, sidecar, owner=_owner(body),
                           own_namespace=op.settings.own_namespace, isolate=isolate), "spec",
            network_policies))
    elif f"hegui-{name}" in network_policies:  # listed: no delete per pass to learn it is gone
        _attempt(errors, "delete the NetworkPolicy", lambda: delete(
            cluster, NETWORK_POLICY, key.namespace, f"hegui-{name}"))
    if observed.evict and observed.evictable:  # the service's controlled pods only
        _attempt(errors, "evict an uninjected pod",
                 lambda: _evict_one(op, body, service, observed.evictable))
    compliant = next(c for c in status["conditions"] if c["type"] == "Compliant")
    state = (ServiceState.SUSPENDED if stable.suspended else ServiceState.COMPLIANT
             if compliant["status"] == "True" else ServiceState.NON_COMPLIANT)
    op.metrics.observe(key.namespace, name, findings=status["findings"],
                       uninjected=len(observed.uninjected), state=state)
    if errors:
        raise kopf.TemporaryError("; ".join(errors)[:2000], delay=op.settings.reconcile_seconds)


def _render_lexicon(op: Operator, memory: ServiceMemory, config_map: dict[str, Any],
                    names: tuple[str, ...]) -> dict[str, Any]:
    """Put the provider's lexicon into the sidecar ConfigMap `config_map` (whole, or the one it
    has when the new one cannot be: read then, by name, to keep it, or else the one this
    process last rendered) and say so in a finding. Never a ConfigMap without the list because
    something failed: the sidecars would fall back to the image's."""
    try:
        lexicon = op.lexicons.get(op.cluster, op.settings.own_namespace, names)
    except Exception as error:  # unreadable now (the apiserver, a corrupt binaryData): kept
        lexicon = provider_lexicon.ProviderLexicon(
            op.settings.own_namespace, names,
            problem=f"ConfigMap {', '.join(names)} in namespace {op.settings.own_namespace} "
                    f"could not be read ({str(error)[:200]})")
    data = dict(config_map["data"])
    problem = provider_lexicon.render(config_map, lexicon, None)
    if problem:
        # Not rendered: keep the list the ConfigMap has, as this process last rendered it (only
        # the operator writes it), else as read (after a restart).
        meta, current = config_map["metadata"], memory.lexicon
        if current is None:
            try:
                current = op.cluster.get(CONFIG_MAP, meta["namespace"], meta["name"])
            except ApiException as error:
                if error.status != 404:
                    raise
        config_map["data"] = data
        problem = provider_lexicon.render(config_map, lexicon, current)
        log.warning("%s/%s: %s", config_map["metadata"]["namespace"],
                    config_map["metadata"]["name"], problem)
    else:  # what is kept if a later one cannot be rendered: the cache's strings, shared
        memory.lexicon = {"data": {provider_lexicon.INFO_KEY: config_map["data"][
            provider_lexicon.INFO_KEY]}, "binaryData": config_map["binaryData"]}
    kept = json.loads(config_map["data"].get(provider_lexicon.INFO_KEY) or "{}")
    return provider_lexicon.finding(lexicon, problem, str(kept.get("version") or ""))


def _write_status(index: ComplianceIndex, key: ObjectKey, memory: ServiceMemory,
                  body: kopf.Body, patch: kopf.Patch, status: dict[str, Any]) -> None:
    """Patch the status through its model (what the CRD's schema admits), and only the fields
    that differ from the object's status or from the one this process last wrote: a reconcile
    that changes nothing writes nothing. The index is given the model, so the watch event of
    this write is not parsed again."""
    model = GenerativeServiceStatus.from_dict(status)
    wanted = model.to_dict()
    index.written_status(key, wanted, model)
    bases = [dict(body.get("status") or {})] + ([memory.written] if memory.written else [])
    for field_name, value in merge_patch(wanted, *bases).items():
        patch.status[field_name] = value
    memory.written = wanted


_T = TypeVar("_T")


def _attempt(errors: list[str], what: str, step: Callable[[], _T], default: _T = None  # type: ignore[assignment]
             ) -> _T:
    """Run one step of a reconcile; a failure is logged and collected, never skips the rest."""
    try:
        return step()
    except Exception as error:
        log.warning("reconcile step %r failed: %s", what, error)
        errors.append(f"{what}: {str(error)[:300]}")
        return default


def _requests(op: Operator, namespace: str) -> list[SuspensionOrder | ResumeRequest]:
    """The namespace's SuspensionOrders and ResumeRequests (Art.21); one that the models refuse
    (the CRD admitted it) is skipped and logged, never acted on."""
    found: list[SuspensionOrder | ResumeRequest] = []
    for model, kind in _REQUEST_KINDS:
        for item in op.cluster.objects(kind, namespace):
            try:
                found.append(model.from_dict(item))
            except ValueError as error:
                log.warning("%s %s/%s ignored: %s", model.__name__, namespace,
                            (item.get("metadata") or {}).get("name"), error)
    return found


def _outcomes(namespace: str, requests: list[SuspensionOrder | ResumeRequest],
              outcomes: dict[str, tuple[suspension.Outcome, str]],
              now: dt.datetime) -> dict[str, tuple[str, Kind, str, dict[str, Any]]]:
    kinds = {SuspensionOrder: SUSPENSION_ORDER, ResumeRequest: RESUME_REQUEST}
    moment = rfc3339(now, whole_seconds=True)
    return {uid: (namespace, kinds[type(request)], request.name,
                  {"phase": phase.value, "message": message[:1024], "processedAt": moment})
            for request in requests if (uid := request.metadata.uid or "") in outcomes
            for phase, message in (outcomes[uid],) if request.status is None}


def _write_outcomes(op: Operator) -> None:
    for uid, (namespace, kind, name, status) in list(op.outcomes.items()):
        try:
            op.cluster.patch_status(kind, namespace, name, status)
        except ApiException as error:
            if error.status != 404:  # gone: nothing left to tell
                raise
        op.outcomes.pop(uid, None)


def _scale(op: Operator, body: kopf.Body, current: dict[str, Any], service: GenerativeService,
           stable: stability.Stability, observed: Observation,
           errors: list[str]) -> list[dict[str, Any]]:
    """Suspension by ScaleToZero (Art.21): while suspended, every workload that runs the
    service's pods is held at zero replicas through the generic scale subresource (the topmost
    controller: a Deployment rather than its ReplicaSet, a LeaderWorkerSet rather than its
    StatefulSets; any kind that serves `/scale`), scaled back down if something scales it up;
    on resume each gets back the replicas it had. What to give back is kept in status, so a
    restart or a failover loses nothing. A workload that cannot be scaled (no scale
    subresource, no RBAC) is reported; the sidecars refuse its traffic all the same. Returns
    the new list."""
    previous = (current.get("suspension") or {}).get("scaledToZero") or []
    kept = {(str(w.get("apiVersion") or "apps/v1"), str(w["kind"]), str(w["name"])):
            int(w["replicas"]) for w in previous}
    namespace = service.namespace or ""
    action = service.spec.suspension.action if service.spec.suspension else None
    if stable.suspended and action is SuspensionAction.SCALE_TO_ZERO:
        for target in sorted({*observed.scalable, *kept}):
            try:
                kind = _scale_kind(op, target)
                replicas = op.cluster.get_scale(kind, namespace, target[2])
                if replicas:
                    kept.setdefault(target, replicas)
                    op.cluster.patch_scale(kind, namespace, target[2], 0)
            except Unscalable as error:  # a fact of the kind, not a failure to retry
                log.warning("%s/%s: %s", namespace, target[2], error)
            except Exception as error:
                errors.append(f"scale {target[1]} {target[2]} to zero: {str(error)[:200]}")
                log.warning("cannot scale %s/%s to zero: %s", target[1], target[2], error)
    elif not stable.suspended and kept:
        for target, replicas in list(kept.items()):
            try:
                op.cluster.patch_scale(_scale_kind(op, target), namespace, target[2], replicas)
            except Exception as error:
                errors.append(f"give {target[1]} {target[2]} back {replicas} replicas: "
                              f"{str(error)[:200]}")
                continue
            del kept[target]
            op.cluster.event(body, type="Normal", reason="ScaledBack",
                             message=f"{target[1]} {target[2]} given back {replicas} replicas "
                                     "on resume (Art.21)")
    return [{"apiVersion": api_version, "kind": kind, "name": name, "replicas": replicas}
            for (api_version, kind, name), replicas in sorted(kept.items())][:32]


class Unscalable(RuntimeError):
    """A kind without a scale subresource: ScaleToZero cannot stop it (its sidecars refuse)."""


def _scale_kind(op: Operator, target: tuple[str, str, str]) -> Kind:
    """The resource of a workload kind with a scale subresource, by discovery."""
    api_version, kind, _ = target
    known = op.scalable.get((api_version, kind))
    if known is not None:
        return known
    resources = {r.get("name"): r for r in op.cluster.resources(api_version)}
    plural = next((str(n) for n, r in resources.items() if r.get("kind") == kind
                   and "/" not in str(n)), None)
    if plural is None or f"{plural}/scale" not in resources:
        raise Unscalable(f"{kind} ({api_version}) has no scale subresource: suspend it "
                         "with RejectRequests or IsolateNetwork instead")
    found = op.scalable[(api_version, kind)] = Kind(api_version, plural, kind)
    return found


def _announce(op: Operator, body: kopf.Body, key: ObjectKey,
              transition: suspension.Transition) -> None:
    """An Event and a metric for each suspension or resume (Art.21); the record is the
    status' suspension history, which keeps who, when, why and the figures."""
    figures = ", ".join(f"{k}={v}" for k, v in sorted(transition.figures.items()))
    if transition.kind is suspension.TransitionKind.SUSPEND:
        op.metrics.suspensions.labels(key.namespace, key.name, transition.trigger.value).inc()
        op.cluster.event(body, type="Warning", reason="Suspended",
                         message=f"[suspension, Art.21] {transition.reason}"[:900]
                         + (f" ({figures})"[:100] if figures else ""))
    else:
        op.cluster.event(body, type="Normal", reason="Resumed",
                         message=f"[suspension, Art.21] {transition.reason}"[:1000])
    log.warning("%s %s/%s by %s: %s (%s)", transition.kind.value, key.namespace, key.name,
                transition.by, transition.reason, figures)
