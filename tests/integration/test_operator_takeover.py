"""The operator's standby is live and takes over within the Lease (issue 15), against the real
apiserver: two `hegui operator run --leader-election` processes, each scoped to one empty
namespace of their own, so nothing but the election is measured (test_operator.py's HA test
also checks reconciling across the handover, on whatever the shared cluster holds).

A standby whose /healthz failed would be restarted in a loop by the chart's probes and its
PodDisruptionBudget would block node drains; a standby that never took over would leave
suspensions (Art.21) unenforced once the leader dies."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from hegui.admission.local import free_port
from hegui.localcluster.cluster import _CHECKOUT, LocalCluster

pytestmark = pytest.mark.cluster

LEASE_SECONDS = 6


def _operator(cluster: LocalCluster, log: Path, identity: str, lease: str, namespace: str,
              liveness: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "hegui"), "operator", "run",
         "--kubeconfig", str(cluster.kubeconfig), "--leader-election", "--lease", lease,
         "--namespace", namespace, "--metrics-address", f"127.0.0.1:{free_port()}",
         "--liveness", f"http://127.0.0.1:{liveness}/healthz"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
        env={**os.environ, "HEGUI_LEASE_SECONDS": str(LEASE_SECONDS), "POD_NAME": identity})


def _holder(cluster: LocalCluster, namespace: str, name: str) -> str | None:
    found = cluster.kubectl("-n", namespace, "get", "lease", name, "-o",
                            "jsonpath={.spec.holderIdentity}", check=False)
    return found.stdout.strip() or None if found.returncode == 0 else None


def _healthz(port: int) -> tuple[int, bytes] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            return answer.status, answer.read()
    except OSError:
        return None


def test_the_standby_is_live_and_takes_over_within_the_lease(local_cluster: LocalCluster,
                                                              tmp_path: Path) -> None:
    cluster = local_cluster
    cluster.kubectl("apply", "--server-side", "-f", str(_CHECKOUT / "crds"))
    namespace = f"takeover-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", namespace)
    lease = "hegui-operator-takeover"
    ports = {"a": free_port(), "b": free_port()}
    first = _operator(cluster, tmp_path / "a.log", "replica-a", f"{namespace}/{lease}",
                      namespace, ports["a"])
    second: subprocess.Popen[bytes] | None = None
    try:
        deadline = time.monotonic() + 60
        while _holder(cluster, namespace, lease) != "replica-a":
            assert first.poll() is None, (tmp_path / "a.log").read_text()
            assert time.monotonic() < deadline, "replica-a never took the Lease"
            time.sleep(0.3)
        second = _operator(cluster, tmp_path / "b.log", "replica-b", f"{namespace}/{lease}",
                           namespace, ports["b"])
        deadline = time.monotonic() + 60
        while (answer := _healthz(ports["b"])) is None:
            assert second.poll() is None, (tmp_path / "b.log").read_text()
            assert time.monotonic() < deadline, "the standby never served /healthz"
            time.sleep(0.3)
        # Live while it waits: the chart's probes pass, its PodDisruptionBudget lets nodes drain.
        assert answer[0] == 200 and b"waiting for the lease" in answer[1]
        time.sleep(2 * LEASE_SECONDS / 3)  # renewals go on: the standby does not grab it
        assert _holder(cluster, namespace, lease) == "replica-a"

        first.kill()  # no goodbye: the Lease has to expire
        killed = time.monotonic()
        while _holder(cluster, namespace, lease) != "replica-b" \
                and time.monotonic() - killed < 30:
            assert _healthz(ports["b"]) is not None or second.poll() is None
            time.sleep(0.2)
        handover = time.monotonic() - killed
        assert _holder(cluster, namespace, lease) == "replica-b"
        # Within the Lease's duration, plus a retry period and scheduling slack on a busy host.
        assert handover < LEASE_SECONDS + 2 + 3, f"handover took {handover:.1f}s"
        deadline = time.monotonic() + 30  # kopf's own endpoint takes the port over
        while (answer := _healthz(ports["b"])) is None or b"waiting for the lease" in answer[1]:
            assert second.poll() is None, (tmp_path / "b.log").read_text()
            assert time.monotonic() < deadline, "the new leader's liveness never came up"
            time.sleep(0.3)
        assert answer[0] == 200
    finally:
        for process in (first, second):
            if process is not None:
                process.kill()
                process.wait(10)
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
