"""`hegui demo`: hegui's main job, end to end, on the local control plane.

It grows with the product. Today: start the control plane, apply hegui's CRDs (those that exist),
deploy a GPU model server and show it scheduled onto a GPU node and Running.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from hegui.localcluster.cluster import _CHECKOUT, ClusterError, LocalCluster

SAMPLE_WORKLOAD = _CHECKOUT / "samples" / "workloads" / "chat-model.yaml"
CRD_DIR = _CHECKOUT / "crds"


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("demo", help="run hegui's main job end to end on the local "
                                              "control plane")
    parser.add_argument("--down", action="store_true", help="stop the cluster at the end")
    parser.set_defaults(run=run)


def _step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def run(args: argparse.Namespace) -> int:
    cluster = LocalCluster.from_environment()
    _step("starting the local control plane (etcd, kube-apiserver, kube-controller-manager, "
          "kube-scheduler, kwok)")
    result = cluster.up()
    print("already running" if result.already_running else
          f"apiserver ready in {result.seconds_to_apiserver_ready:.1f}s")
    print(cluster.kubectl("get", "nodes", "-L", "nvidia.com/gpu.present",
                          "-o", "wide").stdout)

    crds = sorted(CRD_DIR.glob("*.yaml"))
    _step(f"applying hegui's CRDs ({len(crds)} found in {CRD_DIR})")
    for crd in crds:
        print(cluster.kubectl("apply", "--server-side", "-f", str(crd)).stdout, end="")

    _step(f"deploying a GPU model server ({SAMPLE_WORKLOAD.relative_to(_CHECKOUT)})")
    print(cluster.kubectl("apply", "-f", str(SAMPLE_WORKLOAD)).stdout, end="")
    cluster.kubectl("-n", "hegui-demo", "rollout", "status", "deployment/chat-model",
                    "--timeout=120s")
    _wait_running(cluster)
    print(cluster.kubectl("-n", "hegui-demo", "get", "pods", "-o", "wide").stdout)

    _step("what is running")
    for name, info in cluster.status().items():
        print(f"{name:<24} pid {info['pid']}, RSS {info['rss_mib']} MiB")
    if args.down:
        cluster.down()
        print("\nthe local cluster is stopped")
    else:
        print(f"\nexport KUBECONFIG={cluster.kubeconfig}   # then: kubectl get pods -A\n"
              "stop it with: .venv/bin/hegui cluster down")
    return 0


def _wait_running(cluster: LocalCluster, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        phases = cluster.kubectl("-n", "hegui-demo", "get", "pods", "-o",
                                 "jsonpath={.items[*].status.phase}").stdout.split()
        if phases and all(phase == "Running" for phase in phases):
            return
        time.sleep(0.5)
    raise ClusterError("the demo's pods did not reach Running within "
                       f"{timeout:.0f}s; see {cluster.log_file('kwok')}")
