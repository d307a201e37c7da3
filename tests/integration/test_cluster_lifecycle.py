"""`hegui cluster up/down`: idempotent, clear about conflicts, never half-started."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from hegui.localcluster.cluster import ClusterError, LocalCluster, Ports

pytestmark = pytest.mark.cluster


def test_up_twice_reuses_the_running_cluster(local_cluster: LocalCluster) -> None:
    before = local_cluster.status()
    assert local_cluster.up().already_running
    assert local_cluster.status() == before or all(
        before[name]["pid"] == after["pid"] for name, after in local_cluster.status().items())


def test_status_reports_memory_of_every_process(local_cluster: LocalCluster) -> None:
    report = local_cluster.status()
    assert set(report) == {"etcd", "kube-apiserver", "kube-controller-manager",
                           "kube-scheduler", "kwok"}
    for name, info in report.items():
        assert info["running"], name
        assert isinstance(info["rss_mib"], float) and info["rss_mib"] > 1, name


def _private_cluster(tmp_path: Path, local_cluster: LocalCluster, base: int) -> LocalCluster:
    """A second cluster home whose binaries are the real ones (symlinked)."""
    cluster = LocalCluster(home=tmp_path, ports=Ports(base))
    cluster.bin_dir.mkdir(parents=True)
    for binary in local_cluster.bin_dir.iterdir():
        if not binary.name.startswith("."):
            (cluster.bin_dir / binary.name).symlink_to(binary)
    return cluster


def test_port_in_use_is_named_with_the_fix(tmp_path: Path, local_cluster: LocalCluster) -> None:
    cluster = _private_cluster(tmp_path, local_cluster, base=26400)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", cluster.ports.apiserver))
        squatter.listen()
        with pytest.raises(ClusterError) as error:
            cluster.up(timeout=30)
    message = str(error.value)
    assert f"port {cluster.ports.apiserver}" in message
    assert "kube-apiserver" in message and "HEGUI_CLUSTER_PORT_BASE" in message
    assert not any(info["running"] for info in cluster.status().values())


def test_a_failed_start_tears_down_what_it_started(
    tmp_path: Path, local_cluster: LocalCluster
) -> None:
    # A fake for a fault a real build cannot be made to produce on demand: an apiserver that
    # dies at start-up. etcd, the real one, starts first and must be stopped again.
    cluster = _private_cluster(tmp_path, local_cluster, base=27400)
    broken = cluster.bin_dir / "kube-apiserver"
    broken.unlink()
    broken.write_text("#!/bin/sh\necho 'E0101 simulated start-up failure' >&2\nexit 1\n")
    broken.chmod(0o755)

    with pytest.raises(ClusterError) as error:
        cluster.up(timeout=60)
    assert "kube-apiserver exited" in str(error.value)
    assert "simulated start-up failure" in str(error.value)
    assert not any(info["running"] for info in cluster.status().values())
    etcd_pid_file = cluster.state_dir / "run" / "etcd.pid"
    assert not etcd_pid_file.exists()
    # Nothing of ours is left listening either (SO_REUSEADDR: TIME_WAIT is not listening).
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", cluster.ports.etcd_client))


def test_down_leaves_nothing_running(tmp_path: Path, local_cluster: LocalCluster) -> None:
    cluster = _private_cluster(tmp_path, local_cluster, base=28400)
    try:
        cluster.up(timeout=240)
        pids = [info["pid"] for info in cluster.status().values()]
        assert all(pids)
    finally:
        stopped = cluster.down()
    assert len(stopped) == 5
    for pid in pids:
        assert isinstance(pid, int)
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)
    assert cluster.down() == []  # a second down is a no-op


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except OSError:
        return True


def test_kubeconfig_is_private(local_cluster: LocalCluster) -> None:
    assert os.stat(local_cluster.kubeconfig).st_mode & 0o077 == 0
