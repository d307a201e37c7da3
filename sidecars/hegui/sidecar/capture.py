"""`python -m hegui.sidecar capture --to-port 8443 [--open 8002 --open 29500:29509]`: the init
step that makes every inbound TCP connection of the pod reach the sidecar (Art.14).

Run once per pod, in the pod's network namespace, by the injected init container hegui-capture
(root with NET_ADMIN and NET_RAW, nothing else; as Istio's istio-init). It replaces the nat table
with:

    PREROUTING -p tcp -j HEGUI_INBOUND
    HEGUI_INBOUND --dport <sidecar port> RETURN          the sidecar's own port
    HEGUI_INBOUND --dport <open port or range> RETURN    what the GenerativeService declares open
    HEGUI_INBOUND -p tcp REDIRECT --to-ports <sidecar>   everything else: the model's ports too

Only PREROUTING is touched, the chain of packets that *arrive* at the pod: connections made
inside the pod (the sidecar dialling the model on 127.0.0.1, the model calling itself) go
through OUTPUT and are never redirected, so no owner match is needed. A Service that targets the
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


def rules(to_port: int, open_ports: Sequence[PortRange] = ()) -> str:
    """The nat table, in iptables-restore's format (the same for IPv4 and IPv6)."""
    lines = ["*nat", f":{CHAIN} - [0:0]", f"-A PREROUTING -p tcp -j {CHAIN}",
             f"-A {CHAIN} -p tcp --dport {to_port} -j RETURN"]
    lines += [f"-A {CHAIN} -p tcp --dport {port} -j RETURN" for port in open_ports]
    lines += [f"-A {CHAIN} -p tcp -j REDIRECT --to-ports {to_port}", "COMMIT", ""]
    return "\n".join(lines)


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
    parser.add_argument("--print", action="store_true",
                        help="print the rules and change nothing")
    args = parser.parse_args(argv)
    if not 1 <= args.to_port <= 65535:
        parser.error("--to-port must be 1..65535")
    table = rules(args.to_port, args.open)
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
