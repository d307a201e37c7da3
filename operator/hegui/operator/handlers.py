"""kopf handlers: keep every GenerativeService's status true (Art.12, Art.17).

hegui's objects are mirrored into the same ComplianceIndex the webhook reads; each service is
re-evaluated when it changes and on a timer (assessments expire, and a SafetyAssessment or
policy changing elsewhere must show up), and its sidecars' ConfigMap is rendered from it
(reconciler.py). Each CompliancePolicy's running workloads are audited on a timer (audit.py).

Nothing is registered at import: `register(registry, settings)` does it with the intervals of the
settings, and every handler finds what it needs in kopf's memo (`memo["operator"]`, an
`Operator`; see reconciler.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, cast

import kopf

from hegui.api.common import GROUP, VERSION
from hegui.operator.anchoring import duties_of
from hegui.operator.audit import audit_policy
from hegui.operator.cluster import connection_info
from hegui.operator.reconciler import operator_of, reconcile, service_memory
from hegui.operator.settings import OperatorSettings


def login(memo: Any, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """The kubeconfig named by `hegui operator run --kubeconfig`, else kopf's usual sources
    (in-cluster service account, $KUBECONFIG)."""
    kubeconfig = operator_of(memo).settings.kubeconfig
    if not kubeconfig:
        return kopf.login_via_client(memo=memo, **kwargs)
    return connection_info(kubeconfig)


class LeanDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's annotation diff-base, the same essence built without deep-copying what it drops.

    kopf builds an object's essence (spec, labels, annotations) on every watch event and every
    handled change by deep-copying the whole object and then deleting its status and metadata:
    at 1,000 services that copy of each status (conditions, findings) and of managedFields was
    6% of the operator's CPU (issue 20, scale). Here only what the essence keeps is handed to
    kopf's own build; an extra field under status or metadata (a handler's `field=` there)
    takes the whole object, as before."""

    def build(self, *, body: kopf.Body,
              extra_fields: Iterable[str | tuple[str, ...] | list[str] | None] | None = None,
              ) -> kopf.BodyEssence:
        extra = list(extra_fields or ())
        if any((f.split(".") if isinstance(f, str) else list(f or ()))[:1]
               in (["status"], ["metadata"]) for f in extra):
            return super().build(body=body, extra_fields=extra)
        meta = body.get("metadata") or {}
        lean = {k: v for k, v in body.items() if k not in ("metadata", "status")}
        # What kopf's build reads of metadata: the labels and annotations it keeps, and the
        # ownerReferences its annotation key depends on.
        lean["metadata"] = {k: meta[k] for k in ("labels", "annotations", "ownerReferences")
                            if k in meta}
        return super().build(body=kopf.Body(cast(kopf.RawBody, lean)), extra_fields=extra)


def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    # Progress in annotations only (the CRD's status schema has no room for kopf's own fields),
    # and hegui's objects carry no finalizers: nothing to clean up on deletion.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="hegui.io")
    settings.persistence.diffbase_storage = LeanDiffBaseStorage(prefix="hegui.io")
    settings.persistence.finalizer = "hegui.io/operator"
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    # Reconciles are sync handlers in kopf's thread pool (min(32, cores + 4) threads by
    # default) and spend most of their time waiting on the apiserver or on a namespace's
    # shared listing: more threads overlap the waits (issue 20, scale).
    settings.execution.max_workers = operator_of(memo).settings.workers


async def mirror(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    """Keep the index the rules read in step with the cluster. Async: it only updates memory,
    and as a sync handler every watch event waited for a thread of the pool the reconciles
    hold (kopf runs an object's event handlers before its change handlers)."""
    op = operator_of(memo)
    obj = dict(event.get("object") or {})
    if event.get("type") == "DELETED":
        op.index.delete(obj)
        meta = obj.get("metadata")
        if obj.get("kind") == "GenerativeService" and isinstance(meta, dict):
            op.metrics.forget(str(meta.get("namespace")), str(meta.get("name")))
            if (duties := duties_of(memo)) is not None:  # its store session goes with it
                duties.forget(str(meta.get("uid")))
    elif obj:
        op.index.upsert(obj)


def reconcile_not_stuck(memo: Any, **_: Any) -> str:
    """kopf's liveness endpoint answers 500 when this raises, so the kubelet restarts an
    operator whose reconcile loop hangs (e.g. on an API call that never returns)."""
    op = operator_of(memo)
    if stuck := op.stuck_reconciles():
        raise RuntimeError(f"reconcile of {', '.join(stuck)} running for over "
                           f"{op.settings.stuck_seconds:.0f}s")
    return "ok"


def service_pass(body: kopf.Body, patch: kopf.Patch, name: str, namespace: str | None,
                 memo: Any, **_: Any) -> None:
    """Everything the operator keeps for one service, on start, on a spec change and on its
    one timer: its status and owned objects (reconciler.py), then its sidecars' evidence
    Secret (anchoring.py), which is kept whatever the reconcile raised."""
    try:
        reconcile(operator_of(memo), service_memory(memo), body, patch, name, namespace)
    finally:
        if (duties := duties_of(memo)) is not None:
            duties.keep(body, operator_of(memo).index)


def policy_audit(body: kopf.Body, patch: kopf.Patch, name: str, memo: Any, **_: Any) -> None:
    """Audit the workloads in the namespaces the policy enforces (Art.17 and the rest, as at
    admission) and report what the policy reaches in its status."""
    audit_policy(operator_of(memo), body, patch, name)


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    """Register the operator's handlers with the intervals of `settings`."""
    kopf.on.login(registry=registry)(login)
    kopf.on.startup(registry=registry)(configure)
    kopf.on.probe(id="reconcile", registry=registry)(reconcile_not_stuck)
    for plural in ("compliancepolicies", "complianceexceptions", "safetyassessments",
                   "generativeservices"):
        kopf.on.event(GROUP, VERSION, plural, registry=registry)(mirror)
    kopf.on.event("", "v1", "namespaces", registry=registry)(mirror)
    # A failed reconcile is retried at the next interval, not after kopf's default minute: a
    # suspension (Art.21) must not wait on a transient API error.
    every = settings.reconcile_seconds
    # One handler id for start, creation and spec changes (kopf runs it once a cause), and one
    # timer a service: evidence is part of the same pass, not a timer of its own.
    for on in (kopf.on.resume, kopf.on.create):
        on(GROUP, VERSION, "generativeservices", id="service_changed", backoff=every,
           registry=registry)(service_pass)
    kopf.on.update(GROUP, VERSION, "generativeservices", id="service_changed", field="spec",
                   backoff=every, registry=registry)(service_pass)
    kopf.timer(GROUP, VERSION, "generativeservices", id="service_timer", interval=every,
               initial_delay=every, backoff=every, registry=registry)(service_pass)
    audit = settings.audit_seconds
    kopf.timer(GROUP, VERSION, "compliancepolicies", interval=audit,
               initial_delay=min(audit, 5.0), backoff=audit, registry=registry)(policy_audit)
