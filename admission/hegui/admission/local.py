"""The webhook as a local process beside the local control plane (demo and tests).

In a real cluster the chart runs the webhook as a Deployment behind a Service; here it runs on
127.0.0.1 with a serving certificate from the local cluster's CA, and the apiserver reaches it by
URL. `stop()` removes the webhook configuration before stopping the process, so a finished demo
never leaves GPU workloads failing closed against a webhook that is gone.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from hegui.admission import configuration
from hegui.localcluster import pki
from hegui.localcluster.cluster import ClusterError, LocalCluster


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LocalWebhook:
    def __init__(self, cluster: LocalCluster, directory: Path, port: int | None = None) -> None:
        self.cluster, self.directory = cluster, directory
        self.port = port or free_port()
        ca = pki.CertificateAuthority.load(cluster.pki.ca_cert, cluster.pki.ca_key)
        self.cert_file, self.key_file = pki.write_serving_pair(
            ca, directory, "webhook", names=("localhost",), ips=("127.0.0.1",))
        self.log_file = directory / "webhook.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        hegui = Path(sys.executable).parent / "hegui"
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [str(hegui), "webhook", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                 "--cert-file", str(self.cert_file), "--key-file", str(self.key_file),
                 "--kubeconfig", str(self.cluster.kubeconfig)],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.get("/readyz") == 200:
                return
            if self.process.poll() is not None:
                raise ClusterError(f"the webhook exited; see {self.log_file}:\n"
                                   f"{self.log_file.read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)
        raise ClusterError(f"the webhook did not become ready in {timeout:.0f}s; "
                           f"see {self.log_file}")

    def register(self, *, mutating: bool = True) -> None:
        options: dict[str, Any] = {"ca_bundle": self.cluster.pki.ca_cert.read_bytes(),
                                   "own_namespace": "hegui-system",
                                   "url": f"{self.url}/validate"}
        items = [configuration.validating_webhook_configuration(**options)]
        if mutating:
            items.append(configuration.mutating_webhook_configuration(**options))
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
            json.dump({"apiVersion": "v1", "kind": "List", "items": items}, handle)
        try:
            self.cluster.kubectl("apply", "-f", handle.name)
        finally:
            Path(handle.name).unlink()

    def unregister(self) -> None:
        self.cluster.kubectl("delete", "validatingwebhookconfiguration",
                             configuration.CONFIGURATION_NAME, "--ignore-not-found")
        self.cluster.kubectl("delete", "mutatingwebhookconfiguration",
                             configuration.MUTATING_CONFIGURATION_NAME, "--ignore-not-found")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def get(self, path: str) -> int:
        context = ssl.create_default_context(cafile=str(self.cluster.pki.ca_cert))
        try:
            with urllib.request.urlopen(  # noqa: S310 - fixed https URL on loopback
                    f"{self.url}{path}", context=context, timeout=2) as response:
                return int(response.status)
        except (OSError, urllib.error.HTTPError):
            return 0

    def metrics(self) -> str:
        context = ssl.create_default_context(cafile=str(self.cluster.pki.ca_cert))
        with urllib.request.urlopen(  # noqa: S310 - fixed https URL on loopback
                f"{self.url}/metrics", context=context, timeout=2) as response:
            return str(response.read().decode())
