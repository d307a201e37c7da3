"""Complaints tracked against the published deadline (Art.15): reading them back from the real
hash-chained record files, counting the overdue ones, and `hegui complaints list|close`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hegui.complaints_cli import main
from hegui.moderation.records import RecordLog, pseudonym, verify
from hegui.sidecar.complaints import (
    COMPLAINT,
    RESOLUTIONS,
    ComplaintError,
    close,
    count_overdue,
    load,
)

KEY = b"test-key-not-secret"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
DEADLINE = timedelta(hours=72)


def complain(log: RecordLog, reference: str, at: datetime, **fields: str) -> None:
    log.append(COMPLAINT, user="alice", now=at, reference=reference,
               deadline=(at + DEADLINE).isoformat(), category=fields.pop("category", "other"),
               text=fields.pop("text", "the answer was wrong"), service="hegui-demo/chat",
               article="Art.15", **fields)


@pytest.fixture
def records(tmp_path: Path) -> Path:
    """Two pods' record files, as collected from their volumes, with other records between."""
    a = RecordLog(tmp_path / "chat-0" / "records.jsonl", key=KEY)
    b = RecordLog(tmp_path / "chat-1" / "records.jsonl", key=KEY)
    a.append("block", user="bob", now=T0, categories=["subversion"], reference="r0")
    complain(a, "c-early", T0, category="illegalContent",
             contact_pseudonym=pseudonym(KEY, "alice@example.cn"))
    complain(b, "c-late", T0 + timedelta(days=2))
    a.append("strike", user="bob", now=T0 + timedelta(days=2), level="warn")
    return tmp_path


def test_states_follow_the_deadline(records: Path) -> None:
    book = load(records)
    assert [c.reference for c in book.complaints] == ["c-early", "c-late"]
    assert not book.problems
    early = book.find("c-early")
    assert early is not None and early.contact_pseudonymised
    assert early.contact == pseudonym(KEY, "alice@example.cn")
    assert early.user == pseudonym(KEY, "alice")  # the user id never appears in clear
    assert early.state(T0 + DEADLINE - timedelta(seconds=1)) == "open"
    assert early.state(T0 + DEADLINE + timedelta(seconds=1)) == "overdue"
    assert count_overdue(records, T0 + timedelta(days=1)) == 0
    assert count_overdue(records, T0 + timedelta(days=4)) == 1
    assert count_overdue(records, T0 + timedelta(days=6)) == 2


def test_close_appends_and_never_edits(records: Path) -> None:
    pod = records / "chat-0" / "records.jsonl"
    before = pod.read_bytes()
    when = T0 + timedelta(days=4)  # a day past the deadline
    record = close(load(records), "c-early", "removed the answer; replied by e-mail",
                   closed_by="ops", now=when)
    assert record["late"] is True and record["article"] == "Art.15"
    assert pod.read_bytes() == before  # the sidecar's chain is untouched
    resolutions = records / "chat-0" / RESOLUTIONS
    assert verify(resolutions).ok and verify(pod).ok
    book = load(records)
    early = book.find("c-early")
    assert early is not None and early.state(when) == "closed" and early.closed_late
    assert early.resolution == "removed the answer; replied by e-mail"
    assert count_overdue(records, when) == 0
    with pytest.raises(ComplaintError, match="already closed"):
        close(book, "c-early", "again", closed_by="ops")
    with pytest.raises(ComplaintError, match="no complaint 'nope'"):
        close(book, "nope", "x", closed_by="ops")
    with pytest.raises(ComplaintError, match="resolution"):
        close(book, "c-late", "   ", closed_by="ops")


def test_hostile_lines_are_reported_not_fatal(records: Path) -> None:
    pod = records / "chat-1" / "records.jsonl"
    with pod.open("a", encoding="utf-8") as file:
        file.write("{not json\n[1, 2]\n")
        file.write(json.dumps({"kind": COMPLAINT, "reference": "x"}) + "\n")
        file.write(json.dumps({"kind": "complaint_closed", "reference": "ghost",
                               "time": T0.isoformat()}) + "\n")
    book = load(records)
    assert [c.reference for c in book.complaints] == ["c-early", "c-late"]
    assert len(book.problems) == 4
    assert any("ghost" in p for p in book.problems)


def test_cli_list_and_close(records: Path, capsys: pytest.CaptureFixture[str]) -> None:
    now = (T0 + timedelta(days=4)).isoformat()
    assert main(["complaints", "list", "--records", str(records), "--now", now]) == 0
    out = capsys.readouterr().out
    assert "c-early" in out and "overdue" in out
    assert "1 open, 1 overdue, 0 closed (Art.15)" in out
    assert main(["complaints", "list", "--records", str(records), "--now", now,
                 "--fail-on-overdue"]) == 1
    capsys.readouterr()

    assert main(["complaints", "close", "c-early", "--records", str(records), "--resolution",
                 "answer withdrawn", "--by", "ops", "--now", now]) == 0
    assert "closed c-early after the deadline" in capsys.readouterr().out
    assert main(["complaints", "close", "c-early", "--records", str(records), "--resolution",
                 "again"]) == 2
    assert "already closed" in capsys.readouterr().err

    assert main(["complaints", "list", "--records", str(records), "--now", now, "-o", "json",
                 "--state", "closed"]) == 0
    listed = json.loads(capsys.readouterr().out)["complaints"]
    assert [(c["reference"], c["state"], c["closedLate"], c["resolution"]) for c in listed] == [
        ("c-early", "closed", True, "answer withdrawn")]


def test_cli_warns_about_a_broken_chain(records: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    pod = records / "chat-0" / "records.jsonl"
    rows = pod.read_text(encoding="utf-8").splitlines(keepends=True)
    pod.write_text("".join(rows[1:]), encoding="utf-8")  # someone removed the first record
    assert main(["complaints", "list", "--records", str(records)]) == 0
    assert "does not verify" in capsys.readouterr().err


def test_cli_missing_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["complaints", "list", "--records", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no such records file or directory" in capsys.readouterr().err
