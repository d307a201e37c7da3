"""The operator's settings: built once from `hegui operator run`'s flags and the environment, then
passed explicitly (nothing reads the environment at import time or later).

Each setting has a flag; the environment variable is its default (the chart and the tests set
those), then the built-in default.
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class OperatorSettings:
    #: kubeconfig of `--kubeconfig`; None: in-cluster, then $KUBECONFIG.
    kubeconfig: str | None = None
    #: Watch only these namespaces; empty: every namespace.
    namespaces: tuple[str, ...] = ()
    #: hegui's own namespace (the release namespace, $POD_NAMESPACE in the chart): where the
    #: compliance group keeps what only it may change, e.g. the keyword lexicon's ConfigMaps.
    own_namespace: str = "hegui-system"
    #: Each GenerativeService is judged again this often, and a failed reconcile retried.
    reconcile_seconds: float = 30.0
    #: Each CompliancePolicy's workloads are audited this often (Art.17).
    audit_seconds: float = 60.0
    #: A namespace's listings (pods, workloads, ...) are shared by the reconciles that ask
    #: within this many seconds of one another (what others change shows this much later at
    #: most); `from_args` makes it a tenth of reconcile_seconds, 2 s at most. 0: shared only
    #: while in flight.
    listing_seconds: float = 0.0
    #: Threads for kopf's sync handlers (reconciles, audits): they mostly wait on the apiserver.
    workers: int = 16
    #: A reconcile running longer than this fails the liveness probe.
    stuck_seconds: float = 300.0
    metrics_address: str = "0.0.0.0:8080"
    liveness: str = "http://0.0.0.0:8081/healthz"
    leader_election: bool = False
    lease: str = "hegui-system/hegui-operator"
    lease_seconds: float = 15.0
    #: This replica's name in the Lease.
    identity: str = ""
    #: A SafetyAssessment run asks questions in steps of about this long (Art.17) ...
    assessment_step_seconds: float = 5.0
    #: ... and reads a bank it could not read again after this long.
    assessment_retry_seconds: float = 30.0
    #: Ask spec.target.url instead of the service's pods (rigs whose pods run nothing).
    assessment_target_url: bool = False
    verbose: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace,
                  environ: Mapping[str, str] | None = None) -> OperatorSettings:
        """The settings of `hegui operator run`: a flag, else its environment variable, else
        the default. A number that does not parse names its flag and variable."""
        from hegui.operator.assessment import TARGET_URL_ENV

        env = os.environ if environ is None else environ

        def seconds(flag: str, variable: str, default: float) -> float:
            given = getattr(args, flag, None)
            raw = given if given is not None else env.get(variable)
            if raw is None or raw == "":
                return default
            try:
                value = float(raw)
            except ValueError:
                raise SystemExit(f"--{flag.replace('_', '-')} / {variable}: {raw!r} is not a "
                                 "number of seconds") from None
            if not value > 0:
                raise SystemExit(f"--{flag.replace('_', '-')} / {variable}: {raw!r} must be "
                                 "more than 0 seconds")
            return value

        def workers(given: int | None, raw: str | None) -> int:
            if given is None and not raw:
                return cls.workers
            try:
                value = given if given is not None else int(raw or "")
            except ValueError:
                raise SystemExit(f"--workers / HEGUI_WORKERS: {raw!r} is not a number of "
                                 "threads") from None
            if value < 1:
                raise SystemExit(f"--workers / HEGUI_WORKERS: {value} must be 1 or more")
            return value

        reconcile_seconds = seconds("reconcile_seconds", "HEGUI_RECONCILE_SECONDS", 30.0)
        return cls(
            kubeconfig=args.kubeconfig or None,
            namespaces=tuple(args.namespace or ()),
            own_namespace=env.get("POD_NAMESPACE") or cls.own_namespace,
            reconcile_seconds=reconcile_seconds,
            listing_seconds=min(2.0, reconcile_seconds / 10),
            audit_seconds=seconds("audit_seconds", "HEGUI_AUDIT_SECONDS", 60.0),
            workers=workers(getattr(args, "workers", None), env.get("HEGUI_WORKERS")),
            stuck_seconds=seconds("stuck_seconds", "HEGUI_STUCK_SECONDS", 300.0),
            metrics_address=args.metrics_address,
            liveness=args.liveness,
            leader_election=bool(args.leader_election),
            lease=args.lease,
            lease_seconds=seconds("lease_seconds", "HEGUI_LEASE_SECONDS", 15.0),
            identity=env.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}",
            assessment_step_seconds=seconds("assessment_step_seconds",
                                            "HEGUI_ASSESSMENT_STEP_SECONDS", 5.0),
            assessment_retry_seconds=seconds("assessment_retry_seconds",
                                             "HEGUI_ASSESSMENT_RETRY_SECONDS", 30.0),
            assessment_target_url=env.get(TARGET_URL_ENV) == "allow",
            verbose=bool(args.verbose))
