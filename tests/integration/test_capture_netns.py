"""The capture step's rules in a real network namespace (marker `realnode`: needs root, `ip` and
Debian's iptables; no cluster): a connection from outside to the model's port reaches the
sidecar, a declared open port reaches its server, and the sidecar's own connection to the model
on loopback is not redirected back to itself (Art.14, issue 16).

The namespace stands in for a pod's: a veth pair joins it to this machine, as the CNI bridge
joins a pod to its node; kube-proxy's DNAT of a Service that targets the model's port by
number ends exactly as a connection to podIP:8000 from outside the pod, which is what this
dials.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

pytestmark = pytest.mark.realnode

SIDECAR, MODEL, METRICS = 18443, 18000, 18002
#: One server per port, answering any connection with its own name (and, for the sidecar, what
#: it gets from the model on loopback, as the real sidecar forwards there).
SERVER = """
import socket, sys, threading
def listen(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen()
    return s
def serve(s, name, upstream=None):
    while True:
        c, _ = s.accept()
        answer = name
        if upstream:
            u = socket.create_connection(("127.0.0.1", upstream), timeout=5)
            answer += "->" + u.recv(64).decode(); u.close()
        c.sendall(answer.encode()); c.close()
# Every port listens before "ready": a dial may not race a server still binding.
model, metrics, sidecar = listen(%(model)d), listen(%(metrics)d), listen(%(sidecar)d)
threading.Thread(target=serve, args=(model, "model"), daemon=True).start()
threading.Thread(target=serve, args=(metrics, "metrics"), daemon=True).start()
print("ready", flush=True)
serve(sidecar, "sidecar", %(model)d)
"""


def _root_with_tools() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, iptables)"
    missing = [t for t in ("ip", "iptables-nft-restore") if shutil.which(t) is None]
    return f"missing {', '.join(missing)}" if missing else None


@pytest.fixture
def pod_netns() -> Iterator[tuple[str, str]]:
    """A network namespace joined to this machine by a veth pair: (its name, its address)."""
    if why := _root_with_tools():
        pytest.skip(why)
    tag = f"h5c{os.getpid() % 100000}"
    host, pod = f"{tag}h", f"{tag}p"
    octet = 1 + os.getpid() % 250
    address = f"10.252.{octet}.2"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True)

    ip("netns", "add", tag)
    try:
        ip("link", "add", host, "type", "veth", "peer", "name", pod)
        ip("link", "set", pod, "netns", tag)
        ip("addr", "add", f"10.252.{octet}.1/24", "dev", host)
        ip("link", "set", host, "up")
        for args in (("addr", "add", f"{address}/24", "dev", pod), ("link", "set", pod, "up"),
                     ("link", "set", "lo", "up")):
            ip("netns", "exec", tag, "ip", *args)
        yield tag, address
    finally:
        subprocess.run(["ip", "link", "del", host], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", tag], check=False)


def _capture(netns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-m", "hegui.sidecar",
                           "capture", *args], capture_output=True, text=True, check=False,
                          cwd=Path(__file__).parent)


@contextmanager
def _servers(netns: str) -> Iterator[None]:
    """The stand-in model, metrics and sidecar servers in the namespace, every port listening."""
    servers = subprocess.Popen(
        ["ip", "netns", "exec", netns, sys.executable, "-c",
         SERVER % {"model": MODEL, "metrics": METRICS, "sidecar": SIDECAR}],
        stdout=subprocess.PIPE, text=True)
    try:
        assert servers.stdout is not None and servers.stdout.readline().strip() == "ready"
        yield
    finally:
        servers.kill()
        servers.wait()


def _dial(address: str, port: int) -> str:
    with socket.create_connection((address, port), timeout=5) as connection:
        return connection.recv(128).decode()


def test_inbound_tcp_reaches_the_sidecar_except_declared_ports(
        pod_netns: tuple[str, str]) -> None:
    netns, address = pod_netns
    done = _capture(netns, "--to-port", str(SIDECAR), "--open", str(METRICS))
    assert done.returncode == 0, done.stderr
    assert f"--dport {METRICS} -j RETURN" in done.stdout  # the log shows what was installed
    with _servers(netns):
        # The model's port by number (a Service's targetPort: 8000 after DNAT): the sidecar,
        # which reached the model on loopback without being redirected to itself.
        assert _dial(address, MODEL) == "sidecar->model"
        assert _dial(address, SIDECAR) == "sidecar->model"
        assert _dial(address, METRICS) == "metrics"  # declared open: Prometheus scrapes it
        assert _dial(address, 18999) == "sidecar->model"  # any other port too
        # Run again (an init container re-run): the same rules, not a second copy.
        again = _capture(netns, "--to-port", str(SIDECAR), "--open", str(METRICS))
        assert again.returncode == 0, again.stderr
        saved = subprocess.run(["ip", "netns", "exec", netns, "iptables-nft-save", "-t", "nat"],
                               capture_output=True, text=True, check=True).stdout
        assert saved.count("-A PREROUTING") == 1
        assert _dial(address, MODEL) == "sidecar->model"


def _dial_inside(netns: str, port: int, uid: int) -> str:
    """A loopback connection to `port` made inside the namespace by user `uid`."""
    probe = (f"import socket; c = socket.create_connection(('127.0.0.1', {port}), timeout=5); "
             "print(c.recv(128).decode())")
    done = subprocess.run(["ip", "netns", "exec", netns, "setpriv", f"--reuid={uid}",
                           f"--regid={uid}", "--clear-groups", sys.executable, "-c", probe],
                          capture_output=True, text=True, check=True, timeout=30)
    return done.stdout.strip()


def test_loopback_to_the_model_from_anyone_but_the_sidecar_reaches_the_sidecar(
        pod_netns: tuple[str, str]) -> None:
    """`kubectl port-forward POD 8000` is the runtime dialling localhost:8000 in the pod's
    namespace: it reaches the sidecar, while the sidecar's own user still reaches the model."""
    netns, _ = pod_netns
    if shutil.which("setpriv") is None:
        pytest.skip("no setpriv")
    # The stand-in servers run as root here, so the sidecar's user is 0 in this test; the
    # "runtime" dials as another user (containerd's is root too in a real pod, where the
    # sidecar runs as 65532).
    done = _capture(netns, "--to-port", str(SIDECAR), "--model-port", str(MODEL),
                    "--sidecar-uid", "0")
    assert done.returncode == 0, done.stderr
    assert f"--dport {MODEL} -m owner ! --uid-owner 0 -j REDIRECT" in done.stdout
    with _servers(netns):
        assert _dial_inside(netns, MODEL, uid=65534) == "sidecar->model"
        assert _dial_inside(netns, MODEL, uid=0) == "model"  # the sidecar's own dial
        assert _dial_inside(netns, METRICS, uid=65534) == "metrics"  # other loopback: as is


def test_capture_fails_closed_without_the_capability(pod_netns: tuple[str, str]) -> None:
    """Without NET_ADMIN the step exits non-zero, so the pod never starts uncaptured."""
    netns, _ = pod_netns
    if shutil.which("setpriv") is None:
        pytest.skip("no setpriv")
    done = subprocess.run(
        ["ip", "netns", "exec", netns, "setpriv", "--inh-caps=-all", "--bounding-set=-all",
         sys.executable, "-m", "hegui.sidecar", "capture", "--to-port", str(SIDECAR)],
        capture_output=True, text=True, check=False, cwd=Path(__file__).parent)
    assert done.returncode == 1
    assert "capture failed" in done.stderr and "NET_ADMIN" in done.stderr
