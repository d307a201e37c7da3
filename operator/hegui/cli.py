"""The `hegui` command. Subcommands are added by the components that own them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from hegui import complaints_cli, demo, dossier
from hegui.admission import check
from hegui.admission import main as webhook
from hegui.api import crdgen
from hegui.labeling import verify as label
from hegui.localcluster.cluster import ClusterError, LocalCluster
from hegui.moderation import records
from hegui.operator import main as operator_main


def _cluster_up(args: argparse.Namespace) -> int:
    cluster = LocalCluster.from_environment()
    result = cluster.up(timeout=args.timeout)
    if result.already_running:
        print(f"the local cluster is already running at {cluster.server_url}")
    else:
        print(f"started {', '.join(result.started)}: apiserver ready after "
              f"{result.seconds_to_apiserver_ready:.1f}s, nodes ready after "
              f"{result.seconds_total:.1f}s")
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    return 0


def _cluster_down(_: argparse.Namespace) -> int:
    stopped = LocalCluster.from_environment().down()
    print(f"stopped {', '.join(stopped)}" if stopped else "the local cluster was not running")
    return 0


def _cluster_status(_: argparse.Namespace) -> int:
    cluster = LocalCluster.from_environment()
    report = cluster.status()
    for name, info in report.items():
        state = f"pid {info['pid']}, RSS {info['rss_mib']} MiB" if info["running"] else "stopped"
        print(f"{name:<24} {state}")
    running = all(info["running"] for info in report.values())
    if running:
        print(f"\nexport KUBECONFIG={cluster.kubeconfig}")
    return 0 if running else 3


def _cluster_kubeconfig(_: argparse.Namespace) -> int:
    print(LocalCluster.from_environment().kubeconfig)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hegui",
        description="hegui (合规): enforce the Interim Measures for Generative AI Services "
                    "on a Kubernetes cluster.")
    commands = parser.add_subparsers(dest="command", required=True)

    cluster = commands.add_parser(
        "cluster", help="the local control plane (etcd, kube-apiserver, controller-manager, "
                        "scheduler, kwok) on loopback")
    cluster_commands = cluster.add_subparsers(dest="cluster_command", required=True)
    up = cluster_commands.add_parser("up", help="start it (does nothing if it already runs)")
    up.add_argument("--timeout", type=float, default=180.0, help="seconds to wait (default 180)")
    up.set_defaults(run=_cluster_up)
    cluster_commands.add_parser("down", help="stop it; nothing is left running").set_defaults(
        run=_cluster_down)
    cluster_commands.add_parser(
        "status", help="each process and its memory; exit 3 unless all run").set_defaults(
        run=_cluster_status)
    cluster_commands.add_parser(
        "kubeconfig", help="print the admin kubeconfig's path").set_defaults(
        run=_cluster_kubeconfig)

    crdgen.add_parser(commands)
    demo.add_parser(commands)
    webhook.add_parser(commands)
    check.add_parser(commands)
    label.add_parser(commands)
    records.add_parser(commands)
    operator_main.add_parser(commands)
    complaints_cli.add_parser(commands)
    dossier.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except ClusterError as error:
        print(f"hegui: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
