"""Operator scale benchmark (issue 20): GenerativeServices and their pods over many namespaces on
kwok, the operator started cold; measured per stage: time from the operator's start to every
status converged, reconciles per second, apiserver requests per reconcile, operator memory, the
operator's CPU time per service (start-up included).

    HEGUI_CACHE_DIR=/tmp/hegui-bench HEGUI_CLUSTER_PORT_BASE=18400 \\
        .venv/bin/python bench/operator_scale.py [--services 1000] [--pods 10000] \\
        [--namespaces 100] [--stages 4] [--rounds 1] [--baseline CHECKOUT]

Run it on a control plane of its own: its operator watches every namespace, and another
operator on the same cluster would judge its services too (and be slowed by them). The
objects are made in `--stages` steps (a quarter, half, ... of the namespaces); after each the
operator is started cold and every service must show a status for its current generation (the
services already there get a spec change first, so they must be judged again). Memory per
service is the slope between stages. The pods name a scheduler that does not exist: they stay
Pending, which the operator counts as live, and the scheduler leaves them alone.

Figures are printed, never asserted: the machine is shared, compare figures of one run only.
`--baseline` runs an older checkout's operator too, at each stage before this one's, for
ratios measured in one run (`git archive <commit> | tar -x -C /tmp/old`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from hegui.admission.local import free_port
from hegui.localcluster.cluster import _CHECKOUT, LocalCluster

LABEL = "hegui.io/bench"
GROUP, VERSION = "hegui.io", "v1alpha1"


def _service(namespace: str, name: str, producer: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GenerativeService",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "filing": {"publicOpinion": False,
                                "algorithm": {"number": "网信算备110108823483901230011号"}},
                     "labeling": {"modalities": ["text"],
                                  "implicit": {"contentProducer": producer}}}}


def _pod(namespace: str, name: str, app: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": app}},
            "spec": {"schedulerName": "hegui-bench-nobody",
                     "containers": [{"name": "model", "image": "llm:1",
                                     "ports": [{"name": "http", "containerPort": 8000}]}]}}


class Bench:
    def __init__(self, cluster: LocalCluster, args: argparse.Namespace) -> None:
        from kubernetes import client, config

        self.cluster, self.args = cluster, args
        self.api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        self.api.configuration.connection_pool_maxsize = 32
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.per_namespace = max(1, args.services // args.namespaces)
        self.pods_per_namespace = max(0, args.pods // args.namespaces)
        self.made: list[str] = []  # namespaces made so far
        self.polls = 0

    def make(self, namespaces: Iterable[str]) -> float:
        """Namespaces, services and pods; returns seconds taken."""
        began = time.monotonic()
        namespaces = list(namespaces)
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda ns: self.core.create_namespace(
                {"metadata": {"name": ns, "labels": {LABEL: "scale"}}},
                _preload_content=False), namespaces))
            jobs = []
            for ns in namespaces:
                for j in range(self.per_namespace):
                    jobs.append(pool.submit(
                        self.custom.create_namespaced_custom_object, GROUP, VERSION, ns,
                        "generativeservices", _service(ns, f"svc-{j}", "Bench Co."),
                        _preload_content=False))
                for k in range(self.pods_per_namespace):
                    jobs.append(pool.submit(
                        self.core.create_namespaced_pod, ns,
                        _pod(ns, f"pod-{k}", f"svc-{k % self.per_namespace}"),
                        _preload_content=False))
            for job in jobs:
                job.result()
        self.made += namespaces
        return time.monotonic() - began

    def services(self) -> list[dict[str, Any]]:
        self.polls += 1
        found = self.custom.list_cluster_custom_object(GROUP, VERSION, "generativeservices",
                                                       label_selector=None,
                                                       _preload_content=False)
        items: list[dict[str, Any]] = json.loads(found.data)["items"]
        return [s for s in items if s["metadata"]["namespace"] in set(self.made)]

    def bump(self, stage: int) -> None:
        """A spec change on every service, so each must be judged again (a new generation)."""
        patch = {"spec": {"labeling": {"implicit": {"contentProducer": f"Bench Co. {stage}"}}}}
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda s: self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, s["metadata"]["namespace"], "generativeservices",
                s["metadata"]["name"], patch, _preload_content=False), self.services()))

    def requests(self) -> float:
        """apiserver_request_total, summed over every verb and resource."""
        raw = self.cluster.kubectl("get", "--raw", "/metrics").stdout
        return sum(float(line.rsplit(" ", 1)[1]) for line in raw.splitlines()
                   if line.startswith("apiserver_request_total{"))

    def converged(self) -> bool:
        services = self.services()
        return len(services) == len(self.made) * self.per_namespace and all(
            (s.get("status") or {}).get("observedGeneration") == s["metadata"]["generation"]
            and any(c.get("type") == "Compliant" for c in s["status"].get("conditions") or [])
            for s in services)

    def stage(self, stage: int, log: Path, round_: int, env: dict[str, str]
              ) -> dict[str, float]:
        if stage or round_:
            self.bump(1000 * stage + round_)
        # The apiserver's own background (controllers, kwok's heartbeats), per second.
        quiet = self.requests()
        time.sleep(5)
        background = (self.requests() - quiet - 1) / 5
        before = self.requests()
        env = {**os.environ, **env, "HEGUI_RECONCILE_SECONDS": "3600",
               "HEGUI_AUDIT_SECONDS": "3600"}
        with log.open("ab") as out:
            began = time.monotonic()
            process = subprocess.Popen(
                [str(Path(sys.executable).parent / "hegui"), "operator", "run",
                 "--kubeconfig", str(self.cluster.kubeconfig), "--metrics-address",
                 f"127.0.0.1:{free_port()}", "--liveness", f"http://127.0.0.1:{free_port()}/"],
                stdout=out, stderr=subprocess.STDOUT, env=env)
            spy = self._spy(process.pid, stage, round_) if self.args.py_spy else None
            try:
                self.polls = 0
                peak = 0.0
                while not self.converged():
                    if process.poll() is not None:
                        raise SystemExit(f"the operator exited ({process.returncode}): {log}")
                    if time.monotonic() - began > self.args.timeout:
                        raise SystemExit(f"not converged within {self.args.timeout}s: {log}")
                    peak = max(peak, _rss_mib(process.pid))
                    time.sleep(1)
                seconds = time.monotonic() - began
                after = self.requests()
                rss = _rss_mib(process.pid)
                cpu = _cpu_s(process.pid)
            finally:
                if spy is not None:  # SIGINT: py-spy writes what it sampled and exits
                    spy.send_signal(signal.SIGINT)
                    spy.wait(60)
                process.terminate()
                process.wait(30)
        services = len(self.made) * self.per_namespace
        operator_requests = after - before - background * seconds - self.polls - 1
        return {"namespaces": len(self.made), "services": services,
                "pods": len(self.made) * self.pods_per_namespace, "converged_s": seconds,
                "reconciles_per_s": services / seconds,
                "requests_per_reconcile": operator_requests / services, "rss_mib": rss,
                "peak_rss_mib": max(peak, rss), "cpu_ms_per_service": cpu * 1000 / services}


    def _spy(self, pid: int, stage: int, round_: int) -> subprocess.Popen[bytes]:
        """py-spy sampling the operator's threads from its start, as collapsed stacks: where
        its time goes on the way to converged. Not --gil: on a loaded machine the GIL's holder
        keeps it while the process waits for a core, and a C call's garbage collections were
        filed under it (JSON decoding). py-spy takes a thread blocked in C (a lock, a socket
        read) for active: leave out stacks that end there for the CPU's share."""
        out = Path(f"{self.args.py_spy}-stage{stage + 1}-round{round_ + 1}.txt")
        time.sleep(0.5)  # the interpreter up, for py-spy to find
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid),
             "--rate", "50", "--format", "raw", "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _checkout_env(checkout: Path) -> dict[str, str]:
    """PYTHONPATH that runs another checkout's hegui (e.g. `git archive` of an older commit):
    its source folders come before this one's on the path (hegui is a namespace package)."""
    return {"PYTHONPATH": os.pathsep.join(
        str(checkout / part) for part in ("admission", "crds", "operator", "sidecars"))}


def _cpu_s(pid: int) -> float:
    """The process' CPU time so far (user and system), start-up included: the figure a shared
    machine's load changes least."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=10000)
    parser.add_argument("--namespaces", type=int, default=100)
    parser.add_argument("--stages", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--rounds", type=int, default=1,
                        help="runs of each operator at every stage, interleaved with the "
                             "baseline's; the best of them is reported (a shared machine's "
                             "noise only ever adds time and memory)")
    parser.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                        help="also run this checkout's operator (e.g. `git archive` of an "
                             "older commit) at every stage, before this one's, and print the "
                             "ratios: figures of one run on one machine")
    parser.add_argument("--py-spy", metavar="PREFIX",
                        help="sample each operator run with py-spy (busy threads), collapsed "
                             "stacks to PREFIX-stageN-roundM.txt (py-spy in the venv; its "
                             "sampling costs the operator time, so take no figures then)")
    args = parser.parse_args()
    cluster = LocalCluster.from_environment()
    cluster.up(timeout=300)
    for crds in (_CHECKOUT / "crds", _CHECKOUT / "crds" / "external"):
        cluster.kubectl("apply", "--server-side", "-f", str(crds))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    policy = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "CompliancePolicy",
              "metadata": {"name": "bench-scale"},
              "spec": {"namespaceSelector": {"matchLabels": {LABEL: "scale"}},
                       "defaultMode": "Enforce"}}
    with tempfile.NamedTemporaryFile("w", suffix=".json") as file:
        json.dump(policy, file)
        file.flush()
        cluster.kubectl("apply", "-f", file.name)
    bench = Bench(cluster, args)
    namespaces = [f"scale-{i:03d}" for i in range(args.namespaces)]
    log = Path(tempfile.mkdtemp(prefix="hegui-scale-")) / "operator.log"
    operators = ([("baseline", _checkout_env(args.baseline.resolve()))] if args.baseline
                 else []) + [("this", {})]
    rows: dict[str, list[dict[str, float]]] = {label: [] for label, _ in operators}
    for stage in range(args.stages):
        upto = len(namespaces) * (stage + 1) // args.stages
        made = bench.make(namespaces[len(bench.made):upto])
        runs: dict[str, list[dict[str, float]]] = {label: [] for label, _ in operators}
        for round_, (label, env) in enumerate(operators * args.rounds):
            row = bench.stage(stage, log, round_, env)
            runs[label].append(row)
            print(f"stage {stage + 1} ({label}): made in {made:.0f}s; " + ", ".join(
                f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                for k, v in row.items()) + f"; load average {os.getloadavg()[0]:.1f}",
                flush=True)
        for label, done in runs.items():
            rows[label].append(min(done, key=lambda r: r["converged_s"]))
            if args.rounds > 1:
                best = rows[label][-1]
                print(f"stage {stage + 1} ({label}, best of {args.rounds}): converged_s="
                      f"{best['converged_s']:.2f}, requests_per_reconcile="
                      f"{best['requests_per_reconcile']:.2f}, rss_mib={best['rss_mib']:.0f}, "
                      f"cpu_ms_per_service={best['cpu_ms_per_service']:.1f}, "
                      f"lowest rss_mib={min(r['rss_mib'] for r in done):.0f}", flush=True)
        if args.baseline:
            old, new = rows["baseline"][-1], rows["this"][-1]
            print(f"stage {stage + 1} this/baseline: " + ", ".join(
                f"{k}={new[k] / old[k]:.2f}" for k in (
                    "converged_s", "reconciles_per_s", "requests_per_reconcile", "rss_mib",
                    "peak_rss_mib", "cpu_ms_per_service") if old[k]), flush=True)
    for label, done in rows.items():
        if len(done) > 1:
            first, last = done[0], done[-1]
            slope = ((last["rss_mib"] - first["rss_mib"]) * 1024
                     / max(1, last["services"] - first["services"]))
            print(f"memory ({label}): {slope:.1f} KiB per service (with its "
                  f"{bench.pods_per_namespace // bench.per_namespace} pods), "
                  f"{last['rss_mib']:.0f} MiB at {last['services']} services")
    print(f"operator log: {log}")


if __name__ == "__main__":
    main()
