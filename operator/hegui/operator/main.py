"""`hegui operator run`: the operator as a process (kopf)."""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any


def add_parser(commands: Any) -> None:
    operator = commands.add_parser("operator", help="the operator that keeps status true")
    sub = operator.add_subparsers(dest="operator_command", required=True)
    run = sub.add_parser("run", help="run the operator against the cluster of the kubeconfig")
    run.add_argument("--kubeconfig", help="kubeconfig (default: in-cluster, then $KUBECONFIG)")
    run.add_argument("--namespace", action="append", default=[],
                     help="watch only these namespaces (repeatable; default: all)")
    run.add_argument("--metrics-address", default="0.0.0.0:8080",
                     help="host:port of /metrics (Prometheus); empty: none")
    run.add_argument("--liveness", default="http://0.0.0.0:8081/healthz",
                     help="kopf's liveness endpoint; fails while a reconcile hangs")
    run.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    import kopf

    if args.kubeconfig:
        os.environ["HEGUI_KUBECONFIG"] = args.kubeconfig
    import hegui.operator.handlers  # noqa: F401 - registers the handlers
    from hegui.operator.metrics import METRICS

    if args.metrics_address:
        from prometheus_client import start_http_server

        host, _, port = args.metrics_address.rpartition(":")
        start_http_server(int(port), addr=host or "0.0.0.0",  # noqa: S104
                          registry=METRICS.registry)
    asyncio.run(kopf.operator(clusterwide=not args.namespace, namespaces=args.namespace,
                              standalone=True, liveness_endpoint=args.liveness or None))
    return 0
