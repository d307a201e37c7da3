"""The dossier (Art.19) reads what was shipped to the evidence store, verified first: an
inspector sees the shipped incidents and complaints, and a tampered segment is named in the
dossier's integrity section with its first bad record (Art.11)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hegui.dossier import add_parser
from hegui.evidence import config
from hegui.evidence.shipper import Shipper
from hegui.evidence.store import DirectoryStore
from hegui.moderation.records import RecordLog
from hegui.sidecar.complaints import COMPLAINT

SAMPLES = Path(__file__).parents[2] / "samples" / "compliance"
SERVICE = "hegui-demo/chat"
MASTER = b"the-clusters-evidence-key"
NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="hegui")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["dossier", *argv])
    code: int = args.run(args)
    return code


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """Two pods' records shipped into a store (a `records export --raw` copy), then the pods'
    volumes thrown away."""
    where = tmp_path / "store"
    for pod in ("chat-0", "chat-1"):
        log = RecordLog(tmp_path / pod / "records.jsonl", key=b"k")
        for day in range(6):
            at = NOW - timedelta(days=6 - day)
            log.append("label", user="u1", now=at, service=SERVICE, article="Art.12")
            log.append("block", user="u2", now=at, service=SERVICE, categories=["subversion"],
                       article="Art.4(1)", reference=f"{pod}-b{day}")
        log.append(COMPLAINT, user="u3", now=NOW - timedelta(days=1), service=SERVICE,
                   reference=f"{pod}-complaint", category="falseInformation",
                   deadline=(NOW + timedelta(days=2)).isoformat(), text="wrong answer",
                   article="Art.15")
        Shipper(log, DirectoryStore(where), key=config.service_key(MASTER, "hegui-demo", "chat"),
                service=SERVICE, pod=pod, retention_days=1, max_records=5).ship_once()
    return where


def _dossier(tmp_path: Path, store: Path, name: str) -> str:
    (tmp_path / "master.key").write_bytes(MASTER)
    out = tmp_path / name
    assert run_cli("chat", "-f", str(SAMPLES / "chat-service.yaml"), "--store", str(store),
                   "--master-key-file", str(tmp_path / "master.key"), "-o", str(out),
                   "--format", "md") == 0
    return (out / "dossier-hegui-demo-chat.md").read_text(encoding="utf-8")


def test_the_dossier_shows_what_was_shipped(tmp_path: Path, store: Path) -> None:
    text = _dossier(tmp_path, store, "out")
    assert f"evidence store {store}" in text
    assert text.count("| 13 | intact |") == 2, text  # each pod's stream: 6+6+1 records
    assert "chat-0-complaint" in text and "chat-1-complaint" in text
    assert "No anchor was found" in text  # said, not hidden


def test_a_tampered_segment_is_named_in_the_dossier(tmp_path: Path, store: Path) -> None:
    segment = sorted(store.rglob("000000000006.seg"))[0]
    lines = segment.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b"subversion", b"harmless00")  # record 6, the segment's first
    segment.write_bytes(b"".join(lines))
    text = _dossier(tmp_path, store, "tampered")
    assert "first bad record: 6" in text
    assert "| 13 | intact |" in text  # the other pod's stream still is


def test_an_unreadable_store_is_a_clear_error(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("chat", "-f", str(SAMPLES / "chat-service.yaml"), "--store",
                   "http://127.0.0.1:9/hegui-evidence", "-o", str(tmp_path)) == 2
    assert "--store" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the records come from one place
        run_cli("chat", "--store", "x", "--records", str(tmp_path))
