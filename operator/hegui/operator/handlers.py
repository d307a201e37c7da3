"""kopf handlers: keep every GenerativeService's status true (Art.12, Art.17).

hegui's objects are mirrored into the same ComplianceIndex the webhook reads; each service is
re-evaluated when it changes and on a timer (assessments expire, and a SafetyAssessment or
policy changing elsewhere must show up), and its sidecars' ConfigMap is rendered from it. Only
hegui's own objects (and those ConfigMaps) are written: user workloads get no annotations or
finalizers from the operator.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import kopf
import yaml

from hegui.admission.injection import sidecar_config_map
from hegui.api.generativeservice import GenerativeService, SuspensionAction
from hegui.api.suspension import ResumeRequest, SuspensionOrder
from hegui.operator import stability, suspension
from hegui.operator.audit import audit_namespace, same_report
from hegui.operator.metrics import METRICS, ServiceState
from hegui.operator.status import compute
from hegui.operator.workloads import Observation, network_policy, observe
from hegui.rules.index import ComplianceIndex, ObjectKey
from hegui.sidecar.suspension import FILE_NAME as SUSPENSION_FILE

log = logging.getLogger(__name__)

GROUP, VERSION = "hegui.io", "v1alpha1"
RECONCILE_SECONDS = float(os.environ.get("HEGUI_RECONCILE_SECONDS", "30"))
INDEX = ComplianceIndex()


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """The kubeconfig named by `hegui operator run --kubeconfig`, else kopf's usual sources
    (in-cluster service account, $KUBECONFIG)."""
    path = os.environ.get("HEGUI_KUBECONFIG")
    if not path:
        return kopf.login_via_client(**kwargs)
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=path, client_configuration=configuration)
    # A kubeconfig authenticates by client certificate or by bearer token (a ServiceAccount's).
    # (The key is "BearerToken" in kubernetes-client 30+, "authorization" in older releases.)
    raw = configuration.api_key.get("BearerToken") or configuration.api_key.get("authorization")
    token = (raw or "").removeprefix("Bearer ").strip()
    return kopf.ConnectionInfo(
        server=configuration.host, ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl, certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
        scheme="Bearer" if token else None, token=token or None)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Progress in annotations only (the CRD's status schema has no room for kopf's own fields),
    # and hegui's objects carry no finalizers: nothing to clean up on deletion.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="hegui.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="hegui.io")
    settings.persistence.finalizer = "hegui.io/operator"
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300


def _mirror(event: kopf.RawEvent, **_: Any) -> None:
    obj = dict(event.get("object") or {})
    if event.get("type") == "DELETED":
        INDEX.delete(obj)
        meta = obj.get("metadata")
        if obj.get("kind") == "GenerativeService" and isinstance(meta, dict):
            METRICS.forget(str(meta.get("namespace")), str(meta.get("name")))
            _WRITTEN.pop(str(meta.get("uid")), None)
            _LOCKS.pop(str(meta.get("uid")), None)
    elif obj:
        INDEX.upsert(obj)


for _plural in ("compliancepolicies", "complianceexceptions", "safetyassessments"):
    kopf.on.event(GROUP, VERSION, _plural)(_mirror)
kopf.on.event("", "v1", "namespaces")(_mirror)
kopf.on.event(GROUP, VERSION, "generativeservices")(_mirror)


_APIS: dict[str, Any] = {}


def api_client() -> Any:
    """A kubernetes ApiClient with the operator's credentials: the kubeconfig of
    `hegui operator run --kubeconfig`, else in-cluster, else $KUBECONFIG."""
    from kubernetes import client, config

    if path := os.environ.get("HEGUI_KUBECONFIG"):
        return config.new_client_from_config(config_file=path)
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


def _api(kind: str) -> Any:
    """The kubernetes client API object `kind` (CoreV1Api, ...) with the operator's credentials."""
    if not _APIS:
        from kubernetes import client

        shared = api_client()
        for name in ("CoreV1Api", "AppsV1Api", "BatchV1Api", "NetworkingV1Api",
                     "CustomObjectsApi"):
            _APIS[name] = getattr(client, name)(shared)
    return _APIS[kind]


def _owner(body: kopf.Body) -> dict[str, Any]:
    # Owned objects are deleted with their service by the garbage collector.
    return {"apiVersion": body["apiVersion"], "kind": body["kind"], "name": body.meta["name"],
            "uid": body.meta["uid"], "controller": True, "blockOwnerDeletion": False}


def sidecar_config(body: kopf.Body, notice: str) -> dict[str, Any]:
    """The ConfigMap the injected sidecars mount (`--service /etc/hegui/service.yaml`): the
    service's posture, so sidecars need no API access and follow posture changes, and the
    suspension notice (`suspension.yaml`, Art.21) they poll."""
    name, namespace = body.meta["name"], body.meta["namespace"]
    posture = {"apiVersion": body["apiVersion"], "kind": body["kind"],
               "metadata": {"name": name, "namespace": namespace},
               "spec": dict(body.get("spec") or {})}
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {
            "name": sidecar_config_map(name), "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "hegui",
                       "hegui.io/generative-service": name},
            "ownerReferences": [_owner(body)]},
        "data": {"service.yaml": yaml.safe_dump(posture, allow_unicode=True, sort_keys=False),
                 SUSPENSION_FILE: notice},
    }


def _ensure(api: Any, kind: str, wanted: dict[str, Any], field: str) -> None:
    """Create `wanted` (a ConfigMap or NetworkPolicy the operator owns) or replace it when its
    `field` differs; `kind` is the client's snake_case name, e.g. config_map. One made
    `immutable` (by someone before hegui's admission guard, or by hand) cannot be replaced: it
    is deleted and created again, so it never blocks a reconcile."""
    from kubernetes.client.exceptions import ApiException

    meta = wanted["metadata"]
    try:
        current = getattr(api, f"read_namespaced_{kind}")(meta["name"], meta["namespace"],
                                                          _preload_content=False)
    except ApiException as error:
        if error.status != 404:
            raise
        try:
            getattr(api, f"create_namespaced_{kind}")(meta["namespace"], wanted)
        except ApiException as racing:
            # The timer and a change handler of one service may run at once: whoever
            # created it first wins, and the next reconcile compares.
            if racing.status != 409:
                raise
        return
    found = json.loads(current.data)
    if found.get("immutable"):
        if found.get(field) == wanted[field] and found.get("immutable") == wanted.get("immutable"):
            return
        log.warning("%s %s/%s was made immutable: deleting and recreating it", kind,
                    meta["namespace"], meta["name"])
        _delete(api, kind, meta["name"], meta["namespace"])
        getattr(api, f"create_namespaced_{kind}")(meta["namespace"], wanted)
    elif found.get(field) != wanted[field]:
        getattr(api, f"replace_namespaced_{kind}")(meta["name"], meta["namespace"], wanted)


def _delete(api: Any, kind: str, name: str, namespace: str) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        getattr(api, f"delete_namespaced_{kind}")(name, namespace)
    except ApiException as error:
        if error.status != 404:
            raise


def _items(listing: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(listing.data).get("items") or []
    return items


def _observe(service: GenerativeService, now: dt.datetime) -> Observation:
    """The service's running workloads, judged (listed per reconcile: nothing is written to
    them, no annotations and no finalizers)."""
    namespace = service.namespace or ""
    core, apps = _api("CoreV1Api"), _api("AppsV1Api")
    return observe(
        service, INDEX, now=now,
        pods=_items(core.list_namespaced_pod(namespace, _preload_content=False)),
        deployments=_items(apps.list_namespaced_deployment(namespace, _preload_content=False)),
        statefulsets=_items(apps.list_namespaced_stateful_set(namespace,
                                                              _preload_content=False)),
        replicasets=_items(apps.list_namespaced_replica_set(namespace, _preload_content=False)),
        services=_items(core.list_namespaced_service(namespace, _preload_content=False)))


def _evict_one(body: kopf.Body, service: GenerativeService, pods: list[str]) -> None:
    """Evict one uninjected pod per reconcile (the Eviction API honours PodDisruptionBudgets), so
    its controller recreates it through the injector; one at a time keeps the service serving."""
    from kubernetes.client.exceptions import ApiException

    namespace, pod = service.namespace or "", pods[0]
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction",
                "metadata": {"name": pod, "namespace": namespace}}
    try:
        _api("CoreV1Api").create_namespaced_pod_eviction(pod, namespace, eviction)
    except ApiException as error:
        if error.status in (404, 429):  # gone already, or a PodDisruptionBudget says not now
            return
        raise
    METRICS.evictions.labels(namespace, service.name).inc()
    kopf.event(body, type="Normal", reason="EvictedUninjectedPod",
               message=f"evicted pod {pod}: it ran without hegui's sidecar (Art.14); its "
                       "controller recreates it injected")


#: Reconciles in flight and when each began: the liveness probe fails on one that hangs.
_IN_FLIGHT: dict[tuple[str, str], float] = {}
STUCK_SECONDS = float(os.environ.get("HEGUI_STUCK_SECONDS", "300"))


def stuck_reconciles() -> list[str]:
    """Services whose reconcile has run for longer than STUCK_SECONDS."""
    now = time.monotonic()
    return [f"{ns}/{name}" for (ns, name), began in list(_IN_FLIGHT.items())
            if now - began > STUCK_SECONDS]


@kopf.on.probe(id="reconcile")
def reconcile_not_stuck(**_: Any) -> str:
    """kopf's liveness endpoint answers 500 when this raises, so the kubelet restarts an
    operator whose reconcile loop hangs (e.g. on an API call that never returns)."""
    if stuck := stuck_reconciles():
        raise RuntimeError(f"reconcile of {', '.join(stuck)} running for over "
                           f"{STUCK_SECONDS:.0f}s")
    return "ok"


#: The status this process last wrote, by the service's uid, and a lock per service. kopf runs a
#: change handler and the timer of one service in parallel threads, each with its own snapshot
#: of the object: without these, the later one would judge from a status older than the one the
#: other just wrote (a condition's lastTransitionTime moving back, a suspension stepped twice).
#: The operator is the status' only writer and one replica leads, so what it wrote last is the
#: freshest; after a restart or a failover the object's own status is.
_WRITTEN: dict[str, dict[str, Any]] = {}
_LOCKS: dict[str, threading.Lock] = {}


def _reconcile(body: kopf.Body, patch: kopf.Patch, name: str, namespace: str | None) -> None:
    flight = (namespace or "", name)
    uid = str(body.meta.get("uid"))
    with _LOCKS.setdefault(uid, threading.Lock()):
        _IN_FLIGHT[flight] = time.monotonic()
        try:
            _judge(body, patch, name, namespace, uid)
        except Exception:
            METRICS.observe(flight[0], name, state=ServiceState.ERROR, findings=(),
                            uninjected=0)
            raise
        finally:
            _IN_FLIGHT.pop(flight, None)


def _judge(body: kopf.Body, patch: kopf.Patch, name: str, namespace: str | None,
           uid: str) -> None:
    current = {**dict(body.get("status") or {}), **_WRITTEN.get(uid, {})}
    INDEX.upsert({**dict(body), "status": current})  # the freshest copy, status included
    key = ObjectKey(namespace or "", name)
    service = INDEX.services.get(key)
    if service is None:  # the CRD's schema admitted what the models refuse
        METRICS.observe(key.namespace, name, state=ServiceState.ERROR, findings=(),
                        uninjected=0)
        return
    now = dt.datetime.now(dt.UTC)
    observed = _observe(service, now)
    effective = INDEX.policy_for(key.namespace)
    prometheus = next((p.spec.prometheus for p in effective.policies if p.spec.prometheus),
                      None) if effective else None
    # Every step below runs whatever another one does: a failure is collected, reported once
    # all have run, and retried at the next interval (a suspension must not wait on a broken
    # NetworkPolicy, nor evictions on an immutable ConfigMap).
    errors: list[str] = []
    requests: list[SuspensionOrder | ResumeRequest] = _attempt(
        errors, "list suspension requests", lambda: _requests(key.namespace), [])
    stable = stability.judge(service, prometheus, now, requests)
    previous = list(current.get("conditions") or [])
    status = compute(key, INDEX, generation=body.meta.get("generation"), previous=previous,
                     now=now, observed=observed, stability=stable)
    status["suspension"]["scaledToZero"] = _scale(body, current, service, stable, observed,
                                                  errors)
    written = dict(body.get("status") or {})
    if any(written.get(k) != v for k, v in status.items()):
        for field, value in status.items():
            patch.status[field] = value
    _WRITTEN[uid] = {**current, **status}
    # The notice first: a suspension must reach the sidecars whatever fails after it.
    _attempt(errors, "render the sidecar ConfigMap", lambda: _ensure(
        _api("CoreV1Api"), "config_map", sidecar_config(body, stable.notice()), "data"))
    for transition in stable.step.transitions:
        _attempt(errors, "announce", functools.partial(_announce, body, key, transition))
    _OUTCOMES.update(_outcomes(key.namespace, requests, stable.step.outcomes, now))
    _attempt(errors, "record the requests' outcomes", _write_outcomes)
    networking = _api("NetworkingV1Api")
    if observed.sidecar is not None and (observed.sidecar.network_policy
                                         or stability.isolates_network(service, stable)):
        sidecar, isolate = observed.sidecar, stability.isolates_network(service, stable)
        _attempt(errors, "keep the NetworkPolicy", lambda: _ensure(
            networking, "network_policy",
            network_policy(service, sidecar, owner=_owner(body), isolate=isolate), "spec"))
    else:
        _attempt(errors, "delete the NetworkPolicy", lambda: _delete(
            networking, "network_policy", f"hegui-{name}", key.namespace))
    if observed.evict and observed.uninjected:
        _attempt(errors, "evict an uninjected pod",
                 lambda: _evict_one(body, service, observed.uninjected))
    compliant = next(c for c in status["conditions"] if c["type"] == "Compliant")
    state = (ServiceState.SUSPENDED if stable.suspended else ServiceState.COMPLIANT
             if compliant["status"] == "True" else ServiceState.NON_COMPLIANT)
    METRICS.observe(key.namespace, name, findings=status["findings"],
                    uninjected=len(observed.uninjected), state=state)
    if errors:
        raise kopf.TemporaryError("; ".join(errors)[:2000], delay=RECONCILE_SECONDS)


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


_REQUEST_KINDS = ((SuspensionOrder, "suspensionorders"), (ResumeRequest, "resumerequests"))


def _requests(namespace: str) -> list[SuspensionOrder | ResumeRequest]:
    """The namespace's SuspensionOrders and ResumeRequests (Art.21); one that the models refuse
    (the CRD admitted it) is skipped and logged, never acted on."""
    custom = _api("CustomObjectsApi")
    found: list[SuspensionOrder | ResumeRequest] = []
    for model, plural in _REQUEST_KINDS:
        listing = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
        for item in listing.get("items") or []:
            try:
                found.append(model.from_dict(item))
            except ValueError as error:
                log.warning("%s %s/%s ignored: %s", model.__name__, namespace,
                            (item.get("metadata") or {}).get("name"), error)
    return found


#: Outcomes still to be written into the requests' status, by uid (retried until written).
_OUTCOMES: dict[str, tuple[str, str, str, dict[str, Any]]] = {}


def _outcomes(namespace: str, requests: list[SuspensionOrder | ResumeRequest],
              outcomes: dict[str, tuple[suspension.Outcome, str]],
              now: dt.datetime) -> dict[str, tuple[str, str, str, dict[str, Any]]]:
    plural = {SuspensionOrder: "suspensionorders", ResumeRequest: "resumerequests"}
    moment = now.replace(microsecond=0).isoformat().replace("+00:00", "Z")
    return {uid: (namespace, plural[type(request)], request.name,
                  {"phase": phase.value, "message": message[:1024], "processedAt": moment})
            for request in requests if (uid := request.metadata.uid or "") in outcomes
            for phase, message in (outcomes[uid],) if request.status is None}


def _write_outcomes() -> None:
    from kubernetes.client.exceptions import ApiException

    custom = _api("CustomObjectsApi")
    for uid, (namespace, plural, name, status) in list(_OUTCOMES.items()):
        try:
            custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, plural,
                                                         name, {"status": status})
        except ApiException as error:
            if error.status != 404:  # gone: nothing left to tell
                raise
        _OUTCOMES.pop(uid, None)


def _scale(body: kopf.Body, current: dict[str, Any], service: GenerativeService,
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
                replicas = _read_scale(target, namespace)
                if replicas:
                    kept.setdefault(target, replicas)
                    _patch_scale(target, namespace, 0)
            except Unscalable as error:  # a fact of the kind, not a failure to retry
                log.warning("%s/%s: %s", namespace, target[2], error)
            except Exception as error:
                errors.append(f"scale {target[1]} {target[2]} to zero: {str(error)[:200]}")
                log.warning("cannot scale %s/%s to zero: %s", target[1], target[2], error)
    elif not stable.suspended and kept:
        for target, replicas in list(kept.items()):
            try:
                _patch_scale(target, namespace, replicas)
            except Exception as error:
                errors.append(f"give {target[1]} {target[2]} back {replicas} replicas: "
                              f"{str(error)[:200]}")
                continue
            del kept[target]
            kopf.event(body, type="Normal", reason="ScaledBack",
                       message=f"{target[1]} {target[2]} given back {replicas} replicas on "
                               "resume (Art.21)")
    return [{"apiVersion": api_version, "kind": kind, "name": name, "replicas": replicas}
            for (api_version, kind, name), replicas in sorted(kept.items())][:32]


class Unscalable(RuntimeError):
    """A kind without a scale subresource: ScaleToZero cannot stop it (its sidecars refuse)."""


_PLURALS: dict[tuple[str, str], str] = {("apps/v1", "Deployment"): "deployments",
                                        ("apps/v1", "StatefulSet"): "statefulsets",
                                        ("apps/v1", "ReplicaSet"): "replicasets"}


def _scale_resource(target: tuple[str, str, str]) -> tuple[str, str, str]:
    """(group, version, plural) of a workload kind with a scale subresource, by discovery."""
    api_version, kind, _ = target
    group, _, version = api_version.rpartition("/")
    plural = _PLURALS.get((api_version, kind))
    if plural is None:
        found = _api("CustomObjectsApi").get_api_resources(group, version,
                                                           _preload_content=False)
        resources = {r.get("name"): r for r in json.loads(found.data).get("resources") or []}
        plural = next((str(n) for n, r in resources.items() if r.get("kind") == kind
                       and "/" not in str(n)), None)
        if plural is None or f"{plural}/scale" not in resources:
            raise Unscalable(f"{kind} ({api_version}) has no scale subresource: suspend it "
                             "with RejectRequests or IsolateNetwork instead")
        _PLURALS[(api_version, kind)] = plural
    return group, version, plural


def _read_scale(target: tuple[str, str, str], namespace: str) -> int:
    group, version, plural = _scale_resource(target)
    scale = _api("CustomObjectsApi").get_namespaced_custom_object_scale(
        group, version, namespace, plural, target[2], _preload_content=False)
    return int((json.loads(scale.data).get("spec") or {}).get("replicas") or 0)


def _patch_scale(target: tuple[str, str, str], namespace: str, replicas: int) -> None:
    group, version, plural = _scale_resource(target)
    _api("CustomObjectsApi").patch_namespaced_custom_object_scale(
        group, version, namespace, plural, target[2], {"spec": {"replicas": replicas}},
        _content_type="application/merge-patch+json", _preload_content=False)


def _announce(body: kopf.Body, key: ObjectKey, transition: suspension.Transition) -> None:
    """An Event and a metric for each suspension or resume (Art.21); the record is the
    status' suspension history, which keeps who, when, why and the figures."""
    figures = ", ".join(f"{k}={v}" for k, v in sorted(transition.figures.items()))
    if transition.kind is suspension.TransitionKind.SUSPEND:
        METRICS.suspensions.labels(key.namespace, key.name, transition.trigger.value).inc()
        kopf.event(body, type="Warning", reason="Suspended",
                   message=f"[suspension, Art.21] {transition.reason}"[:900]
                   + (f" ({figures})"[:100] if figures else ""))
    else:
        kopf.event(body, type="Normal", reason="Resumed",
                   message=f"[suspension, Art.21] {transition.reason}"[:1000])
    log.warning("%s %s/%s by %s: %s (%s)", transition.kind.value, key.namespace, key.name,
                transition.by, transition.reason, figures)


# A failed reconcile is retried at the next interval, not after kopf's default minute: a
# suspension (Art.21) must not wait on a transient API error.
@kopf.on.resume(GROUP, VERSION, "generativeservices", backoff=RECONCILE_SECONDS)
@kopf.on.create(GROUP, VERSION, "generativeservices", backoff=RECONCILE_SECONDS)
@kopf.on.update(GROUP, VERSION, "generativeservices", field="spec", backoff=RECONCILE_SECONDS)
def service_changed(body: kopf.Body, patch: kopf.Patch, name: str, namespace: str | None,
                    **_: Any) -> None:
    _reconcile(body, patch, name, namespace)


@kopf.timer(GROUP, VERSION, "generativeservices", interval=RECONCILE_SECONDS,
            initial_delay=RECONCILE_SECONDS, backoff=RECONCILE_SECONDS)
def service_timer(body: kopf.Body, patch: kopf.Patch, name: str, namespace: str | None,
                  **_: Any) -> None:
    _reconcile(body, patch, name, namespace)


AUDIT_SECONDS = float(os.environ.get("HEGUI_AUDIT_SECONDS", "60"))
_REPORTS_MISSING: list[bool] = []  # the PolicyReport CRD is not installed (said once)


def _workloads_by_namespace(namespaces: set[str]) -> dict[str, list[dict[str, Any]]]:
    """Every audited workload in `namespaces`, one cluster-wide list per kind."""
    apps, batch, core = _api("AppsV1Api"), _api("BatchV1Api"), _api("CoreV1Api")
    listings = [("apps/v1", "Deployment", apps.list_deployment_for_all_namespaces),
                ("apps/v1", "StatefulSet", apps.list_stateful_set_for_all_namespaces),
                ("apps/v1", "DaemonSet", apps.list_daemon_set_for_all_namespaces),
                ("batch/v1", "Job", batch.list_job_for_all_namespaces),
                ("batch/v1", "CronJob", batch.list_cron_job_for_all_namespaces),
                ("v1", "Pod", core.list_pod_for_all_namespaces)]
    found: dict[str, list[dict[str, Any]]] = {ns: [] for ns in namespaces}
    for api_version, kind, listing in listings:
        for obj in _items(listing(_preload_content=False)):
            namespace = (obj.get("metadata") or {}).get("namespace")
            if namespace in found:
                # Items of a list carry no apiVersion/kind; the rules need the kind.
                found[namespace].append({**obj, "apiVersion": api_version, "kind": kind})
    for api_version, kind, obj in _serving_resources():
        namespace = (obj.get("metadata") or {}).get("namespace")
        if namespace in found:
            found[namespace].append({**obj, "apiVersion": api_version, "kind": kind})
    return found


def _serving_resources() -> list[tuple[str, str, dict[str, Any]]]:
    """The serving custom resources (KServe, NIM, LWS, KubeRay, ... and those policies add), so
    the audit judges what a person applied; a CRD not installed here is skipped."""
    from kubernetes.client.exceptions import ApiException

    from hegui.rules.index import detection_of

    custom, found = _api("CustomObjectsApi"), []
    for kind in detection_of(list(INDEX.policies.values())).kinds:
        api_version = f"{kind.group}/{kind.versions[0]}"
        try:
            listing = custom.list_cluster_custom_object(kind.group, kind.versions[0], kind.plural)
        except ApiException as error:
            if error.status in (403, 404):
                continue  # not installed, or not granted to the operator
            raise
        found += [(api_version, kind.kind, obj) for obj in listing.get("items") or []]
    return found


def _write_report(report: dict[str, Any]) -> None:
    from kubernetes.client.exceptions import ApiException

    custom = _api("CustomObjectsApi")
    group, version = "wgpolicyk8s.io", "v1alpha2"
    namespace, name = report["metadata"]["namespace"], report["metadata"]["name"]
    try:
        try:
            current = custom.get_namespaced_custom_object(group, version, namespace,
                                                          "policyreports", name)
        except ApiException as error:
            if error.status != 404:
                raise
            custom.create_namespaced_custom_object(group, version, namespace, "policyreports",
                                                   report)
            return
        if not same_report(current, report):
            report["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            custom.replace_namespaced_custom_object(group, version, namespace, "policyreports",
                                                    name, report)
    except ApiException as error:
        if error.status != 404:
            raise
        if not _REPORTS_MISSING:
            log.warning("PolicyReport (wgpolicyk8s.io/v1alpha2) is not installed: audit "
                        "findings go to metrics and logs only; install "
                        "crds/external/wgpolicyk8s.io_policyreports.yaml to get reports")
            _REPORTS_MISSING.append(True)


@kopf.timer(GROUP, VERSION, "compliancepolicies", interval=AUDIT_SECONDS,
            initial_delay=min(AUDIT_SECONDS, 5.0), backoff=AUDIT_SECONDS)
def policy_audit(body: kopf.Body, patch: kopf.Patch, name: str, **_: Any) -> None:
    """Audit the workloads in the namespaces the policy enforces (Art.17 and the rest, as at
    admission) and report what the policy reaches in its status."""
    INDEX.upsert(dict(body))
    policy = INDEX.policies.get(name)
    if policy is None:
        return
    namespaces = {ns for ns, labels in list(INDEX.namespace_labels.items())
                  if policy.spec.selects_namespace(ns, labels)}
    now = dt.datetime.now(dt.UTC)
    failing = 0
    for namespace, objects in sorted(_workloads_by_namespace(namespaces).items()):
        report = audit_namespace(namespace, objects, INDEX, now)
        if report is None:
            continue
        METRICS.audit(namespace, report["summary"])
        failing += report["summary"]["fail"]
        _write_report(report)
    message = (f"enforces {len(namespaces)} namespace(s); the audit finds {failing} failing "
               f"result(s) in running workloads")
    previous = {c.get("type"): c for c in (body.get("status") or {}).get("conditions") or []}
    old = previous.get("Ready") or {}
    condition = {"type": "Ready", "status": "True", "reason": "Audited", "message": message,
                 "observedGeneration": body.meta.get("generation"), "article": "Art.17",
                 "lastTransitionTime": old.get("lastTransitionTime") if old.get("status") == "True"
                 else now.replace(microsecond=0).isoformat().replace("+00:00", "Z")}
    status = {"observedGeneration": body.meta.get("generation"), "conditions": [condition],
              "enforcedNamespaces": len(namespaces), "message": message}
    current = dict(body.get("status") or {})
    if any(current.get(k) != v for k, v in status.items()):
        for field, value in status.items():
            patch.status[field] = value
