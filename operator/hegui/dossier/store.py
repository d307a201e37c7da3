"""The dossier's records from the evidence store (Art.11, Art.19): what an inspector is shown is
what was shipped off the pods and locked, not what a pod's volume holds now.

The service's streams (`records/<namespace>/<name>/...`) are verified against the operator's
anchors first (`hegui records verify`), then written, one record file per stream, into a working
directory that the dossier reads like a records directory; its integrity section shows the
verification, naming the first bad record of any stream.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from hegui.evidence import segments
from hegui.evidence.store import StoreError, open_store
from hegui.evidence.verify import Report, oldest_versions, verify_store


@dataclass(frozen=True)
class Shipped:
    url: str
    directory: Path  # one <stream>.jsonl per stream
    report: Report
    keyed: bool  # the segments' seals were checked (a key was given)


def fetch(url: str, service: str, directory: Path, *, key: bytes | None = None,
          derive: bool = False, anchors: Iterable[tuple[str, bytes]] = (),
          anchor_key: bytes | None = None) -> Shipped:
    """Verify and copy service NAMESPACE/NAME's streams from the store at `url`. Raises
    StoreError when the store cannot be read."""
    store = open_store(url)
    prefix = f"{service.strip('/')}/"
    report = verify_store(store, key, stream_prefix=prefix, anchors=anchors,
                          anchor_key=anchor_key, derive=derive)
    directory.mkdir(parents=True, exist_ok=True)
    objects = oldest_versions(store.versions(segments.RECORDS + prefix), Report())
    named = sorted((parsed, name) for name in objects
                   if (parsed := segments.parse_key(name)) is not None)
    for (stream, _), name in named:
        data = store.get(name, objects[name].version_id or None)
        try:
            body = data[data.index(b"\n") + 1:]
        except ValueError:
            continue  # unreadable: the verification above already names it
        with (directory / f"{stream.replace('/', '__')}.jsonl").open("ab") as file:
            file.write(body)
    return Shipped(url, directory, report, key is not None)


__all__ = ["Shipped", "StoreError", "fetch"]
