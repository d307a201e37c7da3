"""Evidence under load (Art.11): what shipping records costs a request at --rate requests a
second, and what the sidecar does when the evidence store goes away mid-traffic and comes back.
Ratios against baselines measured in the same run only: the machine is shared and noisy.

    .venv/bin/python bench/evidence_load.py [--rate 1000] [--seconds 10] [--buffer-bytes 65536]
                                            [--skip ratio|outage] [--vegeta PATH] [--no-pin]

1. Ratio: bench/records.py's latency run (the sidecar without records, with records kept in the
   pod only, shipped to a directory store, shipped to a real MinIO from the shipper thread
   as before and through the store's worker process as now), interleaved: p99 and its
   ratios, the sidecar's CPU a request and the shipper's a second. As there: the sidecar alone
   on CPU 0 and the rest (MinIO included) on the others unless --no-pin, vegeta as the load
   generator when found (--vegeta; how to get it: bench/records.py).
2. Outage, once per fail mode (Closed, Open): the sidecar ships to a real MinIO through a TCP
   relay this process owns; the relay stops listening for --down seconds (the store is
   unreachable: connections refused) and listens again. The sidecar process samples its own
   buffer every 10 ms. Reported per phase (before, down, after): answers by status and their
   p99; the buffer's peak against its bound; records lost (Open) and the `loss` record that
   says so; that the store ends with one verified chain, nothing twice, and every record the
   sidecar kept.

The MinIO is started by this script from the control plane's binaries (dev/controlplane/build
minio), on its own port and directory, and stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from records import (  # noqa: E402
    BODY,
    EVIDENCE,
    KEY,
    LABELING,
    MODES,
    NoModeration,
    describe_load,
    find_vegeta,
    latency,
    pin,
    print_latency,
)

from hegui.evidence.shipper import Shipper  # noqa: E402
from hegui.evidence.store import S3Store  # noqa: E402
from hegui.moderation.records import RecordLog  # noqa: E402
from hegui.moderation.tritonserver import free_port  # noqa: E402

# --- the sidecar, in its own process ------------------------------------------------------------


async def serve(port: int, upstream: str, directory: str, store_url: str, fail_mode: str,
                buffer_bytes: int, service: str) -> None:
    from hegui.api.generativeservice import Labeling
    from hegui.sidecar.app import Sidecar
    from hegui.sidecar.app import serve as serve_app
    from hegui.sidecar.config import SidecarConfig
    from hegui.sidecar.testing import posture

    records = RecordLog(Path(directory) / "records.jsonl", key=KEY)
    store = S3Store(store_url, access_key=os.environ["HEGUI_EVIDENCE_ACCESS_KEY"],
                    secret_key=os.environ["HEGUI_EVIDENCE_SECRET_KEY"], timeout=1.0, retries=0)
    shipper = Shipper(records, store, key=EVIDENCE, service=service, pod="bench-0",
                      retention_days=1, buffer_bytes=buffer_bytes,
                      fail_open=fail_mode == "Open", interval=0.2)
    shipper.start()
    samples: list[tuple[float, int, int, bool]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.01):
            samples.append((time.time(), records.unshipped_bytes, records.lost, shipper.up))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    config = SidecarConfig(posture(), labeling=Labeling.from_dict(LABELING), upstream=upstream,
                           pseudonymisation_key=KEY, service=service)
    runner = await serve_app(Sidecar(config, NoModeration(), records=records), "127.0.0.1",
                             port)
    done = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, done.set)
    print("ready", flush=True)
    await done.wait()
    await runner.cleanup()
    shipper.stop()
    stop.set()
    sampler.join()
    print(json.dumps({"samples": samples, "limit": buffer_bytes, "lost": records.lost,
                      "seq": records.seq, "shipped_seq": records.shipped_seq,
                      "unshipped_bytes": records.unshipped_bytes,
                      "file_bytes": records.path.stat().st_size}), flush=True)


# --- the store's way in: a TCP relay that can stop listening -----------------------------------


class Relay:
    """Forwards 127.0.0.1:port to the store; `down()` closes the listener and every
    connection (what a client then meets: connection refused), `up()` listens again."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self.writers -= {writer, up_writer}

    async def up(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port,
                                                 reuse_address=True)

    async def down(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()


async def drive(url: str, rate: float, seconds: float, relay: Relay, down_at: float,
                down_for: float) -> tuple[float, list[tuple[float, int, float]]]:
    """Open loop at `rate`; the relay goes down at `down_at` s for `down_for` s. Each answer as
    (sent, status, latency s); and the wall-clock time the load began."""
    answers: list[tuple[float, int, float]] = []
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one(sent: float) -> None:
            began = time.perf_counter()
            try:
                async with session.post(url, data=BODY,
                                        headers={"Content-Type": "application/json"}) as r:
                    await r.read()
                    status = r.status
            except aiohttp.ClientError:
                status = 0
            answers.append((sent, status, time.perf_counter() - began))

        async def outage() -> None:
            await asyncio.sleep(down_at)
            await relay.down()
            await asyncio.sleep(down_for)
            await relay.up()

        for _ in range(int(rate)):  # warm up: one second's worth, one at a time
            await one(0.0)
        answers.clear()
        wall = time.time()
        began = time.perf_counter()
        switching = asyncio.ensure_future(outage())
        tasks = []
        for n in range(int(rate * seconds)):
            delay = began + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(n / rate)))
        await asyncio.gather(*tasks, switching)
    return wall, answers


def _p99(values: list[float]) -> float:
    values = sorted(values)
    return values[int(len(values) * 0.99)] * 1e3 if values else float("nan")


def outage(fail_mode: str, rate: float, seconds: float, down_at: float, down_for: float,
           buffer_bytes: int, directory: Path, store: Any) -> dict[str, Any]:
    from hegui.evidence.cli import export_records
    from hegui.evidence.verify import verify_store

    service = f"bench-{fail_mode.lower()}-{time.time_ns() % 10**8}/chat"
    relay = Relay(store.port)
    model_port, port = free_port(), free_port()
    model = subprocess.Popen([sys.executable, str(HERE / "sidecar_server.py"), "model",
                              str(model_port)], stdout=subprocess.PIPE)
    assert model.stdout is not None and model.stdout.readline().strip() == b"ready"

    log_path = directory / f"{fail_mode}-sidecar.log"
    log = log_path.open("w")

    async def run() -> tuple[float, list[tuple[float, int, float]], dict[str, Any]]:
        await relay.up()
        sidecar = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "serve", str(port), f"http://127.0.0.1:{model_port}",
            str(directory / f"{fail_mode}-{port}"),
            f"http://127.0.0.1:{relay.port}/{store.url.rpartition('/')[2]}", fail_mode,
            str(buffer_bytes), service, stdout=asyncio.subprocess.PIPE, stderr=log,
            env={**os.environ, **store.sidecar.env()})
        assert sidecar.stdout is not None
        if (await sidecar.stdout.readline()).strip() != b"ready":
            raise RuntimeError("the sidecar did not start")
        try:
            wall, answers = await drive(f"http://127.0.0.1:{port}/v1/chat/completions", rate,
                                        seconds, relay, down_at, down_for)
            await asyncio.sleep(2.0)  # the shipper's next cycles drain the buffer
        finally:
            sidecar.send_signal(signal.SIGTERM)
            out, _ = await sidecar.communicate()
            await relay.down()
        return wall, answers, json.loads(out.decode().strip().splitlines()[-1])

    try:
        wall, answers, server = asyncio.run(run())
    finally:
        model.terminate()
        model.wait()
        log.close()
    phases = {"before": (0.0, down_at), "down": (down_at, down_at + down_for),
              "after": (down_at + down_for, seconds)}
    result: dict[str, Any] = {"fail mode": fail_mode, "limit": server["limit"]}
    for name, (start, end) in phases.items():
        mine = [a for a in answers if start <= a[0] < end]
        statuses: dict[int, int] = {}
        for _, status, _ in mine:
            statuses[status] = statuses.get(status, 0) + 1
        result[name] = {"statuses": statuses,
                        "p99 ok ms": _p99([a[2] for a in mine if a[1] == 200]),
                        "p99 refused ms": _p99([a[2] for a in mine if a[1] == 503])}
    samples = server["samples"]
    result["buffer peak"] = max(s[1] for s in samples)
    result["lost"] = server["lost"]
    refused = [a[0] for a in answers if a[1] == 503]
    result["first refusal s after down"] = (min(refused) - down_at) if refused else None
    back = [t - wall for t, _, _, up in samples if up and t - wall > down_at + down_for]
    result["store up again s after relay"] = (back[0] - down_at - down_for) if back else None
    drained = [t - wall for t, unshipped, _, _ in samples
               if t - wall > down_at + down_for and unshipped < 4096]
    result["buffer drained s after relay"] = (drained[0] - down_at - down_for) if drained \
        else None
    result["left in the pod bytes"] = server["unshipped_bytes"]
    root = S3Store(store.url, access_key=store.root.access_key,
                   secret_key=store.root.secret_key)
    shipped = list(export_records(root, service=service))
    kinds: dict[str, int] = {}
    for record in shipped:
        kinds[record["kind"]] = kinds.get(record["kind"], 0) + 1
    result["store records"] = kinds
    result["store seqs unique and gapless"] = sorted(r["seq"] for r in shipped) == list(
        range(1, server["seq"] + 1))
    result["loss records say lost"] = sum(int(r.get("lost", 0)) for r in shipped
                                          if r["kind"] == "loss")
    report = verify_store(root, EVIDENCE, stream_prefix=service.split("/")[0] + "/")
    result["verify"] = "ok" if report.ok else report.problems[:3]
    result["answered 200"] = sum(1 for a in answers if a[1] == 200)
    said = log_path.read_text(encoding="utf-8").splitlines()
    result["sidecar log lines"] = len(said)
    result["of which 'cannot write a record'"] = sum("cannot write a record" in line
                                                     for line in said)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=10.0, help="a run (a round: each mode)")
    parser.add_argument("--rounds", type=int, default=4,
                        help="interleaved rounds of the latency runs, pooled")
    parser.add_argument("--down-at", type=float, default=2.0)
    parser.add_argument("--down", type=float, default=4.0, help="seconds the store is away")
    parser.add_argument("--buffer-bytes", type=int, default=64 << 10)
    parser.add_argument("--skip", action="append", default=[], choices=["ratio", "outage"])
    parser.add_argument("--vegeta", help="vegeta's binary (bench/records.py says how to get it)")
    parser.add_argument("--no-pin", action="store_true",
                        help="run the sidecar anywhere, not alone on CPU 0")
    args = parser.parse_args()
    every = os.sched_getaffinity(0)
    cpus = None if args.no_pin or "ratio" in args.skip else pin()  # before MinIO starts
    from hegui.localcluster.cluster import default_home
    from hegui.localcluster.objectstore import LocalObjectStore

    with tempfile.TemporaryDirectory(prefix="hegui-bench-evidence-") as tmp:
        directory = Path(tmp)
        store = LocalObjectStore(home=directory / "store", port=free_port(),
                                 bin_dir=default_home() / "controlplane" / "bin")
        store.up(timeout=120)
        try:
            if "ratio" not in args.skip:
                os.environ.update(store.sidecar.env())
                vegeta = find_vegeta(args.vegeta)
                print(f"== sidecar at {args.rate:.0f} req/s for {args.seconds:.0f}s (labels on),"
                      f" records shipped to a real MinIO, {describe_load(cpus, vegeta)}:")
                print_latency(latency(args.rate, args.seconds, directory, store.url,
                                      (*MODES, "s3-thread", "s3"), cpus=cpus, vegeta=vegeta,
                                      rounds=args.rounds))
                print(f"   load average after: {os.getloadavg()[0]:.2f}")
                os.sched_setaffinity(0, every)
            if "outage" not in args.skip:
                for mode in ("Closed", "Open"):
                    result = outage(mode, args.rate, args.seconds, args.down_at, args.down,
                                    args.buffer_bytes, directory, store)
                    print(f"== store away {args.down:.0f}s at {args.rate:.0f} req/s, buffer "
                          f"{args.buffer_bytes} bytes, fail mode {mode}:")
                    for key, value in result.items():
                        print(f"   {key:<32} {value}")
        finally:
            store.down()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        port, upstream, directory, store_url, fail_mode, buffer, service = sys.argv[2:9]
        asyncio.run(serve(int(port), upstream, directory, store_url, fail_mode, int(buffer),
                          service))
    else:
        main()
