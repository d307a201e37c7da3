"""Leader election on a coordination.k8s.io Lease, as client-go's leaderelection does.

Two operator replicas run; one holds the Lease and reconciles, the other waits. The holder renews
every `renew` seconds; a standby takes the Lease over once it has not been renewed for
`duration` seconds, so a killed leader is replaced within about `duration + retry` seconds. A
leader that cannot renew before its own Lease would expire stops reconciling at once (the
process exits and its Deployment restarts it as a standby): two leaders never act together, so
a suspension is neither written twice nor lost (the new leader reads it back from status).

While it waits, a standby serves the liveness endpoint itself (`StandbyHealth`): healthy as long
as its election loop keeps trying, so the kubelet restarts a stuck standby but never a waiting
one.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _micro(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class LeaseElection:
    coordination: Any  # kubernetes.client.CoordinationV1Api
    namespace: str
    name: str
    identity: str
    duration: float = 15.0
    renew: float = 5.0
    retry: float = 2.0
    #: time.monotonic() of the last attempt to take the Lease (liveness of a standby).
    last_attempt: float = 0.0

    def _read(self) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            response = self.coordination.read_namespaced_lease(self.name, self.namespace,
                                                               _preload_content=False)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        import json

        lease: dict[str, Any] = json.loads(response.data)
        return lease

    def try_acquire(self) -> bool:
        """One attempt: take the Lease if it is free, expired or ours; renew it if ours."""
        from kubernetes.client.exceptions import ApiException

        now = _now()
        lease = self._read()
        spec: dict[str, Any] = {"holderIdentity": self.identity,
                                "leaseDurationSeconds": int(self.duration),
                                "renewTime": _micro(now)}
        try:
            if lease is None:
                spec.update(acquireTime=_micro(now), leaseTransitions=0)
                self.coordination.create_namespaced_lease(self.namespace, {
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": spec})
                return True
            held = lease.get("spec") or {}
            holder = held.get("holderIdentity")
            renewed = held.get("renewTime")
            expired = renewed is None or (
                now - dt.datetime.fromisoformat(renewed.replace("Z", "+00:00"))
                > dt.timedelta(seconds=float(held.get("leaseDurationSeconds") or self.duration)))
            if holder not in (None, "", self.identity) and not expired:
                return False
            if holder == self.identity:
                spec["acquireTime"] = held.get("acquireTime") or _micro(now)
                spec["leaseTransitions"] = held.get("leaseTransitions") or 0
            else:
                spec["acquireTime"] = _micro(now)
                spec["leaseTransitions"] = int(held.get("leaseTransitions") or 0) + 1
            # resourceVersion makes this a compare-and-swap: of two standbys, one wins.
            self.coordination.replace_namespaced_lease(self.name, self.namespace, {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace,
                             "resourceVersion": lease["metadata"]["resourceVersion"]},
                "spec": spec})
            return True
        except ApiException as error:
            if error.status == 409:  # someone else wrote it first
                return False
            raise

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Block until this replica leads (True) or `stop` is set (False)."""
        announced = False
        while not (stop and stop.is_set()):
            self.last_attempt = time.monotonic()
            try:
                if self.try_acquire():
                    log.info("leading as %s (lease %s/%s)", self.identity, self.namespace,
                             self.name)
                    return True
            except Exception as error:  # an apiserver hiccup: try again
                log.warning("leader election: %s", error)
            if not announced:
                log.info("standing by: lease %s/%s is held by another replica", self.namespace,
                         self.name)
                announced = True
            time.sleep(self.retry)
        return False

    def keep(self, lost: Callable[[], None], stop: threading.Event) -> threading.Thread:
        """Renew in a daemon thread; call `lost` once renewing has failed for longer than the
        Lease lasts (another replica may take it over from then on)."""

        def renew() -> None:
            last = time.monotonic()
            while not stop.wait(self.renew):
                try:
                    if self.try_acquire():
                        last = time.monotonic()
                        continue
                    taken = True  # another replica holds it now
                except Exception as error:  # an apiserver hiccup: try again
                    log.warning("leader election: renew failed: %s", error)
                    taken = False
                if taken or time.monotonic() - last > self.duration - self.renew:
                    log.error("lost the lease %s/%s: stopping", self.namespace, self.name)
                    lost()
                    return

        thread = threading.Thread(target=renew, name="lease-renewer", daemon=True)
        thread.start()
        return thread


class StandbyHealth:
    """`/healthz` of a replica waiting for the Lease: 200 while its election loop has tried
    within the last few retries, 500 once it has not (stuck). Answers every path the same way,
    like kopf's liveness endpoint, on the same address."""

    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self.server, self.thread = server, thread

    @classmethod
    def serve(cls, url: str, election: LeaseElection) -> StandbyHealth:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit

        where = urlsplit(url)
        stale_after = max(election.retry * 5, 10.0)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                waited = time.monotonic() - (election.last_attempt or time.monotonic())
                healthy = waited < stale_after
                body = (b'{"standby": "waiting for the lease"}' if healthy
                        else b'{"standby": "the election loop is stuck"}')
                self.send_response(200 if healthy else 500)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        server = ThreadingHTTPServer((where.hostname or "0.0.0.0", where.port or 8081),  # noqa: S104
                                     Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, name="standby-health",
                                  daemon=True)
        thread.start()
        log.info("standby: serving liveness on %s while waiting for the lease", url)
        return cls(server, thread)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
