"""The README's first command tells the whole story on the local control plane (issue 9.4)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hegui.localcluster.cluster import LocalCluster

pytestmark = pytest.mark.cluster


def test_the_demo_tells_the_story_from_refusal_to_resume(local_cluster: LocalCluster) -> None:
    hegui = Path(sys.executable).parent / "hegui"
    result = subprocess.run([str(hegui), "demo"], capture_output=True, text=True, timeout=600,
                            check=False)
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    chapters = [
        "[coverage, Art.17]",  # refused: no GenerativeService
        "[assessment, Art.17]",  # refused: assessment pending
        "2/2",  # admitted, injected, running on GPU nodes
        "本内容由人工智能生成",  # the explicit label on a moderated answer (Art.12)
        "X-AIGC: {",  # the implicit label
        "hegui.input_blocked [terrorismExtremism]",  # a prohibited request (Art.4, Art.14)
        "请联系***********",  # personal information masked (Art.4(4))
        'hegui_service_state{namespace="hegui-demo",service="chat"} 2.0',  # suspended
        "HTTP 503: hegui.service_suspended",  # the sidecar refuses (Art.21)
        '"resumedBy":"',  # resumed by a person
        "欢迎回来。",  # served again
    ]
    at = 0
    for chapter in chapters:
        found = out.find(chapter, at)
        assert found >= 0, f"the demo did not show {chapter!r} (in order):\n{out[-4000:]}"
        at = found
    # Nothing of hegui is left running, and no webhook configuration is left behind.
    assert "hegui-validating" not in local_cluster.kubectl(
        "get", "validatingwebhookconfigurations").stdout
