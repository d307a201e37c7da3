"""`hegui dossier SERVICE`: what Art.19 asks a provider to explain to an inspection, in one report.

From the GenerativeService (and its SafetyAssessments), read from files (`--from-file`) or from
the cluster, and the sidecars' records directory (`--records`): the posture article by article
(filing and assessment history, training data and annotation, moderation categories and
thresholds, labeling, SLO and suspensions), incidents and complaints with their outcomes, and
the integrity of the records. Written as Markdown (pictures as PNG beside it), self-contained
HTML (inline SVG) and PDF. Exit 0 written, 2 bad input (the message names the file and field).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hegui.dossier.inputs import DossierInputError, from_cluster, from_files, records_dir
from hegui.dossier.render import FORMATS, write


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
    parser.add_argument("--records", type=Path,
                        help="the sidecars' records directory (incidents, complaints)")
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
    try:  # matplotlib is imported only here: the rest of `hegui` runs without it
        from hegui.dossier.build import build

        if "pdf" in args.format:
            import reportlab  # noqa: F401 (the PDF is set with it)
    except ImportError as missing:
        print(f"hegui dossier: {missing.name} is not installed: pip install 'hegui[dossier]'",
              file=sys.stderr)
        return 2
    dossier = build(inputs.service, inputs.assessments, records=records,
                    now=datetime.now(UTC), source=inputs.source)
    try:
        written = write(dossier, args.output, args.format)
    except OSError as error:
        print(f"hegui dossier: cannot write to {args.output} (-o): {error}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


__all__ = ["add_parser", "run"]
