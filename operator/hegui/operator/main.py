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
    run.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    import kopf

    if args.kubeconfig:
        os.environ["HEGUI_KUBECONFIG"] = args.kubeconfig
    import hegui.operator.handlers  # noqa: F401 - registers the handlers

    asyncio.run(kopf.operator(clusterwide=not args.namespace, namespaces=args.namespace,
                              standalone=True))
    return 0
