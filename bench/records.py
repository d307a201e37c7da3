"""Records benchmark (Art.11): what keeping evidence costs a request, what an fsync costs here,
and how long `verify` takes over a million shipped records. Ratios against a baseline measured
in the same run only: the machine is shared and noisy.

    .venv/bin/python bench/records.py [--rate 1000] [--seconds 10] [--verify-records 1000000]
                                      [--store http://127.0.0.1:16490/hegui-evidence]

1. fsync: one durable append (an incident: block, mask, strike) against a batched one (the
   `label` of an ordinary answer, fsync'ed with others within 50 ms) and a plain write.
2. Latency: the sidecar (no moderation, labels on: one `label` record per answer) driven
   open-loop at --rate requests a second, without records (`none`), with records kept in the
   pod only (`local`, shipping off), and with records shipped by a Shipper (`records`, to
   --store, else a directory store), interleaved: p50/p99, the p99 differences and ratios.
3. verify: --verify-records records shipped as segments, then `verify_store` over them.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from hegui.evidence.shipper import Shipper  # noqa: E402
from hegui.evidence.store import DirectoryStore, Store, open_store  # noqa: E402
from hegui.evidence.verify import verify_store  # noqa: E402
from hegui.moderation.findings import Findings  # noqa: E402
from hegui.moderation.records import RecordLog  # noqa: E402
from hegui.moderation.tritonserver import free_port  # noqa: E402

KEY = b"bench-pseudonymisation-key"
EVIDENCE = b"bench-evidence-key"
BODY = json.dumps({"model": "fake", "messages": [{"role": "user", "content":
                   "say:请介绍一下北京的历史以及它在中国文化中的地位。"}]}).encode()
LABELING = {"modalities": ["text"], "explicit": {"text": "本内容由人工智能生成",
                                                  "position": "End"},
            "implicit": {"contentProducer": "Example AI Co.", "produceIdPrefix": "chat-"}}


def fsync_cost(directory: Path, count: int = 300) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, kind in (("durable (block)", "block"), ("batched (label)", "label")):
        log = RecordLog(directory / f"{kind}.jsonl", key=KEY)
        times = []
        for n in range(count):
            began = time.perf_counter()
            log.append(kind, user=f"u{n % 7}", route="chat", article="Art.12",
                       produce_ids=[f"chat-{n:032x}"], flags=[])
            times.append(time.perf_counter() - began)
        log.close()
        times.sort()
        out[f"{name} p50 ms"] = statistics.median(times) * 1e3
        out[f"{name} p99 ms"] = times[int(count * 0.99)] * 1e3
    return out


# --- the sidecar, in its own process --------------------------------------------------------------

class NoModeration:
    async def moderate(self, texts: list[str]) -> list[Findings]:
        return [Findings() for _ in texts]

    async def close(self) -> None:
        pass


async def serve(port: int, upstream: str, mode: str, directory: str, store_url: str) -> None:
    from hegui.api.generativeservice import Labeling
    from hegui.sidecar.app import Sidecar
    from hegui.sidecar.app import serve as serve_app
    from hegui.sidecar.config import SidecarConfig
    from hegui.sidecar.testing import posture

    records = shipper = None
    if mode in ("local", "records"):
        records = RecordLog(Path(directory) / "records.jsonl", key=KEY)
    if records is not None and mode == "records":
        store: Store = open_store(store_url) if store_url else DirectoryStore(
            Path(directory) / "store")
        shipper = Shipper(records, store, key=EVIDENCE, service="bench/chat", pod="bench-0",
                          retention_days=1)
        shipper.start()
    config = SidecarConfig(posture(), labeling=Labeling.from_dict(LABELING), upstream=upstream,
                           pseudonymisation_key=KEY, service="bench/chat")
    runner = await serve_app(Sidecar(config, NoModeration(), records=records), "127.0.0.1",
                             port)
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        if shipper is not None:
            shipper.stop()


def start(*args: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE)
    assert process.stdout is not None
    if process.stdout.readline().strip() != b"ready":
        raise RuntimeError(f"{args} did not start")
    return process


async def open_loop(url: str, rate: float, seconds: float) -> dict[str, float]:
    """Requests sent at a fixed rate whatever the answers do (no coordinated omission)."""
    latencies: list[float] = []
    failures = 0
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one() -> None:
            nonlocal failures
            began = time.perf_counter()
            try:
                async with session.post(url, data=BODY,
                                        headers={"Content-Type": "application/json"}) as r:
                    await r.read()
                    failures += r.status != 200
            except aiohttp.ClientError:
                failures += 1
            latencies.append(time.perf_counter() - began)

        for _ in range(int(rate)):  # warm up: one second
            await one()
        latencies.clear()
        tasks = []
        began = time.perf_counter()
        total = int(rate * seconds)
        for n in range(total):
            delay = began + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one()))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - began
    latencies.sort()
    return {"sent_rps": total / elapsed, "failures": failures,
            "p50_ms": latencies[len(latencies) // 2] * 1e3,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3}


MODES = ("none", "local", "records")


def latency(rate: float, seconds: float, directory: Path, store_url: str,
            modes: tuple[str, ...] = MODES) -> dict[str, dict[str, float]]:
    model_port = free_port()
    model = subprocess.Popen([sys.executable, str(HERE / "sidecar_server.py"), "model",
                              str(model_port)], stdout=subprocess.PIPE)
    assert model.stdout is not None and model.stdout.readline().strip() == b"ready"
    results: dict[str, dict[str, float]] = {}
    try:
        for mode in (*modes, *modes):  # interleaved against drift
            port = free_port()
            sidecar = start(__file__, "serve", str(port), f"http://127.0.0.1:{model_port}", mode,
                            str(directory / f"{mode}-{port}"), store_url)
            try:
                run = asyncio.run(open_loop(f"http://127.0.0.1:{port}/v1/chat/completions",
                                            rate, seconds))
            finally:
                sidecar.terminate()
                sidecar.wait()
            previous = results.get(mode)
            if previous is None or run["p99_ms"] < previous["p99_ms"]:
                results[mode] = run  # the better of two runs each: less noise from neighbours
    finally:
        model.terminate()
        model.wait()
    return results


def verify_million(count: int, directory: Path) -> dict[str, float]:
    log = RecordLog(directory / "million.jsonl", key=KEY)
    store = DirectoryStore(directory / "million-store")
    shipper = Shipper(log, store, key=EVIDENCE, service="bench/chat", pod="bench-0",
                      retention_days=1, max_records=10_000, max_bytes=8 << 20,
                      buffer_bytes=1 << 40)
    began = time.perf_counter()
    for n in range(count):
        log.append("label", user=f"u{n % 1000}", route="chat", article="Art.12",
                   produce_ids=[f"chat-{n:032x}"], flags=[])
        if n % 50_000 == 49_999:
            shipper.ship_once()
    shipper.ship_once()
    written = time.perf_counter() - began
    # The baseline: reading every segment once and hashing its bytes (SHA-256), which no
    # verification can beat; verify's ratio to it is what the machine's noise leaves comparable.
    began = time.perf_counter()
    for version in store.versions("records/"):
        hashlib.sha256(store.get(version.key)).digest()
    baseline = time.perf_counter() - began
    began = time.perf_counter()
    report = verify_store(store, EVIDENCE)
    checked = time.perf_counter() - began
    assert report.ok and report.records == count, report.problems[:3]
    began = time.perf_counter()
    one = verify_store(store, EVIDENCE, workers=1)
    single = time.perf_counter() - began
    assert one.ok and one.records == count, one.problems[:3]
    return {"records": count, "write+ship s": written, "verify s": checked,
            "verify 1 process s": single, "read+hash s": baseline,
            "verify records/s": count / checked,
            "store MB": sum(f.stat().st_size for f in (directory / "million-store").rglob("*")
                            if f.is_file()) / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--verify-records", type=int, default=1_000_000)
    parser.add_argument("--store", default=os.environ.get("HEGUI_EVIDENCE_STORE", ""),
                        help="an S3 store for the shipped run (credentials from the env)")
    parser.add_argument("--skip", action="append", default=[],
                        choices=["fsync", "latency", "verify"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hegui-bench-records-") as tmp:
        directory = Path(tmp)
        if "fsync" not in args.skip:
            print("== one append (ms):")
            for name, value in fsync_cost(directory).items():
                print(f"   {name:<24} {value:8.3f}")
        if "latency" not in args.skip:
            print(f"== sidecar at {args.rate:.0f} req/s for {args.seconds:.0f}s (labels on), "
                  f"records shipped to {args.store or 'a directory store'}:")
            found = latency(args.rate, args.seconds, directory, args.store)
            for mode, run in found.items():
                print(f"   {mode:<8} sent {run['sent_rps']:7.0f}/s  failures {run['failures']:.0f}"
                      f"  p50 {run['p50_ms']:7.2f} ms  p99 {run['p99_ms']:7.2f} ms")
            for base in ("none", "local"):
                added = found["records"]["p99_ms"] - found[base]["p99_ms"]
                print(f"   shipped records against {base}: {added:+.2f} ms to p99 "
                      f"(ratio {found['records']['p99_ms'] / found[base]['p99_ms']:.2f})")
        if "verify" not in args.skip:
            result = verify_million(args.verify_records, directory)
            print(f"== verify: {result['records']:.0f} records ({result['store MB']:.0f} MB) in "
                  f"{result['verify s']:.1f}s ({result['verify records/s']:.0f}/s, "
                  f"{os.cpu_count()} CPUs), in one process {result['verify 1 process s']:.1f}s; "
                  f"reading and hashing the same bytes {result['read+hash s']:.1f}s (ratio "
                  f"{result['verify s'] / result['read+hash s']:.1f}); writing and "
                  f"shipping them took {result['write+ship s']:.1f}s")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        port, upstream, mode, directory = sys.argv[2:6]
        store_url = sys.argv[6] if len(sys.argv) > 6 else ""
        asyncio.run(serve(int(port), upstream, mode, directory, store_url))
    else:
        main()
