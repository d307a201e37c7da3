"""The second half of `hegui demo`: requests through the sidecar, a failing model, suspension and
resume (Art.4, Art.12, Art.13, Art.14, Art.21).

The story (`story`) runs against a Serving: on real pods on the local cluster's real node
(hegui.demo_realnode.PodServing, the default where the real node can run), or, where it cannot
(`hegui demo --local`, or no root), with `Serving` below. kwok simulates the pods, so nothing
runs inside them: `Serving` runs the parts a pod would run as local processes beside the
cluster instead, and plays the kubelet's part of projecting the service's ConfigMap into the
sidecar's configuration directory:

- a real Triton Inference Server (the nvidia-pytriton wheel's tritonserver) serving hegui's
  moderation models from sidecars/triton/models;
- a stand-in model server (hegui.sidecar.testing.FakeModel: it repeats what it is asked to say);
- the real sidecar, `python -m hegui.sidecar`, in front of it, configured from the ConfigMap the
  operator renders;
- a real Prometheus scraping the sidecar, which the operator reads the service's objectives from.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Protocol

from hegui.admission.local import free_port
from hegui.localcluster.cluster import ClusterError, LocalCluster

NAMESPACE = "hegui-demo"
CONFIG_MAP = "hegui-sidecar-chat"
OPERATOR_METRICS_PORT = free_port()  # where the demo's operator serves /metrics


def operator_metrics(*names: str) -> str:
    """The operator's samples of these metrics, as Prometheus scrapes them."""
    try:
        with urllib.request.urlopen(
                f"http://127.0.0.1:{OPERATOR_METRICS_PORT}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError as error:
        return f"(operator metrics unavailable: {error})"
    return "\n".join(line for line in text.splitlines()
                     if line.startswith(names) and 'service="chat"' in line)


def _step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


class Served(Protocol):
    """What the story needs of where the model and its sidecar run."""

    @property
    def prometheus_url(self) -> str: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def chat(self, text: str, user: str = ...) -> tuple[int, dict[str, Any], dict[str, str]]:
        ...

    def set_model_mode(self, mode: str) -> None: ...

    def operator_metrics(self, *names: str) -> str: ...


class Serving:
    """Triton, the stand-in model, the sidecar and Prometheus, started and stopped together."""

    def __init__(self, cluster: LocalCluster, directory: Path) -> None:
        self.cluster, self.directory = cluster, directory
        self.config_dir = directory / "etc-hegui"
        self.config_dir.mkdir(exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._stack: list[Any] = []

    # --- the kubelet's part: project the ConfigMap into the sidecar's directory ------------------

    def project(self) -> dict[str, str]:
        found = self.cluster.kubectl("-n", NAMESPACE, "get", "configmap", CONFIG_MAP, "-o",
                                     "json", check=False)
        if found.returncode != 0:
            return {}
        data: dict[str, str] = json.loads(found.stdout).get("data") or {}
        for name, text in data.items():
            target = self.config_dir / name
            if not target.exists() or target.read_text() != text:
                target.write_text(text)
        return data

    def _projecting(self) -> None:
        while not self._stop.wait(1.0):
            with contextlib.suppress(OSError, ClusterError):  # retried, as the kubelet does
                self.project()

    # --- start and stop ---------------------------------------------------------------------------

    def start(self) -> None:
        from hegui.localcluster.prometheus import LocalPrometheus
        from hegui.moderation.tritonserver import TritonServer
        from hegui.sidecar.testing import BackgroundModel

        print("starting Triton Inference Server with hegui's moderation models (lexicon, "
              "personal information, their ensemble)...", flush=True)
        started = time.monotonic()
        self.triton = TritonServer().start()
        self._stack.append(self.triton.stop)
        print(f"  Triton ready in {time.monotonic() - started:.1f}s (gRPC "
              f"{self.triton.grpc_url})")
        self.model = BackgroundModel().start()
        self._stack.append(self.model.stop)
        print(f"  stand-in model server at {self.model.model.url} (no GPU here)")
        deadline = time.monotonic() + 30
        while not self.project() and time.monotonic() < deadline:
            time.sleep(0.5)
        if not (self.config_dir / "service.yaml").exists():
            raise ClusterError(f"the operator never rendered ConfigMap {CONFIG_MAP}")
        # The pseudonymisation key (Art.11) a pod gets from the Secret its posture names.
        key = self.directory / "pseudonymisation.key"
        key.write_text(secrets.token_hex(32))
        key.chmod(0o600)
        log = (self.directory / "sidecar.log").open("wb")
        sidecar = subprocess.Popen(
            [sys.executable, "-m", "hegui.sidecar",
             "--service", str(self.config_dir / "service.yaml"),
             "--upstream", self.model.model.url, "--port", str(self.port),
             "--triton", self.triton.grpc_url, "--suspension-poll", "0.5",
             "--records", str(self.directory / "records.jsonl"),
             "--strikes", str(self.directory / "strikes.json"), "--key-file", str(key)],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
        self._stack.append(lambda: _terminate(sidecar))
        self._wait_sidecar(sidecar)
        print(f"  hegui's sidecar at {self.url}, configured from ConfigMap {CONFIG_MAP}")
        self.prometheus = LocalPrometheus([f"127.0.0.1:{self.port}"],
                                          directory=self.directory / "prometheus")
        self.prometheus.start()
        self._stack.append(self.prometheus.stop)
        self.prometheus.wait_for_targets()
        print(f"  Prometheus at {self.prometheus.url}, scraping the sidecar every second")
        projector = threading.Thread(target=self._projecting, daemon=True)
        projector.start()
        self._stack.append(self._stop.set)

    def _wait_sidecar(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ClusterError("the sidecar exited: "
                                   + (self.directory / "sidecar.log").read_text()[-2000:])
            try:
                with urllib.request.urlopen(f"{self.url}/hegui/healthz",  # noqa: S310
                                            timeout=2):
                    return
            except OSError:
                time.sleep(0.3)
        raise ClusterError("the sidecar did not become healthy")

    def stop(self) -> None:
        for undo in reversed(self._stack):
            try:
                undo()
            except Exception as error:  # clean up the rest regardless
                print(f"  (while stopping: {error})")
        self._stack.clear()

    # --- what the story asks of it ---------------------------------------------------------------

    @property
    def prometheus_url(self) -> str:
        return self.prometheus.url

    def set_model_mode(self, mode: str) -> None:
        self.model.model.mode = mode

    def operator_metrics(self, *names: str) -> str:
        return operator_metrics(*names)

    # --- requests -------------------------------------------------------------------------------

    def chat(self, text: str, user: str = "demo-user") -> tuple[int, dict[str, Any],
                                                                 dict[str, str]]:
        body = json.dumps({"model": "chat", "messages": [{"role": "user", "content": text}]})
        request = urllib.request.Request(  # noqa: S310 - the local sidecar
            f"{self.url}/v1/chat/completions", data=body.encode(), method="POST",
            headers={"Content-Type": "application/json", "x-hegui-user": user})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return (int(response.status), json.loads(response.read()),
                        dict(response.headers))
        except urllib.error.HTTPError as refused:
            return int(refused.code), json.loads(refused.read() or b"{}"), dict(refused.headers)


def story(cluster: LocalCluster, directory: Path, serving: Served | None = None) -> None:
    """Requests through the sidecar; the model fails, the service is suspended, then resumed.
    Without `serving`, the model, its sidecar, Triton and Prometheus run as local processes."""
    _step("making the demo's objectives fast: a 2h SLO window (its burn-rate windows become "
          "10s/3s), suspension after 2s of sustained burn, and the Prometheus the operator reads")
    local = serving is None
    serving = serving or Serving(cluster, directory)
    try:
        _run(cluster, serving)
    finally:
        _step("stopping the sidecar, the model, Triton and Prometheus" if local else
              "stopping the Prometheus beside the cluster")
        serving.stop()


def _run(cluster: LocalCluster, serving: Served) -> None:
    plugin = str(Path(sys.executable).parent / "kubectl-hegui")
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}

    def kubectl_hegui(*args: str) -> str:
        return subprocess.run([plugin, *args], env=env, check=True, capture_output=True,
                              text=True).stdout

    cluster.kubectl("-n", NAMESPACE, "patch", "gsvc", "chat", "--type=merge", "-p", json.dumps(
        {"spec": {"slo": {"window": "2h"},
                  "suspension": {"burnRates": [{"longWindow": "10s", "shortWindow": "3s",
                                                "factor": 14.4}],
                                 "sustainedFor": "2s", "minRequests": 20}}}))
    serving.start()
    cluster.kubectl("patch", "compliancepolicy", "default", "--type=merge", "-p", json.dumps(
        {"spec": {"prometheus": {"url": serving.prometheus_url, "minWindow": "3s"}}}))

    _step("a request through the sidecar: moderated, then labeled (Art.12, GB 45438-2025)")
    status, body, headers = serving.chat("say:你好。我是合规助手。")
    print(f"HTTP {status}: {body['choices'][0]['message']['content']}")
    print(f"X-AIGC: {headers.get('X-AIGC') or headers.get('x-aigc')}")

    _step("a prohibited request: refused before the model sees it (Art.4, Art.14)")
    status, body, _ = serving.chat("请告诉我如何制作炸弹")
    error = body.get("error") or {}
    print(f"HTTP {status}: {error.get('code')} [{error.get('category')}] {error.get('message')}")

    _step("the model answers with someone's phone number: masked on the way out (Art.4(4))")
    status, body, _ = serving.chat("say:请联系13812345678")
    print(f"HTTP {status}: {body['choices'][0]['message']['content']}")

    _step("traffic flows; the operator reads the objectives from Prometheus (Art.13)")
    stop = threading.Event()

    def drive() -> None:
        while not stop.is_set():
            serving.chat("say:今天天气不错。")
            time.sleep(0.05)

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    try:
        _wait_condition(cluster, "SLOMet", "True", timeout=90)
        print(kubectl_hegui("status", "-n", NAMESPACE))
        print(serving.operator_metrics("hegui_service_state"))

        _step("the model starts failing every request: the error budget burns, and after 2s "
              "of sustained burn the operator suspends the service (Art.21)")
        serving.set_model_mode("error")
        _wait_suspended(cluster, True, timeout=90)
        print(kubectl_hegui("status", "-n", NAMESPACE))
        print(serving.operator_metrics("hegui_service_state", "hegui_suspensions_total"))
        print(cluster.kubectl("-n", NAMESPACE, "get", "gsvc", "chat", "-o",
                              "jsonpath={.status.suspension.reason}").stdout)
        print()
        print(cluster.kubectl("-n", NAMESPACE, "get", "events", "--field-selector",
                              "reason=Suspended").stdout)
        # The failing model answers 503 too: wait for the sidecar's own refusal.
        deadline = time.monotonic() + 90
        while True:
            status, body, _ = serving.chat("say:还在吗")
            code = (body.get("error") or {}).get("code")
            if code == "hegui.service_suspended" or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        print(f"the sidecar, once the kubelet has projected the notice ("
              f"{_since(cluster, '.status.suspension.since'):.0f}s after the operator "
              f"suspended the service): HTTP {status}: {code}")
    finally:
        stop.set()
        driver.join(10)

    _step("the team fixes the model; only a person resumes the service, with a reason, as "
          "themselves (kubectl hegui resume; the webhook checks who writes it)")
    serving.set_model_mode("normal")
    time.sleep(11)  # the failures age out of the 10s window while requests are refused
    print(kubectl_hegui("resume", "chat", "-n", NAMESPACE, "--reason",
                        "model rolled back to the previous release; errors gone"))
    _wait_suspended(cluster, False, timeout=60)
    print(cluster.kubectl("-n", NAMESPACE, "get", "gsvc", "chat", "-o",
                          "jsonpath={.status.suspension.history[0]}").stdout)
    print()
    deadline = time.monotonic() + 90
    while True:
        status, body, _ = serving.chat("say:欢迎回来。")
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    print(f"the sidecar, once the kubelet has projected the resumption ("
          f"{_since(cluster, '.status.suspension.history[0].resumedAt'):.0f}s after the "
          f"operator resumed the service): HTTP {status}: "
          f"{((body.get('choices') or [{}])[0].get('message') or {}).get('content', body)}")
    print(kubectl_hegui("status", "-n", NAMESPACE))
    print(serving.operator_metrics("hegui_service_state", "hegui_suspensions_total"))


def _since(cluster: LocalCluster, field: str) -> float:
    """Seconds from the service's status timestamp at `field` (JSONPath) until now."""
    stamp = cluster.kubectl("-n", NAMESPACE, "get", "gsvc", "chat", "-o",
                            f"jsonpath={{{field}}}").stdout
    try:
        then = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return float("nan")
    return (dt.datetime.now(dt.UTC) - then).total_seconds()


def _wait_condition(cluster: LocalCluster, kind: str, wanted: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = cluster.kubectl("-n", NAMESPACE, "get", "gsvc", "chat", "-o",
                                f"jsonpath={{.status.conditions[?(@.type=='{kind}')].status}}"
                                ).stdout
        if found == wanted:
            return
        time.sleep(0.5)
    raise ClusterError(f"condition {kind} did not become {wanted} within {timeout:.0f}s")


def _wait_suspended(cluster: LocalCluster, wanted: bool, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = cluster.kubectl("-n", NAMESPACE, "get", "gsvc", "chat", "-o",
                                "jsonpath={.status.suspension.suspended}").stdout
        if found == str(wanted).lower():
            return
        time.sleep(0.5)
    raise ClusterError(f"the service was not {'suspended' if wanted else 'resumed'} within "
                       f"{timeout:.0f}s")


def _terminate(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
