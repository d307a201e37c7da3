"""The sidecar's side of shipping evidence: its command-line options and the shipper's life.

    python -m hegui.sidecar ... --records /var/lib/hegui/records.jsonl \\
        --evidence-store http://minio.hegui-system:9000/hegui-evidence \\
        --evidence-key-file /etc/hegui/keys/evidence.key

Credentials come from the environment (HEGUI_EVIDENCE_ACCESS_KEY, HEGUI_EVIDENCE_SECRET_KEY:
a Secret's keys as env), never from the command line, and are never logged. Without
`--evidence-store` (HEGUI_EVIDENCE_STORE) records stay in the pod as before, which the sidecar
says in its log at start: evidence that dies with the pod.

The fail mode when the buffer is full is the posture's: `dataProtection.evidenceFailureMode`
when the posture has it, else `moderation.failureMode` (Closed: refuse with 503, nothing is
served that cannot be recorded; Open: serve, count, alert, and write a `loss` record).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from hegui.evidence.shipper import DEFAULT_BUFFER_BYTES, Shipper
from hegui.evidence.store import open_store
from hegui.moderation.records import RecordLog

log = logging.getLogger("hegui.evidence")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--evidence-store", default=os.environ.get("HEGUI_EVIDENCE_STORE"),
                        help="ship records to this S3 bucket with Object Lock, "
                             "http[s]://HOST:PORT/BUCKET (Art.11); default $HEGUI_EVIDENCE_STORE")
    parser.add_argument("--evidence-key-file", type=Path,
                        help="the key that seals shipped segments (a Secret, mounted as a file)")
    parser.add_argument("--evidence-buffer-bytes", type=int, default=DEFAULT_BUFFER_BYTES,
                        help="records that may wait in the pod for the store; when full, the "
                             "posture's fail mode applies")
    parser.add_argument("--evidence-interval", type=float, default=1.0, metavar="SECONDS",
                        help="how often waiting records are shipped")


def fail_open(service: Any) -> bool:
    """The posture's fail mode for evidence (see the module's doc)."""
    spec = service.spec
    protection = spec.data_protection
    mode = getattr(protection, "evidence_failure_mode", None) if protection else None
    if mode is None and spec.moderation is not None:
        mode = spec.moderation.failure_mode
    return str(getattr(mode, "value", mode)) == "Open"


def attach(args: argparse.Namespace, records: RecordLog | None, service: Any, *,
           registry: CollectorRegistry | None) -> Shipper | None:
    """The shipper for `records`, started, or None when no store is configured."""
    if records is None:
        return None
    if not args.evidence_store:
        log.warning("no evidence store (--evidence-store): records stay in the pod and are "
                    "lost with it (Art.11)")
        return None
    if args.evidence_key_file is None:
        raise SystemExit("--evidence-store needs --evidence-key-file (the key that seals "
                         "segments, from a Secret)")
    protection = service.spec.data_protection
    name = f"{service.metadata.namespace or 'default'}/{service.metadata.name}"
    shipper = Shipper(records, open_store(args.evidence_store),
                      key=args.evidence_key_file.read_bytes().strip(), service=name,
                      pod=os.environ.get("POD_NAME") or socket.gethostname(),
                      retention_days=protection.retention_days if protection else 180,
                      buffer_bytes=args.evidence_buffer_bytes, fail_open=fail_open(service),
                      interval=args.evidence_interval, registry=registry)
    shipper.start()
    log.info("shipping records to %s as stream %s", args.evidence_store, shipper.stream)

    def terminate(signum: int, frame: Any) -> None:
        # Kubernetes deletes a pod with SIGTERM: unwind (in-flight requests finish and write
        # their records), then the shipper ships what waits before the process exits.
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    return shipper


def detach(shipper: Shipper | None) -> None:
    """Ship what waits and stop (the process is exiting)."""
    if shipper is not None:
        shipper.stop()
        if shipper.records.unshipped_bytes:
            print(f"hegui-sidecar: {shipper.records.unshipped_bytes} bytes of records could not "
                  "be shipped before exit; they stay in the pod's volume for the next start",
                  file=sys.stderr)
