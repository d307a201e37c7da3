"""The sidecar's side of shipping evidence: its command-line options and the shipper's life.

Injected by hegui, the sidecar needs no option for it: the operator renders `evidence.yaml` (the
store's URL, region, least retention) into the ConfigMap beside `--service`, and the injector
projects the hegui-owned Secret `hegui-evidence-<service>` into /etc/hegui-evidence
(`access-key`, `secret-key` with its session token on a second line: the service's own store
session, limited to its records and rotated by the operator; `evidence.key`, and a copy of
`evidence.yaml`;
hegui.evidence.config). By hand:

    python -m hegui.sidecar ... --records /var/lib/hegui/records.jsonl \\
        --evidence-store http://minio.hegui-system:9000/hegui-evidence \\
        --evidence-key-file /etc/hegui/keys/evidence.key

Credentials come from those files or the environment (HEGUI_EVIDENCE_ACCESS_KEY,
HEGUI_EVIDENCE_SECRET_KEY, HEGUI_EVIDENCE_SESSION_TOKEN), never from the command line, and are
never logged. Without a store records stay in the pod as before, which the sidecar says in its
log at start: evidence that dies with the pod.

The fail mode when the buffer is full is the posture's: `dataProtection.evidenceFailureMode`
when the posture has it, else `moderation.failureMode` (Closed: refuse with 503, nothing is
served that cannot be recorded; Open: serve, count, alert, and write a `loss` record). A store
declared without credentials to reach it is the same choice at start: Closed exits (the pod does
not serve), Open serves with records kept in the pod and says so.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from hegui.evidence import config
from hegui.evidence.shipper import DEFAULT_BUFFER_BYTES, Shipper
from hegui.evidence.store import S3Store, Store, StoreError, open_store
from hegui.evidence.worker import ProcessStore
from hegui.moderation.records import RecordLog

log = logging.getLogger("hegui.evidence")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--evidence-store", default=os.environ.get("HEGUI_EVIDENCE_STORE"),
                        help="ship records to this S3 bucket with Object Lock, "
                             "http[s]://HOST:PORT/BUCKET (Art.11); default $HEGUI_EVIDENCE_STORE")
    parser.add_argument("--evidence-key-file", type=Path,
                        help="the key that seals shipped segments (a Secret, mounted as a file); "
                             "default: evidence.key in --evidence-credentials-dir")
    parser.add_argument("--evidence-config", type=Path,
                        help="the operator's evidence.yaml (store, retentionDays); default: "
                             "evidence.yaml next to --service, when there is one")
    parser.add_argument("--evidence-credentials-dir", type=Path,
                        default=Path(os.environ.get("HEGUI_EVIDENCE_CREDENTIALS_DIR")
                                     or config.CREDENTIALS_DIR),
                        help="the projected Secret hegui-evidence-<service>: access-key, "
                             "secret-key, evidence.key")
    parser.add_argument("--evidence-buffer-bytes", type=int, default=DEFAULT_BUFFER_BYTES,
                        help="records that may wait in the pod for the store; when full, the "
                             "posture's fail mode applies")
    parser.add_argument("--evidence-interval", type=float, default=1.0, metavar="SECONDS",
                        help="how often waiting records are shipped")


def fail_open(service: Any, settings: config.Settings | None = None) -> bool:
    """The posture's fail mode for evidence (see the module's doc), under the policy's floor:
    a CompliancePolicy's evidence.failureMode Closed wins over the service's Open."""
    if settings is not None and settings.failure_mode == "Closed":
        return False
    spec = service.spec
    protection = spec.data_protection
    mode = getattr(protection, "evidence_failure_mode", None) if protection else None
    if mode is None and spec.moderation is not None:
        mode = spec.moderation.failure_mode
    return str(getattr(mode, "value", mode)) == "Open"


def _settings(args: argparse.Namespace) -> config.Settings | None:
    """evidence.yaml: as given, else beside --service (the ConfigMap), else in the projected
    Secret (which carries a copy, so either mount is enough)."""
    if args.evidence_config is not None:
        return config.load(args.evidence_config)
    places = [Path(args.service).parent] if getattr(args, "service", None) else []
    for directory in [*places, args.evidence_credentials_dir]:
        if (found := config.load(directory / config.CONFIG_FILE)) is not None:
            return found
    return None


def attach(args: argparse.Namespace, records: RecordLog | None, service: Any, *,
           registry: CollectorRegistry | None) -> Shipper | None:
    """The shipper for `records`, started, or None when no store is configured."""
    if records is None:
        return None
    try:
        settings = _settings(args)
    except config.EvidenceConfigError as error:
        raise SystemExit(f"hegui-sidecar: {error}") from None
    url = args.evidence_store or (settings.store if settings else None)
    if not url:
        log.warning("no evidence store (no CompliancePolicy declares spec.evidence, no "
                    "--evidence-store): records stay in the pod and are lost with it (Art.11)")
        return None
    protection = service.spec.data_protection
    retention = max(protection.retention_days if protection else 180,
                    settings.retention_days if settings else 1)
    try:
        store: Store
        if url.startswith(("http://", "https://")):
            found = config.read_credentials(args.evidence_credentials_dir,
                                            key_file=args.evidence_key_file)
            # From the projected Secret, the store session is read again as the operator
            # rotates it (hegui.evidence.config.file_source); from the environment, as given.
            # Built here once to refuse a bad URL at start; the calls run in a worker process
            # of their own, off the event loop's GIL (hegui.evidence.worker).
            open_s3 = functools.partial(
                S3Store, url, access_key=found.access_key, secret_key=found.secret_key,
                session_token=found.session_token, source=found.source,
                region=settings.region if settings else None)
            open_s3()
            store, key = ProcessStore(open_s3, url), found.key
        else:  # a directory: tests and offline runs
            if args.evidence_key_file is None:
                raise config.EvidenceConfigError(
                    "--evidence-store needs --evidence-key-file (the key that seals segments, "
                    "from a Secret)")
            store, key = open_store(url), args.evidence_key_file.read_bytes().strip()
    except (config.EvidenceConfigError, StoreError, OSError) as error:
        if not fail_open(service, settings):
            raise SystemExit(f"hegui-sidecar: {error}; the fail mode is Closed, so nothing is "
                             "served that cannot be recorded (Art.11)") from None
        log.error("%s; the fail mode is Open: serving with records kept in the pod only "
                  "(Art.11)", error)
        return None
    name = f"{service.metadata.namespace or 'default'}/{service.metadata.name}"
    shipper = Shipper(records, store, key=key, service=name,
                      pod=os.environ.get("POD_NAME") or socket.gethostname(),
                      retention_days=retention,
                      buffer_bytes=args.evidence_buffer_bytes,
                      fail_open=fail_open(service, settings),
                      interval=args.evidence_interval, registry=registry)
    shipper.start()
    log.info("shipping records to %s as stream %s", url, shipper.stream)
    # On SIGTERM the sidecar's main loop stops serving, lets requests in flight finish and
    # calls `detach`, which ships what waits (hegui.sidecar.__main__).
    return shipper


def detach(shipper: Shipper | None) -> None:
    """Ship what waits and stop (the process is exiting)."""
    if shipper is not None:
        shipper.stop()
        if shipper.records.unshipped_bytes:
            print(f"hegui-sidecar: {shipper.records.unshipped_bytes} bytes of records could not "
                  "be shipped before exit; they stay in the pod's volume for the next start",
                  file=sys.stderr)
