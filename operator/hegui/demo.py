"""`hegui demo`: hegui's main job, end to end, on the local control plane.

Start the control plane, install hegui's CRDs and a CompliancePolicy, and run hegui: where this
machine can run the local cluster's real node (root, dev/bootstrap's packages), the chart on it
(hegui.demo_realnode: webhook, operator and Triton as pods); elsewhere, or with --local, the
webhook and the operator as processes beside the cluster, after a loud note saying why. Show a
GPU model Deployment refused until its GenerativeService declares a filing, a passing assessment
and labeling, then admitted, its pods injected with the moderation sidecar and Running on kwok's
GPU nodes. Then (hegui.demo_serving) send requests through a real sidecar and a real Triton, make
the model fail until the operator suspends the service, and resume it as a person would: in a
real model pod on the real node, or with --local as local processes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hegui import demo_realnode, demo_serving
from hegui.admission.local import LocalWebhook, free_port
from hegui.api.common import rfc3339
from hegui.localcluster.cluster import _CHECKOUT, ClusterError, LocalCluster

SAMPLES = _CHECKOUT / "samples"
CRD_DIR = _CHECKOUT / "crds"
NAMESPACE = "hegui-demo"


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("demo", help="run hegui's main job end to end on the local "
                                              "control plane")
    parser.add_argument("--down", action="store_true", help="stop the cluster at the end")
    parser.add_argument("--local", action="store_true",
                        help="run hegui and the model beside the cluster as local processes "
                             "instead of as pods on the real node (which needs root)")
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
    print(cluster.kubectl("get", "nodes", "-L", "nvidia.com/gpu.present").stdout)
    why_not = "--local" if args.local else demo_realnode.blocker(cluster)
    if why_not and not args.local:
        print(f"\n{'!' * 100}\n!! NOTE: the real node cannot run here: {why_not}.\n!! The demo "
              "runs hegui and the model as LOCAL PROCESSES instead (the demo plays the kubelet: "
              "it writes the\n!! projected ConfigMap itself), not as pods. `hegui demo --local` "
              f"chooses this on purpose.\n{'!' * 100}", flush=True)

    _step("installing hegui's CRDs and the CompliancePolicy (samples/compliance/policy.yaml)")
    # --force-conflicts: an earlier helm release may have installed (and kept) them.
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_DIR))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    print(cluster.kubectl("apply", "-f", str(SAMPLES / "compliance" / "policy.yaml")).stdout,
          end="")

    with tempfile.TemporaryDirectory(prefix="hegui-demo-") as tmp:
        if why_not:
            _beside_the_cluster(cluster, Path(tmp))
        else:
            _on_the_real_node(cluster, Path(tmp))

    _step("what is running")
    for name, info in cluster.status().items():
        print(f"{name:<24} pid {info['pid']}, RSS {info['rss_mib']} MiB")
    if args.down:
        cluster.down()
        print("\nthe local cluster is stopped")
    else:
        print(f"\nexport KUBECONFIG={cluster.kubeconfig}   # then: kubectl get hegui,pods -A\n"
              "stop it with: .venv/bin/hegui cluster down")
    return 0


def _on_the_real_node(cluster: LocalCluster, directory: Path) -> None:
    """hegui's chart on the real node; the second half in a real model pod there."""
    platform = demo_realnode.Platform(cluster, directory)
    try:
        platform.up()
        service = platform.point_policy_at_the_pods()
        _story(cluster, service)
        demo_serving.story(cluster, directory, demo_realnode.PodServing(platform))
    finally:
        platform.down()


def _beside_the_cluster(cluster: LocalCluster, directory: Path) -> None:
    """The webhook and the operator as local processes; the second half as local processes."""
    webhook = LocalWebhook(cluster, directory)
    _step(f"starting the admission webhook on {webhook.url} and registering it, and the "
          "operator")
    webhook.start()
    operator = _start_operator(cluster, directory)
    try:
        webhook.register()
        _story(cluster, SAMPLES / "compliance" / "chat-service.yaml")
        demo_serving.story(cluster, directory)
    finally:
        _step("removing the webhook configuration; stopping the webhook and the operator")
        webhook.unregister()
        webhook.stop()
        operator.terminate()
        operator.wait(20)


def _story(cluster: LocalCluster, service: Path) -> None:
    workload = SAMPLES / "workloads" / "chat-model.yaml"
    cluster.kubectl("delete", "-n", NAMESPACE, "deployment", "chat-model",
                    demo_realnode.DEPLOYMENT, "--ignore-not-found")
    # A second run starts the story over.
    cluster.kubectl("delete", "-n", NAMESPACE, "generativeservice,safetyassessment", "--all",
                    "--ignore-not-found")
    # An earlier run's Events (Suspended...) would be shown as this run's.
    cluster.kubectl("delete", "-n", NAMESPACE, "events", "--all", check=False)

    _step("a GPU model Deployment with no GenerativeService: refused (Art.17)")
    refused = _apply_until_refused(cluster, workload)
    print(refused)

    _step("declaring the service: GenerativeService chat and its SafetyAssessment")
    for manifest in (SAMPLES / "compliance" / "safety-assessment.yaml", service):
        print(cluster.kubectl("apply", "-f", str(manifest)).stdout, end="")
    print("\nthe assessment has not run yet, so the Deployment is still refused:")
    print(_apply_until_refused(cluster, workload, containing="[assessment, Art.17]"))

    _step("recording a passing assessment result (what an assessment run writes to status)")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    status = {"status": {"verdict": "Pass", "startedAt": rfc3339(now - dt.timedelta(hours=2)),
                         "completedAt": rfc3339(now), "expiresAt": rfc3339(now + dt.timedelta(
                             days=365)), "message": "recorded by hegui demo"}}
    cluster.kubectl("-n", NAMESPACE, "patch", "safetyassessment", "chat-2025",
                    "--subresource=status", "--type=merge", "-p", json.dumps(status))

    _step("the complete posture admits the Deployment; its pods run on GPU nodes, each with "
          "hegui's moderation sidecar injected in front of the model (READY 2/2)")
    deadline = time.monotonic() + 30
    while True:
        applied = cluster.kubectl("apply", "-f", str(workload), check=False)
        if applied.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)  # the webhook sees the new status through its watch
    if applied.returncode != 0:
        raise ClusterError(f"the complete posture was refused:\n{applied.stderr}")
    print(applied.stdout, end="")
    cluster.kubectl("-n", NAMESPACE, "rollout", "status", "deployment/chat-model",
                    "--timeout=120s")
    _wait_running(cluster)
    print(cluster.kubectl("-n", NAMESPACE, "get", "pods", "-o", "wide").stdout)
    print(cluster.kubectl("-n", NAMESPACE, "get", "pods", "-o", "custom-columns=POD:.metadata.name,"
                          "SIDECAR:.spec.initContainers[0].name,"
                          "RESTART:.spec.initContainers[0].restartPolicy,"
                          "MODEL-PORT:.spec.containers[0].ports[0].name").stdout)
    _step("the operator keeps the service's status true, article by article")
    _wait_compliant(cluster)
    print(cluster.kubectl("-n", NAMESPACE, "get", "hegui").stdout)
    print(cluster.kubectl("-n", NAMESPACE, "get", "gsvc", "chat", "-o", "custom-columns="
                          "CONDITION:.status.conditions[*].type,STATUS:.status.conditions[*]"
                          ".status,ARTICLE:.status.conditions[*].article").stdout)


def _start_operator(cluster: LocalCluster, directory: Path) -> subprocess.Popen[bytes]:
    with (directory / "operator.log").open("wb") as log:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "hegui"), "operator", "run", "--kubeconfig",
             str(cluster.kubeconfig), "--metrics-address",
             f"127.0.0.1:{demo_serving.OPERATOR_METRICS_PORT}",
             "--liveness", f"http://127.0.0.1:{free_port()}/healthz"],
            stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "HEGUI_RECONCILE_SECONDS": "2"})


def _wait_compliant(cluster: LocalCluster, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        compliant = cluster.kubectl("-n", NAMESPACE, "get", "gsvc", "chat", "-o",
                                    "jsonpath={.status.conditions[?(@.type=='Compliant')]"
                                    ".status}").stdout
        if compliant == "True":
            return
        time.sleep(0.5)


def _apply_until_refused(cluster: LocalCluster, manifest: Path, containing: str = "") -> str:
    """Apply and return the refusal; retried while the webhook's watch catches up."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        result = cluster.kubectl("apply", "-f", str(manifest), check=False)
        if result.returncode != 0 and containing in result.stderr:
            return result.stderr.strip()
        if result.returncode == 0:
            cluster.kubectl("delete", "-n", NAMESPACE, "deployment", "chat-model",
                            "--ignore-not-found")
        time.sleep(0.5)
    raise ClusterError(f"expected {manifest.name} to be refused ({containing or 'any reason'})")


def _wait_running(cluster: LocalCluster, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        phases = cluster.kubectl("-n", NAMESPACE, "get", "pods", "-o",
                                 "jsonpath={.items[*].status.phase}").stdout.split()
        if phases and all(phase == "Running" for phase in phases):
            return
        time.sleep(0.5)
    raise ClusterError("the demo's pods did not reach Running within "
                       f"{timeout:.0f}s; see {cluster.log_file('kwok')}")
