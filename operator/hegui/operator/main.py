"""`hegui operator run`: the operator as a process (kopf)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from typing import Any

from hegui.operator.settings import OperatorSettings


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
    for flag, variable, default, what in (
            ("reconcile-seconds", "HEGUI_RECONCILE_SECONDS", 30, "judge each service again"),
            ("audit-seconds", "HEGUI_AUDIT_SECONDS", 60, "audit each policy's workloads"),
            ("stuck-seconds", "HEGUI_STUCK_SECONDS", 300,
             "fail liveness when a reconcile runs longer than"),
            ("lease-seconds", "HEGUI_LEASE_SECONDS", 15, "the Lease lasts"),
            ("assessment-step-seconds", "HEGUI_ASSESSMENT_STEP_SECONDS", 5,
             "a SafetyAssessment asks questions in steps of"),
            ("assessment-retry-seconds", "HEGUI_ASSESSMENT_RETRY_SECONDS", 30,
             "read a question bank that could not be read again after")):
        run.add_argument(f"--{flag}", type=float, metavar="SECONDS",
                         help=f"{what} this many seconds (default: ${variable}, else {default})")
    run.add_argument("--workers", type=int, metavar="THREADS",
                     help="threads for reconciles, which mostly wait on the apiserver "
                          "(default: $HEGUI_WORKERS, else 16)")
    run.add_argument("--verbose", action="store_true", help="kopf's own progress logs too")
    run.set_defaults(run=_run)


def few_malloc_arenas(arenas: int = 2) -> bool:
    """At most `arenas` glibc malloc arenas, as MALLOC_ARENA_MAX does (unless that is set).
    glibc gives each thread that allocates an arena of its own (up to 8 a core) and keeps what
    was freed in it: the reconcile threads decode namespace listings of hundreds of kilobytes,
    and the operator's resident memory grew well past what Python holds (issue 20: tracemalloc
    traced 135 MiB in a 400 MiB process). Called before any thread starts; False where this
    is not glibc."""
    import ctypes
    import ctypes.util

    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-8, arenas))  # M_ARENA_MAX
    except (OSError, AttributeError):
        return False


#: The cyclic collector's young generation is collected after this many new container objects
#: (Python's default: 700).
GC_YOUNG = 20_000


def collect_garbage_less(young: int = GC_YOUNG) -> None:
    """What start-up made (modules, classes, kopf's registry, the models' validators: the
    process keeps them to its end) is frozen out of the cyclic collector's reach, and its young
    generation is collected after `young` new objects rather than 700. A namespace's listing
    of 100 pods decodes to some 15,000 dicts and lists: at 700, each decode ran twenty young
    collections, which promoted the listing (still being read) to the old generation, whose
    growth then set off collections of the whole heap, again and again while the operator
    judged its services. py-spy put that under "JSON decoding", a fifth of the operator's
    time at 1,000 services (issue 20, scale). Reference counting still frees everything that
    is not in a cycle at once; a cycle waits for 20,000 allocations instead of 700."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young, middle, old)


def _run(args: argparse.Namespace) -> int:
    import threading

    few_malloc_arenas()

    import kopf

    from hegui.api import kubeconfig as kube
    from hegui.operator import anchoring, assessment_handlers, handlers
    from hegui.operator.cluster import KubeCluster
    from hegui.operator.metrics import OperatorMetrics
    from hegui.operator.reconciler import Operator

    settings = OperatorSettings.from_args(args)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # kopf reports every handler run at INFO: with a timer per service that drowns the rest.
    logging.getLogger("kopf").setLevel(logging.INFO if settings.verbose else logging.WARNING)
    # Handler modules: each registers its handlers with these settings' intervals (a module
    # whose handlers are kopf decorators at module level registers into this same default
    # registry when imported here). Handlers reach shared state through operator_of(memo).
    registry = kopf.get_default_registry()
    handlers.register(registry, settings)
    assessment_handlers.register(registry, settings)  # runs SafetyAssessments (Art.17)
    anchoring.register(registry, settings)  # evidence anchors (Art.11, Art.19)
    metrics = OperatorMetrics()
    if settings.metrics_address:
        from prometheus_client import start_http_server

        host, _, port = settings.metrics_address.rpartition(":")
        start_http_server(int(port), addr=host or "0.0.0.0",  # noqa: S104
                          registry=metrics.registry)
    api = kube.api_client(settings.kubeconfig)
    cluster = KubeCluster(api)
    threading.Thread(target=cluster.warm, name="warm-client", daemon=True).start()
    if settings.leader_election:
        _lead(settings, api)
    # What every handler shares, handed over by kopf in each handler's `memo`.
    collect_garbage_less()
    memo = kopf.Memo(operator=Operator(settings, cluster, metrics=metrics),
                     evidence=anchoring.EvidenceDuties(api))
    asyncio.run(kopf.operator(registry=registry, clusterwide=not settings.namespaces,
                              namespaces=list(settings.namespaces), standalone=True,
                              liveness_endpoint=settings.liveness or None, memo=memo))
    return 0


def _lead(settings: OperatorSettings, api: Any) -> None:
    """Wait for the Lease, then keep it; exit at once if it is lost, so that two replicas never
    reconcile (or suspend) together. While it waits, the standby answers the liveness probe
    itself (kopf's endpoint starts only with kopf): a live standby is not restarted in a loop,
    and its PodDisruptionBudget lets nodes drain."""
    import threading

    from kubernetes import client

    from hegui.operator.leader import LeaseElection, StandbyHealth

    namespace, _, name = settings.lease.rpartition("/")
    election = LeaseElection(client.CoordinationV1Api(api), namespace or "hegui-system",
                             name, settings.identity, duration=settings.lease_seconds)
    election.renew = min(election.renew, election.duration / 3)
    health = StandbyHealth.serve(settings.liveness, election) if settings.liveness else None
    # In a container this is PID 1, which ignores SIGTERM without a handler: a standby waiting
    # for the Lease would be killed only after the grace period (30s) on every rollout or
    # uninstall. kopf installs its own handlers once this replica leads.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        election.acquire()
    finally:
        if health is not None:
            health.close()  # kopf's own endpoint takes the port over
    election.keep(lambda: os._exit(3), threading.Event())
