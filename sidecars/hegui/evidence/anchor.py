"""Anchors: the operator's checkpoints of every stream's head, kept where pods cannot write
(Art.11, Art.19).

`checkpoint` reads the last segment header of every stream in the store and writes one anchor
document, `{"hegui_anchor": 1, "time", "writer", "streams": {stream: {"seq", "hash"}}, "mac"}`,
sealed with the anchor key (HMAC-SHA256; the operator's Secret, which pods do not mount):

- into the store under Object Lock (`anchors/<time>-<writer>.json`), where nobody can withdraw
  it before its retention ends;
- and into a hegui-owned object outside the pod: a ConfigMap in hegui's namespace, which the
  regulated team cannot write (`hegui records anchor --configmap NS/NAME`, keeping the last
  KEEP); `verify --anchors-configmap NS/NAME` reads them back.

Once anchored, a stream that is later cut short, or rewritten from its genesis by someone who
holds the evidence key, no longer reaches the anchored record with the anchored hash, and
`verify` says so. An anchor that does not carry a valid MAC is reported as forged.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hegui.api import kubeconfig as kube
from hegui.evidence import segments
from hegui.evidence.store import Store, StoreError

FORMAT = 1


def heads(store: Store) -> dict[str, dict[str, Any]]:
    """The last sealed record of every stream, from its last segment's header."""
    from hegui.evidence.verify import Report, oldest_versions

    last: dict[str, tuple[int, str, str]] = {}
    for key, version in oldest_versions(store.versions(segments.RECORDS), Report()).items():
        parsed = segments.parse_key(key)
        if parsed is None:
            continue
        stream, first = parsed
        if stream not in last or first > last[stream][0]:
            last[stream] = (first, key, version.version_id)
    found: dict[str, dict[str, Any]] = {}
    for stream, (_, key, version_id) in sorted(last.items()):
        try:  # the first version: a later one is someone writing over it
            header = segments.read_header(store.get(key, version_id or None, length=1 << 16))
        except segments.SegmentError:
            continue  # verify reports it; an anchor holds only heads it can read
        found[stream] = {"seq": header.get("last"), "hash": header.get("head")}
    return found


def checkpoint(store: Store, key: bytes, *, writer: str, retention_days: int,
               now: datetime | None = None) -> tuple[str, bytes]:
    """Write an anchor of every stream's head into the store (locked); its name and bytes."""
    when = now or datetime.now(UTC)
    doc: dict[str, Any] = {"hegui_anchor": FORMAT, "time": when.isoformat(), "writer": writer,
                           "streams": heads(store)}
    doc["mac"] = segments.mac(key, doc)
    data = json.dumps(doc, sort_keys=True, ensure_ascii=False).encode() + b"\n"
    name = f"{segments.ANCHORS}{when:%Y%m%dT%H%M%S%fZ}-{writer}.json"
    store.put(name, data, when + timedelta(days=retention_days))
    return name, data


# --- the copy outside the store: a ConfigMap that only hegui's operator may write ---------------

KEEP = 48  # anchors kept in the ConfigMap (a ConfigMap holds at most 1 MiB)


def _core(kubeconfig: str | None, api_client: Any = None) -> Any:
    from kubernetes import client

    return client.CoreV1Api(api_client or kube.api_client(kubeconfig))


def publish(namespace: str, name: str, anchor_name: str, data: bytes, *,
            kubeconfig: str | None = None, api_client: Any = None) -> None:
    """Add the anchor to the ConfigMap NAMESPACE/NAME (created if missing), keeping the last
    KEEP; the key is the anchor's name in the store."""
    from kubernetes.client.exceptions import ApiException

    try:
        _publish(namespace, name, anchor_name, data, _core(kubeconfig, api_client))
    except ApiException as error:
        raise StoreError(f"ConfigMap {namespace}/{name}: {error.status} {error.reason}") from None


def _publish(namespace: str, name: str, anchor_name: str, data: bytes, core: Any) -> None:
    from kubernetes.client import V1ConfigMap, V1ObjectMeta
    from kubernetes.client.exceptions import ApiException

    key = anchor_name.rsplit("/", 1)[-1]
    try:
        found = core.read_namespaced_config_map(name, namespace)
    except ApiException as error:
        if error.status != 404:
            raise
        core.create_namespaced_config_map(namespace, V1ConfigMap(
            metadata=V1ObjectMeta(name=name, labels={
                "app.kubernetes.io/managed-by": "hegui",
                "hegui.io/purpose": "evidence-anchors"}),
            data={key: data.decode()}))
        return
    entries = dict(found.data or {})
    entries[key] = data.decode()
    for old in sorted(entries)[:-KEEP]:
        del entries[old]
    found.data = entries
    core.replace_namespaced_config_map(name, namespace, found)


def published(namespace: str, name: str, *, kubeconfig: str | None = None,
              ) -> list[tuple[str, bytes]]:
    """The anchors in the ConfigMap, as (where, bytes) for `verify_store`."""
    from kubernetes.client.exceptions import ApiException

    try:
        found = _core(kubeconfig).read_namespaced_config_map(name, namespace)
    except ApiException as error:
        raise StoreError(f"ConfigMap {namespace}/{name}: {error.status} {error.reason}") from None
    return [(f"configmap {namespace}/{name}:{key}", value.encode())
            for key, value in sorted((found.data or {}).items())]
