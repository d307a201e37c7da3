"""Start and stop a real Kubernetes control plane on loopback, without containers.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok run as local processes built
by `dev/controlplane/build`. `up` is idempotent (a running cluster is reused, a half-running one
is torn down and started again) and never leaves a half-started cluster behind; `down` stops every
process it started and leaves nothing running.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hegui.localcluster import nodes, pki

#: The repository root when hegui runs from a checkout (dev/controlplane/build exists there).
_CHECKOUT = Path(__file__).resolve().parents[3]


class ClusterError(RuntimeError):
    """A failure to start or stop the cluster; the message names the cause and the fix."""


@dataclass(frozen=True)
class Ports:
    """Loopback ports, all derived from one base so a second cluster can move them together."""

    base: int = 16400

    @property
    def etcd_client(self) -> int:
        return self.base + 79

    @property
    def etcd_peer(self) -> int:
        return self.base + 80

    @property
    def apiserver(self) -> int:
        return self.base + 43

    @property
    def controller_manager(self) -> int:
        return self.base + 57

    @property
    def scheduler(self) -> int:
        return self.base + 59

    def named(self) -> dict[str, int]:
        return {
            "etcd client": self.etcd_client,
            "etcd peer": self.etcd_peer,
            "kube-apiserver": self.apiserver,
            "kube-controller-manager": self.controller_manager,
            "kube-scheduler": self.scheduler,
        }


@dataclass(frozen=True)
class Component:
    name: str
    binary: str
    args: list[str]
    #: Returns True once the component serves; None when it has no endpoint to ask.
    ready: Callable[[], bool] | None = None


@dataclass
class UpResult:
    already_running: bool
    seconds_to_apiserver_ready: float = 0.0
    seconds_total: float = 0.0
    started: list[str] = field(default_factory=list)


def default_home() -> Path:
    """Where binaries and cluster state live: `.cache/` in a checkout, else the user cache."""
    if env := os.environ.get("HEGUI_CACHE_DIR"):
        return Path(env)
    if (_CHECKOUT / "dev" / "controlplane" / "build").exists():
        return _CHECKOUT / ".cache"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hegui"


@dataclass(frozen=True)
class LocalCluster:
    home: Path
    ports: Ports

    @classmethod
    def from_environment(cls) -> LocalCluster:
        """Honours HEGUI_CACHE_DIR and HEGUI_CLUSTER_PORT_BASE."""
        base = os.environ.get("HEGUI_CLUSTER_PORT_BASE", "16400")
        if not base.isdigit() or not 1024 <= int(base) <= 65400:
            raise ClusterError(
                f"HEGUI_CLUSTER_PORT_BASE={base!r} is not a port number between 1024 and 65400")
        return cls(home=default_home(), ports=Ports(int(base)))

    # --- paths ---------------------------------------------------------------------------------
    @property
    def bin_dir(self) -> Path:
        return self.home / "controlplane" / "bin"

    @property
    def state_dir(self) -> Path:
        return self.home / "cluster"

    @property
    def pki(self) -> pki.ClusterPki:
        return pki.ClusterPki(self.state_dir / "pki")

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (group system:masters) for kubectl, tests and the demo."""
        return self.pki.kubeconfig(pki.ADMIN)

    @property
    def server_url(self) -> str:
        return f"https://127.0.0.1:{self.ports.apiserver}"

    def binary(self, name: str) -> Path:
        return self.bin_dir / name

    def _pid_file(self, name: str) -> Path:
        return self.state_dir / "run" / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.state_dir / "logs" / f"{name}.log"

    # --- public operations ---------------------------------------------------------------------
    def up(self, timeout: float = 180.0) -> UpResult:
        with self._lock():
            all_running = self._running_components() == [c.name for c in self._components()]
            if all_running and self._apiserver_ready():
                return UpResult(already_running=True)
            # Half-running (a crash, a killed test session): start over from a clean state.
            self._stop_all()
            return self._start(timeout)

    def down(self) -> list[str]:
        """Stop every component; returns the names of those that were running."""
        with self._lock():
            return self._stop_all()

    def status(self) -> dict[str, dict[str, object]]:
        """Each component's pid and resident memory (RSS) while it runs."""
        report: dict[str, dict[str, object]] = {}
        for component in self._components():
            pid = self._live_pid(component)
            report[component.name] = {"running": pid is not None, "pid": pid,
                                      "rss_mib": _rss_mib(pid) if pid else None}
        return report

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.binary("kubectl")), "--kubeconfig", str(self.kubeconfig), *args],
            check=check, capture_output=True, text=True, timeout=120,
        )

    # --- starting ------------------------------------------------------------------------------
    def _start(self, timeout: float) -> UpResult:
        self._check_binaries()
        self._check_ports()
        shutil.rmtree(self.state_dir / "etcd", ignore_errors=True)  # every cluster starts empty
        for sub in ("run", "logs"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        self.pki.ensure(self.server_url)
        result = UpResult(already_running=False)
        began = time.monotonic()
        deadline = began + timeout
        children: dict[str, subprocess.Popen[bytes]] = {}
        try:
            for component in self._components():
                children[component.name] = self._spawn(component)
                result.started.append(component.name)
                if component.ready is not None:
                    self._wait_until(deadline, f"{component.name} to serve", component.ready,
                                     logs_of=component.name, children=children)
                if component.name == "kube-apiserver":
                    result.seconds_to_apiserver_ready = time.monotonic() - began
            self._register_nodes()
            self._wait_until(deadline, "the simulated nodes to become Ready (kwok)",
                             self._nodes_ready, logs_of="kwok", children=children)
            self._wait_until(deadline, "the default ServiceAccount (kube-controller-manager)",
                             self._default_service_account_exists,
                             logs_of="kube-controller-manager", children=children)
        except BaseException:
            self._stop_all()
            raise
        result.seconds_total = time.monotonic() - began
        return result

    def _components(self) -> list[Component]:
        p, files = self.ports, self.pki
        cm_kubeconfig = str(files.kubeconfig(pki.CONTROLLER_MANAGER))
        sched_kubeconfig = str(files.kubeconfig(pki.SCHEDULER))
        return [
            Component("etcd", "etcd", [
                "--name=hegui-local",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{p.etcd_client}",
                f"--advertise-client-urls=http://127.0.0.1:{p.etcd_client}",
                f"--listen-peer-urls=http://127.0.0.1:{p.etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{p.etcd_peer}",
                f"--initial-cluster=hegui-local=http://127.0.0.1:{p.etcd_peer}",
                "--listen-metrics-urls=",
                # A throw-away test store: durability on power loss buys nothing here.
                "--unsafe-no-fsync=true",
                "--quota-backend-bytes=2147483648",
                "--log-level=warn",
            ], ready=lambda: _http_ok(f"http://127.0.0.1:{p.etcd_client}/health")),
            Component("kube-apiserver", "kube-apiserver", [
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={p.apiserver}",
                f"--etcd-servers=http://127.0.0.1:{p.etcd_client}",
                f"--tls-cert-file={files.apiserver_cert}",
                f"--tls-private-key-file={files.apiserver_key}",
                f"--client-ca-file={files.ca_cert}",
                f"--cert-dir={self.state_dir / 'apiserver-certs'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={files.service_account_pub}",
                f"--service-account-signing-key-file={files.service_account_key}",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,"
                "DefaultStorageClass,ResourceQuota,NodeRestriction,PodSecurity,"
                "MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ValidatingAdmissionPolicy",
                "--allow-privileged=true",
                # The Endpoints of the `kubernetes` Service may not hold a loopback address.
                "--endpoint-reconciler-type=none",
                # Webhooks and aggregated APIs are called at a ready endpoint of their Service
                # (a pod IP, reachable from this machine on the real node's bridge), not at its
                # ClusterIP: no kube-proxy runs here.
                "--enable-aggregator-routing=true",
                # logs, exec and port-forward dial the kubelet at the node's IP (nothing here
                # resolves the real node's name), as a client the kubelet trusts.
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                f"--kubelet-client-certificate={files.client_pair(pki.ADMIN)[0]}",
                f"--kubelet-client-key={files.client_pair(pki.ADMIN)[1]}",
                "--profiling=false",
                "--v=0",
            ], ready=self._apiserver_ready),
            Component("kube-controller-manager", "kube-controller-manager", [
                f"--kubeconfig={cm_kubeconfig}",
                f"--authentication-kubeconfig={cm_kubeconfig}",
                f"--authorization-kubeconfig={cm_kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={p.controller_manager}",
                f"--cert-dir={self.state_dir / 'controller-manager-certs'}",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={files.service_account_key}",
                f"--root-ca-file={files.ca_cert}",
                f"--cluster-signing-cert-file={files.ca_cert}",
                f"--cluster-signing-key-file={files.ca_key}",
                "--profiling=false",
            ], ready=lambda: _https_ok(f"https://127.0.0.1:{p.controller_manager}/healthz")),
            Component("kube-scheduler", "kube-scheduler", [
                f"--kubeconfig={sched_kubeconfig}",
                f"--authentication-kubeconfig={sched_kubeconfig}",
                f"--authorization-kubeconfig={sched_kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={p.scheduler}",
                f"--cert-dir={self.state_dir / 'scheduler-certs'}",
                "--leader-elect=false",
                "--profiling=false",
            ], ready=lambda: _https_ok(f"https://127.0.0.1:{p.scheduler}/healthz")),
            Component("kwok", "kwok", [
                f"--kubeconfig={files.kubeconfig(pki.KWOK)}",
                # Written by dev/controlplane/build from the stock stages in kwok's module.
                f"--config={self.bin_dir / 'kwok-stages.yaml'}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={nodes.KWOK_ANNOTATION}=fake",
                "--cidr=10.244.0.1/16",
                "--node-ip=10.0.0.1",
                "--node-lease-duration-seconds=40",
            ]),
        ]

    def _spawn(self, component: Component) -> subprocess.Popen[bytes]:
        log = self.log_file(component.name).open("ab")
        try:
            process = subprocess.Popen(
                [str(self.binary(component.binary)), *component.args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C in the shell that ran `up` does not reach it.
                start_new_session=True,
            )
        finally:
            log.close()
        self._pid_file(component.name).write_text(
            # /proc/<pid>/exe names the resolved file, so record that (bin_dir may hold links).
            json.dumps({"pid": process.pid,
                        "binary": os.path.realpath(self.binary(component.binary))}))
        return process

    def _wait_until(self, deadline: float, what: str, check: Callable[[], bool], *,
                    logs_of: str, children: dict[str, subprocess.Popen[bytes]]) -> None:
        while time.monotonic() < deadline:
            for name, child in children.items():
                if (code := child.poll()) is not None:
                    raise ClusterError(
                        f"{name} exited with code {code} while waiting for {what}. The end of "
                        f"its log ({self.log_file(name)}):\n{_tail(self.log_file(name))}")
            with contextlib.suppress(Exception):
                if check():
                    return
            time.sleep(0.25)
        raise ClusterError(
            f"timed out waiting for {what}. The end of {self.log_file(logs_of)}:\n"
            f"{_tail(self.log_file(logs_of))}\nThe machine may be overloaded: try again, or "
            f"raise the timeout (hegui cluster up --timeout SECONDS).")

    def _check_binaries(self) -> None:
        missing = sorted({c.binary for c in self._components()} | {"kubectl"})
        missing = [name for name in missing if not os.access(self.binary(name), os.X_OK)]
        if missing:
            raise ClusterError(
                f"missing control plane binaries in {self.bin_dir}: {', '.join(missing)}. "
                "Build them with dev/controlplane/build (or run dev/bootstrap).")

    def _check_ports(self) -> None:
        for what, port in self.ports.named().items():
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                # As Go's listeners do: connections of a stopped cluster still in TIME_WAIT
                # must not count as "in use".
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    raise ClusterError(
                        f"port {port} on 127.0.0.1, which {what} needs, is already in use. "
                        f"If another hegui cluster holds it, stop that one (hegui cluster down); "
                        f"otherwise find the program with `ss -ltnp 'sport = :{port}'`, or move "
                        f"every port of this cluster with HEGUI_CLUSTER_PORT_BASE=<n> "
                        f"(now {self.ports.base}).") from None

    # --- readiness checks ----------------------------------------------------------------------
    def _admin_ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        cert, key = self.pki.client_pair(pki.ADMIN)
        context.load_cert_chain(str(cert), str(key))
        return context

    def _apiserver_ready(self) -> bool:
        try:
            return _http_ok(f"{self.server_url}/readyz", context=self._admin_ssl_context())
        except (OSError, ssl.SSLError):
            return False

    def _get_json(self, path: str) -> dict[str, object]:
        with urllib.request.urlopen(  # noqa: S310 - fixed https URL on loopback
            f"{self.server_url}{path}", context=self._admin_ssl_context(), timeout=5
        ) as response:
            data: dict[str, object] = json.load(response)
            return data

    def _register_nodes(self) -> None:
        for node in nodes.simulated_nodes():
            request = urllib.request.Request(  # noqa: S310 - fixed https URL on loopback
                f"{self.server_url}/api/v1/nodes", data=json.dumps(node).encode(),
                headers={"Content-Type": "application/json"}, method="POST")
            try:
                urllib.request.urlopen(  # noqa: S310
                    request, context=self._admin_ssl_context(), timeout=10).close()
            except urllib.error.HTTPError as error:
                if error.code != 409:  # already registered
                    raise ClusterError(f"could not register node {node['metadata']['name']}: "
                                       f"{error.read().decode(errors='replace')}") from error

    def _nodes_ready(self) -> bool:
        items = self._get_json("/api/v1/nodes").get("items", [])
        assert isinstance(items, list)
        ready = [
            n for n in items
            if any(c.get("type") == "Ready" and c.get("status") == "True"
                   for c in n.get("status", {}).get("conditions", []))
        ]
        return len(ready) == len(nodes.simulated_nodes())

    def _default_service_account_exists(self) -> bool:
        try:
            self._get_json("/api/v1/namespaces/default/serviceaccounts/default")
            return True
        except urllib.error.HTTPError:
            return False

    # --- stopping ------------------------------------------------------------------------------
    def _live_pid(self, component: Component) -> int | None:
        """The component's pid if that process is alive and still runs our binary."""
        try:
            record = json.loads(self._pid_file(component.name).read_text())
            pid = int(record["pid"])
            exe = os.readlink(f"/proc/{pid}/exe")
        except (OSError, ValueError, KeyError):
            return None
        # A rebuilt binary shows as "<path> (deleted)"; a recycled pid runs something else.
        if not exe.startswith(record["binary"]):
            return None
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
                return None
        return pid

    def _running_components(self) -> list[str]:
        return [c.name for c in self._components() if self._live_pid(c) is not None]

    def _stop_all(self, grace: float = 10.0) -> list[str]:
        stopped: list[str] = []
        for component in reversed(self._components()):  # kwok first, etcd last
            pid = self._live_pid(component)
            if pid is not None:
                _terminate(pid, grace)
                stopped.append(component.name)
            self._pid_file(component.name).unlink(missing_ok=True)
        return stopped

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """One `up` or `down` at a time, across processes (two test sessions, a shell)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with (self.state_dir / ".lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


# --- helpers ---------------------------------------------------------------------------------
def _http_ok(url: str, *, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, context=context, timeout=2) as response:  # noqa: S310
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _https_ok(url: str) -> bool:
    """For the components' self-signed health endpoints: liveness, not identity, is checked."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return _http_ok(url, context=context)


def _terminate(pid: int, grace: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    while _alive(pid):
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    # Our children are reaped here; others (from an earlier `up`) are reaped by init.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _rss_mib(pid: int) -> float | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
