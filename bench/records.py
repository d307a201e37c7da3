"""Records benchmark (Art.11): what keeping evidence costs a request, what an fsync costs here,
and how long `verify` takes over a million shipped records. Ratios against a baseline measured
in the same run only: the machine is shared and noisy.

    .venv/bin/python bench/records.py [--rate 1000] [--seconds 10] [--verify-records 1000000]
                                      [--store http://127.0.0.1:16490/hegui-evidence]
                                      [--modes none,local,dir,s3] [--vegeta PATH] [--no-pin]

1. fsync: one durable append (an incident: block, mask, strike) against a batched one (the
   `label` of an ordinary answer, fsync'ed with others within 50 ms) and a plain write.
2. Latency: the sidecar (no moderation, labels on: one `label` record per answer) driven
   open-loop at --rate requests a second, without records (`none`), with records kept in the
   pod only (`local`, shipping off), shipped by a Shipper to a directory store (`dir`: the
   shipper's own work in the sidecar's process, no HTTP) and, given --store, to that S3 store
   (`s3`: the store's calls in a worker process, as the sidecar does; `s3-thread`: in the
   shipper thread, as it did before), interleaved: p50/p99, the p99 differences and ratios,
   the sidecar's CPU time a request, the shipper thread's and the worker's a second. With 2
   CPUs or more the sidecar runs on CPU 0 alone and everything else (this process, the fake
   model, the load generator, MinIO) on the others (--no-pin: anywhere), as a sidecar with its
   own core would.
   The load generator is vegeta when found (a Go constant-rate generator, far lighter than
   this process; exact rate, latency percentiles): --vegeta PATH, $HEGUI_VEGETA, .cache/bench/
   bin/vegeta or PATH. Get it with
       GOBIN=$PWD/.cache/bench/bin go install github.com/tsenart/vegeta/v12@v12.13.0
   Without it an aiohttp open loop in this process sends the load (and says so): at 1,000
   requests a second it needs about a CPU of its own.
3. verify: --verify-records records shipped as segments, then `verify_store` over them.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import json
import os
import shutil
import signal
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
from hegui.evidence.worker import ProcessStore  # noqa: E402
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


def thread_cpu(native_id: int | None, where: str = "self/task") -> float:
    """CPU seconds (user + system) a thread of this process (or a process, where="") has
    used; 0 when unknown."""
    if native_id is None:
        return 0.0
    try:
        fields = Path(f"/proc/{where}/{native_id}/stat".replace("//", "/")).read_text() \
            .rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def serve(port: int, upstream: str, mode: str, directory: str, store_url: str) -> None:
    from hegui.api.generativeservice import Labeling
    from hegui.sidecar.app import Sidecar
    from hegui.sidecar.app import serve as serve_app
    from hegui.sidecar.config import SidecarConfig
    from hegui.sidecar.testing import posture

    records = shipper = None
    store: Store | None = None
    if mode != "none":
        records = RecordLog(Path(directory) / "records.jsonl", key=KEY)
    if records is not None and mode in ("dir", "s3", "s3-thread"):
        store = DirectoryStore(Path(directory) / "store")
        if mode == "s3":  # as the sidecar ships: the store's calls in a worker process
            store = ProcessStore(functools.partial(open_store, store_url), store_url)
        elif mode == "s3-thread":  # as it did before: in the shipper thread
            store = open_store(store_url)
        shipper = Shipper(records, store, key=EVIDENCE, service="bench/chat", pod="bench-0",
                          retention_days=1)
        shipper.start()
    config = SidecarConfig(posture(), labeling=Labeling.from_dict(LABELING), upstream=upstream,
                           pseudonymisation_key=KEY, service="bench/chat")
    runner = await serve_app(Sidecar(config, NoModeration(), records=records), "127.0.0.1",
                             port)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, lambda: print(json.dumps(usage()), flush=True))
    loop.add_signal_handler(signal.SIGTERM, done.set)

    def usage() -> dict[str, float]:
        times = os.times()
        return {"cpu": times.user + times.system,
                "shipper_cpu": thread_cpu(shipper._thread.native_id if shipper and
                                          shipper._thread else None),
                "flusher_cpu": thread_cpu(records._flusher.native_id if records and
                                          records._flusher else None),
                "worker_cpu": thread_cpu(store._process.pid if isinstance(store, ProcessStore)
                                         and store._process else None, where=""),
                "records": records.seq if records else 0,
                "shipped": records.shipped_seq if records else 0}

    if shipper is not None and not shipper.drain(60.0):  # the worker started, the stream found
        raise SystemExit(f"cannot ship to {store_url or 'the directory store'}")
    print("ready", flush=True)
    await done.wait()
    await runner.cleanup()
    if shipper is not None:
        shipper.stop()


def start(*args: str, cpus: set[int] | None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HEGUI_BENCH_CPUS": ",".join(map(str, sorted(cpus)))} if cpus \
        else None
    process = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, env=env)
    assert process.stdout is not None
    if process.stdout.readline().strip() != b"ready":
        raise RuntimeError(f"{args} did not start")
    return process


def usage_of(process: subprocess.Popen[bytes]) -> dict[str, float]:
    """The sidecar's CPU so far (it prints it on SIGUSR1)."""
    assert process.stdout is not None
    process.send_signal(signal.SIGUSR1)
    found: dict[str, float] = json.loads(process.stdout.readline())
    return found


def pin() -> set[int] | None:
    """With 2 CPUs or more: the sidecar's CPU (0), this process and what it starts on the
    others; None when there is only one."""
    cpus = os.sched_getaffinity(0)
    if len(cpus) < 2:
        return None
    mine = min(cpus)
    os.sched_setaffinity(0, cpus - {mine})
    return {mine}


def find_vegeta(given: str | None) -> str | None:
    for candidate in (given, os.environ.get("HEGUI_VEGETA"),
                      str(HERE.parent / ".cache" / "bench" / "bin" / "vegeta"),
                      shutil.which("vegeta")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


class Run:
    """One measured run: each answer's latency (s), failures, the rate actually sent."""

    def __init__(self, latencies: list[float], failures: int, sent_rps: float) -> None:
        self.latencies, self.failures, self.sent_rps = latencies, failures, sent_rps


def vegeta_loop(vegeta: str, url: str, rate: float, seconds: float, directory: Path) -> Run:
    """vegeta's constant-rate attack (open loop: a new worker when every one is busy)."""
    body = directory / "body.json"
    body.write_bytes(BODY)
    targets = f"POST {url}\nContent-Type: application/json\n@{body}\n".encode()
    attacked = subprocess.run(
        [vegeta, "attack", f"-rate={rate:.0f}/s", f"-duration={seconds}s", "-timeout=30s",
         "-keepalive=true"], input=targets, capture_output=True, check=True)
    report = subprocess.run([vegeta, "report", "-type=json"], input=attacked.stdout,
                            capture_output=True, check=True)
    rows = subprocess.run([vegeta, "encode", "-to=csv"], input=attacked.stdout,
                          capture_output=True, check=True)
    latencies, failures = [], 0
    for row in rows.stdout.decode().splitlines():  # timestamp,code,latency ns,...
        fields = row.split(",", 3)
        latencies.append(int(fields[2]) / 1e9)
        failures += fields[1] != "200"
    return Run(latencies, failures, float(json.loads(report.stdout)["rate"]))


async def open_loop(url: str, rate: float, seconds: float) -> Run:
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
    return Run(latencies, failures, total / elapsed)


MODES = ("none", "local", "dir")


def latency(rate: float, seconds: float, directory: Path, store_url: str,
            modes: tuple[str, ...] = MODES, *, cpus: set[int] | None = None,
            vegeta: str | None = None, rounds: int = 4) -> dict[str, dict[str, float]]:
    """Each mode `rounds` times for `seconds`, interleaved so that the machine's drift and its
    neighbours fall on every mode alike; each mode's p50 over all its rounds' answers, the
    median of its rounds' p99 (their range, and the p99 of all answers pooled), with the
    sidecar's CPU a request and the shipper's, its worker's and the flusher's a second (after a
    warm-up second, the worker started)."""
    model_port = free_port()
    model = subprocess.Popen([sys.executable, str(HERE / "sidecar_server.py"), "model",
                              str(model_port)], stdout=subprocess.PIPE)
    assert model.stdout is not None and model.stdout.readline().strip() == b"ready"
    pooled: dict[str, list[float]] = {mode: [] for mode in modes}
    p99s: dict[str, list[float]] = {mode: [] for mode in modes}
    totals: dict[str, dict[str, float]] = {mode: {} for mode in modes}

    def load(url: str, at: float, duration: float) -> Run:
        return vegeta_loop(vegeta, url, at, duration, directory) if vegeta else \
            asyncio.run(open_loop(url, at, duration))

    try:
        for mode in modes * rounds:
            port = free_port()
            sidecar = start(__file__, "serve", str(port), f"http://127.0.0.1:{model_port}", mode,
                            str(directory / f"{mode}-{port}"), store_url, cpus=cpus)
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            try:
                load(url, min(rate, 200.0), 1.0)  # warm up
                before, began = usage_of(sidecar), time.perf_counter()
                run = load(url, rate, seconds)
                after, elapsed = usage_of(sidecar), time.perf_counter() - began
            finally:
                sidecar.terminate()
                sidecar.wait()
            pooled[mode] += run.latencies
            p99s[mode].append(sorted(run.latencies)[int(len(run.latencies) * 0.99)] * 1e3)
            sums = totals[mode]
            for name, value in (("sent_rps", run.sent_rps / rounds),
                                ("failures", run.failures),
                                ("cpu_ms_per_request",
                                 (after["cpu"] - before["cpu"]) * 1e3 / len(run.latencies)
                                 / rounds),
                                *((f"{part}_cpu_ms_per_s",
                                   (after[f"{part}_cpu"] - before[f"{part}_cpu"]) * 1e3
                                   / elapsed / rounds)
                                  for part in ("shipper", "worker", "flusher"))):
                sums[name] = sums.get(name, 0.0) + value
    finally:
        model.terminate()
        model.wait()
    for mode, latencies in pooled.items():
        latencies.sort()
        totals[mode]["p50_ms"] = latencies[len(latencies) // 2] * 1e3
        totals[mode]["pooled_p99_ms"] = latencies[int(len(latencies) * 0.99)] * 1e3
        # A neighbour's burst in one round makes that round's p99, and the pooled one, its
        # own; the median of the rounds' p99 is what the mode costs.
        totals[mode]["p99_ms"] = statistics.median(p99s[mode])
        totals[mode]["p99_min_ms"], totals[mode]["p99_max_ms"] = min(p99s[mode]), max(p99s[mode])
        totals[mode]["answers"] = len(latencies)
    return totals


def print_latency(found: dict[str, dict[str, float]]) -> None:
    for mode, run in found.items():
        print(f"   {mode:<9} sent {run['sent_rps']:5.0f}/s ({run['answers']:.0f} answers)  "
              f"failures {run['failures']:.0f}  "
              f"p50 {run['p50_ms']:6.2f} ms  p99 {run['p99_ms']:6.2f} ms (rounds "
              f"{run['p99_min_ms']:.1f}-{run['p99_max_ms']:.1f}, pooled "
              f"{run['pooled_p99_ms']:.1f})  "
              f"sidecar CPU {run['cpu_ms_per_request']:.3f} ms/request  shipper "
              f"{run['shipper_cpu_ms_per_s']:.1f} ms/s  worker "
              f"{run['worker_cpu_ms_per_s']:.1f} ms/s  flusher "
              f"{run['flusher_cpu_ms_per_s']:.1f} ms/s")
    for mode in found:
        for base in ("none", "local"):
            if mode in ("none", "local") or base not in found:
                continue
            added = found[mode]["p99_ms"] - found[base]["p99_ms"]
            print(f"   {mode} against {base}: {added:+.2f} ms to p99 "
                  f"(ratio {found[mode]['p99_ms'] / found[base]['p99_ms']:.2f})")
    if "local" in found and "none" in found:
        added = found["local"]["p99_ms"] - found["none"]["p99_ms"]
        print(f"   local against none: {added:+.2f} ms to p99 "
              f"(ratio {found['local']['p99_ms'] / found['none']['p99_ms']:.2f})")


def describe_load(cpus: set[int] | None, vegeta: str | None) -> str:
    where = (f"sidecar alone on CPU {min(cpus)}, the rest on CPUs "
             f"{','.join(map(str, sorted(os.sched_getaffinity(0))))}" if cpus
             else "everything on every CPU")
    return (f"{where}; load from {'vegeta' if vegeta else 'an aiohttp loop (no vegeta found)'}; "
            f"load average {os.getloadavg()[0]:.2f}")


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
    parser.add_argument("--seconds", type=float, default=10.0, help="a run (a round: each mode)")
    parser.add_argument("--rounds", type=int, default=4,
                        help="interleaved rounds of the latency runs, pooled")
    parser.add_argument("--verify-records", type=int, default=1_000_000)
    parser.add_argument("--store", default=os.environ.get("HEGUI_EVIDENCE_STORE", ""),
                        help="an S3 store for the `s3` mode (credentials from the env)")
    parser.add_argument("--modes", default="",
                        help="comma-separated, of none,local,dir,s3,s3-thread (default: all "
                             "that apply)")
    parser.add_argument("--vegeta", help="vegeta's binary (see above)")
    parser.add_argument("--no-pin", action="store_true",
                        help="run the sidecar anywhere, not alone on CPU 0")
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
            every = os.sched_getaffinity(0)
            cpus = None if args.no_pin else pin()
            vegeta = find_vegeta(args.vegeta)
            modes = tuple(args.modes.split(",")) if args.modes else \
                MODES + (("s3-thread", "s3") if args.store else ())
            print(f"== sidecar at {args.rate:.0f} req/s for {args.seconds:.0f}s (labels on), "
                  f"{describe_load(cpus, vegeta)}:")
            print_latency(latency(args.rate, args.seconds, directory, args.store, modes,
                                  cpus=cpus, vegeta=vegeta, rounds=args.rounds))
            print(f"   load average after: {os.getloadavg()[0]:.2f}")
            os.sched_setaffinity(0, every)
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
        if os.environ.get("HEGUI_BENCH_CPUS"):
            os.sched_setaffinity(0, {int(c) for c in os.environ["HEGUI_BENCH_CPUS"].split(",")})
        port, upstream, mode, directory = sys.argv[2:6]
        store_url = sys.argv[6] if len(sys.argv) > 6 else ""
        asyncio.run(serve(int(port), upstream, mode, directory, store_url))
    else:
        main()
