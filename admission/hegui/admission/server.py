"""The admission webhook's HTTPS server (aiohttp).

Routes: POST /validate (validating webhook), GET /healthz, GET /readyz (ready once the in-memory
indexes have synced), GET /metrics. Every request body is bounded and every failure to understand
one is answered (see review.py); the handler never raises into aiohttp.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from hegui.admission import review
from hegui.admission.tls import ReloadingCertificate

log = logging.getLogger(__name__)

Validator = review.Validator


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "hegui_admission_requests", "Admission reviews answered, by webhook and decision.",
            ["webhook", "decision"], registry=registry)
        self.duration = Histogram(
            "hegui_admission_review_duration_seconds", "Time to answer one admission review.",
            ["webhook"], registry=registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))
        self.malformed = Counter(
            "hegui_admission_malformed_requests", "Bodies that were not AdmissionReviews.",
            ["webhook"], registry=registry)


def _decision_label(decision: review.Decision) -> str:
    if not decision.allowed:
        return "denied"
    return "warned" if decision.warnings else "allowed"


async def _read_bounded(request: web.Request) -> bytes:
    """The body, or a ReviewError(413) as soon as it is known to exceed the bound."""
    limit = review.MAX_BODY_BYTES
    if request.content_length is not None and request.content_length > limit:
        raise review.ReviewError(f"body of {request.content_length} bytes exceeds {limit}", 413)
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise review.ReviewError(f"body exceeds {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def make_app(validator: Validator, *, mutator: Validator | None = None,
             ready: Callable[[], bool] = lambda: True,
             registry: CollectorRegistry | None = None) -> web.Application:
    registry = registry or CollectorRegistry()
    metrics = Metrics(registry)

    def review_handler(webhook: str, decide: Validator) -> Callable[
            [web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            started = time.perf_counter()
            try:
                admission = review.parse(await _read_bounded(request))
            except review.ReviewError as error:
                metrics.malformed.labels(webhook).inc()
                return web.json_response({"error": str(error)}, status=error.http_status)
            try:
                decision = decide(admission)
            except Exception:
                # A bug in a rule must not decide for the cluster: answer with an explicit
                # error the apiserver shows, and let the failurePolicy apply as for any
                # webhook failure.
                log.exception("%s failed for %s %s/%s", webhook, admission.kind,
                              admission.namespace, admission.name)
                decision = review.Decision(False, "hegui: internal error evaluating rules; see "
                                           "the webhook's log", code=500)
            metrics.requests.labels(webhook, _decision_label(decision)).inc()
            metrics.duration.labels(webhook).observe(time.perf_counter() - started)
            return web.Response(
                body=json.dumps(review.respond(admission.uid, decision)).encode(),
                content_type="application/json")
        return handle

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        return web.Response(text="ok") if ready() else web.Response(text="syncing", status=503)

    async def metrics_page(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    # The body limit is enforced in the handler, with an answer; aiohttp's own is just above it.
    app = web.Application(client_max_size=review.MAX_BODY_BYTES + 64 * 1024)
    app.router.add_post("/validate", review_handler("validate", validator))
    if mutator is not None:
        app.router.add_post("/mutate", review_handler("mutate", mutator))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    return app


async def serve(app: web.Application, *, host: str, port: int, cert_file: Path,
                key_file: Path, reload_interval: float = 2.0,
                on_bound: Callable[[int], None] | None = None) -> None:
    """Serve until cancelled, reloading the certificate when its files change.

    `on_bound` receives the port actually bound (useful with port 0).
    """
    certificate = ReloadingCertificate(cert_file, key_file)
    # lingering_time bounds how long an unread (refused) body is drained before closing.
    runner = web.AppRunner(app, access_log=None, lingering_time=1.0, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=certificate.context)
    await site.start()
    assert runner.addresses, "the site bound no address"
    bound: int = runner.addresses[0][1]
    if on_bound:
        on_bound(bound)
    log.info("admission webhook serving on https://%s:%d", host, bound)
    try:
        await certificate.watch(reload_interval)
    finally:
        await runner.cleanup()


def settle_heap() -> None:
    """Take every object alive now out of the cyclic garbage collector's full collections
    (gc.freeze): the modules, and the index's parsed objects once the watches have listed them.

    They live as long as the process, yet each full collection walks all of them, ~75,000
    objects with 200 GenerativeServices: 40-90 ms in which no review in flight is answered
    (issue 20, the tail). A serving webhook runs one whenever enough objects have outlived two
    young collections (requests in flight do); frozen, it walks only what was made since.
    Frozen objects are still freed when no longer referenced (an index entry a watch
    replaces); a cycle among them would not be, and none is made (the index holds parsed
    models in plain dicts)."""
    gc.collect()
    gc.freeze()


def run(validator: Validator, *, host: str, port: int, cert_file: Path, key_file: Path,
        mutator: Validator | None = None, ready: Callable[[], bool] = lambda: True,
        registry: CollectorRegistry | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then finish the reviews in flight (Kubernetes sends
    SIGTERM when it stops the pod; the apiserver would otherwise see dropped connections)."""
    app = make_app(validator, mutator=mutator, ready=ready, registry=registry)

    async def main() -> None:
        task = asyncio.create_task(serve(app, host=host, port=port, cert_file=cert_file,
                                         key_file=key_file))
        loop = asyncio.get_running_loop()

        def settle_when_ready() -> None:
            if ready():
                settle_heap()  # the watches have listed: the index is as large as it gets
            else:
                loop.call_later(0.5, settle_when_ready)

        settle_when_ready()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
