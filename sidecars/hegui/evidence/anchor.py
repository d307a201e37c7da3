"""Anchors: the operator's checkpoints of every stream's head, kept where pods cannot write
(Art.11, Art.19).

`checkpoint` reads the last segment header of every stream in the store and writes one anchor
document, `{"hegui_anchor": 1, "time", "writer", "streams": {stream: {"seq", "hash"}}, "mac"}`,
sealed with the anchor key (HMAC-SHA256; the operator's Secret, which pods do not mount):

- into the store under Object Lock (`anchors/<time>-<writer>.json`), where nobody can withdraw
  it before its retention ends;
- and, by the caller, into a hegui-owned object outside the pod (the operator keeps the last one
  in a ConfigMap of its namespace; `hegui records anchor -o FILE` writes it to a file).

Once anchored, a stream that is later cut short, or rewritten from its genesis by someone who
holds the evidence key, no longer reaches the anchored record with the anchored hash, and
`verify` says so. An anchor that does not carry a valid MAC is reported as forged.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hegui.evidence import segments
from hegui.evidence.store import Store

FORMAT = 1


def heads(store: Store) -> dict[str, dict[str, Any]]:
    """The last sealed record of every stream, from its last segment's header."""
    last: dict[str, tuple[int, str]] = {}
    for version in store.versions(segments.RECORDS):
        parsed = segments.parse_key(version.key)
        if parsed is None:
            continue
        stream, first = parsed
        if stream not in last or first > last[stream][0]:
            last[stream] = (first, version.key)
    found: dict[str, dict[str, Any]] = {}
    for stream, (_, key) in sorted(last.items()):
        header = segments.read_header(store.get(key, length=1 << 16))
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
