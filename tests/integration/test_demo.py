"""The README's first command tells the whole story (issue 9.4): on real pods on the local
cluster's real node (issue 18; marker `realnode`, run after the other real-node modules have
stopped theirs), and, with --local, beside the cluster as local processes (marker `cluster`),
the path taken where the real node cannot run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hegui.localcluster.cluster import LocalCluster
from hegui.localcluster.realnode import NODE_NAME, RealNode

#: What every telling shows, in this order.
CHAPTERS = [
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


def _demo(*args: str) -> str:
    hegui = Path(sys.executable).parent / "hegui"
    result = subprocess.run([str(hegui), "demo", *args], capture_output=True, text=True,
                            timeout=900, check=False)
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    return out


def _in_order(out: str, chapters: list[str]) -> None:
    at = 0
    for chapter in chapters:
        found = out.find(chapter, at)
        assert found >= 0, f"the demo did not show {chapter!r} (in order):\n{out[-4000:]}"
        at = found


def _no_webhook_left(cluster: LocalCluster) -> None:
    configurations = json.loads(cluster.kubectl(
        "get", "validatingwebhookconfigurations,mutatingwebhookconfigurations", "-o",
        "json").stdout)["items"]
    assert not [c["metadata"]["name"] for c in configurations
                if c["metadata"]["name"].startswith("hegui")]


def _kubelet_of(node: RealNode) -> list[str]:
    """The pids of processes that run with this node's kubelet directory."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if f"--root-dir={node.kubelet_dir}" in (proc / "cmdline").read_text().split("\0"):
                found.append(proc.name)
        except OSError:
            continue
    return found


@pytest.mark.realnode
def test_the_demo_tells_the_story_on_real_pods(local_cluster: LocalCluster) -> None:
    node = RealNode(local_cluster)
    try:
        out = _demo()
        # One real node per machine: at its end the demo took hegui and its node down.
        left = {"containerd": node.containerd.pid(), "kubelet": _kubelet_of(node)}
    finally:  # a demo killed by the timeout would not have
        node.down()
        local_cluster.kubectl("delete", "node", NODE_NAME, "--wait=false", check=False)
    assert left == {"containerd": None, "kubelet": []}, left
    assert "NOTE: the real node cannot run here" not in out
    _in_order(out, [
        "hegui-real-0   Ready",  # the real node joined
        "every hegui pod Ready",  # the chart: webhook, operator, Triton as pods
        "[coverage, Art.17]",  # refused by the in-cluster webhook
        "scraping the sidecar every second",
    ])
    # A real model pod on the real node, given a (fake) GPU, with the sidecar and the capture
    # step injected by the in-cluster webhook, its model container ready.
    assert re.search(r"chat-model-real-\S+\s+hegui-real-0\s+10\.88\.\S+\s+"
                     r"hegui-sidecar,hegui-capture\s+model\s+1\s+true", out), out[-6000:]
    _in_order(out, CHAPTERS)
    # The notice reached the sidecar through the kubelet's projection of the ConfigMap.
    assert re.search(r"once the kubelet has projected the notice \(\d+s after the operator "
                     r"suspended the service\)", out), out[-6000:]
    assert 'release "hegui" uninstalled' in out
    _no_webhook_left(local_cluster)


@pytest.mark.cluster
def test_the_demo_beside_the_cluster_tells_the_same_story(local_cluster: LocalCluster) -> None:
    """`hegui demo --local`: the webhook, the operator, the model and its sidecar as local
    processes (the path taken where the real node cannot run, after a note saying so)."""
    out = _demo("--local")
    assert "starting the admission webhook on https://127.0.0.1:" in out
    _in_order(out, CHAPTERS)
    _no_webhook_left(local_cluster)
