"""kopf handlers: keep every GenerativeService's status true (Art.12, Art.17).

hegui's objects are mirrored into the same ComplianceIndex the webhook reads; each service is
re-evaluated when it changes and on a timer (assessments expire, and a SafetyAssessment or
policy changing elsewhere must show up), and its sidecars' ConfigMap is rendered from it. Only
hegui's own objects (and those ConfigMaps) are written: user workloads get no annotations or
finalizers from the operator.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from typing import Any

import kopf
import yaml

from hegui.admission.injection import sidecar_config_map
from hegui.operator.status import compute
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
    elif obj:
        INDEX.upsert(obj)


for _plural in ("compliancepolicies", "complianceexceptions", "safetyassessments"):
    kopf.on.event(GROUP, VERSION, _plural)(_mirror)
kopf.on.event("", "v1", "namespaces")(_mirror)
kopf.on.event(GROUP, VERSION, "generativeservices")(_mirror)


_CORE: list[Any] = []


def _core_api() -> Any:
    """A CoreV1Api with the operator's credentials (built once)."""
    if not _CORE:
        from kubernetes import client, config

        if path := os.environ.get("HEGUI_KUBECONFIG"):
            api_client = config.new_client_from_config(config_file=path)
        else:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            api_client = client.ApiClient()
        _CORE.append(client.CoreV1Api(api_client))
    return _CORE[0]


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
            # Deleted with its service by the garbage collector.
            "ownerReferences": [{"apiVersion": body["apiVersion"], "kind": body["kind"],
                                 "name": name, "uid": body.meta["uid"], "controller": True,
                                 "blockOwnerDeletion": False}]},
        "data": {"service.yaml": yaml.safe_dump(posture, allow_unicode=True, sort_keys=False)},
    }


def _render_sidecar_config(body: kopf.Body) -> None:
    from kubernetes.client.exceptions import ApiException

    wanted = sidecar_config(body)
    meta = wanted["metadata"]
    core = _core_api()
    try:
        current = core.read_namespaced_config_map(meta["name"], meta["namespace"])
    except ApiException as error:
        if error.status != 404:
            raise
        core.create_namespaced_config_map(meta["namespace"], wanted)
        return
    if (current.data or {}) != wanted["data"]:
        core.replace_namespaced_config_map(meta["name"], meta["namespace"], wanted)


def _reconcile(body: kopf.Body, patch: kopf.Patch, name: str, namespace: str | None) -> None:
    INDEX.upsert(dict(body))  # the freshest copy, whatever order kopf ran the handlers in
    previous = list((body.get("status") or {}).get("conditions") or [])
    status = compute(ObjectKey(namespace or "", name), INDEX,
                     generation=body.meta.get("generation"), previous=previous,
                     now=dt.datetime.now(dt.UTC))
    current = dict(body.get("status") or {})
    if any(current.get(k) != v for k, v in status.items()):
        for field, value in status.items():
            patch.status[field] = value
    _render_sidecar_config(body)


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
