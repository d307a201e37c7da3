"""The operator's evidence duties (Art.11, Art.19), where no pod can act:

- **A store session to each service**: for every GenerativeService in a namespace that a
  CompliancePolicy with `spec.evidence` selects, the operator reads the store's Secret (in
  hegui's namespace, named by `evidence.store.credentialsSecretName`) and applies the hegui-owned
  Secret `hegui-evidence-<service>` in the service's namespace (owned by the service, so it goes
  with it): a store session of the service's own, the service's sealing key derived from the
  cluster's evidence key, and `evidence.yaml` (where to ship). The session is STS AssumeRole as
  the sidecars' user with a session policy (hegui.evidence.store.service_session): the team,
  which can read that Secret, may write, read and list `records/<namespace>/<service>/` only,
  never another tenant's records (user input, Art.11), never `anchors/`, never delete. It
  expires after SESSION_SECONDS and the operator mints the next at half-life. The store's
  long-lived users, the cluster's evidence key and the anchor key never leave hegui's namespace.
  Written by server-side apply, so the operator needs `create` and `patch` on Secrets but no
  `get` or `list`: it cannot read a team's Secrets.
- **Anchors on a schedule**: every `evidence.anchorInterval` (10m by default) the heads of every
  stream in the store are checkpointed, sealed with the anchor key, written as the operator's
  own anchor user (anchorAccessKey/anchorSecretKey: the only user that may write anchors), locked
  in the store
  (`anchors/...`, COMPLIANCE, as long as the longest retention) and kept in the ConfigMap
  `hegui-evidence-anchors` of hegui's namespace, which teams cannot write. `hegui records verify
  --anchors-configmap hegui-system/hegui-evidence-anchors` checks the store against both.

Registered by `hegui.operator.main` (`register`), which puts `EvidenceDuties` in kopf's memo;
the services' reconcile pass (handlers.py) calls its `keep` and, on deletion, `forget`.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
import yaml

from hegui.api.common import GROUP, VERSION, parse_duration
from hegui.api.policy import CompliancePolicy, Evidence
from hegui.evidence import config
from hegui.evidence.anchor import checkpoint, publish
from hegui.evidence.store import (
    SESSION_SECONDS,
    S3Store,
    StoreCredentials,
    StoreError,
    service_session,
)
from hegui.operator.settings import OperatorSettings
from hegui.rules.index import ComplianceIndex

log = logging.getLogger(__name__)

NAMESPACE = os.environ.get("POD_NAMESPACE") or "hegui-system"
ANCHORS_CONFIGMAP = "hegui-evidence-anchors"
FIELD_MANAGER = "hegui-operator-evidence"
_WRITER = re.compile(r"[^A-Za-z0-9._-]")


# --- which store a service ships to -----------------------------------------------------------

def evidence_for(api: Any, namespace: str, among: list[CompliancePolicy],
                 labels: Mapping[str, str] | None = None) -> Evidence | None:
    """The evidence declaration of the policies selecting `namespace` (the longest retention
    wins, hegui.evidence.config.choose). `labels`: the namespace's, when the caller knows them
    (the operator's index does; the operator's role has no `get` on namespaces)."""
    from kubernetes import client

    if labels is None:
        labels = client.CoreV1Api(api).read_namespace(namespace).metadata.labels or {}
    chosen: Evidence | None = config.choose(
        p for p in among if p.spec.selects_namespace(namespace, dict(labels)))
    return chosen


def source_secret(api: Any, name: str) -> dict[str, bytes]:
    """The store's Secret in hegui's namespace, decoded."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        secret = client.CoreV1Api(api).read_namespaced_secret(name, NAMESPACE)
    except ApiException as error:
        raise config.EvidenceConfigError(
            f"Secret {NAMESPACE}/{name} (CompliancePolicy spec.evidence.store."
            f"credentialsSecretName, Art.11): {error.status} {error.reason}") from None
    return {key: base64.b64decode(value) for key, value in (secret.data or {}).items()}


def service_secret(service: Mapping[str, Any], evidence: Evidence,
                   source: Mapping[str, bytes], session: StoreCredentials) -> dict[str, Any]:
    """The hegui-owned Secret a service's sidecars mount (see the module's doc)."""
    meta = service["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    where = f"{NAMESPACE}/{evidence.store.credentials_secret_name}"
    data = {**config.secret_data(source, namespace, name, session, where),
            config.CONFIG_FILE: config.render(evidence)[config.CONFIG_FILE].encode()}
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {
            "name": config.secret_name(name), "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "hegui",
                       "hegui.io/generative-service": name,
                       "hegui.io/purpose": "evidence"},
            # Deleted with its service by the garbage collector.
            "ownerReferences": [{"apiVersion": service.get("apiVersion", f"{GROUP}/{VERSION}"),
                                 "kind": service.get("kind", "GenerativeService"),
                                 "name": name, "uid": meta["uid"], "controller": True,
                                 "blockOwnerDeletion": False}]},
        "data": {key: base64.b64encode(value).decode() for key, value in sorted(data.items())},
    }


#: The session each service's sidecars hold (uid: which store and user it was cut from, the
#: session): kept in memory, since the operator cannot read the Secret back; after a restart
#: it mints new ones, and the old ones expire on their own. A deleted service's entry goes with
#: it (`forget`), or the dict would grow with every service ever created.
_SESSIONS: dict[str, tuple[str, StoreCredentials]] = {}


def session_for(service: Mapping[str, Any], evidence: Evidence, source: Mapping[str, bytes],
                *, now: dt.datetime | None = None) -> StoreCredentials:
    """The service's store session: the one it has until half its life is spent, then a new
    one (the kubelet updates the projected Secret within about a minute, the sidecar reads it
    again within REFRESH_SECONDS: the old one is still valid for hours)."""
    meta = service["metadata"]
    where = f"{NAMESPACE}/{evidence.store.credentials_secret_name}"
    config.check_source(source, config.SIDECAR_KEYS, where,
                        "the sidecars' store user and evidence key")
    url = config.store_url(evidence)
    parent = (source["accessKey"].decode().strip(), source["secretKey"].decode().strip())
    cut_from = hashlib.sha256(f"{url}\0{parent[0]}\0{parent[1]}".encode()).hexdigest()
    uid = str(meta.get("uid"))
    now = now or dt.datetime.now(dt.UTC)
    held = _SESSIONS.get(uid)
    if held is not None and held[0] == cut_from and held[1].expiration is not None \
            and held[1].expiration - now > dt.timedelta(seconds=SESSION_SECONDS / 2):
        return held[1]
    optional = {k: source[k].decode().strip() for k in ("roleArn", "stsEndpoint")
                if source.get(k)}
    session = service_session(url, parent, meta["namespace"], meta["name"],
                              region=evidence.store.region,
                              sts_endpoint=optional.get("stsEndpoint"),
                              role_arn=optional.get("roleArn"))
    _SESSIONS[uid] = (cut_from, session)
    return session


def apply(api: Any, manifest: dict[str, Any]) -> None:
    """Server-side apply: creates or updates without reading (no `get` on Secrets)."""
    from kubernetes import client

    meta = manifest["metadata"]
    client.CoreV1Api(api).patch_namespaced_secret(
        meta["name"], meta["namespace"], manifest, field_manager=FIELD_MANAGER, force=True,
        _content_type="application/apply-patch+yaml")


#: What was last applied per service (uid: digest, when): an unchanged Secret is applied again
#: only every REAPPLY_SECONDS (someone may have edited or deleted it), not at every timer tick.
_APPLIED: dict[str, tuple[str, float]] = {}
REAPPLY_SECONDS = 600.0


def forget(uid: str) -> None:
    """Drop what is kept for a deleted service (its session, what was last applied): its
    Secret goes with it (owner reference), and its uid never comes back."""
    _SESSIONS.pop(uid, None)
    _APPLIED.pop(uid, None)


def sync_service(api: Any, service: Mapping[str, Any], among: list[CompliancePolicy],
                 labels: Mapping[str, str] | None = None) -> str | None:
    """Give the service's sidecars their store session; the Secret's name, or None when no
    policy selecting its namespace declares a store. StoreError when the store refuses a
    session (the sidecars keep the one they have until it expires)."""
    evidence = evidence_for(api, service["metadata"]["namespace"], among, labels)
    if evidence is None:
        return None
    source = source_secret(api, evidence.store.credentials_secret_name)
    manifest = service_secret(service, evidence, source, session_for(service, evidence, source))
    uid = str(service["metadata"].get("uid"))
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
    last = _APPLIED.get(uid)
    if last is None or last[0] != digest or time.monotonic() - last[1] > REAPPLY_SECONDS:
        apply(api, manifest)
        _APPLIED[uid] = (digest, time.monotonic())
    return str(manifest["metadata"]["name"])


# --- anchors ----------------------------------------------------------------------------------

def longest_retention(api: Any, evidence: Evidence) -> int:
    """How long an anchor is locked: as long as the longest-kept segment it vouches for."""
    from kubernetes import client

    listing = client.CustomObjectsApi(api).list_cluster_custom_object(
        GROUP, VERSION, "generativeservices")
    days = [evidence.store.retention_days]
    for item in listing.get("items") or []:
        kept = ((item.get("spec") or {}).get("dataProtection") or {}).get("retentionDays")
        if isinstance(kept, int) and 0 < kept <= 3650:
            days.append(kept)
    return max(days)


def anchor_once(api: Any, policy: CompliancePolicy, *,
                now: dt.datetime | None = None) -> tuple[str, int]:
    """Checkpoint every stream's head of the policy's store, locked there and kept in the
    anchors ConfigMap; the anchor's name and how many streams it holds."""
    evidence = policy.spec.evidence
    if evidence is None:
        raise config.EvidenceConfigError(f"CompliancePolicy {policy.metadata.name} declares no "
                                         "evidence store")
    source = source_secret(api, evidence.store.credentials_secret_name)
    # Its own store user, not the sidecars': a team holding a session can never write anchors.
    config.check_source(source, config.ANCHOR_KEYS,
                        f"{NAMESPACE}/{evidence.store.credentials_secret_name}",
                        "the operator anchors with anchorKey as its own store user "
                        "anchorAccessKey/anchorSecretKey, which alone may write anchors/")
    store = S3Store(config.store_url(evidence),
                    access_key=source["anchorAccessKey"].decode().strip(),
                    secret_key=source["anchorSecretKey"].decode().strip(),
                    region=evidence.store.region)
    writer = _WRITER.sub("-", f"operator-{policy.metadata.name}")[:63]
    name, data = checkpoint(store, source["anchorKey"].strip(), writer=writer,
                            retention_days=longest_retention(api, evidence), now=now)
    publish(NAMESPACE, ANCHORS_CONFIGMAP, name, data, api_client=api)
    streams = yaml.safe_load(data)["streams"]
    return name, len(streams)


# --- kopf: registered by hegui.operator.main -------------------------------------------------

@dataclass
class EvidenceDuties:
    """What these handlers share, in kopf's memo (`memo.evidence`): the operator's own API
    client (its --kubeconfig identity, the one the chart's RBAC and guards name) and caches.

    A service's evidence Secret is kept by the service's own reconcile pass (handlers.py calls
    `keep` after each reconcile, on start, on change and on its timer), not by a timer of its
    own: a second kopf timer per service doubled the operator's tasks and thread hand-offs
    (issue 20, scale)."""

    api: Any
    last_anchor: dict[str, float] = field(default_factory=dict)

    def keep(self, body: Mapping[str, Any], index: ComplianceIndex) -> None:
        """Keep the service's evidence Secret as the policy says (see the module's doc); a
        failure is logged, never raised (the sidecars keep the session they have)."""
        from kubernetes.client.exceptions import ApiException

        meta = body.get("metadata") or {}
        namespace = str(meta.get("namespace"))
        try:
            # The policies and namespace labels the operator's watches keep (hegui.rules.index).
            sync_service(self.api, body, list(index.policies.values()),
                         index.namespace_labels.get(namespace, {}))
        except (config.EvidenceConfigError, StoreError, ApiException) as error:
            log.warning("GenerativeService %s/%s: cannot give its sidecars the evidence store: "
                        "%s", namespace, meta.get("name"), error)

    def forget(self, uid: str) -> None:
        """A service was deleted: what was kept for it goes too."""
        forget(uid)


def duties_of(memo: Any) -> EvidenceDuties | None:
    """The EvidenceDuties in kopf's memo; None where the operator runs without them (tests)."""
    found = memo.get("evidence")
    assert found is None or isinstance(found, EvidenceDuties)
    return found


def _declares_evidence(spec: kopf.Spec, **_: Any) -> bool:
    return bool(spec.get("evidence"))


def anchor_heads(body: kopf.Body, memo: Any, **_: Any) -> None:
    """Anchor the store's heads every `evidence.anchorInterval`."""
    from kubernetes.client.exceptions import ApiException

    duties = duties_of(memo)
    if duties is None:
        return
    try:
        policy = CompliancePolicy.from_dict(dict(body))
    except ValueError as error:
        log.warning("CompliancePolicy %s: not anchoring: %s", body.meta.get("name"), error)
        return
    assert policy.spec.evidence is not None
    interval = parse_duration(policy.spec.evidence.anchor_interval).total_seconds()
    key = str(body.meta.get("uid"))
    if time.monotonic() - duties.last_anchor.get(key, -interval) < interval:
        return
    try:
        name, streams = anchor_once(duties.api, policy)
    except (config.EvidenceConfigError, StoreError, ApiException) as error:
        log.warning("CompliancePolicy %s: cannot anchor the evidence store: %s",
                    policy.metadata.name, error)
        return
    duties.last_anchor[key] = time.monotonic()
    log.info("anchored %d streams in %s", streams, name)


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    """The anchoring timer (one per CompliancePolicy declaring evidence); it needs
    `memo.evidence`. Services' Secrets are kept by their reconcile (EvidenceDuties.keep)."""
    kopf.timer(GROUP, VERSION, "compliancepolicies", interval=30, initial_delay=10,
               when=_declares_evidence, registry=registry)(anchor_heads)
