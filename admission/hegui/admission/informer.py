"""List-and-watch of the objects the webhook's rules read, into memory.

The webhook answers from memory (no API call per review), so it keeps its own copy of hegui's
objects and of DRA claims: one thread per resource lists it, then watches from the list's
resourceVersion, and lists again when the watch expires (410 Gone) or breaks. A resource whose CRD
is not installed yet is retried until it appears. `synced()` turns true once every resource has
been listed once; the webhook reports ready only then.

Every list *replaces* the view: what the previous view held and the new list lacks was deleted
while the watch was down, and is handed on as DELETED (a revoked ComplianceException stops
working at the next list, not never). Failures back off exponentially, 410 Gone included after
the first: an apiserver that keeps expiring the watch is not listed in a tight loop.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)


Handler = Callable[[str, Mapping[str, Any]], None]  # ("ADDED"|"MODIFIED"|"DELETED", object)


@dataclass(frozen=True)
class Resource:
    """A collection to mirror: a named API group's resource, or the core group's namespaces."""

    group: str
    version: str
    plural: str
    #: Set on every object handed on: list responses of built-in kinds omit it.
    kind: str
    #: Optional resources (e.g. DRA on an older cluster) never hold readiness back.
    required: bool = True

    @property
    def path(self) -> str:
        return f"/apis/{self.group}/{self.version}/{self.plural}" if self.group else "/api/v1"


class Informer:
    def __init__(self, api_client: k8s.ApiClient, resource: Resource, handle: Handler,
                 *, stop: threading.Event, watch_timeout: int = 300) -> None:
        self.api_client, self.resource, self.handle = api_client, resource, handle
        self.stop, self.watch_timeout = stop, watch_timeout
        self.listed = threading.Event()
        #: The view as last listed and watched, by (namespace, name).
        self.known: dict[tuple[str, str], Mapping[str, Any]] = {}
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"informer-{resource.plural}")

    def _request(self, **query: Any) -> Any:
        """GET the collection; `watch.Watch` calls this with watch=True and its own options."""
        if not self.resource.group:
            if self.resource.plural != "namespaces":
                raise ValueError("of the core group, only namespaces are mirrored")
            result = k8s.CoreV1Api(self.api_client).list_namespace(**query)
            return result if query.get("watch") else self.api_client.sanitize_for_serialization(
                result)
        return k8s.CustomObjectsApi(self.api_client).list_cluster_custom_object(
            self.resource.group, self.resource.version, self.resource.plural, **query)

    def _list(self) -> str:
        listing = self._request()
        seen: dict[tuple[str, str], Mapping[str, Any]] = {}
        for item in listing.get("items", []):
            item = {**item, "kind": self.resource.kind}
            self.handle("ADDED", item)
            seen[_key(item)] = item
        for gone in self.known.keys() - seen.keys():
            # Deleted while the watch was down: the new list is the whole truth.
            self.handle("DELETED", self.known[gone])
        self.known = seen
        self.handle("SYNCED", {"items": list(seen.values())})
        self.listed.set()
        return str(listing.get("metadata", {}).get("resourceVersion", ""))

    def _watch(self, version: str) -> int:
        """Follow changes from `version` until the watch ends; the events seen."""
        events = 0
        stream = watch.Watch()
        for event in stream.stream(
                self._request, watch=True, resource_version=version,
                allow_watch_bookmarks=True, timeout_seconds=self.watch_timeout):
            if self.stop.is_set():
                stream.stop()
                break
            kind, obj = event["type"], event["raw_object"]
            events += 1
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                obj = {**obj, "kind": self.resource.kind}
                if kind == "DELETED":
                    self.known.pop(_key(obj), None)
                else:
                    self.known[_key(obj)] = obj
                self.handle(kind, obj)
        return events

    def _run(self) -> None:
        failures = 0
        while not self.stop.is_set():
            try:
                version = self._list()
                self._watch(version)
                failures = 0  # the watch ran to its timeout: the apiserver is well
            except ApiException as error:
                if error.status == 404 and not self.resource.required:
                    self.listed.set()  # the API is absent on this cluster: nothing to index
                failures += 1
                if error.status == 410 and failures == 1:
                    continue  # the watch expired once: list again at once
                log.warning("listing or watching %s failed (%s, %d in a row); retrying in "
                            "%.1fs", self.resource.path, error.status, failures,
                            self.backoff(failures))
                self.stop.wait(self.backoff(failures))
            except Exception:
                failures += 1
                log.exception("watch of %s broke; listing again in %.1fs", self.resource.path,
                              self.backoff(failures))
                self.stop.wait(self.backoff(failures))

    def backoff(self, failures: int) -> float:
        """Seconds to wait after `failures` failures in a row: 0.5s doubling up to 30s, with up
        to 10% jitter so replicas do not list in step."""
        delay: float = min(0.5 * 2 ** max(failures - 1, 0), 30.0)
        return delay * (1 + random.random() / 10)  # noqa: S311 - jitter, not a secret


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class InformerSet:
    def __init__(self, api_client: k8s.ApiClient,
                 handlers: Mapping[Resource, Handler]) -> None:
        self.stop = threading.Event()
        self.informers = [Informer(api_client, resource, handle, stop=self.stop)
                          for resource, handle in handlers.items()]

    def start(self) -> None:
        for informer in self.informers:
            informer.thread.start()

    def synced(self) -> bool:
        return all(i.listed.is_set() for i in self.informers if i.resource.required)

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.synced():
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self.stop.set()
