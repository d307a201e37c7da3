"""A real Prometheus on loopback, for the tests and the demo: it scrapes hegui's sidecars so the
SLO engine (`hegui.operator.slo`, Art.13) reads the same PromQL answers it reads in a cluster.

The binary is Debian's `prometheus` package (listed in dev/apt-packages.txt; `dev/bootstrap`
installs it). Each instance gets a generated configuration with the caller's static scrape
targets, a 1s scrape interval (so compressed SLO windows of seconds have samples), a free
loopback port and a private data directory; the packaged system service is never used.

    with LocalPrometheus(["127.0.0.1:8443"]) as prometheus:
        prometheus.wait_for_targets()
        ... prometheus.url ...
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from hegui.admission.local import free_port

PACKAGE = "prometheus"


class PrometheusUnavailable(RuntimeError):
    """The prometheus binary is not installed."""


class PrometheusError(RuntimeError):
    """Prometheus did not start, or its targets did not come up; the message carries its log."""


def find_binary(binary: str | None = None) -> str:
    """The prometheus executable: `binary`, $HEGUI_PROMETHEUS, or `prometheus` on PATH."""
    wanted = binary or os.environ.get("HEGUI_PROMETHEUS") or "prometheus"
    found = shutil.which(wanted)
    if found is None:
        raise PrometheusUnavailable(
            f"{wanted!r} not found: install the Debian package {PACKAGE!r} (it is listed in "
            "dev/apt-packages.txt, which dev/bootstrap installs) or set HEGUI_PROMETHEUS to the "
            "binary")
    return found


class LocalPrometheus:
    """One Prometheus process scraping `targets` (host:port) every `scrape_interval`."""

    def __init__(self, targets: Sequence[str], *, directory: Path | None = None,
                 scrape_interval: str = "1s", metrics_path: str = "/metrics",
                 job: str = "hegui-sidecar", binary: str | None = None) -> None:
        for target in targets:
            host, _, port = target.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"scrape target {target!r} is not host:port")
        self.targets = list(targets)
        self.scrape_interval = scrape_interval
        self.metrics_path = metrics_path
        self.job = job
        self.binary = binary
        self._own_directory = directory is None
        self.directory = directory
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        assert self.directory is not None
        return self.directory / "prometheus.log"

    def config(self) -> dict[str, Any]:
        return {
            "global": {"scrape_interval": self.scrape_interval,
                       "scrape_timeout": self.scrape_interval,
                       "evaluation_interval": self.scrape_interval},
            "scrape_configs": [{"job_name": self.job, "metrics_path": self.metrics_path,
                                "static_configs": [{"targets": self.targets}]}],
        }

    def command(self, binary: str, config_file: Path) -> list[str]:
        assert self.directory is not None
        return [binary, f"--config.file={config_file}",
                f"--storage.tsdb.path={self.directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1d", "--log.level=warn"]

    def start(self, timeout: float = 30.0) -> Self:
        binary = find_binary(self.binary)
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="hegui-prometheus-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        config_file = self.directory / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        for _ in range(3):  # another process may take the free port before Prometheus binds it
            self.port = free_port()
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(self.command(binary, config_file), stdout=log,
                                                stderr=subprocess.STDOUT,
                                                start_new_session=True)
            if self._wait_ready(timeout):
                return self
            if "address already in use" not in self.log_tail():
                break
        self.stop()
        raise PrometheusError(f"prometheus did not become ready within {timeout:.0f}s:\n"
                              + self.log_tail())

    def _wait_ready(self, timeout: float) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if self.ready():
                return True
            time.sleep(0.1)
        return False

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(  # noqa: S310 - fixed http URL on loopback
                    f"{self.url}/-/ready", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def targets_health(self) -> dict[str, str]:
        """Each scrape target (host:port) and its health: up, down or unknown."""
        with urllib.request.urlopen(  # noqa: S310 - fixed http URL on loopback
                f"{self.url}/api/v1/targets?state=active", timeout=5) as response:
            data = json.load(response)
        return {t["labels"]["instance"]: t["health"] for t in data["data"]["activeTargets"]}

    def wait_for_targets(self, timeout: float = 30.0) -> None:
        """Wait until every target has been scraped successfully once."""
        deadline = time.monotonic() + timeout
        health: dict[str, str] = {}
        while time.monotonic() < deadline:
            health = self.targets_health()
            if set(health) >= set(self.targets) and all(v == "up" for v in health.values()):
                return
            time.sleep(0.2)
        raise PrometheusError(f"scrape targets not up within {timeout:.0f}s: {health}")

    def log_tail(self, size: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # Prometheus flushes its head block
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None
        if self._own_directory and self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()
