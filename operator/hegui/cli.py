"""The `hegui` command. Subcommands are added by the components that own them.

Each subcommand's module is imported only when that subcommand runs, so that a command never
needs an extra it does not use: the operator/webhook image installs hegui without extras, and
`hegui operator run` must start there although `hegui label verify` needs Pillow (the `sidecar`
extra). `hegui --help` imports none of them; tests/profiles runs every install profile on its own.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Command:
    """A subcommand: its name and help (listed by `hegui --help` without importing anything),
    and the module whose `add_parser(commands)` defines its arguments and runs it."""

    name: str
    module: str
    help: str


COMMANDS: tuple[Command, ...] = (
    Command("cluster", "hegui.cli", "the local control plane (etcd, kube-apiserver, "
                                    "controller-manager, scheduler, kwok) on loopback"),
    Command("crds", "hegui.api.crdgen", "hegui's CustomResourceDefinitions"),
    Command("demo", "hegui.demo", "run hegui's main job end to end on the local control plane"),
    Command("webhook", "hegui.admission.main", "the admission webhook"),
    Command("check", "hegui.admission.check",
            "judge manifests as the admission webhook would (exit 1 if refused)"),
    Command("label", "hegui.labeling.verify", "content labels (Art.12, GB 45438-2025)"),
    Command("records", "hegui.moderation.records", "incident records of the sidecars (Art.11)"),
    Command("moderation", "hegui.moderation.cli",
            "moderation models: train the classifier over the 31 risks (Art.4)"),
    Command("operator", "hegui.operator.main", "the operator that keeps status true"),
    Command("complaints", "hegui.complaints_cli",
            "complaints against their published deadline (Art.15)"),
    Command("dossier", "hegui.dossier", "the Art.19 inspection dossier of a service"),
)

# The top-level modules that only an extra installs, and that extra (pyproject.toml's
# [project.optional-dependencies]; tests/unit/test_cli.py keeps the two in step).
EXTRA_OF_MODULE: dict[str, str] = {
    "PIL": "sidecar",
    "torch": "ml",
    "matplotlib": "dossier",
    "reportlab": "dossier",
    "pytriton": "triton",
}


#: Development-only modules: in the checkout (and its editable install), never in the wheel
#: (pyproject.toml's [tool.hatch.build.targets.wheel] exclude).
DEV_ONLY_MODULES = ("hegui.localcluster", "hegui.demo", "hegui.demo_serving",
                    "hegui.demo_realnode", "hegui.admission.local", "hegui.api.testing")


def dev_only(error: ModuleNotFoundError) -> bool:
    name = error.name or ""
    return any(name == m or name.startswith(m + ".") for m in DEV_ONLY_MODULES)


class DevOnlyCommand(Exception):
    """A development command run from an installed wheel, which does not carry it."""

    def __init__(self, command: str) -> None:
        super().__init__(
            f"hegui {command}: a development command (the local cluster and the demo), which "
            "an installed hegui does not carry; run it from a checkout of hegui's repository "
            "(`make demo`, README)")


class MissingExtra(Exception):
    """A command needs a module that only one of hegui's extras installs."""

    def __init__(self, command: str, error: ModuleNotFoundError) -> None:
        module = (error.name or "").partition(".")[0]
        self.extra = EXTRA_OF_MODULE.get(module)
        super().__init__(
            f"hegui {command}: needs the Python module {module!r}, which this installation "
            f"lacks" + (f"; it comes with hegui's {self.extra!r} extra: "
                        f"pip install 'hegui[{self.extra}]'" if self.extra else ""))


def _cluster_up(args: argparse.Namespace) -> int:
    from hegui.localcluster.cluster import LocalCluster

    cluster = LocalCluster.from_environment()
    result = cluster.up(timeout=args.timeout)
    if result.already_running:
        print(f"the local cluster is already running at {cluster.server_url}")
    else:
        print(f"started {', '.join(result.started)}: apiserver ready after "
              f"{result.seconds_to_apiserver_ready:.1f}s, nodes ready after "
              f"{result.seconds_total:.1f}s")
    if args.real_node:
        from hegui.localcluster.realnode import IMAGES, NODE_NAME, RealNode, build_images

        node = RealNode(cluster)
        seconds = node.up(build_images(cluster, [*IMAGES, *args.image]), timeout=args.timeout)
        print(f"real node {NODE_NAME} (kubelet, containerd, runc, fake GPUs) Ready after "
              f"{seconds:.1f}s; logs in {node.home}")
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    _objectstore_up()
    return 0


def _objectstore_up() -> None:
    """The evidence store beside the cluster (MinIO with Object Lock; Art.11)."""
    from hegui.localcluster.objectstore import LocalObjectStore

    store = LocalObjectStore.from_environment()
    if not store.binary.exists():
        print(f"hegui: the evidence store is not started: {store.binary} is not built yet "
              "(dev/controlplane/build minio)", file=sys.stderr)
        return
    started = store.up()
    print(f"evidence store {'started' if started else 'already running'} at {store.url} "
          f"(credentials in {store.directory / 'credentials.json'})")


def _cluster_down(_: argparse.Namespace) -> int:
    from hegui.localcluster.cluster import LocalCluster
    from hegui.localcluster.realnode import RealNode

    cluster = LocalCluster.from_environment()
    stopped = RealNode(cluster).down() + cluster.down()
    from hegui.localcluster.objectstore import LocalObjectStore

    if LocalObjectStore.from_environment().down():
        stopped.append("minio")
    print(f"stopped {', '.join(stopped)}" if stopped else "the local cluster was not running")
    return 0


def _cluster_status(_: argparse.Namespace) -> int:
    from hegui.localcluster.cluster import LocalCluster

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
    from hegui.localcluster.cluster import LocalCluster

    print(LocalCluster.from_environment().kubeconfig)
    return 0


def add_parser(commands: Any) -> None:
    """`hegui cluster up|down|status|kubeconfig`."""
    cluster = commands.add_parser("cluster", help=_help("cluster"))
    cluster_commands = cluster.add_subparsers(dest="cluster_command", required=True)
    up = cluster_commands.add_parser("up", help="start it (does nothing if it already runs)")
    up.add_argument("--timeout", type=float, default=180.0, help="seconds to wait (default 180)")
    up.add_argument("--real-node", action="store_true",
                    help="also a real node: kubelet, containerd, runc and CNI from Debian, two "
                         "fake GPUs through the device-plugin API, hegui's images imported "
                         "(needs root; images/build.py builds them, minutes the first time)")
    up.add_argument("--image", action="append", default=[], metavar="NAME",
                    help="with --real-node, also build and import images/NAME.toml "
                         "(e.g. triton; repeatable)")
    up.set_defaults(run=_cluster_up)
    cluster_commands.add_parser("down", help="stop it; nothing is left running").set_defaults(
        run=_cluster_down)
    cluster_commands.add_parser(
        "status", help="each process and its memory; exit 3 unless all run").set_defaults(
        run=_cluster_status)
    cluster_commands.add_parser(
        "kubeconfig", help="print the admin kubeconfig's path").set_defaults(
        run=_cluster_kubeconfig)


def _help(name: str) -> str:
    return next(command.help for command in COMMANDS if command.name == name)


def load(command: Command) -> Any:
    """The command's module, imported now; MissingExtra names the extra it needs."""
    try:
        return importlib.import_module(command.module)
    except ModuleNotFoundError as error:
        if dev_only(error):
            raise DevOnlyCommand(command.name) from error
        if (error.name or "").startswith("hegui"):
            raise
        raise MissingExtra(command.name, error) from error


def build_parser(selected: str | None = None, *, everything: bool = False
                 ) -> argparse.ArgumentParser:
    """The parser, with the arguments of the `selected` command (or of every command when
    `everything`); the others are listed by name and help only."""
    parser = argparse.ArgumentParser(
        prog="hegui",
        description="hegui (合规): enforce the Interim Measures for Generative AI Services "
                    "on a Kubernetes cluster.")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        if everything or command.name == selected:
            load(command).add_parser(commands)
        else:
            commands.add_parser(command.name, help=command.help)
    return parser


def _selected(argv: Sequence[str]) -> str | None:
    # The top-level parser has no option that takes a value, so the first word that is not an
    # option names the command.
    return next((word for word in argv if not word.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    selected = _selected(words)
    try:
        args = build_parser(selected).parse_args(words)
        code: int = args.run(args)
    except (MissingExtra, DevOnlyCommand) as error:
        print(error, file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:
        if dev_only(error):
            print(DevOnlyCommand(selected or ""), file=sys.stderr)
            return 2
        if (error.name or "").partition(".")[0] not in EXTRA_OF_MODULE:
            raise
        print(MissingExtra(selected or "", error), file=sys.stderr)
        return 2
    except Exception as error:
        # A ClusterError can only come from hegui.localcluster.cluster, imported by then.
        cluster = sys.modules.get("hegui.localcluster.cluster")
        if cluster is None or not isinstance(error, cluster.ClusterError):
            raise
        print(f"hegui: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
