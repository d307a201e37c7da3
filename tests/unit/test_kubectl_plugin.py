"""`kubectl hegui`: status at a glance, explain, and the resume request's shape."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hegui.kubectl_plugin import explain, request_object, status_rows


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


def test_a_resume_is_an_object_in_the_callers_own_name_and_groups_with_a_reason() -> None:
    """`kubectl hegui resume` creates a ResumeRequest (never an edit of the service): no time
    of the client's (the apiserver stamps creationTimestamp), the caller's name and groups as
    the apiserver authenticated them (its admission policy refuses anything else)."""
    body = request_object("resume", "chat", "ai", "  model rolled back to v41, errors gone ",
                          "alice@example.cn", ["hegui:compliance", "system:authenticated"])
    assert body["kind"] == "ResumeRequest" and body["metadata"]["namespace"] == "ai"
    assert body["metadata"]["generateName"] == "chat-resume-"
    assert body["spec"] == {"serviceRef": {"name": "chat"},
                            "reason": "model rolled back to v41, errors gone",
                            "requestedBy": "alice@example.cn",
                            "groups": ["hegui:compliance", "system:authenticated"]}
    from hegui.api.suspension import ResumeRequest

    ResumeRequest.from_dict(body)  # what the CRD's schema admits
    with pytest.raises(SystemExit, match="--reason must say why"):
        request_object("resume", "chat", "ai", "ok", "alice", [])


def test_an_authoritys_order_names_a_group_of_the_callers_to_lift_it() -> None:
    from hegui.api.suspension import SuspensionOrder

    body = request_object("suspend", "chat", "ai", "order of the provincial CAC office",
                          "wang@cac.example", ["cac:beijing"], authority="北京市互联网信息办公室",
                          reference="case 2026-117", issuer_group="cac:beijing")
    order = SuspensionOrder.from_dict(body)
    assert order.spec.issuer_group == "cac:beijing" and order.spec.authority is not None
    with pytest.raises(SystemExit, match="not in group"):
        request_object("suspend", "chat", "ai", "order of the provincial CAC office",
                       "wang@cac.example", ["hegui:compliance"], authority="CAC",
                       reference="case 1", issuer_group="cac:beijing")
    with pytest.raises(SystemExit, match="--issuer-group"):
        request_object("suspend", "chat", "ai", "order of the provincial CAC office",
                       "wang@cac.example", ["cac:beijing"], authority="CAC")


def test_the_plugin_is_installed_where_kubectl_looks_for_it() -> None:
    plugin = Path(sys.executable).parent / "kubectl-hegui"
    assert plugin.exists()
    shown = subprocess.run([str(plugin), "explain", "injection"], capture_output=True,
                           text=True, check=True).stdout
    assert "Art.14" in shown
