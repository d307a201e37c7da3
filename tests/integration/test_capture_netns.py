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

import json
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
    """`--open` is what the injector renders for ports declared PodToPod (NCCL, Ray): they
    reach their server; everything else reaches the sidecar."""
    netns, address = pod_netns
    done = _capture(netns, "--to-port", str(SIDECAR), "--open", str(METRICS))
    assert done.returncode == 0, done.stderr
    assert f"--dport {METRICS} -j RETURN" in done.stdout  # the log shows what was installed
    with _servers(netns):
        # The model's port by number (a Service's targetPort: 8000 after DNAT): the sidecar,
        # which reached the model on loopback without being redirected to itself.
        assert _dial(address, MODEL) == "sidecar->model"
        assert _dial(address, SIDECAR) == "sidecar->model"
        assert _dial(address, METRICS) == "metrics"  # declared open (PodToPod)
        assert _dial(address, 18999) == "sidecar->model"  # any other port too
        # Run again (an init container re-run): the same rules, not a second copy.
        again = _capture(netns, "--to-port", str(SIDECAR), "--open", str(METRICS))
        assert again.returncode == 0, again.stderr
        saved = subprocess.run(["ip", "netns", "exec", netns, "iptables-nft-save", "-t", "nat"],
                               capture_output=True, text=True, check=True).stdout
        assert saved.count("-A PREROUTING") == 1
        assert _dial(address, MODEL) == "sidecar->model"


#: The sidecar's side of a redirected connection: it answers with the port the connection was
#: sent to, as hegui.sidecar.original_dst reads it from the kernel.
ORIGINAL = """
import socket
from hegui.sidecar.original_dst import original_port
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", %(sidecar)d)); s.listen()
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.sendall(str(original_port(c)).encode()); c.close()
"""


def test_the_sidecar_learns_which_port_a_captured_connection_was_sent_to(
        pod_netns: tuple[str, str]) -> None:
    """A port declared for Metrics is captured like the model's: the sidecar tells it from the
    rest by the connection's original destination, and serves only the model's metrics there."""
    netns, address = pod_netns
    done = _capture(netns, "--to-port", str(SIDECAR))
    assert done.returncode == 0, done.stderr
    server = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-c",
                               ORIGINAL % {"sidecar": SIDECAR}], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        assert _dial(address, METRICS) == str(METRICS)
        assert _dial(address, MODEL) == str(MODEL)
        assert _dial(address, SIDECAR) == "None"  # straight to the sidecar: not redirected
    finally:
        server.kill()
        server.wait()


#: The real sidecar in front of a model server that also listens on the Metrics port, with a
#: generation API there as well as its metrics (a team's server can listen with anything).
SIDECAR_IN_POD = """
import asyncio, json
from aiohttp import web
from hegui.sidecar.app import Sidecar, serve
from hegui.sidecar.config import SidecarConfig
from hegui.sidecar.testing import LocalModerator, posture

async def chat(request):
    return web.json_response({"choices": [{"message": {"role": "assistant",
                                                        "content": "教我制作炸弹"}}]})

async def metrics(request):
    return web.Response(text='# HELP calls 13812345678\\ncalls{who="a"} 1\\n',
                        content_type="text/plain")

async def main():
    model = web.Application()
    model.router.add_post("/v1/chat/completions", chat)
    model.router.add_get("/metrics", metrics)
    runner = web.AppRunner(model); await runner.setup()
    for port in (%(model)d, %(metrics)d):
        await web.TCPSite(runner, "0.0.0.0", port).start()
    config = SidecarConfig(posture(), upstream="http://127.0.0.1:%(model)d",
                           metrics_ports=((%(metrics)d, %(metrics)d),))
    await serve(Sidecar(config, LocalModerator()), "0.0.0.0", %(sidecar)d)
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def _http(address: str, port: int, method: str, path: str, body: bytes = b""
          ) -> tuple[int, bytes]:
    import http.client

    connection = http.client.HTTPConnection(address, port, timeout=10)
    try:
        connection.request(method, path, body=body or None,
                           headers={"Content-Type": "application/json"} if body else {})
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def test_a_port_declared_for_metrics_serves_the_model_s_metrics_and_nothing_else(
        pod_netns: tuple[str, str]) -> None:
    """The team declares the Metrics port and runs the server behind it: a chat API there must
    not reach users around the sidecar (Art.14); Prometheus still scrapes the model's metrics,
    moderated as metadata (a phone number in them masked, Art.4(4))."""
    netns, address = pod_netns
    # What the injector renders for a service declaring only a Metrics port: no --open.
    done = _capture(netns, "--to-port", str(SIDECAR), "--model-port", str(MODEL),
                    "--sidecar-uid", "0")
    assert done.returncode == 0, done.stderr
    pod = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-c", SIDECAR_IN_POD
                            % {"model": MODEL, "metrics": METRICS, "sidecar": SIDECAR}],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert pod.stdout is not None and pod.stdout.readline().strip() == "ready"
        chat = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        status, body = _http(address, METRICS, "POST", "/v1/chat/completions", chat.encode())
        assert status == 404 and b"hegui.metrics_port" in body, body
        status, body = _http(address, METRICS, "GET", "/metrics")
        assert status == 200 and b'calls{who="a"} 1' in body, body
        assert b"13812345678" not in body, body
        # The model's port, by number, is the sidecar's, which moderates the chat answer.
        status, body = _http(address, MODEL, "POST", "/v1/chat/completions", chat.encode())
        assert status != 200 and "教我制作炸弹" not in body.decode(), body
    finally:
        pod.kill()
        pod.wait()


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
