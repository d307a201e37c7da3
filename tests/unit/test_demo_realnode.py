"""`hegui demo` chooses the real node only where it can run, and says why not otherwise (issue
18): the note names the cause and the fix, and the demo then runs beside the cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from hegui import demo_realnode
from hegui.localcluster.cluster import LocalCluster, Ports
from hegui.localcluster.realnode import BINARIES, RealNode


@pytest.fixture
def cluster(tmp_path: Path) -> LocalCluster:
    bin_dir = tmp_path / "controlplane" / "bin"
    bin_dir.mkdir(parents=True)
    for name in (*BINARIES, "helm"):
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    return LocalCluster(home=tmp_path, ports=Ports(23400))


@pytest.fixture
def capable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine where everything the real node needs is there."""
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr(demo_realnode, "missing_host_binaries", lambda: [])
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(RealNode, "other_real_node", lambda self: None)


@pytest.mark.usefixtures("capable")
def test_the_real_node_is_chosen_where_it_can_run(cluster: LocalCluster) -> None:
    assert demo_realnode.blocker(cluster) is None


@pytest.mark.usefixtures("capable")
def test_without_root_the_note_says_so(cluster: LocalCluster,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    why = demo_realnode.blocker(cluster)
    assert why is not None and "needs root" in why and "as root" in why


@pytest.mark.usefixtures("capable")
def test_missing_packages_and_binaries_are_named_with_the_fix(
        cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo_realnode, "missing_host_binaries", lambda: ["/usr/bin/containerd"])
    monkeypatch.setattr("shutil.which", lambda name: None)
    (cluster.bin_dir / "kubelet").unlink()
    why = demo_realnode.blocker(cluster)
    assert why is not None
    for named in ("/usr/bin/containerd", "mmdebstrap", str(cluster.bin_dir / "kubelet"),
                  "dev/bootstrap"):
        assert named in why


@pytest.mark.usefixtures("capable")
def test_another_clusters_real_node_is_named(cluster: LocalCluster,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RealNode, "other_real_node",
                        lambda self: "/tmp/other/realnode/kubelet")
    why = demo_realnode.blocker(cluster)
    assert why is not None and "/tmp/other/realnode/kubelet" in why and "cluster down" in why


def test_prometheus_listens_where_the_pods_reach_this_machine(tmp_path: Path) -> None:
    prometheus = demo_realnode.BridgePrometheus(["10.88.234.7:8443"], "10.88.234.1", tmp_path)
    prometheus.port = 40000
    command = prometheus.command("/usr/bin/prometheus", tmp_path / "prometheus.yml")
    assert "--web.listen-address=10.88.234.1:40000" in command
    assert not any("127.0.0.1" in part for part in command)
    assert prometheus.url == "http://10.88.234.1:40000"
