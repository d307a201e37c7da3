"""A real node beside kwok's: containerd, runc and the CNI plugins from Debian, and a kubelet and
kube-proxy built from the same k8s.io/kubernetes module as the control plane, with CoreDNS as the
cluster DNS (`hegui cluster up --real-node`).

What this machine needs, verified (issue 18):

- the kernel mounts cgroups in hybrid v1 mode: the kubelet runs with `failCgroupV1: false` and
  `cgroupDriver: cgroupfs`; Debian's crun refuses hybrid cgroups, runc works;
- a negative `oom_score_adj` is refused here, so containerd runs with
  `restrict_oom_score_adj = true` (without it runc fails with "can't get final child's PID");
- no registry is reachable: images, the pause image too, are imported into containerd's `k8s.io`
  namespace from the archives images/build.py makes; pods use `imagePullPolicy: Never` or
  `IfNotPresent`;
- `kubectl logs` and `exec` reach the kubelet at the node's address, so the node is registered
  with its own IP;
- the kubelet's device-plugin socket is /var/lib/kubelet/device-plugins/kubelet.sock whatever its
  --root-dir, so one machine runs one real node at a time;
- Services work as on any cluster: kube-proxy, built from the same module, runs in iptables
  mode (Debian's iptables, nf_tables backend; its nftables mode needs the `nft` command, which
  is not installed). It is told to leave the host's sysctls alone (no conntrack tuning, no
  route_localnet for localhost NodePorts, NodePorts only on the bridge's address), and `down`
  removes its chains (`kube-proxy --cleanup`) and the bridge;
- cluster DNS is CoreDNS built from its own Go module with only the plugins it needs
  (dev/controlplane/coredns/main.go; the stock binary links every plugin, the cloud providers'
  SDKs among them), run here like the kubelet, bound to the bridge's address, which is the
  kubelet's clusterDNS;
- the apiserver listens on loopback and its `kubernetes` Service has no endpoints (Endpoints may
  not hold a loopback address: --endpoint-reconciler-type=none), so kube-proxy has no rule for
  it and pods reach it at its ClusterIP through one DNAT rule of our own on the node's bridge
  (with route_localnet on that bridge only); the apiserver calls webhooks at their pods' IPs
  (--enable-aggregator-routing);
- NetworkPolicies are enforced: the bridge CNI plugin implements none, so kube-router's network
  policy controller (its router and service proxy off) runs here like kube-proxy, built from
  its Go module. It keeps a chain per pod in iptables' FORWARD, INPUT and OUTPUT with ipsets
  (Debian's `ipset`), which bridged traffic reaches through br_netfilter, and drops what no
  policy admits; `down` removes its chains and sets (`kube-router --cleanup-config`).
  (kube-network-policies, SIG Network's nfqueue controller, needs the nftables `queue`
  expression, which these machines' kernel is built without: CONFIG_NFT_QUEUE is not set);
- kube-proxy's rules apply to this whole machine: a ClusterIP dialled here (by any local
  cluster's process) reaches this cluster's Services. One machine runs one real node, so one
  kube-proxy; kwok-only clusters have no pods behind their ClusterIPs anyway.

Every path (state, sockets, logs) lives under the cluster's home, so a second cluster
(HEGUI_CACHE_DIR, HEGUI_CLUSTER_PORT_BASE) runs its own containerd and kubelet beside the first.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hegui.localcluster import pki
from hegui.localcluster.cluster import _CHECKOUT, ClusterError, LocalCluster, _http_ok
from hegui.localcluster.nodes import GPU_RESOURCE
from hegui.localcluster.pki import CertificateAuthority

#: Debian's binaries (dev/apt-packages.txt: containerd, runc, containernetworking-plugins,
#: iptables, ipset).
CONTAINERD = "/usr/bin/containerd"
CTR = "/usr/bin/ctr"
RUNC = "/usr/sbin/runc"
CNI_BIN_DIR = "/usr/lib/cni"
IPTABLES = "/usr/sbin/iptables"
IPSET = "/usr/sbin/ipset"
#: The pod sandbox image, built by images/build.py from images/pause.toml.
PAUSE_IMAGE = "hegui.io/pause:0.1.0"
#: containerd's namespace for the images and containers of Kubernetes (the CRI plugin's).
K8S_NAMESPACE = "k8s.io"


class RealNodeError(ClusterError):
    """A failure to start the real node; the message names the cause and the fix."""


def missing_host_binaries() -> list[str]:
    """The Debian binaries the real node needs that this machine lacks."""
    wanted = [CONTAINERD, CTR, RUNC, f"{CNI_BIN_DIR}/bridge", f"{CNI_BIN_DIR}/host-local",
              f"{CNI_BIN_DIR}/loopback", f"{CNI_BIN_DIR}/portmap", IPTABLES, IPSET]
    return [path for path in wanted if not os.access(path, os.X_OK)]


@dataclass(frozen=True)
class Containerd:
    """A containerd of its own: its root, state, socket and CNI configuration under `home`."""

    home: Path
    pod_cidr: str = "10.88.0.0/24"
    bridge: str = "hegui0"

    @property
    def socket(self) -> Path:
        return self.home / "run" / "containerd.sock"

    @property
    def config(self) -> Path:
        return self.home / "containerd.toml"

    @property
    def cni_conf_dir(self) -> Path:
        return self.home / "cni" / "net.d"

    @property
    def log(self) -> Path:
        return self.home / "containerd.log"

    @property
    def pid_file(self) -> Path:
        return self.home / "containerd.pid"

    def write_config(self) -> None:
        for sub in ("root", "state", "run", "cni/net.d"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        self.config.write_text(f"""\
version = 2
root = "{self.home / 'root'}"
state = "{self.home / 'state'}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{self.socket}"

[ttrpc]
  address = "{self.socket}.ttrpc"

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  # A negative oom_score_adj is refused on these machines.
  restrict_oom_score_adj = true
  enable_unprivileged_ports = true
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        BinaryName = "{RUNC}"
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{self.cni_conf_dir}"
""")
        # One bridge for the node's pods, addresses from host-local, hostPort through portmap.
        (self.cni_conf_dir / "10-hegui.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": "hegui",
            "plugins": [
                {"type": "bridge", "bridge": self.bridge, "isGateway": True, "ipMasq": False,
                 "hairpinMode": True,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": self.pod_cidr}]],
                          "routes": [{"dst": "0.0.0.0/0"}],
                          "dataDir": str(self.home / "cni" / "ipam")}},
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ]}, indent=2))

    def pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            pid = int(self.pid_file.read_text())
            if os.readlink(f"/proc/{pid}/exe") == CONTAINERD:
                return pid
        return None

    def start(self, timeout: float = 60.0) -> None:
        if self.pid() is not None and self.ready():
            return
        missing = missing_host_binaries()
        if missing:
            raise RealNodeError(f"missing {', '.join(missing)}: install Debian's containerd, runc, "
                                "containernetworking-plugins and iptables "
                                "(dev/apt-packages.txt; dev/bootstrap installs them)")
        self.write_config()
        with self.log.open("ab") as log:
            process = subprocess.Popen([CONTAINERD, "--config", str(self.config)],
                                       stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        self.pid_file.write_text(str(process.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RealNodeError(f"containerd exited with code {process.returncode}; the end "
                                    f"of {self.log}:\n{_tail(self.log)}")
            if self.ready():
                return
            time.sleep(0.2)
        raise RealNodeError(f"containerd did not answer within {timeout:.0f}s; the end of "
                            f"{self.log}:\n{_tail(self.log)}")

    def ready(self) -> bool:
        return self.socket.exists() and self.ctr("version", check=False).returncode == 0

    def stop(self, grace: float = 10.0) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        _terminate(pid, grace)
        self.pid_file.unlink(missing_ok=True)
        return True

    def ctr(self, *args: str, check: bool = True, timeout: float = 300
            ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([CTR, "--address", str(self.socket), "--namespace", K8S_NAMESPACE,
                               *args], capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise RealNodeError(f"ctr {' '.join(args)}: {done.stderr.strip()}")
        return done

    def images(self) -> set[str]:
        return set(self.ctr("images", "list", "--quiet").stdout.split())

    def import_image(self, archive: Path, reference: str) -> None:
        """Import an image archive unless containerd already has this reference with the
        archive's manifest digest."""
        listing = self.ctr("images", "list").stdout.splitlines()
        wanted = json.loads(archive.with_suffix(".json").read_text())["manifest"] \
            if archive.with_suffix(".json").is_file() else None
        for line in listing[1:]:
            words = line.split()
            if words and words[0] == reference and wanted and wanted in line:
                return
        self.ctr("images", "import", str(archive), timeout=600)


#: The images `hegui cluster up --real-node` builds and imports (images/NAME.toml): what the
#: chart runs (hegui, triton), the sidecar it injects and the pod sandbox.
IMAGES = ("pause", "hegui", "sidecar", "triton")
NODE_NAME = "hegui-real-0"
#: The real node's taint (NoSchedule): only pods that tolerate it run there, so workloads meant
#: for kwok's simulated GPU nodes (whose images exist nowhere) never land on it.
TAINT = "hegui.io/real-node"
#: The real node's own binaries, built by dev/controlplane/build from the control plane's
#: k8s.io/kubernetes module (kubelet, kube-proxy), CoreDNS's module (the cluster DNS) and
#: kube-router's (NetworkPolicy enforcement).
BINARIES = ("kubelet", "kube-proxy", "coredns", "kube-router")
#: The Services' addresses (the apiserver's --service-cluster-ip-range, hegui.localcluster.cluster).
SERVICE_CIDR = "10.96.0.0/16"
#: The `kubernetes` Service's ClusterIP (the first of --service-cluster-ip-range).
APISERVER_SERVICE_IP = "10.96.0.1"
#: The cluster's DNS domain (the kubelet's clusterDomain, CoreDNS's zone).
CLUSTER_DOMAIN = "cluster.local"
#: What CoreDNS may read to answer for Services (the stock `system:coredns` role's rules).
_DNS_RULES = [{"apiGroups": [""], "resources": ["services", "endpoints", "pods", "namespaces"],
               "verbs": ["list", "watch"]},
              {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
               "verbs": ["list", "watch"]}]
#: What kube-router's network policy controller reads (its stock ClusterRole's rules, less
#: what its router and load balancer would write).
_NETPOL_RULES = [{"apiGroups": [""],
                  "resources": ["pods", "namespaces", "nodes", "services", "endpoints"],
                  "verbs": ["get", "list", "watch"]},
                 {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                  "verbs": ["get", "list", "watch"]},
                 {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"],
                  "verbs": ["get", "list", "watch"]}]
#: The devices the fake GPU device plugin advertises, and its module.
GPUS = 2
PLUGIN_MODULE = "hegui.localcluster.deviceplugin"


#: The chart's values on the real node (README "A real node"): the imported images, every
#: component on the node.
CHART_VALUES = _CHECKOUT / "tests" / "integration" / "realnode-values.yaml"


def chart_values(cluster: LocalCluster) -> list[str]:
    """`helm install` arguments for the chart on this cluster's real node: CHART_VALUES, and
    what hegui's own NetworkPolicies must let its pods dial here, which the node's policy
    controller enforces: the apiserver's port (pods reach the local apiserver at its ClusterIP
    on 443, which our DNAT rule sends to its loopback port, and the controller judges the port
    after that rule), and, for the operator, this machine on the node's bridge (the demo's
    Prometheus, which the operator reads the objectives from, Art.13)."""
    ports = [443, 6443, cluster.ports.apiserver]
    host = [{"to": [{"ipBlock": {"cidr": f"{RealNode(cluster).gateway}/32"}}]}]
    return ["--values", str(CHART_VALUES),
            "--set-json", f"networkPolicy.apiServerPorts={json.dumps(ports)}",
            "--set-json", f"networkPolicy.operatorExtraEgress={json.dumps(host)}"]


def build_images(cluster: LocalCluster, names: list[str]) -> list[Path]:
    """Build (or find cached) these images with images/build.py, in the cluster's home."""
    script = _CHECKOUT / "images" / "build.py"
    if not script.is_file():
        raise RealNodeError(f"{script} is missing: the real node's images are built from a "
                            "checkout of hegui")
    unique = list(dict.fromkeys(names))
    done = subprocess.run([sys.executable, str(script), "--out", str(cluster.home / "images"),
                           *unique], check=False)
    if done.returncode != 0:
        raise RealNodeError(f"images/build.py {' '.join(unique)} failed (exit "
                            f"{done.returncode}); its output is above")
    return [cluster.home / "images" / f"{name}.tar" for name in unique]


def node_ip() -> str:
    """The first global IPv4 address of this machine: the kubelet refuses a loopback node IP, and
    the apiserver reaches the kubelet there for logs and exec."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                         capture_output=True, text=True, check=False).stdout
    for line in out.splitlines():
        words = line.split()
        if "inet" in words:
            return words[words.index("inet") + 1].split("/")[0]
    raise RealNodeError("this machine has no global IPv4 address for the node to announce")


@dataclass(frozen=True)
class RealNode:
    """The kubelet, containerd and the fake GPU device plugin of one local cluster."""

    cluster: LocalCluster

    @property
    def home(self) -> Path:
        return self.cluster.home / "realnode"

    @property
    def containerd(self) -> Containerd:
        third = (self.cluster.ports.base // 100) % 256
        return Containerd(self.home / "containerd", pod_cidr=f"10.88.{third}.0/24",
                          bridge=f"hegui{self.cluster.ports.base}")

    @property
    def kubelet_dir(self) -> Path:
        return self.home / "kubelet"

    @property
    def kubelet_port(self) -> int:
        return self.cluster.ports.base + 50

    @property
    def kubelet_healthz_port(self) -> int:
        return self.cluster.ports.base + 48

    @property
    def kube_proxy_healthz_port(self) -> int:
        return self.cluster.ports.base + 46

    @property
    def kube_proxy_metrics_port(self) -> int:
        return self.cluster.ports.base + 45

    @property
    def dns_ready_port(self) -> int:
        return self.cluster.ports.base + 44

    @property
    def netpol_health_port(self) -> int:
        return self.cluster.ports.base + 42

    @property
    def gateway(self) -> str:
        """The bridge's own address (the first of the pod CIDR): the pods' default route, and
        where the host's pieces that pods dial listen (cluster DNS, the demo's Prometheus)."""
        return str(ipaddress.ip_network(self.containerd.pod_cidr)[1])

    @property
    def dns_egress(self) -> dict[str, Any]:
        """The CompliancePolicy's `spec.sidecar.egress.to` entry for this node's cluster DNS:
        CoreDNS runs on the bridge's address, not as `k8s-app=kube-dns` pods in kube-system
        (what hegui's NetworkPolicy admits by default), and the policy controller judges a
        pod's packets to this machine too."""
        return {"cidr": f"{self.gateway}/32", "reason": "the real node's CoreDNS",
                "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}

    @property
    def _host_chains_file(self) -> Path:
        """The KUBE-* chains this machine had before the node started (`down` leaves those)."""
        return self.home / "host-chains.json"

    def _pid_file(self, name: str) -> Path:
        return self.home / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.home / f"{name}.log"

    def _live(self, name: str, word: str) -> int | None:
        """The pid of this component if it runs and its command line has `word`."""
        with contextlib.suppress(OSError, ValueError):
            pid = int(self._pid_file(name).read_text())
            if word in Path(f"/proc/{pid}/cmdline").read_text().split("\0"):
                return pid
        return None

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with self.log_file(name).open("ab") as log:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        self._pid_file(name).write_text(str(process.pid))
        return process

    # --- up -------------------------------------------------------------------------------------
    def up(self, images: list[Path], timeout: float = 180.0) -> float:
        """Start containerd, import the images, start the device plugin and the kubelet, and
        wait until the node is Ready with its GPUs allocatable; returns the seconds it took."""
        began = time.monotonic()
        kubelet, proxy, dns, netpol = (self.cluster.binary(name) for name in BINARIES)
        for binary in (kubelet, proxy, dns, netpol):
            if not os.access(binary, os.X_OK):
                raise RealNodeError(f"missing {binary}: build it with dev/controlplane/build")
        if other := self.other_real_node():
            raise RealNodeError(
                f"another local cluster's real node runs on this machine (kubelet --root-dir="
                f"{other}); one machine runs one real node at a time: stop it with `hegui "
                "cluster down` under that cluster's HEGUI_CACHE_DIR and HEGUI_CLUSTER_PORT_BASE")
        self.home.mkdir(parents=True, exist_ok=True)
        containerd = self.containerd
        containerd.start()
        for archive in images:
            report = json.loads(archive.with_suffix(".json").read_text())
            containerd.import_image(archive, str(report["reference"]))
        if PAUSE_IMAGE not in containerd.images():
            raise RealNodeError(f"containerd has no {PAUSE_IMAGE}: build it with "
                                "images/build.py pause")
        if not self._host_chains_file.exists():  # as found, before the node's first start
            self._host_chains_file.write_text(json.dumps(sorted(_kube_chains())))
        self._route_apiserver()
        if self._live("coredns", str(dns)) is None:
            self._write_dns_files()
            self._spawn("coredns", [str(dns), "-conf", str(self.home / "Corefile")])
        if self._live("deviceplugin", PLUGIN_MODULE) is None:
            self._spawn("deviceplugin", [sys.executable, "-m", PLUGIN_MODULE,
                                         f"--socket-name=hegui-gpu-{self.cluster.ports.base}.sock",
                                         f"--devices={GPUS}"])
        if self._live("kubelet", str(kubelet)) is None:
            self._write_kubelet_files()
            self._cgroup_root()
            self._spawn("kubelet", [
                str(kubelet), f"--config={self.home / 'kubelet.yaml'}",
                f"--kubeconfig={self.home / 'kubelet.kubeconfig'}",
                f"--root-dir={self.kubelet_dir}", f"--cert-dir={self.home / 'pki'}",
                f"--hostname-override={NODE_NAME}", f"--node-ip={node_ip()}",
                "--node-labels=hegui.io/real-node=true,nvidia.com/gpu.present=true",
                f"--register-with-taints={TAINT}=true:NoSchedule",
                "--v=1"])
        if self._live("kube-proxy", str(proxy)) is None:
            self._write_kube_proxy_files()
            self._spawn("kube-proxy", [str(proxy), f"--config={self.home / 'kube-proxy.yaml'}",
                                       "--v=1"])
        deadline = began + timeout
        waiting = {"kubelet": kubelet, "kube-proxy": proxy, "coredns": dns}
        while time.monotonic() < deadline:
            # kube-router finds its node by name at start: it starts once the kubelet has
            # registered the node.
            if "netpol" not in waiting and (self._live("netpol", str(netpol)) is not None
                                            or self._start_netpol(netpol)):
                waiting["netpol"] = netpol
            if self.ready():
                return time.monotonic() - began
            for name, binary in waiting.items():
                if self._live(name, str(binary)) is None:
                    raise RealNodeError(f"{name} exited; the end of {self.log_file(name)}:\n"
                                        f"{_tail(self.log_file(name))}")
            time.sleep(1)
        raise RealNodeError(f"node {NODE_NAME} was not Ready with {GPUS} GPUs, Services and "
                            f"DNS after {timeout:.0f}s; the ends of the logs:\n" + "\n".join(
                                f"{name}: {_tail(self.log_file(name), 1500)}"
                                for name in waiting))

    def _start_netpol(self, binary: Path) -> bool:
        """Start kube-router's network policy controller alone, if the node is registered."""
        if self.cluster.kubectl("get", "node", NODE_NAME, "-o", "name",
                                check=False).returncode != 0:
            return False
        kubeconfig = self._reader("netpol", _NETPOL_RULES)
        self._spawn("netpol", [
            str(binary), f"--kubeconfig={kubeconfig}", f"--hostname-override={NODE_NAME}",
            "--run-firewall=true", "--run-router=false", "--run-service-proxy=false",
            "--run-loadbalancer=false", "--enable-cni=false",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--health-port={self.netpol_health_port}", "--metrics-port=0", "--v=1"])
        return True

    def other_real_node(self) -> str | None:
        """The --root-dir of a real node's kubelet of another local cluster running here: the
        device-plugin socket is shared, so a second kubelet would take the first one's GPUs."""
        ours = f"--root-dir={self.kubelet_dir}"
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                argv = (proc / "cmdline").read_text().split("\0")
                if (Path(argv[0]).name == "kubelet"
                        and f"--hostname-override={NODE_NAME}" in argv and ours not in argv):
                    return next((a.split("=", 1)[1] for a in argv
                                 if a.startswith("--root-dir=")), "?")
        return None

    # --- the apiserver from the pods ------------------------------------------------------------
    def _apiserver_rule(self) -> list[str]:
        """The DNAT rule (nat PREROUTING, without -A/-D) that sends what the node's pods send to
        the `kubernetes` Service (KUBERNETES_SERVICE_HOST:443, in every pod's environment) to the
        apiserver on this machine's loopback. Only packets entering from this node's bridge
        match, so a second local cluster's node keeps its own rule."""
        return ["-i", self.containerd.bridge, "-d", APISERVER_SERVICE_IP, "-p", "tcp",
                "--dport", "443", "-m", "comment", "--comment", f"hegui real node {NODE_NAME}",
                "-j", "DNAT", "--to-destination", f"127.0.0.1:{self.cluster.ports.apiserver}"]

    def _route_apiserver(self) -> None:
        bridge = self.containerd.bridge
        # The CNI bridge plugin adopts an existing bridge; creating it now lets route_localnet
        # be set before the first pod.
        if not Path(f"/sys/class/net/{bridge}").exists():
            _run_host(["ip", "link", "add", "name", bridge, "type", "bridge"])
        _run_host(["ip", "link", "set", bridge, "up"])
        # The gateway's address before the first pod (the CNI plugin keeps it): CoreDNS binds it.
        if f"inet {self.gateway}/" not in _run_host(["ip", "-4", "addr", "show", bridge]).stdout:
            prefix = ipaddress.ip_network(self.containerd.pod_cidr).prefixlen
            _run_host(["ip", "addr", "add", f"{self.gateway}/{prefix}", "dev", bridge])
        # Without route_localnet the kernel drops a packet from the bridge to 127.0.0.1.
        Path(f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet").write_text("1")
        rule = self._apiserver_rule()
        if _run_host(["iptables", "-t", "nat", "-C", "PREROUTING", *rule],
                     check=False).returncode != 0:
            _run_host(["iptables", "-t", "nat", "-A", "PREROUTING", *rule])

    def _unroute_apiserver(self) -> None:
        rule = self._apiserver_rule()
        while _run_host(["iptables", "-t", "nat", "-D", "PREROUTING", *rule],
                        check=False).returncode == 0:
            pass
        # The pods are gone: the bridge (and its address) goes too, the host as it was found.
        if Path(f"/sys/class/net/{self.containerd.bridge}").exists():
            _run_host(["ip", "link", "delete", self.containerd.bridge], check=False)

    def ready(self) -> bool:
        got = self.cluster.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
        if got.returncode != 0:
            return False
        node = json.loads(got.stdout)
        ready = any(c["type"] == "Ready" and c["status"] == "True"
                    for c in node["status"].get("conditions", []))
        return (ready and node["status"].get("allocatable", {}).get(GPU_RESOURCE) == str(GPUS)
                # kube-proxy has written the Services' rules; CoreDNS has listed them.
                and _http_ok(f"http://127.0.0.1:{self.kube_proxy_healthz_port}/healthz")
                and _http_ok(f"http://127.0.0.1:{self.dns_ready_port}/ready")
                and _http_ok(f"http://127.0.0.1:{self.netpol_health_port}/healthz"))

    @property
    def cgroup_root(self) -> str:
        return f"/hegui-{self.cluster.ports.base}"

    def _cgroup_root(self) -> None:
        """The kubelet's cgroup root in every cgroup v1 hierarchy: it refuses to start unless the
        root exists. A new cpuset needs its parent's CPUs and memory nodes before use."""
        base = Path("/sys/fs/cgroup")
        for hierarchy in sorted(p for p in base.iterdir() if p.is_dir() and not p.is_symlink()):
            if hierarchy.name == "unified" or not (hierarchy / "cgroup.procs").exists():
                continue
            root = hierarchy / self.cgroup_root.lstrip("/")
            root.mkdir(exist_ok=True)
            if hierarchy.name.startswith("cpuset"):
                for name in ("cpuset.cpus", "cpuset.mems"):
                    if not (root / name).read_text().strip():
                        (root / name).write_text((hierarchy / name).read_text())

    def _write_kubelet_files(self) -> None:
        files = self.cluster.pki
        ca = CertificateAuthority.load(files.ca_cert, files.ca_key)
        (self.home / "pki").mkdir(parents=True, exist_ok=True)
        cert, key = ca.issue(pki._name(f"system:node:{NODE_NAME}", ("system:nodes",)),
                             client=True)
        pki.write_kubeconfig(self.home / "kubelet.kubeconfig", server=self.cluster.server_url,
                             ca_pem=files.ca_cert.read_bytes(), cert_pem=cert, key_pem=key,
                             user=f"system:node:{NODE_NAME}")
        address = node_ip()
        serving_cert, serving_key = pki.write_serving_pair(
            ca, self.home / "pki", "kubelet", names=(NODE_NAME,), ips=(address,))
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "address": address, "port": self.kubelet_port, "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": self.kubelet_healthz_port,
            "tlsCertFile": str(serving_cert), "tlsPrivateKeyFile": str(serving_key),
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(files.ca_cert)}},
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": f"unix://{self.containerd.socket}",
            # This kernel mounts cgroups in hybrid v1 mode.
            "cgroupDriver": "cgroupfs", "failCgroupV1": False,
            # Its own cgroup subtree, so a second local cluster's kubelet can run beside it.
            "cgroupRoot": self.cgroup_root, "podLogsDir": str(self.home / "pod-logs"),
            "failSwapOn": False, "registerNode": True,
            "podCIDR": self.containerd.pod_cidr, "maxPods": 30,
            "serializeImagePulls": False, "resolvConf": "/etc/resolv.conf",
            "clusterDomain": CLUSTER_DOMAIN, "clusterDNS": [self.gateway],
            # A developer's disk is shared with everything else: evict only when nearly full.
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                             "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "rotateCertificates": False, "serverTLSBootstrap": False,
            "staticPodPath": "", "shutdownGracePeriod": "0s",
            # A changed ConfigMap or Secret reaches a pod's volume at its next sync (default 1m):
            # the operator's suspension notice (Art.21) and a renewed webhook certificate reach
            # the pods within seconds instead.
            "syncFrequency": "5s",
        }
        (self.home / "kubelet.yaml").write_text(json.dumps(config, indent=2))

    def _client_kubeconfig(self, path: Path, user: str, groups: tuple[str, ...] = ()) -> None:
        files = self.cluster.pki
        ca = CertificateAuthority.load(files.ca_cert, files.ca_key)
        cert, key = ca.issue(pki._name(user, groups), client=True)
        pki.write_kubeconfig(path, server=self.cluster.server_url,
                             ca_pem=files.ca_cert.read_bytes(), cert_pem=cert, key_pem=key,
                             user=user)

    def _reader(self, component: str, rules: list[dict[str, Any]]) -> Path:
        """A client certificate for the node's `component` (user
        system:hegui-real-node-<component>) bound to a ClusterRole of these rules; returns its
        kubeconfig."""
        name, user = f"hegui:real-node-{component}", f"system:hegui-real-node-{component}"
        kubeconfig = self.home / f"{component}.kubeconfig"
        self._client_kubeconfig(kubeconfig, user)
        rbac = self.home / f"{component}-rbac.json"
        rbac.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
             "metadata": {"name": name}, "rules": rules},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
             "metadata": {"name": name},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                         "name": name},
             "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                           "name": user}]}]}))
        self.cluster.kubectl("apply", "-f", str(rbac))
        return kubeconfig

    def _write_kube_proxy_files(self) -> None:
        """kube-proxy as the stock `system:kube-proxy` user (bound to system:node-proxier), in
        iptables mode (Debian's iptables; `nft`, which its nftables mode needs, is not there).
        It leaves the host's sysctls alone: no conntrack tuning, no route_localnet for
        localhost NodePorts, NodePorts only on the bridge's address."""
        (self.home / "pki").mkdir(parents=True, exist_ok=True)
        kubeconfig = self.home / "kube-proxy.kubeconfig"
        self._client_kubeconfig(kubeconfig, "system:kube-proxy")
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(kubeconfig)},
            "hostnameOverride": NODE_NAME, "mode": "iptables",
            "healthzBindAddress": f"127.0.0.1:{self.kube_proxy_healthz_port}",
            "metricsBindAddress": f"127.0.0.1:{self.kube_proxy_metrics_port}",
            # Traffic from outside the pods (this machine) to a ClusterIP is masqueraded.
            "detectLocalMode": "ClusterCIDR", "clusterCIDR": self.containerd.pod_cidr,
            "nodePortAddresses": [f"{self.gateway}/32"],
            "iptables": {"localhostNodePorts": False, "syncPeriod": "30s",
                         "minSyncPeriod": "0s"},
            "conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s",
                          "tcpCloseWaitTimeout": "0s"},
            # A negative oom_score_adj is refused on these machines.
            "oomScoreAdj": 0,
        }
        (self.home / "kube-proxy.yaml").write_text(json.dumps(config, indent=2))

    def _write_dns_files(self) -> None:
        """CoreDNS on the bridge's address, port 53 (the pods' clusterDNS): Services and their
        endpoints from the apiserver under cluster.local, everything else to this machine's
        resolver. It reads as its own user, with the stock CoreDNS role's rights."""
        kubeconfig = self._reader("dns", _DNS_RULES)
        (self.home / "Corefile").write_text(f"""\
.:53 {{
    bind {self.gateway}
    errors
    ready 127.0.0.1:{self.dns_ready_port}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        fallthrough in-addr.arpa ip6.arpa
    }}
    forward . /etc/resolv.conf
    cache 10
    loadbalance
}}
""")

    # --- down -----------------------------------------------------------------------------------
    def down(self) -> list[str]:
        """Stop the kubelet, the device plugin, every pod's containers and containerd."""
        stopped = []
        if self._live("kubelet", str(self.cluster.binary("kubelet"))) is not None:
            # The kubelet tears its pods down itself (their network namespaces and addresses
            # through CNI) when they are deleted; killing it first would leave them behind.
            self.cluster.kubectl("delete", "pods", "--all-namespaces", "--field-selector",
                                 f"spec.nodeName={NODE_NAME}", "--grace-period=1",
                                 "--timeout=60s", check=False)
        for name in ("kubelet", "deviceplugin", "kube-proxy", "coredns", "netpol"):
            with contextlib.suppress(OSError, ValueError):
                pid = int(self._pid_file(name).read_text())
                if Path(f"/proc/{pid}").exists():
                    _terminate(pid, 10)
                    stopped.append(name)
                self._pid_file(name).unlink(missing_ok=True)

        containerd = self.containerd
        if containerd.pid() is not None:
            for task in containerd.ctr("tasks", "list", "--quiet", check=False).stdout.split():
                containerd.ctr("tasks", "kill", "--all", "--signal", "SIGKILL", task, check=False)
            time.sleep(1)
            for task in containerd.ctr("tasks", "list", "--quiet", check=False).stdout.split():
                containerd.ctr("tasks", "delete", "--force", task, check=False)
            for container in containerd.ctr("containers", "list", "--quiet",
                                            check=False).stdout.split():
                containerd.ctr("containers", "delete", container, check=False)
            containerd.stop()
            stopped.append("containerd")
        # kube-proxy's own chains and rules (KUBE-SERVICES, KUBE-SVC-*, ...) in every table,
        # then what it and the kubelet share and leave (an IPv6 KUBE-FIREWALL) unless it was
        # there before the node started.
        proxy = self.cluster.binary("kube-proxy")
        if os.access(proxy, os.X_OK):
            subprocess.run([str(proxy), "--cleanup", "--v=0"], capture_output=True, check=False,
                           timeout=60)
        # kube-router's chains (KUBE-ROUTER-*, KUBE-POD-FW-*, KUBE-NWPLCY-*) and ipsets.
        router = self.cluster.binary("kube-router")
        if os.access(router, os.X_OK):
            subprocess.run([str(router), "--cleanup-config", "--run-router=false",
                            "--run-service-proxy=false", "--v=0"], capture_output=True,
                           check=False, timeout=60)
        with contextlib.suppress(OSError, ValueError):
            found = {tuple(chain) for chain in json.loads(self._host_chains_file.read_text())}
            _remove_chains(_kube_chains() - found)
            self._host_chains_file.unlink()
        self._unroute_apiserver()
        # What the pods mounted (their /dev/shm, secrets, projected volumes) under the kubelet's
        # and containerd's folders, deepest first.
        mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
                  if line.split()[4].startswith(str(self.home))]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
        return stopped


def _kube_chains() -> set[tuple[str, str, str]]:
    """The KUBE-* chains on this machine: (command, table, chain), IPv4 and IPv6."""
    found = set()
    for command in ("iptables", "ip6tables"):
        table = ""
        for line in _run_host([f"{command}-save"], check=False).stdout.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith(":KUBE-"):
                found.add((command, table, line[1:].split()[0]))
    return found


def _remove_chains(chains: set[tuple[str, str, str]]) -> None:
    """Delete these chains and the rules that jump to them."""
    for command, table, chain in sorted(chains):
        for line in _run_host([f"{command}-save", "-t", table], check=False).stdout.splitlines():
            words = shlex.split(line)
            if words[:1] == ["-A"] and words[-2:] == ["-j", chain]:
                _run_host([command, "-t", table, "-D", *words[1:]], check=False)
        _run_host([command, "-t", table, "-F", chain], check=False)
        _run_host([command, "-t", table, "-X", chain], check=False)


def _run_host(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    if check and done.returncode != 0:
        raise RealNodeError(f"{' '.join(argv)}: {done.stderr.strip()} (the real node needs root)")
    return done


def _terminate(pid: int, grace: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, 15)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, 9)


def _tail(path: Path, size: int = 3000) -> str:
    try:
        return path.read_bytes()[-size:].decode(errors="replace")
    except OSError:
        return "(no log)"
