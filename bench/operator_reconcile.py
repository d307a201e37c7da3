"""The operator's CPU a reconcile, without a cluster (issue 20, scale): GenerativeServices over
namespaces on the unit tests' in-memory apiserver, each cycle what kopf does for one service
after a spec change: the watch event mirrored into the index, the reconcile, the watch event of
its own status write mirrored. Prints the CPU time a service a cycle and how many times a
GenerativeService (and its status alone) is parsed.

    .venv/bin/python bench/operator_reconcile.py [--services 200] [--per-namespace 10] \\
        [--pods-per-service 10] [--cycles 3] [--rounds 3] [--compare-with CHECKOUT]

`--compare-with` runs another checkout's operator (`git worktree add /tmp/old HEAD`) in the
same run, rounds interleaved, and prints this/that ratios: the machine is shared, so compare
figures of one run only. The in-memory apiserver's own copying is in both figures.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

_CHECKOUT = Path(__file__).resolve().parent.parent


def _run(args: argparse.Namespace) -> dict[str, float]:
    """One round in this process: CPU seconds a service a cycle and parses a cycle."""
    sys.path.insert(0, str(_CHECKOUT / "tests" / "unit"))
    import kopf
    from test_operator_reconcile import (  # type: ignore[import-not-found]
        InMemoryCluster,
        _merged,
        _policy,
        _service,
    )

    from hegui.api import common
    from hegui.operator import handlers
    from hegui.operator.cluster import POD, SharedListings
    from hegui.operator.reconciler import Operator, reconcile, service_memory
    from hegui.operator.settings import OperatorSettings

    parses = {"GenerativeService": 0, "GenerativeServiceStatus": 0}
    whole = common.ApiModel.from_dict.__func__  # type: ignore[attr-defined]

    def counted(cls: type, data: Any) -> Any:
        if cls.__name__ in parses:
            parses[cls.__name__] += 1
        return whole(cls, data)

    common.ApiModel.from_dict = classmethod(counted)  # type: ignore[method-assign,assignment]
    cluster, clock = InMemoryCluster(), [0.0]
    op = Operator(OperatorSettings(reconcile_seconds=7.0, listing_seconds=5.0),
                  SharedListings(cluster, 5.0, clock=lambda: clock[0]))
    memo = kopf.Memo(operator=op)
    namespaces = [f"ns-{i:03d}" for i in range(max(1, args.services // args.per_namespace))]
    policy = _policy()
    policy["spec"] = {"namespaces": namespaces, "defaultMode": "Enforce"}
    op.index.upsert(policy)
    services: list[dict[str, Any]] = []
    for namespace in namespaces:
        op.index.upsert({"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": namespace}})
        for j in range(args.per_namespace):
            service = _service()
            service["metadata"].update(name=f"svc-{j}", namespace=namespace,
                                       uid=f"uid-{namespace}-{j}", resourceVersion="1")
            service["spec"]["selector"] = {"matchLabels": {"app": f"svc-{j}"}}
            services.append(service)
            for k in range(args.pods_per_service):
                cluster.put(POD, {"apiVersion": "v1", "kind": "Pod", "metadata": {
                    "name": f"pod-{j}-{k}", "namespace": namespace,
                    "labels": {"app": f"svc-{j}"}},
                    "spec": {"containers": [{"name": "model", "image": "llm:1"}]}})
    memos = {id(s): kopf.Memo(operator=op) for s in services}
    version = 1

    def mirrored(obj: dict[str, Any]) -> None:
        event = {"type": "MODIFIED", "object": copy.deepcopy(obj)}
        coroutine = handlers.mirror(event=cast(kopf.RawEvent, event), memo=memo)
        with contextlib.suppress(StopIteration):  # it never awaits: done in one step
            coroutine.send(None)

    cpu = 0.0
    for cycle in range(args.cycles):
        clock[0] += 10.0  # listings of the last cycle are stale
        for service in services:  # a spec change on every service, as the scale bench's
            version += 1
            service["spec"]["labeling"]["implicit"]["contentProducer"] = f"Bench Co. {cycle}"
            service["metadata"].update(generation=cycle + 1, resourceVersion=str(version))
        began = time.process_time()
        for service in services:
            meta = service["metadata"]
            mirrored(service)
            patch = kopf.Patch()
            reconcile(op, service_memory(memos[id(service)]),
                      kopf.Body(cast(kopf.RawBody, service)), patch, meta["name"],
                      meta["namespace"])
            service["status"] = _merged(service.get("status") or {},
                                        dict(patch).get("status") or {})
            version += 1
            meta["resourceVersion"] = str(version)
            meta.setdefault("annotations", {})["hegui.io/last-handled-configuration"] = (
                json.dumps(service["spec"]))
            mirrored(service)
        cpu += time.process_time() - began
    cycles = args.cycles * len(services)
    return {"cpu_us_per_service": cpu / cycles * 1e6,
            "service_parses": parses["GenerativeService"] / cycles,
            "status_parses": parses["GenerativeServiceStatus"] / cycles}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--per-namespace", type=int, default=10)
    parser.add_argument("--pods-per-service", type=int, default=10)
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compare-with", type=Path, metavar="CHECKOUT")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_run(args)))
        return
    runs: list[tuple[str, dict[str, str]]] = [("this", {})]
    if args.compare_with:
        other = args.compare_with.resolve()
        runs.insert(0, ("that", {"PYTHONPATH": os.pathsep.join(
            str(other / part) for part in ("admission", "crds", "operator", "sidecars"))}))
    found: dict[str, list[dict[str, float]]] = {label: [] for label, _ in runs}
    argv = sys.argv[1:]
    for round_ in range(args.rounds):
        for label, env in runs:
            out = subprocess.run([sys.executable, __file__, *argv, "--one"], check=True,
                                 capture_output=True, text=True,
                                 env={**os.environ, **env}).stdout
            row = json.loads(out.splitlines()[-1])
            found[label].append(row)
            print(f"round {round_ + 1} ({label}): " + ", ".join(
                f"{k}={v:.1f}" for k, v in row.items())
                + f"; load average {os.getloadavg()[0]:.1f}", flush=True)
    best = {label: min(rows, key=lambda r: r["cpu_us_per_service"])
            for label, rows in found.items()}
    for label, row in best.items():
        print(f"best of {args.rounds} ({label}): " + ", ".join(
            f"{k}={v:.1f}" for k, v in row.items()))
    if args.compare_with:
        print("this/that: " + ", ".join(
            f"{k}={best['this'][k] / best['that'][k]:.2f}"
            for k in best["this"] if best["that"][k]))


if __name__ == "__main__":
    main()
