"""`hegui records ...`: verify a record file or the shipped history, export, anchor (Art.11,
Art.19).

    hegui records verify FILE [--head HEAD]
    hegui records verify --store URL (--key-file KEY | --master-key-file KEY)
                         [--anchor-key-file K] [--anchors FILE ...] [--service NS/NAME]
    hegui records export --store URL [--service NS/NAME] [--since T] [--until T] [--kind K ...]
                         [-o FILE | --raw DIR]
    hegui records anchor --store URL --anchor-key-file K [--writer NAME] [-o FILE]
    hegui records init-store --store URL        (a MinIO: bucket with Object Lock, sidecar user,
                                                 anchor user)

Exit codes: 0 intact (or done), 1 tampered, 2 the store or a file could not be read.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from hegui.evidence import segments
from hegui.evidence.store import DirectoryStore, Store, StoreError, open_store
from hegui.evidence.verify import Report, oldest_versions, verify_store
from hegui.moderation.records import parse

_WRITER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def _key(path: Path | None) -> bytes | None:
    return path.read_bytes().strip() if path is not None else None


def _time(text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time, e.g. "
                                         "2026-01-31 or 2026-01-31T08:00:00+08:00") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def add_arguments(records_commands: Any, verify_file: Any) -> None:
    """The store's subcommands and options on `hegui records`."""
    check = records_commands.add_parser(
        "verify", help="check a record file's hash chain, or the shipped history in the store "
                       "against its anchors; exit 0 intact, 1 tampered")
    check.add_argument("file", type=Path, nargs="?", help="a record file in a pod's volume")
    check.add_argument("--head", type=Path, help="the head file (default FILE.head)")
    _store_arguments(check)
    check.add_argument("--key-file", type=Path,
                       help="the evidence key (the Secret the sidecars seal segments with)")
    check.add_argument("--master-key-file", type=Path,
                       help="the cluster's evidence key (the store Secret's evidenceKey): each "
                            "service's streams are checked with the key derived from it")
    check.add_argument("--anchor-key-file", type=Path,
                       help="the operator's anchor key (default: the evidence key)")
    check.add_argument("--anchors", type=Path, action="append", default=[],
                       help="more anchors, e.g. one saved with `anchor -o FILE`")
    check.add_argument("--anchors-configmap", metavar="NAMESPACE/NAME",
                       help="the anchors the operator keeps in this ConfigMap")
    check.add_argument("--kubeconfig", help="for --anchors-configmap (default: the usual rules)")
    check.set_defaults(run=lambda args: run_verify(args, verify_file))

    export = records_commands.add_parser(
        "export", help="records from the store, for inspectors (Art.19): by service, time and "
                       "kind, as JSON lines; or the sealed segments themselves (--raw)")
    _store_arguments(export, required=True)
    export.add_argument("--since", type=_time, help="from this time (ISO 8601)")
    export.add_argument("--until", type=_time, help="before this time (ISO 8601)")
    export.add_argument("--kind", action="append", default=[],
                        help="only records of this kind (block, mask, label, strike, "
                             "suspension, complaint, ...); repeatable")
    out = export.add_mutually_exclusive_group()
    out.add_argument("-o", "--output", type=Path, help="write JSON lines here (default stdout)")
    out.add_argument("--raw", type=Path, metavar="DIR",
                     help="copy the sealed segments and anchors into DIR, which `hegui records "
                          "verify --store DIR` checks offline")
    export.set_defaults(run=run_export)

    init = records_commands.add_parser(
        "init-store", help="prepare a MinIO evidence store as its root user: the bucket with "
                           "Object Lock and the sidecars' write-once user (the chart's Job)")
    init.add_argument("--store", required=True, help="http[s]://HOST:PORT/BUCKET; the root "
                      "user from HEGUI_EVIDENCE_ROOT_ACCESS_KEY/HEGUI_EVIDENCE_ROOT_SECRET_KEY, "
                      "the sidecars' user to add from HEGUI_EVIDENCE_ACCESS_KEY/"
                      "HEGUI_EVIDENCE_SECRET_KEY, the operator's anchor user (the only one that "
                      "writes anchors/) from HEGUI_EVIDENCE_ANCHOR_ACCESS_KEY/"
                      "HEGUI_EVIDENCE_ANCHOR_SECRET_KEY when set")
    init.add_argument("--wait", type=float, default=120.0, metavar="SECONDS",
                      help="how long to wait for the store to answer")
    init.set_defaults(run=run_init)

    anchor = records_commands.add_parser(
        "anchor", help="checkpoint every stream's head, locked in the store (the operator's "
                       "job; Art.11)")
    _store_arguments(anchor, required=True)
    anchor.add_argument("--anchor-key-file", type=Path, required=True,
                        help="the operator's anchor key (a Secret pods do not mount)")
    anchor.add_argument("--writer", default="operator", help="who anchors (a name)")
    anchor.add_argument("--retention-days", type=int, default=180,
                        help="how long the anchor is locked (the longest retention of any "
                             "service)")
    anchor.add_argument("-o", "--output", type=Path, help="also write the anchor to this file")
    anchor.add_argument("--configmap", metavar="NAMESPACE/NAME",
                        help="also keep it in this ConfigMap (hegui's namespace)")
    anchor.add_argument("--kubeconfig", help="for --configmap (default: the usual rules)")
    anchor.set_defaults(run=run_anchor)


def _store_arguments(parser: argparse.ArgumentParser, required: bool = False) -> None:
    parser.add_argument("--store", required=required,
                        help="http[s]://HOST:PORT/BUCKET (credentials from "
                             "HEGUI_EVIDENCE_ACCESS_KEY/HEGUI_EVIDENCE_SECRET_KEY) or a directory")
    parser.add_argument("--service", default="",
                        help="only this service's streams (NAMESPACE/NAME)")


def _namespaced(value: str) -> tuple[str, str]:
    namespace, _, name = value.partition("/")
    if not namespace or not name:
        raise ValueError(f"{value!r}: give NAMESPACE/NAME")
    return namespace, name


def _prefix(service: str) -> str:
    return f"{service.strip('/')}/" if service else ""


def run_verify(args: argparse.Namespace, verify_file: Any) -> int:
    if args.store is None:
        if args.file is None:
            print("hegui records verify: give a record FILE or --store URL", file=sys.stderr)
            return 2
        code: int = verify_file(args)
        return code
    try:
        store = open_store(args.store)
        if args.key_file is not None and args.master_key_file is not None:
            print("hegui records verify: give --key-file (one service's key) or "
                  "--master-key-file (the cluster's), not both", file=sys.stderr)
            return 2
        key = _key(args.master_key_file or args.key_file)
        if key is None:
            print("hegui records verify --store: without --key-file or --master-key-file the "
                  "segments' MACs are not checked", file=sys.stderr)
        anchors = [(str(path), path.read_bytes()) for path in args.anchors]
        if args.anchors_configmap:
            from hegui.evidence.anchor import published

            namespace, name = _namespaced(args.anchors_configmap)
            anchors += published(namespace, name, kubeconfig=args.kubeconfig)
        report = verify_store(store, key, stream_prefix=_prefix(args.service), anchors=anchors,
                              anchor_key=_key(args.anchor_key_file),
                              derive=args.master_key_file is not None)
    except (StoreError, OSError) as error:
        print(f"hegui records verify: {error}", file=sys.stderr)
        return 2
    print_report(report, args.store, sys.stdout)
    return 0 if report.ok else 1


def print_report(report: Report, where: str, out: TextIO) -> None:
    for problem in report.problems:
        print(f"PROBLEM {problem}", file=out)
    for stream in report.streams.values():
        state = ("intact" if stream.first_bad is None
                 else f"first bad record: {stream.first_bad}")
        print(f"{stream.stream}: {stream.records} records in {stream.segments} segments, "
              f"up to {stream.last}; {state}", file=out)
    print(f"{where}: {len(report.streams)} streams, {report.records} records, "
          f"{report.anchors} anchors; "
          f"{'intact' if report.ok else f'{len(report.problems)} problems'}", file=out)


def export_records(store: Store, *, service: str = "", since: datetime | None = None,
                   until: datetime | None = None, kinds: frozenset[str] = frozenset(),
                   ) -> Iterator[dict[str, Any]]:
    """The shipped records matching the filters, stream by stream, each with its `stream`."""
    report = Report()
    objects = oldest_versions(store.versions(segments.RECORDS + _prefix(service)), report)
    for key in sorted(objects, key=lambda k: segments.parse_key(k) or ("", 0)):
        parsed = segments.parse_key(key)
        if parsed is None:
            continue
        data = store.get(key, objects[key].version_id or None)
        body = data[data.index(b"\n") + 1:]
        for raw in body.splitlines():
            record = parse(raw)
            if record is None or (kinds and record.get("kind") not in kinds):
                continue
            if since or until:
                try:
                    when = datetime.fromisoformat(str(record.get("time")))
                except ValueError:
                    continue
                when = when if when.tzinfo else when.replace(tzinfo=UTC)
                if (since and when < since) or (until and when >= until):
                    continue
            yield {"stream": parsed[0], **record}


def run_export(args: argparse.Namespace) -> int:
    try:
        store = open_store(args.store)
        if args.raw is not None:
            copy = DirectoryStore(args.raw)
            count = 0
            for prefix in (segments.RECORDS + _prefix(args.service), segments.ANCHORS):
                for version in store.versions(prefix):
                    name = version.key
                    if copy.exists(name):  # later versions go beside the first, named so
                        name = f"{name}.version-{version.version_id or count}"
                    data = store.get(version.key, version.version_id or None)
                    copy.put(name, data, datetime.now(UTC))
                    count += 1
            print(f"copied {count} objects into {args.raw}", file=sys.stderr)
            return 0
        out = args.output.open("w", encoding="utf-8") if args.output else sys.stdout
        count = 0
        try:
            for record in export_records(store, service=args.service, since=args.since,
                                         until=args.until, kinds=frozenset(args.kind)):
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += 1
        finally:
            if args.output:
                out.close()
        print(f"exported {count} records", file=sys.stderr)
        return 0
    except (StoreError, OSError, ValueError) as error:
        print(f"hegui records export: {error}", file=sys.stderr)
        return 2


def run_anchor(args: argparse.Namespace) -> int:
    from hegui.evidence.anchor import checkpoint

    if not _WRITER.fullmatch(args.writer):
        print(f"hegui records anchor: --writer {args.writer!r}: letters, digits, . _ -",
              file=sys.stderr)
        return 2
    try:
        store = open_store(args.store)
        key = _key(args.anchor_key_file)
        assert key is not None
        name, data = checkpoint(store, key, writer=args.writer,
                                retention_days=args.retention_days)
        if args.output:
            args.output.write_bytes(data)
        if args.configmap:
            from hegui.evidence.anchor import publish

            namespace, configmap = _namespaced(args.configmap)
            publish(namespace, configmap, name, data, kubeconfig=args.kubeconfig)
    except (StoreError, OSError, ValueError) as error:
        print(f"hegui records anchor: {error}", file=sys.stderr)
        return 2
    print(f"anchored {len(json.loads(data)['streams'])} streams in {name}")
    return 0


def run_init(args: argparse.Namespace) -> int:
    import os
    import time

    from hegui.evidence.store import credentials, provision_minio

    root = (os.environ.get("HEGUI_EVIDENCE_ROOT_ACCESS_KEY", ""),
            os.environ.get("HEGUI_EVIDENCE_ROOT_SECRET_KEY", ""))
    sidecar = credentials()
    anchor = (os.environ.get("HEGUI_EVIDENCE_ANCHOR_ACCESS_KEY", ""),
              os.environ.get("HEGUI_EVIDENCE_ANCHOR_SECRET_KEY", ""))
    if any(anchor) and not all(anchor):
        print("hegui records init-store: set both HEGUI_EVIDENCE_ANCHOR_ACCESS_KEY and "
              "HEGUI_EVIDENCE_ANCHOR_SECRET_KEY (the operator's anchor user), or neither",
              file=sys.stderr)
        return 2
    if not all(root) or not all(sidecar):
        print("hegui records init-store: set HEGUI_EVIDENCE_ROOT_ACCESS_KEY, "
              "HEGUI_EVIDENCE_ROOT_SECRET_KEY (the store's root user) and "
              "HEGUI_EVIDENCE_ACCESS_KEY, HEGUI_EVIDENCE_SECRET_KEY (the sidecars' user)",
              file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.wait
    while True:
        try:
            provision_minio(args.store, root=root, sidecar=sidecar,
                            anchor=anchor if all(anchor) else None)
            break
        except StoreError as error:
            if time.monotonic() > deadline:
                print(f"hegui records init-store: {error}", file=sys.stderr)
                return 2
            time.sleep(2)
    print(f"{args.store}: Object Lock bucket and the sidecars' write-once user"
          f"{' and the anchor user' if all(anchor) else ''} ready")
    return 0
