"""Admission benchmark: the webhook with hegui's rules against an allow-all webhook on the same
server stack, measured in the same run (the machine is shared and noisy, so only ratios count).

    .venv/bin/python bench/admission.py                # straight to the webhooks
    .venv/bin/python bench/admission.py --through-apiserver   # and end to end (local cluster)

Each webhook runs in its own process (one core's worth of Python); the load generator sends a
covered, compliant GPU Deployment review from 1, 16 and 128 concurrent clients. End to end, the
apiserver is asked to create (dry-run) the same Deployment while the webhook configuration points
first at one server, then at the other.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from hegui.admission.local import free_port  # noqa: E402
from hegui.localcluster import pki  # noqa: E402

DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "model-7", "namespace": "ns-7", "labels": {"app": "model-7"}},
    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "model-7"}},
             "template": {"metadata": {"labels": {"app": "model-7"}}, "spec": {"containers": [{
                 "name": "model", "image": "example.invalid/llm:1",
                 "resources": {"limits": {"nvidia.com/gpu": "1", "memory": "16Gi"}}}]}}}}


#: A realistic GPU model pod as its ReplicaSet creates it: what the mutating webhook sees.
POD: dict[str, Any] = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"generateName": "model-7-6d9f8b7c4-", "namespace": "ns-7",
                 "labels": {"app": "model-7", "pod-template-hash": "6d9f8b7c4"},
                 "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                      "name": "model-7-6d9f8b7c4", "uid": "u-1",
                                      "controller": True}]},
    "spec": {
        "initContainers": [{"name": "fetch-weights", "image": "example.invalid/fetch:1",
                            "args": ["s3://models/qwen-7b", "/models"],
                            "volumeMounts": [{"name": "models", "mountPath": "/models"}]}],
        "containers": [{
            "name": "model", "image": "example.invalid/vllm:0.6",
            "args": ["--model", "/models/qwen-7b", "--port", "8000"],
            "ports": [{"name": "http", "containerPort": 8000}],
            "env": [{"name": "HF_HOME", "value": "/models"}],
            "resources": {"limits": {"nvidia.com/gpu": "1", "memory": "32Gi", "cpu": "8"}},
            "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}},
            "volumeMounts": [{"name": "models", "mountPath": "/models"},
                             {"name": "shm", "mountPath": "/dev/shm"}]}],  # noqa: S108
        "volumes": [{"name": "models", "emptyDir": {}},
                    {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}},
                    {"name": "kube-api-access-abcde", "projected": {"sources": []}}],
        "nodeSelector": {"nvidia.com/gpu.present": "true"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                         "effect": "NoSchedule"}]}}


def review_body(obj: dict[str, Any] = DEPLOYMENT) -> bytes:
    """An AdmissionReview of `obj` (the bench checks the webhook admits it: a compliant
    workload, the common case, not a refusal)."""
    kind = {"group": "apps", "version": "v1", "kind": "Deployment"} if obj is DEPLOYMENT else {
        "group": "", "version": "v1", "kind": "Pod"}
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                       "request": {"uid": "bench", "operation": "CREATE", "kind": kind,
                                   "namespace": "ns-7", "name": obj["metadata"].get("name", ""),
                                   "object": obj,
                                   "userInfo": {"username": "bench"}}}).encode()


async def load(url: str, body: bytes, context: ssl.SSLContext, clients: int,
               seconds: float, headers: dict[str, str]) -> dict[str, float]:
    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(ssl=context, limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def client() -> None:
            nonlocal failures
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status >= 300:
                        failures += 1
                latencies.append(time.perf_counter() - started)
        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    return {"requests": len(latencies), "failures": failures,
            "throughput": len(latencies) / elapsed,
            "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))]}


#: GenerativeServices in the webhooks' index, spread over 10 namespaces (--services).
SERVICES = 200


def start_server(mode: str, port: int, directory: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, str(HERE / "webhook_server.py"), "--mode", mode, "--port", str(port),
         "--cert-file", str(directory / "tls.crt"), "--key-file", str(directory / "tls.key"),
         "--services", str(SERVICES)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return process
        time.sleep(0.1)
    process.kill()
    raise SystemExit(f"the {mode} webhook did not start")


def report(title: str, rows: list[tuple[int, dict[str, float], dict[str, float]]]) -> None:
    print(f"\n{title}")
    print(f"{'clients':>7} | {'rules p50/p99 ms':>17} | {'allow-all p50/p99 ms':>20} | "
          f"{'p99 ratio':>9} | {'rules req/s':>11} | {'throughput ratio':>16}")
    for clients, rules, allow in rows:
        print(f"{clients:>7} | {rules['p50_ms']:>7.2f}/{rules['p99_ms']:<9.2f} | "
              f"{allow['p50_ms']:>9.2f}/{allow['p99_ms']:<10.2f} | "
              f"{rules['p99_ms'] / allow['p99_ms']:>9.2f} | {rules['throughput']:>11.0f} | "
              f"{rules['throughput'] / allow['throughput']:>16.2f}")


async def direct(directory: Path, seconds: float) -> None:
    context = ssl.create_default_context(cafile=str(directory / "ca.crt"))
    ports = {"rules": free_port(), "allow-all": free_port()}
    servers = [start_server(mode, port, directory) for mode, port in ports.items()]
    body = review_body()
    headers = {"Content-Type": "application/json"}
    try:
        async with (aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
                    session.post(f"https://127.0.0.1:{ports['rules']}/validate", data=body,
                                 headers=headers) as response):
            answer = await response.json()
        if not answer["response"]["allowed"]:
            # A refusal is cheaper and rarer than the admission a bench must measure.
            raise SystemExit(f"the rules webhook refused the bench's Deployment: {answer}")
        rows = []
        for clients in (1, 16, 128):
            # Interleaved, so drift in the machine's load hits both alike.
            rules = await load(f"https://127.0.0.1:{ports['rules']}/validate", body, context,
                               clients, seconds, headers)
            allow = await load(f"https://127.0.0.1:{ports['allow-all']}/validate", body, context,
                               clients, seconds, headers)
            rows.append((clients, rules, allow))
        report(f"straight to the webhook (one process each; {SERVICES} GenerativeServices in "
               "10 namespaces)", rows)
        await mutating(ports["rules"], context, seconds)
    finally:
        for process in servers:
            process.terminate()


async def mutating(port: int, context: ssl.SSLContext, seconds: float) -> None:
    """The mutating review of a realistic GPU pod against the validating review of its
    Deployment, on the same server in the same run; and the size of the patch it returns."""
    import base64

    headers = {"Content-Type": "application/json"}
    async with (aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
                session.post(f"https://127.0.0.1:{port}/mutate", data=review_body(POD),
                             headers=headers) as response):
        answer = await response.json()
    patch = base64.b64decode(answer["response"].get("patch", ""))
    if not patch:
        raise SystemExit(f"the mutating webhook returned no patch: {answer}")
    rows = []
    for clients in (1, 16):
        mutate = await load(f"https://127.0.0.1:{port}/mutate", review_body(POD), context,
                            clients, seconds, headers)
        validate = await load(f"https://127.0.0.1:{port}/validate", review_body(), context,
                              clients, seconds, headers)
        rows.append((clients, mutate, validate))
    print(f"\nmutating (GPU pod, injection) vs validating (its Deployment), same server; "
          f"patch {len(patch)} bytes, {len(json.loads(patch))} operations")
    print(f"{'clients':>7} | {'mutate p50/p99 ms':>17} | {'validate p50/p99 ms':>19} | "
          f"{'p50 ratio':>9} | {'p99 ratio':>9}")
    for clients, mutate, validate in rows:
        print(f"{clients:>7} | {mutate['p50_ms']:>7.2f}/{mutate['p99_ms']:<9.2f} | "
              f"{validate['p50_ms']:>8.2f}/{validate['p99_ms']:<10.2f} | "
              f"{mutate['p50_ms'] / validate['p50_ms']:>9.2f} | "
              f"{mutate['p99_ms'] / validate['p99_ms']:>9.2f}")


async def through_apiserver(directory: Path, seconds: float) -> None:
    from hegui.admission import configuration
    from hegui.localcluster.cluster import LocalCluster

    cluster = LocalCluster.from_environment()
    cluster.up()
    context = ssl.create_default_context(cafile=str(cluster.pki.ca_cert))
    cert, key = cluster.pki.client_pair(pki.ADMIN)
    context.load_cert_chain(str(cert), str(key))
    for namespace in ("ns-7",):
        cluster.kubectl("create", "namespace", namespace, check=False)
    ports = {"rules": free_port(), "allow-all": free_port()}
    servers = [start_server(mode, port, directory) for mode, port in ports.items()]
    url = (f"{cluster.server_url}/apis/apps/v1/namespaces/ns-7/deployments?dryRun=All")
    body = json.dumps(DEPLOYMENT).encode()
    headers = {"Content-Type": "application/json"}
    results: dict[str, dict[int, dict[str, float]]] = {"rules": {}, "allow-all": {}}
    try:
        for clients in (1, 16, 128):
            for mode, port in ports.items():
                config = configuration.validating_webhook_configuration(
                    ca_bundle=(directory / "ca.crt").read_bytes(), own_namespace="hegui-system",
                    url=f"https://127.0.0.1:{port}/validate")
                path = directory / "vwc.json"
                path.write_text(json.dumps(config))
                cluster.kubectl("apply", "-f", str(path))
                await asyncio.sleep(2)  # the apiserver reloads webhook configurations lazily
                results[mode][clients] = await load(url, body, context, clients, seconds,
                                                    headers)
        report("end to end through kube-apiserver (dry-run create)",
               [(c, results["rules"][c], results["allow-all"][c]) for c in (1, 16, 128)])
    finally:
        cluster.kubectl("delete", "validatingwebhookconfiguration",
                        configuration.CONFIGURATION_NAME, "--ignore-not-found")
        for process in servers:
            process.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--through-apiserver", action="store_true")
    parser.add_argument("--services", type=int, default=200,
                        help="GenerativeServices in the index, over 10 namespaces")
    args = parser.parse_args()
    global SERVICES  # the servers are started deep in the async helpers
    SERVICES = args.services
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        ca = pki.CertificateAuthority.create("bench-ca")
        ca.write(directory / "ca.crt", directory / "ca.key")
        pki.write_serving_pair(ca, directory, "tls", names=("localhost",), ips=("127.0.0.1",))
        asyncio.run(direct(directory, args.seconds))
        if args.through_apiserver:
            asyncio.run(through_apiserver(directory, args.seconds))


if __name__ == "__main__":
    main()
