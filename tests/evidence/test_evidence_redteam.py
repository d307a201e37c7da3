"""The regulated team against its own evidence (Art.11), in the real object store.

A team with `edit` in its namespace can read every Secret there, hegui-evidence-<service>
included: the store session its sidecars ship with (limited to the service's own records) and
the service's sealing key. What that lets it do must not make a sidecar drop what it
acknowledged."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hegui.evidence import segments
from hegui.evidence.cli import export_records
from hegui.evidence.shipper import CONFLICT, Shipper
from hegui.evidence.verify import verify_store
from hegui.localcluster.objectstore import LocalObjectStore
from hegui.moderation.records import RecordLog, digest, dumps

pytestmark = pytest.mark.cluster

KEY = b"pseudonymisation-key"
EVIDENCE = b"the-services-sealing-key"  # what the team reads from its Secret


def _forged(stream: str, first: int, prev: str, count: int) -> bytes:
    """A segment sealed with the service's key that continues the stream's chain from `prev`
    with records the team made up: what it can write with what its Secret holds."""
    lines, head = [], prev
    for seq in range(first, first + count):
        record: dict[str, Any] = {"seq": seq, "time": datetime.now(UTC).isoformat(),
                                  "kind": "label", "user": None, "prev": head,
                                  "reference": f"made-up-{seq}"}
        record["hash"] = head = digest(record)
        lines.append(dumps(record))
    now = datetime.now(UTC)
    _, data = segments.build(EVIDENCE, stream=stream, lines=lines, prev=prev, written=now,
                             retain_until=now + timedelta(days=1))
    return data


def test_a_segment_planted_ahead_of_the_sidecar_does_not_make_it_drop_records(
        objectstore: LocalObjectStore, tmp_path: Path, access: Any) -> None:
    """The team lists its stream and writes the next segment name first, chained on the last
    shipped head. The sidecar meets a name already written: it must not take the planted
    segment for its own records and compact them out of the pod unshipped."""
    service = f"redteam-{time.time_ns() % 10**8}/chat"
    namespace, _, name = service.partition("/")
    session = objectstore.session(namespace, name)  # what the service's Secret holds
    log = RecordLog(tmp_path / "records.jsonl", key=KEY)
    shipper = Shipper(log, access.s3(session), key=EVIDENCE, service=service, pod="chat-0",
                      retention_days=1)
    for n in range(5):
        log.append("block", user="u", reference=f"real-{n}")
    assert shipper.ship_once() == 5
    acknowledged = [f"real-{n}" for n in range(5, 10)]
    for reference in acknowledged:  # answered, in the pod, not shipped yet
        log.append("block", user="u", reference=reference)

    team = access.s3(session)  # the team, with what it reads from the Secret
    team.put(segments.segment_key(shipper.stream, 6),
             _forged(shipper.stream, 6, log.shipped_hash, 5),
             datetime.now(UTC) + timedelta(days=1))

    planted = shipper.stream
    shipper._cycle()
    # Every acknowledged record reached the store, in a new stream of the pod that continues
    # its chain; none was given up for the planted segment, and the sidecar says so.
    assert shipper.up and shipper.stream != planted
    assert log.unshipped_bytes == 0
    records = list(export_records(access.s3(objectstore.root), service=service))
    mine = [r.get("reference", r["kind"]) for r in records if r["stream"] == shipper.stream]
    assert mine == [*acknowledged, CONFLICT]
    [conflict] = [r for r in records if r["kind"] == CONFLICT]
    assert conflict["segment"] == segments.segment_key(planted, 6)
    assert conflict["continued_as"] == shipper.stream
    assert conflict["previous_stream"] == planted
    assert shipper.conflicts._value.get() == 1
    # Nothing of the pod's was compacted away unshipped: the new stream goes on from record 6,
    # which `verify` reports as a gap in it (the planted segment sits where record 6 was due).
    report = verify_store(access.s3(objectstore.root), EVIDENCE,
                          stream_prefix=service.split("/")[0] + "/")
    assert any(shipper.stream in p and "records 1..5 are missing" in p
               for p in report.problems), report.problems
    # Later records go on shipping to the new stream.
    log.append("block", user="u", reference="real-10")
    assert shipper.ship_once() == 1
