"""kopf handlers: keep every GenerativeService's status true (Art.12, Art.17).

hegui's objects are mirrored into the same ComplianceIndex the webhook reads; each service is
re-evaluated when it changes and on a timer (assessments expire, and a SafetyAssessment or
policy changing elsewhere must show up). Only hegui's own objects are touched: user workloads get
no annotations or finalizers from the operator.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from typing import Any

import kopf

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
