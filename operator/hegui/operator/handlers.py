"""kopf handlers: keep every GenerativeService's status true (Art.12, Art.17).

hegui's objects are mirrored into the same ComplianceIndex the webhook reads; each service is
re-evaluated when it changes and on a timer (assessments expire, and a SafetyAssessment or
policy changing elsewhere must show up), and its sidecars' ConfigMap is rendered from it. Only
hegui's own objects (and those ConfigMaps) are written: user workloads get no annotations or
finalizers from the operator.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from typing import Any

import kopf
import yaml

from hegui.admission.injection import sidecar_config_map
from hegui.api.generativeservice import GenerativeService
from hegui.operator.metrics import METRICS, ServiceState
from hegui.operator.status import compute
from hegui.operator.workloads import Observation, network_policy, observe
from hegui.rules.index import ComplianceIndex, ObjectKey

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
    return kopf.ConnectionInfo(
        server=configuration.host, ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl, certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file)


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
    elif obj:
        INDEX.upsert(obj)


for _plural in ("compliancepolicies", "complianceexceptions", "safetyassessments"):
    kopf.on.event(GROUP, VERSION, _plural)(_mirror)
kopf.on.event("", "v1", "namespaces")(_mirror)
kopf.on.event(GROUP, VERSION, "generativeservices")(_mirror)


_APIS: dict[str, Any] = {}


def _api(kind: str) -> Any:
    """The kubernetes client API object `kind` (CoreV1Api, ...) with the operator's credentials."""
    if not _APIS:
        from kubernetes import client, config

        if path := os.environ.get("HEGUI_KUBECONFIG"):
            api_client = config.new_client_from_config(config_file=path)
        else:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            api_client = client.ApiClient()
        for name in ("CoreV1Api", "AppsV1Api", "NetworkingV1Api"):
            _APIS[name] = getattr(client, name)(api_client)
    return _APIS[kind]


def _owner(body: kopf.Body) -> dict[str, Any]:
    # Owned objects are deleted with their service by the garbage collector.
    return {"apiVersion": body["apiVersion"], "kind": body["kind"], "name": body.meta["name"],
            "uid": body.meta["uid"], "controller": True, "blockOwnerDeletion": False}


def sidecar_config(body: kopf.Body) -> dict[str, Any]:
    """The ConfigMap the injected sidecars mount (`--service /etc/hegui/service.yaml`): the
    service's posture, so sidecars need no API access and follow posture changes."""
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
        "data": {"service.yaml": yaml.safe_dump(posture, allow_unicode=True, sort_keys=False)},
    }


def _ensure(api: Any, kind: str, wanted: dict[str, Any], field: str) -> None:
    """Create `wanted` (a ConfigMap or NetworkPolicy the operator owns) or replace it when its
    `field` differs; `kind` is the client's snake_case name, e.g. config_map."""
    from kubernetes.client.exceptions import ApiException

    meta = wanted["metadata"]
    try:
        current = getattr(api, f"read_namespaced_{kind}")(meta["name"], meta["namespace"],
                                                          _preload_content=False)
    except ApiException as error:
        if error.status != 404:
            raise
        getattr(api, f"create_namespaced_{kind}")(meta["namespace"], wanted)
        return
    if json.loads(current.data).get(field) != wanted[field]:
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


def _reconcile(body: kopf.Body, patch: kopf.Patch, name: str, namespace: str | None) -> None:
    flight = (namespace or "", name)
    _IN_FLIGHT[flight] = time.monotonic()
    try:
        _judge(body, patch, name, namespace)
    except Exception:
        METRICS.observe(flight[0], name, state=ServiceState.ERROR, findings=(), uninjected=0)
        raise
    finally:
        _IN_FLIGHT.pop(flight, None)


def _judge(body: kopf.Body, patch: kopf.Patch, name: str, namespace: str | None) -> None:
    INDEX.upsert(dict(body))  # the freshest copy, whatever order kopf ran the handlers in
    key = ObjectKey(namespace or "", name)
    service = INDEX.services.get(key)
    if service is None:  # the CRD's schema admitted what the models refuse
        METRICS.observe(key.namespace, name, state=ServiceState.ERROR, findings=(),
                        uninjected=0)
        return
    now = dt.datetime.now(dt.UTC)
    observed = _observe(service, now)
    previous = list((body.get("status") or {}).get("conditions") or [])
    status = compute(key, INDEX, generation=body.meta.get("generation"), previous=previous,
                     now=now, observed=observed)
    current = dict(body.get("status") or {})
    if any(current.get(k) != v for k, v in status.items()):
        for field, value in status.items():
            patch.status[field] = value
    _ensure(_api("CoreV1Api"), "config_map", sidecar_config(body), "data")
    networking = _api("NetworkingV1Api")
    if observed.sidecar is not None and observed.sidecar.network_policy:
        _ensure(networking, "network_policy",
                network_policy(service, observed.sidecar, owner=_owner(body)), "spec")
    else:
        _delete(networking, "network_policy", f"hegui-{name}", key.namespace)
    if observed.evict and observed.uninjected:
        _evict_one(body, service, observed.uninjected)
    compliant = next(c for c in status["conditions"] if c["type"] == "Compliant")
    METRICS.observe(key.namespace, name, findings=status["findings"],
                    uninjected=len(observed.uninjected),
                    state=ServiceState.COMPLIANT if compliant["status"] == "True"
                    else ServiceState.NON_COMPLIANT)


@kopf.on.resume(GROUP, VERSION, "generativeservices")
@kopf.on.create(GROUP, VERSION, "generativeservices")
@kopf.on.update(GROUP, VERSION, "generativeservices", field="spec")
def service_changed(body: kopf.Body, patch: kopf.Patch, name: str, namespace: str | None,
                    **_: Any) -> None:
    _reconcile(body, patch, name, namespace)


@kopf.timer(GROUP, VERSION, "generativeservices", interval=RECONCILE_SECONDS,
            initial_delay=RECONCILE_SECONDS)
def service_timer(body: kopf.Body, patch: kopf.Patch, name: str, namespace: str | None,
                  **_: Any) -> None:
    _reconcile(body, patch, name, namespace)
