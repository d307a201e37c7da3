"""`kubectl hegui`: status at a glance, explain, and the resume request's shape."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hegui.kubectl_plugin import deliberate_request, explain, status_rows


def _service(name: str, conditions: dict[str, tuple[str, str]], **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ai"},
            "status": {"conditions": [{"type": kind, "status": state, "article": article}
                                      for kind, (state, article) in conditions.items()],
                       **status}}


def test_status_names_every_condition_that_does_not_hold_with_its_article() -> None:
    rows = status_rows([
        _service("chat", {"Filed": ("True", "Art.17"), "Labeled": ("False", "Art.12"),
                          "Suspended": ("False", "Art.21"),
                          "Compliant": ("False", "Art.7")}, uninjectedPods=2,
                 findings=[{"rule": "labeling"}]),
        _service("draw", {"Suspended": ("True", "Art.21"), "Compliant": ("True", "Art.7")},
                 suspension={"suspended": True, "reason": "availability burn 20x"}),
    ])
    assert rows[0][:4] == ["NAMESPACE", "NAME", "COMPLIANT", "SUSPENDED"]
    assert rows[1] == ["ai", "chat", "False", "no", "2", "1", "Labeled (Art.12)"]
    assert rows[2][:4] == ["ai", "draw", "True", "yes"]
    assert rows[2][-1] == "Suspended (Art.21)"


def test_explain_gives_article_check_fix_and_how_to_waive() -> None:
    text = explain("filing")
    assert "Art.17" in text and "算法备案" in text and "ComplianceException" in text
    with pytest.raises(SystemExit, match=r"unknown rule 'nope'.*coverage"):
        explain("nope")


def test_a_resume_needs_a_reason_and_records_who_and_when() -> None:
    now = dt.datetime(2026, 11, 29, 8, 0, tzinfo=dt.UTC)
    request = deliberate_request("alice@example.cn", "  model rolled back to v41, errors gone ",
                             now)
    assert request == {"by": "alice@example.cn", "reason": "model rolled back to v41, errors gone",
                       "at": "2026-11-29T08:00:00Z"}
    with pytest.raises(SystemExit, match="--reason must say why"):
        deliberate_request("alice", "ok", now)


def test_the_plugin_is_installed_where_kubectl_looks_for_it() -> None:
    plugin = Path(sys.executable).parent / "kubectl-hegui"
    assert plugin.exists()
    shown = subprocess.run([str(plugin), "explain", "injection"], capture_output=True,
                           text=True, check=True).stdout
    assert "Art.14" in shown
