"""`hegui dossier SERVICE`: what Art.19 asks a provider to explain to an inspection, in one report.

From the GenerativeService (and its SafetyAssessments), read from files (`--from-file`) or from
the cluster, and its records: from the evidence store (`--store URL`, verified against the
operator's anchors first) or a records directory (`--records`): the posture article by article
(filing and assessment history, training data and annotation, moderation categories and
thresholds, labeling, SLO and suspensions), incidents and complaints with their outcomes, and
the integrity of the records. Written as Markdown (pictures as PNG beside it), self-contained
HTML (inline SVG) and PDF. Exit 0 written, 2 bad input (the message names the file and field).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hegui.dossier.inputs import DossierInputError, from_cluster, from_files, records_dir
from hegui.dossier.render import FORMATS, write
from hegui.evidence.store import StoreError


def _formats(text: str) -> tuple[str, ...]:
    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    wrong = [f for f in chosen if f not in FORMATS]
    if wrong or not chosen:
        raise argparse.ArgumentTypeError(f"formats are {', '.join(FORMATS)}; got {text!r}")
    return chosen


def add_parser(commands: Any) -> None:
    """`hegui dossier SERVICE`, on the `hegui` command's subparsers."""
    parser = commands.add_parser("dossier", help="the Art.19 inspection dossier of a service",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("service", help="the GenerativeService: name or namespace/name")
    parser.add_argument("-f", "--from-file", action="append", metavar="FILE",
                        help="read the service and its SafetyAssessments from these YAML/JSON "
                             "files or directories instead of the cluster (repeatable)")
    parser.add_argument("-n", "--namespace", help="the service's namespace")
    parser.add_argument("--kubeconfig", help="the cluster's kubeconfig (default: standard rules)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--store",
                        help="read the records from the evidence store, http[s]://HOST:PORT/"
                             "BUCKET (credentials from HEGUI_EVIDENCE_ACCESS_KEY/"
                             "HEGUI_EVIDENCE_SECRET_KEY) or a `records export --raw` directory")
    source.add_argument("--records", type=Path,
                        help="a records directory copied from pods (incidents, complaints)")
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument("--key-file", type=Path, help="with --store: the service's evidence key")
    keys.add_argument("--master-key-file", type=Path,
                      help="with --store: the cluster's evidence key (evidenceKey)")
    parser.add_argument("--anchor-key-file", type=Path,
                        help="with --store: the operator's anchor key")
    parser.add_argument("--anchors-configmap", metavar="NAMESPACE/NAME",
                        help="with --store: the operator's anchors, e.g. "
                             "hegui-system/hegui-evidence-anchors")
    parser.add_argument("-o", "--output", type=Path, default=Path("."),
                        help="the directory to write to (default: .)")
    parser.add_argument("--format", type=_formats, default=FORMATS,
                        help="comma-separated: md,html,pdf (default: all)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        inputs = (from_files(args.from_file, args.service, args.namespace) if args.from_file
                  else from_cluster(args.service, args.namespace, args.kubeconfig))
        records = records_dir(args.records)
    except DossierInputError as error:
        print(f"hegui dossier: {error}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="hegui-dossier-") as work:
        shipped = None
        if args.store:
            ref = f"{inputs.service.namespace or 'default'}/{inputs.service.name}"
            try:
                shipped = _from_store(args, ref, Path(work))
            except (StoreError, OSError, ValueError) as error:
                print(f"hegui dossier: --store: {error}", file=sys.stderr)
                return 2
        return _write(args, inputs, records, shipped)


def _from_store(args: argparse.Namespace, ref: str, work: Path) -> Any:
    from hegui.dossier.store import fetch

    def read(path: Path | None) -> bytes | None:
        return path.read_bytes().strip() if path is not None else None

    anchors: list[tuple[str, bytes]] = []
    if args.anchors_configmap:
        from hegui.evidence.anchor import published

        namespace, _, name = args.anchors_configmap.partition("/")
        if not namespace or not name:
            raise ValueError(f"--anchors-configmap {args.anchors_configmap!r}: give "
                             "NAMESPACE/NAME")
        anchors = published(namespace, name, kubeconfig=args.kubeconfig)
    return fetch(args.store, ref, work, key=read(args.master_key_file or args.key_file),
                 derive=args.master_key_file is not None, anchors=anchors,
                 anchor_key=read(args.anchor_key_file))


def _write(args: argparse.Namespace, inputs: Any, records: Path | None, shipped: Any) -> int:
    try:  # matplotlib is imported only here: the rest of `hegui` runs without it
        from hegui.dossier.build import build

        if "pdf" in args.format:
            import reportlab  # noqa: F401 (the PDF is set with it)
    except ImportError as missing:
        print(f"hegui dossier: {missing.name} is not installed: pip install 'hegui[dossier]'",
              file=sys.stderr)
        return 2
    dossier = build(inputs.service, inputs.assessments, records=records,
                    now=datetime.now(UTC), source=inputs.source, shipped=shipped)
    try:
        written = write(dossier, args.output, args.format)
    except OSError as error:
        print(f"hegui dossier: cannot write to {args.output} (-o): {error}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


__all__ = ["add_parser", "run"]
