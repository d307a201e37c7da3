"""`hegui complaints list|close`: complaints against their published deadline (Art.15).

Both read a records directory: the sidecars' record files (`*.jsonl`, at any depth, e.g. one
folder per pod) and the `complaint-resolutions.jsonl` files beside them. `list` shows each
complaint as open, overdue or closed (exit 0; `--fail-on-overdue` exits 1 when any is overdue, for
a cron job or a pipeline). `close REFERENCE --resolution TEXT` appends the outcome as a new record
in the resolutions file beside the complaint's record file: nothing is ever edited.
Exit 2: the records cannot be read, or the reference or resolution is wrong.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from hegui.moderation.records import verify
from hegui.sidecar.complaints import RESOLUTIONS, Complaint, ComplaintError, close, load

STATES = ("open", "overdue", "closed")


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if value else "-"


def _row(complaint: Complaint, now: datetime) -> dict[str, Any]:
    return {"reference": complaint.reference, "service": complaint.service,
            "state": complaint.state(now), "category": complaint.category,
            "received": complaint.received.isoformat(), "deadline": complaint.deadline.isoformat(),
            "closedAt": complaint.closed_at.isoformat() if complaint.closed_at else None,
            "closedLate": complaint.closed_late, "resolution": complaint.resolution,
            "closedBy": complaint.closed_by, "about": complaint.about, "text": complaint.text,
            "contact": complaint.contact, "contactPseudonymised": complaint.contact_pseudonymised,
            "file": str(complaint.source)}


def _table(rows: list[dict[str, Any]], out: TextIO) -> None:
    header = ("REFERENCE", "SERVICE", "STATE", "CATEGORY", "RECEIVED", "DEADLINE", "OUTCOME")
    lines = [header]
    for row in rows:
        outcome = "-"
        if row["state"] == "closed":
            late = " (late)" if row["closedLate"] else ""
            outcome = f"{_short(row['resolution'] or '', 40)}{late}"
        lines.append((row["reference"], row["service"], row["state"], row["category"],
                      _when(datetime.fromisoformat(row["received"])),
                      _when(datetime.fromisoformat(row["deadline"])), outcome))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    for line in lines:
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=False)]
        out.write("  ".join([*cells, line[-1]]).rstrip() + "\n")


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def run_list(args: argparse.Namespace) -> int:
    now = args.now or datetime.now(UTC)
    try:
        book = load(args.records)
    except OSError as error:
        print(f"hegui complaints: {error}", file=sys.stderr)
        return 2
    for problem in book.problems:
        print(f"warning: {problem}", file=sys.stderr)
    for path in book.files:  # a list built on a broken chain says so (Art.11, Art.14)
        if not verify(path).ok:
            print(f"warning: {path}: the hash chain does not verify "
                  f"(hegui records verify {path})", file=sys.stderr)
    wanted = set(args.state or STATES)
    rows = [_row(c, now) for c in book.complaints
            if c.state(now) in wanted and (not args.service or c.service == args.service)]
    if args.output == "json":
        json.dump({"now": now.isoformat(), "complaints": rows}, sys.stdout, ensure_ascii=False,
                  indent=2)
        sys.stdout.write("\n")
    else:
        _table(rows, sys.stdout)
        counts = {state: sum(1 for c in book.complaints if c.state(now) == state)
                  for state in STATES}
        print(f"\n{counts['open']} open, {counts['overdue']} overdue, {counts['closed']} closed "
              f"(Art.15)")
    overdue = any(c.state(now) == "overdue" for c in book.complaints)
    return 1 if args.fail_on_overdue and overdue else 0


def run_close(args: argparse.Namespace) -> int:
    try:
        book = load(args.records)
        record = close(book, args.reference, args.resolution, closed_by=args.by,
                       now=args.now)
    except ComplaintError as bad:
        print(f"hegui complaints close: {bad}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"hegui complaints close: {error}", file=sys.stderr)
        return 2
    complaint = book.find(args.reference)
    where = complaint.source.parent / RESOLUTIONS if complaint else RESOLUTIONS
    late = " after the deadline" if record["late"] else ""
    print(f"closed {args.reference}{late}: record {record['seq']} in {where} (Art.15)")
    return 0


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no passwd entry, e.g. a container's random uid
        return "unknown"


def _timestamp(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def add_parser(commands: Any) -> None:
    """`hegui complaints list|close`, on the `hegui` command's subparsers."""
    complaints = commands.add_parser(
        "complaints", help="complaints against their published deadline (Art.15)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = complaints.add_subparsers(dest="complaints_command", required=True)
    listing = sub.add_parser("list", help="open, overdue and closed complaints")
    listing.add_argument("--records", type=Path, required=True,
                         help="a records directory (or one record file)")
    listing.add_argument("--state", choices=STATES, action="append",
                         help="only these states (repeatable); default all")
    listing.add_argument("--service", help="only this service (namespace/name)")
    listing.add_argument("-o", "--output", choices=("table", "json"), default="table")
    listing.add_argument("--fail-on-overdue", action="store_true",
                         help="exit 1 when a complaint is overdue")
    listing.add_argument("--now", type=_timestamp, help=argparse.SUPPRESS)  # for tests, replays
    listing.set_defaults(run=run_list)
    closing = sub.add_parser("close", help="close a complaint with its outcome (an appended "
                                           "record, never an edit)")
    closing.add_argument("reference", help="the reference the complainant was given")
    closing.add_argument("--records", type=Path, required=True,
                         help="a records directory (or one record file)")
    closing.add_argument("--resolution", required=True,
                         help="the outcome fed back to the complainant")
    closing.add_argument("--by", default=_user(),
                         help="who closes it (default: the current user)")
    closing.add_argument("--now", type=_timestamp, help=argparse.SUPPRESS)
    closing.set_defaults(run=run_close)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hegui")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
