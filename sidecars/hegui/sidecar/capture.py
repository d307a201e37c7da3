"""`python -m hegui.sidecar capture --to-port 8443 [--open 8002 --open 29500:29509]`: the init
step that makes every inbound TCP connection of the pod reach the sidecar (Art.14).

Run once per pod, in the pod's network namespace, by the injected init container hegui-capture
(root with NET_ADMIN and NET_RAW, nothing else; as Istio's istio-init). It replaces the nat table
with:

    PREROUTING -p tcp -j HEGUI_INBOUND
    HEGUI_INBOUND --dport <sidecar port> RETURN          the sidecar's own port
    HEGUI_INBOUND --dport <open port or range> RETURN    what the GenerativeService declares open
                                                         between its pods (PodToPod)
    HEGUI_INBOUND -p tcp REDIRECT --to-ports <sidecar>   everything else: the model's ports too

A port declared for Metrics is not left out: it is redirected like the rest, and the sidecar,
seeing where the connection was going (hegui.sidecar.original_dst), serves nothing there but the
model's `GET /metrics`, moderated. The team writes the declaration, and its model server may
listen on that port with anything.

Connections made inside the pod go through OUTPUT, not PREROUTING. One kind is redirected too:
to the model's serving port on loopback from any user but the sidecar's

    OUTPUT -o lo -p tcp -j HEGUI_LOOPBACK
    HEGUI_LOOPBACK --dport <model> -m owner ! --uid-owner <sidecar> REDIRECT --to-ports <sidecar>

which is how `kubectl port-forward POD 8000` arrives (the runtime dials localhost in the
pod's namespace, as root): without it, anyone with `edit` could publish the model around the
sidecar. The sidecar's own dial to the model is its user's and goes through; the model's other
loopback traffic (NCCL, Ray, ZMQ between its processes) is left alone. A Service that targets the
model's port by number is DNATed to podIP:8000 on the node and then redirected here to the
sidecar; so are kubelet's probes (the sidecar relays the health paths).

IPv4 and IPv6 alike (a dual-stack pod must not keep an unmoderated IPv6 path). nftables first
(iptables-nft: netlink, no lock file), the legacy backend where the kernel lacks nf_tables. Any
failure exits non-zero, so the pod never starts uncaptured (fail closed). The rules are read back
and printed: the container's log says what the pod's capture is.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

CHAIN = "HEGUI_INBOUND"
LOOPBACK_CHAIN = "HEGUI_LOOPBACK"
#: The restore commands per family, nftables backend first.
_BACKENDS = {4: ("iptables-nft-restore", "iptables-legacy-restore", "iptables-restore"),
             6: ("ip6tables-nft-restore", "ip6tables-legacy-restore", "ip6tables-restore")}
#: Distroless images put no sbin on PATH.
_SEARCH = "/usr/sbin:/sbin:/usr/bin:/bin"


class CaptureError(RuntimeError):
    """The capture could not be installed; the message says what failed."""


@dataclass(frozen=True)
class PortRange:
    first: int
    last: int

    @classmethod
    def parse(cls, text: str) -> PortRange:
        first, _, last = text.partition(":")
        try:
            low, high = int(first), int(last or first)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a port or a range PORT:PORT") from None
        if not 1 <= low <= high <= 65535:
            raise argparse.ArgumentTypeError(
                f"{text!r}: ports are 1..65535 and a range's first port is not above its last")
        return cls(low, high)

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}:{self.last}"


def rules(to_port: int, open_ports: Sequence[PortRange] = (), *,
          model_port: int | None = None, sidecar_uid: int | None = None) -> str:
    """The nat table, in iptables-restore's format (the same for IPv4 and IPv6); with
    `model_port` and `sidecar_uid`, loopback connections to the model's port from other users
    are redirected too."""
    loopback = model_port is not None and sidecar_uid is not None
    lines = ["*nat", f":{CHAIN} - [0:0]"]
    lines += [f":{LOOPBACK_CHAIN} - [0:0]"] if loopback else []
    lines += [f"-A PREROUTING -p tcp -j {CHAIN}",
              f"-A {CHAIN} -p tcp --dport {to_port} -j RETURN"]
    lines += [f"-A {CHAIN} -p tcp --dport {port} -j RETURN" for port in open_ports]
    lines += [f"-A {CHAIN} -p tcp -j REDIRECT --to-ports {to_port}"]
    if loopback:
        lines += [f"-A OUTPUT -o lo -p tcp -j {LOOPBACK_CHAIN}",
                  f"-A {LOOPBACK_CHAIN} -p tcp --dport {model_port} -m owner ! --uid-owner "
                  f"{sidecar_uid} -j REDIRECT --to-ports {to_port}"]
    return "\n".join([*lines, "COMMIT", ""])


def _has_ipv6(if_inet6: Path = Path("/proc/net/if_inet6")) -> bool:
    """Whether any interface but loopback has an IPv6 address (link-local ones too: a pod on
    the same bridge reaches them)."""
    try:
        lines = if_inet6.read_text().splitlines()
    except OSError:
        return False  # IPv6 disabled in this network namespace
    return any(line.split()[-1] != "lo" for line in lines if line.split())


def install(family: int, table: str) -> str:
    """Load `table` with the first backend that takes it; returns the command that did."""
    failures = []
    for name in _BACKENDS[family]:
        command = shutil.which(name, path=_SEARCH)
        if command is None:
            continue
        env = {**os.environ, "XTABLES_LOCKFILE": "/tmp/xtables.lock"}  # noqa: S108 (legacy)
        done = subprocess.run([command], input=table, text=True, capture_output=True,
                              check=False, env=env)
        if done.returncode == 0:
            return command
        failures.append(f"{name}: {(done.stderr or done.stdout).strip() or done.returncode}")
    if not failures:
        raise CaptureError(f"no IPv{family} restore command ({', '.join(_BACKENDS[family])}) "
                           f"in {_SEARCH}: the sidecar image needs Debian's iptables package")
    raise CaptureError(f"IPv{family} capture failed ({'; '.join(failures)}); the init "
                       "container needs NET_ADMIN and NET_RAW and the node nf_tables or "
                       "iptable_nat")


def installed(restore: str) -> str:
    """The nat table as the kernel now holds it (iptables-save of the same backend)."""
    save = restore.replace("-restore", "-save")
    done = subprocess.run([save, "-t", "nat"], capture_output=True, text=True, check=False)
    return done.stdout if done.returncode == 0 else f"({save}: {done.stderr.strip()})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hegui.sidecar capture",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--to-port", type=int, required=True,
                        help="the sidecar's port, where inbound TCP is redirected")
    parser.add_argument("--open", type=PortRange.parse, action="append", default=[],
                        metavar="PORT[:LAST]",
                        help="a port or range left out of the capture (the GenerativeService's "
                             "spec.traffic.openPorts); repeatable")
    parser.add_argument("--model-port", type=int,
                        help="the model's serving port: loopback connections to it from users "
                             "other than --sidecar-uid reach the sidecar (kubectl port-forward)")
    parser.add_argument("--sidecar-uid", type=int, help="the sidecar's user id")
    parser.add_argument("--print", action="store_true",
                        help="print the rules and change nothing")
    args = parser.parse_args(argv)
    if not 1 <= args.to_port <= 65535:
        parser.error("--to-port must be 1..65535")
    if (args.model_port is None) != (args.sidecar_uid is None):
        parser.error("--model-port and --sidecar-uid go together")
    if args.model_port is not None and not 1 <= args.model_port <= 65535:
        parser.error("--model-port must be 1..65535")
    table = rules(args.to_port, args.open, model_port=args.model_port,
                  sidecar_uid=args.sidecar_uid)
    if args.print:
        sys.stdout.write(table)
        return 0
    try:
        families = [4] + ([6] if _has_ipv6() else [])
        for family in families:
            used = install(family, table)
            print(f"hegui-capture: IPv{family} inbound TCP to the sidecar's port "
                  f"{args.to_port} with {used} (open: "
                  f"{', '.join(map(str, args.open)) or 'none'})\n{installed(used)}", flush=True)
    except CaptureError as failure:
        print(f"hegui-capture: {failure} (Art.14: the pod does not start uncaptured)",
              file=sys.stderr)
        return 1
    return 0
