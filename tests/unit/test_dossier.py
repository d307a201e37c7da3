"""`hegui dossier` (Art.19): a dossier built from the sample GenerativeService and
SafetyAssessment, with a status the operator would write, and records written by the real
records code (incidents, labels, complaints and their closures). Each format is checked for
every section and its article; the PDF's pages are rendered to images (pdftoppm) and its text
read back (pdftotext)."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from hegui.api.assessment import SafetyAssessment
from hegui.api.generativeservice import GenerativeService
from hegui.dossier import add_parser
from hegui.dossier.build import build
from hegui.dossier.document import Dossier, Figure
from hegui.dossier.render import markdown, to_html, to_pdf
from hegui.moderation.records import RecordLog
from hegui.sidecar.complaints import COMPLAINT, close, load

SAMPLES = Path(__file__).parents[2] / "samples" / "compliance"
NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
KEY = b"test-key-not-secret"
SERVICE = "hegui-demo/chat"

#: Every section, with the article it must cite.
SECTIONS = [
    ("Service and this dossier", "Art.19"), ("Filing", "Art.17"),
    ("Security assessment", "Art.17"), ("Training data and base models", "Art.7"),
    ("Annotation", "Art.8"), ("Service agreement", "Art.9"), ("Audience and minors", "Art.10"),
    ("Personal information and records", "Art.11"),
    ("Labeling of generated content", "Art.12"), ("Content moderation", "Art.4, Art.14"),
    ("Stability and suspension", "Art.13, Art.21"), ("Incidents", "Art.14"),
    ("Complaints", "Art.15"), ("Licences", "Art.23"),
    ("Status and findings", "Art.12, Art.13, Art.14, Art.17, Art.21"),
    ("Integrity of the records", "Art.11, Art.14"),
]


def _yaml(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((SAMPLES / name).read_text(encoding="utf-8"))
    return data


def _ts(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def service_with_status() -> dict[str, Any]:
    data = _yaml("chat-service.yaml")
    data["metadata"]["generation"] = 3
    data["status"] = {
        "observedGeneration": 3,
        "conditions": [
            {"type": "Filed", "status": "True", "reason": "Filed", "article": "Art.17",
             "lastTransitionTime": _ts(NOW - timedelta(days=40))},
            {"type": "SLOMet", "status": "False", "reason": "BurnRateExceeded",
             "article": "Art.13", "message": "availability burn rate 16x over 1h/5m",
             "lastTransitionTime": _ts(NOW - timedelta(days=2))},
            {"type": "Compliant", "status": "False", "reason": "Suspended",
             "article": "Art.21", "message": "suspended (Art.21)",
             "lastTransitionTime": _ts(NOW - timedelta(days=2))},
        ],
        "findings": [{"rule": "suspension", "article": "Art.21", "severity": "Error",
                      "message": "the service is suspended since the SLO burn rate exceeded "
                                 "14.4x"}],
        "suspension": {
            "suspended": True, "since": _ts(NOW - timedelta(days=2)),
            "reason": "availability burn rate 16x over 1h/5m",
            "history": [
                {"suspendedAt": _ts(NOW - timedelta(days=2)), "trigger": "Auto",
                 "reason": "availability burn rate 16x over 1h/5m"},
                {"suspendedAt": _ts(NOW - timedelta(days=12)), "trigger": "Manual",
                 "reason": "model rollback ordered by the security team",
                 "resumedAt": _ts(NOW - timedelta(days=11)), "resumedBy": "alice"},
            ]},
    }
    return data


def assessment_with_status() -> dict[str, Any]:
    data = _yaml("safety-assessment.yaml")
    completed = NOW - timedelta(days=30)
    data["status"] = {
        "verdict": "Pass", "startedAt": _ts(completed - timedelta(hours=3)),
        "completedAt": _ts(completed), "expiresAt": _ts(completed + timedelta(days=365)),
        "results": [
            {"category": "subversion", "bank": "generated-content", "questions": 2000,
             "passed": 1990, "passRate": 0.995},
            {"category": "refusal", "bank": "should-refuse", "questions": 500, "passed": 489,
             "passRate": 0.978}],
        "summary": [
            {"kind": "ShouldRefuse", "questions": 500, "passed": 489, "timedOut": 2,
             "rate": 0.978, "threshold": 0.95, "met": True}],
        "banks": [
            {"kind": "GeneratedContent", "questions": 2000, "required": 2000, "risksCovered": 31,
             "risksRequired": 31, "met": True},
            {"kind": "ShouldRefuse", "questions": 500, "required": 500, "risksCovered": 16,
             "risksRequired": 17, "met": False, "unknownCategories": ["refusal"],
             "short": [{"risk": "subversion", "clause": "A.1(a)", "questions": 3,
                        "required": 5}]}],
        "message": "all thresholds met"}
    return data


@pytest.fixture(scope="module")
def shared_records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A records directory as collected from two pods, written by the real records code."""
    where = tmp_path_factory.mktemp("dossier") / "records"
    pods = [RecordLog(where / f"chat-{n}" / "records.jsonl", key=KEY) for n in (0, 1)]
    for day in range(20):
        at = NOW - timedelta(days=20 - day, hours=day % 5)
        log = pods[day % 2]
        log.append("label", user="u1", now=at, service=SERVICE, article="Art.12",
                   produce_id=f"chat-{day}")
        if day % 3 == 0:
            log.append("block", user=f"u{day % 4}", now=at, service=SERVICE,
                       categories=["subversion"], article="Art.4(1)", reference=f"b{day}")
        if day % 4 == 1:
            log.append("mask", user="u2", now=at, service=SERVICE, kinds=["phone"],
                       article="Art.4(4)")
    pods[0].append("strike", user="u0", now=NOW - timedelta(days=5), service=SERVICE,
                   level="warn", article="Art.14")
    # Another service's records in the same directory are left out of this dossier.
    pods[1].append("block", user="x", now=NOW - timedelta(days=1), service="other/svc",
                   categories=["terrorismExtremism"], article="Art.4(1)")
    for reference, age in (("c-closed", 9), ("c-overdue", 5), ("c-open", 1)):
        at = NOW - timedelta(days=age)
        pods[0].append(COMPLAINT, user="u3", now=at, service=SERVICE, reference=reference,
                       deadline=(at + timedelta(hours=72)).isoformat(), category="falseInformation",
                       text="the answer about the filing was wrong", article="Art.15")
    close(load(where), "c-closed", "answer corrected and the complainant told by e-mail",
          closed_by="ops", now=NOW - timedelta(days=5))
    return where


@pytest.fixture
def records(shared_records: Path, tmp_path: Path) -> Path:
    """A copy of the records a test may spoil."""
    return Path(shutil.copytree(shared_records, tmp_path / "records"))


@pytest.fixture(scope="module")
def dossier(shared_records: Path) -> Dossier:
    # Built once: rendering the pictures is most of the cost.
    return build(GenerativeService.from_dict(service_with_status()),
                 [SafetyAssessment.from_dict(assessment_with_status())],
                 records=shared_records, now=NOW, source="samples/compliance")


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_every_section_cites_its_article(dossier: Dossier) -> None:
    assert [(s.title, s.article) for s in dossier.sections] == SECTIONS
    for section in dossier.sections:
        assert re.search(r"Art\.\d+", section.article), section.title
        assert section.blocks, f"{section.title} is empty"


def test_markdown_holds_the_posture_and_history(dossier: Dossier) -> None:
    text = markdown(dossier)
    for number, (title, article) in enumerate(SECTIONS, start=1):
        assert f"## {number}. {title} ({article})" in text
    for declared in ("网信算备110108123456701250012号", "Beijing-HeguiChat-202504020031",
                     "chat-2025", "GB/T 45654-2025", "Pass", "99.5%",  # filing, assessment
                     "licensed encyclopaedia corpus", "corpus licence agreement 2024-117",
                     "Qwen2.5-7B-Instruct",  # training data (Art.7)
                     "https://wiki.example.cn/annotation/rules", "97.0%",  # annotation (Art.8)
                     "| subversion | 0.5 | Block | input, output | Art.4(1) |",  # moderation
                     "| personalInformation | 0.6 | Mask | output | Art.4(4) |",
                     "本内容由人工智能生成", "北京合规示例科技有限公司",  # labeling (Art.12)
                     "model rollback ordered by the security team", "alice",  # suspensions
                     "72h", "report@example.cn",  # complaints (Art.15)
                     "京B2-20250000"):  # licences (Art.23)
        assert declared in text, declared
    # The banks against the standard's sizes, with what falls short (GB/T 45654-2025).
    assert "| ShouldRefuse | 500 | 489 | 2 | 97.8% | 95.0% | yes |" in text
    assert "| GeneratedContent | 2000 | 2000 | 31 of 31 | yes |" in text
    assert "| ShouldRefuse | 500 | 500 | 16 of 17 | no |" in text
    assert "| ShouldRefuse | subversion | A.1(a) | 3 | 5 |" in text
    assert "none of the 31 risks (not counted): refusal." in text
    assert "3 complaints: 1 open, 1 overdue, 1 closed (1 after the deadline)" in text
    assert "answer corrected and the complainant told by e-mail" in text
    assert "| block | 7 |" in text and "| mask | 5 |" in text and "| strike | 1 |" in text
    assert "| terrorismExtremism | 1 |" not in text  # the other service's record
    assert "| subversion | 7 |" in text
    assert "| **Labeled outputs in the records** | 20 |" in text
    assert text.count("| intact |") == 3  # two pods' chains and the resolutions chain
    assert "![" in text and f"{dossier.slug}-slo-suspensions.png" in text


def test_pictures(dossier: Dossier) -> None:
    figures = {b.name: b for s in dossier.sections for b in s.blocks if isinstance(b, Figure)}
    assert set(figures) == {"slo-suspensions", "incidents"}
    slo, incidents = figures["slo-suspensions"], figures["incidents"]
    assert "suspended (Auto)" in slo.svg and "suspended (Manual)" in slo.svg
    assert "SLO broken" in slo.svg
    for state in ("open", "overdue", "closed"):
        assert f"complaint {state}" in incidents.svg
    for figure in figures.values():
        assert figure.png.startswith(b"\x89PNG")
        assert figure.svg.startswith("<svg")


def test_html_is_self_contained(dossier: Dossier) -> None:
    page = to_html(dossier)
    for title, article in SECTIONS:
        assert f"{title} <span class=\"article\">({article})</span>" in page
    assert page.count("<svg") == 2
    assert not re.search(r"<(script|link|img)\b", page)  # nothing fetched when it is opened
    assert "网信算备110108123456701250012号" in page


def test_bad_records_lines_do_not_break_the_dossier(records: Path) -> None:
    with (records / "chat-0" / "records.jsonl").open("a", encoding="utf-8") as file:
        file.write("{garbage\n")
    built = build(GenerativeService.from_dict(service_with_status()), [], records=records,
                  now=NOW)
    text = markdown(built)
    assert "1 unreadable lines or records" in text
    assert "| chat-0/records.jsonl | 18 | line 19: not a record" in text  # the chain says so
    assert "no SafetyAssessment of this service was given" in text
    assert "3 complaints" in text


def test_a_licence_no_longer_counts_on_its_expiry_day_as_the_rule_says() -> None:
    # expiresOn is the first day a licence no longer counts (rule licences, Art.23): the
    # dossier and the rule must agree on that day.
    service = service_with_status()
    service["spec"]["licences"][0]["expiresOn"] = NOW.date().isoformat()
    text = markdown(build(GenerativeService.from_dict(service), [], now=NOW))
    assert f"| 京B2-20250000 | 北京市通信管理局 | {NOW.date().isoformat()} | no |" in text
    service["spec"]["licences"][0]["expiresOn"] = (NOW.date() + timedelta(days=1)).isoformat()
    text = markdown(build(GenerativeService.from_dict(service), [], now=NOW))
    assert "| 京B2-20250000 | 北京市通信管理局 | 2026-03-21 | yes |" in text


def test_a_bare_service_says_what_is_not_declared() -> None:
    data = _yaml("chat-service.yaml")
    for field in ("training", "userAgreement", "audience", "complaints", "licences"):
        del data["spec"][field]
    built = build(GenerativeService.from_dict(data), [], now=NOW)
    text = markdown(built)
    for field, article in (("training", "Art.7"), ("userAgreement", "Art.9"),
                           ("audience", "Art.10"), ("complaints", "Art.15")):
        assert f"Not declared: set spec.{field} to declare it ({article})." in text
    assert "no incident records (no --records given)" in text
    assert "no suspensions" in next(b.svg for s in built.sections for b in s.blocks
                                    if isinstance(b, Figure) and b.name == "slo-suspensions")


@pytest.mark.skipif(not (shutil.which("pdftoppm") and shutil.which("pdftotext")),
                    reason="poppler-utils is not installed (dev/apt-packages.txt)")
def test_pdf_pages_render_with_every_section(dossier: Dossier, tmp_path: Path) -> None:
    pdf = tmp_path / "dossier.pdf"
    pdf.write_bytes(to_pdf(dossier))
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(pdf), str(tmp_path / "page")],
                   check=True, capture_output=True, timeout=120)
    pages = sorted(tmp_path.glob("page-*.png"))
    assert len(pages) >= 4
    for page in pages:
        with Image.open(page) as image:
            histogram = image.convert("L").histogram()
        darkest = min(level for level, count in enumerate(histogram) if count)
        assert darkest < 100, f"{page.name} is blank"
        inked = sum(histogram[:200]) / sum(histogram)
        assert inked > 0.005, f"{page.name} has almost nothing on it"
    text = _flat(subprocess.run(["pdftotext", "-enc", "UTF-8", str(pdf), "-"], check=True,
                                capture_output=True, text=True, timeout=120).stdout)
    for number, (title, article) in enumerate(SECTIONS, start=1):
        assert f"{number}. {title} ({article})" in text, title
    for declared in ("网信算备110108123456701250012号", "合规助手", "c-overdue",
                     "model rollback ordered by the security team", "Art.4(4)"):
        assert declared in text, declared
    # The pictures are in it: the pages with them carry far more ink than text alone.
    images = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True, text=True,
                            timeout=60)
    if images.returncode == 0:
        assert len(images.stdout.strip().splitlines()) - 2 >= 2


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="hegui")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["dossier", *argv])
    code: int = args.run(args)
    return code


def test_cli_writes_every_format(tmp_path: Path, records: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    inputs = tmp_path / "in.yaml"
    inputs.write_text(yaml.safe_dump_all([service_with_status(), assessment_with_status()],
                                         allow_unicode=True), encoding="utf-8")
    out = tmp_path / "out"
    assert run_cli(SERVICE, "--from-file", str(inputs), "--records", str(records),
                   "-o", str(out)) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["dossier-hegui-demo-chat-incidents.png",
                     "dossier-hegui-demo-chat-slo-suspensions.png", "dossier-hegui-demo-chat.html",
                     "dossier-hegui-demo-chat.md", "dossier-hegui-demo-chat.pdf"]
    assert (out / "dossier-hegui-demo-chat.pdf").read_bytes().startswith(b"%PDF")
    assert "chat-2025" in (out / "dossier-hegui-demo-chat.md").read_text(encoding="utf-8")
    assert run_cli("chat", "-f", str(SAMPLES), "-o", str(tmp_path / "md"), "--format", "md") == 0
    assert [p.suffix for p in (tmp_path / "md").iterdir() if p.suffix != ".png"] == [".md"]
    capsys.readouterr()


@pytest.mark.parametrize(("content", "argv", "message"), [
    (None, ("chat",), "no such file or directory"),
    ("kind: GenerativeService\nspec: [unclosed", ("chat",), "not YAML"),
    ("kind: ConfigMap\nmetadata: {name: x}\n", ("chat",), "no GenerativeService"),
    ("SAMPLE", ("nope",), "no GenerativeService named nope (metadata.name); found "
                          "hegui-demo/chat"),
    ("BROKEN", ("chat",), "spec.filing.algorithm.number"),
    ("NO_LABELING_MODALITIES", ("chat",), "spec.labeling.modalities"),
    ("SAMPLE", ("chat", "--records", "/nonexistent/records"),
     "/nonexistent/records: no such records directory (--records)"),
])
def test_bad_input_names_the_file_and_field(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            content: str | None, argv: tuple[str, ...],
                                            message: str) -> None:
    path = tmp_path / "service.yaml"
    if content in ("SAMPLE", "BROKEN", "NO_LABELING_MODALITIES"):
        data = _yaml("chat-service.yaml")
        if content == "BROKEN":
            data["spec"]["filing"]["algorithm"]["number"] = "not-a-filing"
        if content == "NO_LABELING_MODALITIES":
            del data["spec"]["labeling"]["modalities"]
        content = yaml.safe_dump(data, allow_unicode=True)
    if content is not None:
        path.write_text(content, encoding="utf-8")
    assert run_cli(argv[0], "--from-file", str(path), "-o", str(tmp_path / "out"),
                   *argv[1:]) == 2
    error = capsys.readouterr().err
    assert message in error
    if content is not None and "records" not in message:
        assert str(path) in error  # the file is named
    assert not (tmp_path / "out").exists()


def test_no_cluster_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert run_cli("chat", "-o", str(tmp_path / "out")) == 2
    assert "no cluster to read chat" in capsys.readouterr().err
    # An apiserver that does not answer (nothing listens on port 9 of loopback).
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "t"}}]}), encoding="utf-8")
    assert run_cli("hegui-demo/chat", "--kubeconfig", str(kubeconfig),
                   "-o", str(tmp_path / "out")) == 2
    assert "GenerativeService hegui-demo/chat: the apiserver cannot be reached" in (
        capsys.readouterr().err)
