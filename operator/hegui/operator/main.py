"""`hegui operator run`: the operator as a process (kopf)."""

from __future__ import annotations

import argparse
import asyncio
import logging
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
    run.add_argument("--leader-election", action="store_true",
                     help="run as one of several replicas: only the holder of the Lease "
                          "reconciles (the chart turns this on)")
    run.add_argument("--lease", default="hegui-system/hegui-operator",
                     help="namespace/name of the Lease (default: %(default)s)")
    run.add_argument("--verbose", action="store_true", help="kopf's own progress logs too")
    run.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    import kopf

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # kopf reports every handler run at INFO: with a timer per service that drowns the rest.
    logging.getLogger("kopf").setLevel(logging.INFO if args.verbose else logging.WARNING)
    if args.kubeconfig:
        os.environ["HEGUI_KUBECONFIG"] = args.kubeconfig
    import hegui.operator.assessment_handlers  # runs SafetyAssessments (Art.17)
    import hegui.operator.handlers  # noqa: F401 - registers the handlers
    from hegui.operator.metrics import METRICS

    if args.metrics_address:
        from prometheus_client import start_http_server

        host, _, port = args.metrics_address.rpartition(":")
        start_http_server(int(port), addr=host or "0.0.0.0",  # noqa: S104
                          registry=METRICS.registry)
    if args.leader_election:
        _lead(args.lease, args.liveness)
    asyncio.run(kopf.operator(clusterwide=not args.namespace, namespaces=args.namespace,
                              standalone=True, liveness_endpoint=args.liveness or None))
    return 0


def _lead(lease: str, liveness: str | None) -> None:
    """Wait for the Lease, then keep it; exit at once if it is lost, so that two replicas never
    reconcile (or suspend) together. While it waits, the standby answers the liveness probe
    itself (kopf's endpoint starts only with kopf): a live standby is not restarted in a loop,
    and its PodDisruptionBudget lets nodes drain."""
    import socket
    import threading

    from kubernetes import client

    from hegui.operator.handlers import api_client
    from hegui.operator.leader import LeaseElection, StandbyHealth

    namespace, _, name = lease.rpartition("/")
    identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    election = LeaseElection(client.CoordinationV1Api(api_client()), namespace or "hegui-system",
                             name, identity,
                             duration=float(os.environ.get("HEGUI_LEASE_SECONDS", "15")))
    election.renew = min(election.renew, election.duration / 3)
    health = StandbyHealth.serve(liveness, election) if liveness else None
    try:
        election.acquire()
    finally:
        if health is not None:
            health.close()  # kopf's own endpoint takes the port over
    election.keep(lambda: os._exit(3), threading.Event())
