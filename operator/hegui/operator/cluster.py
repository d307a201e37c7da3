"""The few Kubernetes calls the operator makes, behind one narrow interface.

The reconcile path (handlers.py) talks to a `Cluster`: `KubeCluster` is the apiserver through the
kubernetes client; unit tests hand it an in-memory one. Errors are the kubernetes client's
`ApiException` with its HTTP status either way (404 gone, 409 conflict, 429 not now), so callers
decide on the status alone.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import kopf
import orjson


@dataclass(frozen=True)
class Kind:
    """A resource as the apiserver serves it: apiVersion, plural and kind."""

    api_version: str
    plural: str
    kind: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]


POD = Kind("v1", "pods", "Pod")
SERVICE = Kind("v1", "services", "Service")
CONFIG_MAP = Kind("v1", "configmaps", "ConfigMap")
DEPLOYMENT = Kind("apps/v1", "deployments", "Deployment")
STATEFUL_SET = Kind("apps/v1", "statefulsets", "StatefulSet")
REPLICA_SET = Kind("apps/v1", "replicasets", "ReplicaSet")
DAEMON_SET = Kind("apps/v1", "daemonsets", "DaemonSet")
JOB = Kind("batch/v1", "jobs", "Job")
CRON_JOB = Kind("batch/v1", "cronjobs", "CronJob")
NETWORK_POLICY = Kind("networking.k8s.io/v1", "networkpolicies", "NetworkPolicy")
POLICY_REPORT = Kind("wgpolicyk8s.io/v1alpha2", "policyreports", "PolicyReport")


class Cluster(Protocol):
    """What the operator reads and writes. Every call raises the kubernetes client's
    `ApiException` on an HTTP error."""

    def objects(self, kind: Kind, namespace: str | None = None,
                labels: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """The objects of `kind` in `namespace` (None: every namespace), those with all of
        `labels` when given; items carry no apiVersion/kind, as a list's items do not."""

    def pages(self, kind: Kind, size: int) -> Iterator[list[dict[str, Any]]]:
        """The objects of `kind` in every namespace, `size` at a time (the list API's
        limit/continue), so a reader of all of them never holds them all."""

    def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any]: ...

    def create(self, kind: Kind, namespace: str, body: dict[str, Any]) -> None: ...

    def replace(self, kind: Kind, namespace: str, name: str, body: dict[str, Any]) -> None: ...

    def delete(self, kind: Kind, namespace: str, name: str) -> None: ...

    def patch_status(self, kind: Kind, namespace: str, name: str,
                     status: dict[str, Any]) -> None:
        """A merge patch of the object's status subresource."""

    def evict(self, namespace: str, pod: str) -> None:
        """The Eviction API (it honours PodDisruptionBudgets: 429 while one says not now)."""

    def resources(self, api_version: str) -> list[dict[str, Any]]:
        """Discovery: the resources `api_version` serves (name, kind, ...), subresources
        included as `plural/sub`."""

    def get_scale(self, kind: Kind, namespace: str, name: str) -> int:
        """spec.replicas of the object's scale subresource."""

    def patch_scale(self, kind: Kind, namespace: str, name: str, replicas: int) -> None: ...

    def event(self, body: kopf.Body, *, type: str, reason: str, message: str) -> None:
        """A Kubernetes Event about `body` (posted by kopf in the background)."""


def connection_info(kubeconfig: str) -> kopf.ConnectionInfo:
    """kopf's credentials from a kubeconfig file."""
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    # A kubeconfig authenticates by client certificate or by bearer token (a ServiceAccount's).
    # (The key is "BearerToken" in kubernetes-client 30+, "authorization" in older releases.)
    raw = configuration.api_key.get("BearerToken") or configuration.api_key.get("authorization")
    token = (raw or "").removeprefix("Bearer ").strip()
    return kopf.ConnectionInfo(
        server=configuration.host, ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl, certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
        scheme="Bearer" if token else None, token=token or None)


def decode(raw: bytes | str) -> Any:
    """An answer's JSON. orjson first: the namespace listings a reconcile reads (a namespace's
    pods are hundreds of kilobytes) were decoded with the json module in a fifth of the
    operator's CPU at 1,000 services, and orjson takes a third of that or less (issue 20,
    scale). What orjson refuses and json reads (a lone surrogate escape, 1e400) is read by
    json, as before. (An integer beyond 64 bits reads as a float, as the apiserver itself
    keeps one in an object it does not know the schema of.)"""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


class KubeCluster:
    """`Cluster` on the apiserver, through the kubernetes client's ApiClient: requests by path,
    raw JSON both ways (nothing is deserialised into the client's models). The client's typed
    API classes are not used: importing them took seconds of the operator's start (and of its
    time to converge), and each call was validated by pydantic on the way (issue 20)."""

    def __init__(self, api: Any) -> None:
        self.api = api

    def warm(self) -> None:
        """Nothing to warm: requests go by path (kept for callers that start it)."""

    @staticmethod
    def _path(kind: Kind, namespace: str | None = None, name: str | None = None,
              sub: str | None = None) -> str:
        base = f"/api/{kind.version}" if not kind.group else f"/apis/{kind.api_version}"
        where = f"/namespaces/{namespace}" if namespace is not None else ""
        return base + where + f"/{kind.plural}" + "".join(f"/{p}" for p in (name, sub) if p)

    def _call(self, method: str, path: str, body: Any = None,
              query: list[tuple[str, Any]] | None = None,
              content_type: str = "application/json") -> Any:
        """One request; an HTTP error raises ApiException (404 NotFoundException, ...) as the
        typed APIs do."""
        from kubernetes.client.exceptions import ApiException

        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        request = self.api.param_serialize(method=method, resource_path=path,
                                           query_params=query or [], header_params=headers,
                                           body=body, auth_settings=["BearerToken"])
        response = self.api.call_api(*request)
        response.read()
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        return decode(response.data) if response.data else None

    def objects(self, kind: Kind, namespace: str | None = None,
                labels: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        query = [("labelSelector", ",".join(f"{k}={v}" for k, v in sorted(labels.items())))
                 ] if labels else []
        items: list[dict[str, Any]] = (self._call("GET", self._path(kind, namespace),
                                                  query=query) or {}).get("items") or []
        return items

    def pages(self, kind: Kind, size: int) -> Iterator[list[dict[str, Any]]]:
        token: str | None = None
        while True:
            query: list[tuple[str, Any]] = [("limit", size)]
            if token:
                query.append(("continue", token))
            found = self._call("GET", self._path(kind), query=query) or {}
            yield found.get("items") or []
            token = (found.get("metadata") or {}).get("continue")
            if not token:
                return

    def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self._call("GET", self._path(kind, namespace, name))
        return found

    def create(self, kind: Kind, namespace: str, body: dict[str, Any]) -> None:
        self._call("POST", self._path(kind, namespace), body)

    def replace(self, kind: Kind, namespace: str, name: str, body: dict[str, Any]) -> None:
        self._call("PUT", self._path(kind, namespace, name), body)

    def delete(self, kind: Kind, namespace: str, name: str) -> None:
        self._call("DELETE", self._path(kind, namespace, name))

    def patch_status(self, kind: Kind, namespace: str, name: str,
                     status: dict[str, Any]) -> None:
        self._call("PATCH", self._path(kind, namespace, name, "status"), {"status": status},
                   content_type="application/merge-patch+json")

    def evict(self, namespace: str, pod: str) -> None:
        self._call("POST", self._path(POD, namespace, pod, "eviction"), {
            "apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": pod, "namespace": namespace}})

    def resources(self, api_version: str) -> list[dict[str, Any]]:
        group = api_version.rpartition("/")[0]
        found = self._call("GET", f"/apis/{api_version}" if group else f"/api/{api_version}")
        resources: list[dict[str, Any]] = (found or {}).get("resources") or []
        return resources

    def get_scale(self, kind: Kind, namespace: str, name: str) -> int:
        scale = self._call("GET", self._path(kind, namespace, name, "scale"))
        return int(((scale or {}).get("spec") or {}).get("replicas") or 0)

    def patch_scale(self, kind: Kind, namespace: str, name: str, replicas: int) -> None:
        self._call("PATCH", self._path(kind, namespace, name, "scale"),
                   {"spec": {"replicas": replicas}},
                   content_type="application/merge-patch+json")

    def event(self, body: kopf.Body, *, type: str, reason: str, message: str) -> None:
        kopf.event(body, type=type, reason=reason, message=message)


class _Listing:
    """One namespace's listing of one kind: filled once, read by every reconcile that asks
    while it is fresh (or in flight)."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.items: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self.at = 0.0  # when it was filled (the clock of SharedListings)


class SharedListings:
    """A `Cluster` whose namespaced listings are shared by the reconciles that ask within
    `max_age` seconds of one another (issue 20, scale).

    Every reconcile lists its namespace's pods, workloads, Services, NetworkPolicies and
    suspension requests; the services of one namespace are judged together (at start, and by
    timers started together), so without this each listing was made and decoded once per
    service: O(services x pods) JSON per pass, the operator's main cost. Here one listing
    serves them all; one in flight is waited for, not repeated. The operator's own writes of a
    kind in a namespace update that listing (what it created, replaced or deleted) or drop it
    (a status, an eviction, a scale), so a reconcile always sees what this process wrote (a
    request's outcome is never acted on twice); what others change shows at most `max_age`
    seconds late (a tenth of the reconcile interval at most). Cluster-wide listings (the
    audit's) and everything else pass straight through."""

    def __init__(self, cluster: Cluster, max_age: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cluster, self.max_age, self.clock = cluster, max_age, clock
        self._lock = threading.Lock()
        #: By kind, namespace and label selector.
        self._listings: dict[tuple[Kind, str, tuple[tuple[str, str], ...]], _Listing] = {}
        self._swept = 0.0

    def objects(self, kind: Kind, namespace: str | None = None,
                labels: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        if namespace is None:
            return self.cluster.objects(kind, None, labels)
        key = (kind, namespace, tuple(sorted((labels or {}).items())))
        with self._lock:
            now = self.clock()
            self._sweep(now)
            listing = self._listings.get(key)
            mine = listing is None or (listing.ready.is_set()
                                       and now - listing.at > self.max_age)
            if mine:
                listing = self._listings[key] = _Listing()
        assert listing is not None
        if mine:
            try:
                listing.items = self.cluster.objects(kind, namespace, labels)
            except BaseException as error:
                listing.error = error
                with self._lock:  # the next reconcile lists again
                    if self._listings.get(key) is listing:
                        del self._listings[key]
                raise
            finally:
                listing.at = self.clock()
                listing.ready.set()
        else:
            listing.ready.wait()
            if listing.error is not None:
                return self.cluster.objects(kind, namespace, labels)  # its own try and error
        return list(listing.items)  # a list of its own; the objects are shared, read-only

    def _sweep(self, now: float) -> None:
        """Drop stale listings (a pass over them at most once per max_age), so what is kept
        is what the last moments' reconciles read, not every namespace's pods."""
        if now - self._swept < max(self.max_age, 0.5):
            return
        self._swept = now
        for key, listing in list(self._listings.items()):
            if listing.ready.is_set() and now - listing.at > self.max_age:
                del self._listings[key]

    def pages(self, kind: Kind, size: int) -> Iterator[list[dict[str, Any]]]:
        return self.cluster.pages(kind, size)

    def _wrote(self, kind: Kind, namespace: str, name: str | None = None,
               body: Mapping[str, Any] | None = None) -> None:
        """After a write of `kind` in `namespace`: a listing that is filled gets `body` (what
        was written to `name`; None: deleted) in place of the object, so a burst of creates
        in one namespace does not list it again after each; without a name (a write whose
        result is not known here) the listings are dropped, to be listed again."""
        with self._lock:
            for key, listing in list(self._listings.items()):
                if key[:2] != (kind, namespace):
                    continue
                if name is None or not listing.ready.is_set() or listing.error is not None:
                    del self._listings[key]
                    continue
                kept = [o for o in listing.items
                        if (o.get("metadata") or {}).get("name") != name]
                labels = ((body or {}).get("metadata") or {}).get("labels") or {}
                if body is not None and dict(key[2]).items() <= labels.items():
                    kept.append(dict(body))
                listing.items = kept

    def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any]:
        return self.cluster.get(kind, namespace, name)

    def create(self, kind: Kind, namespace: str, body: dict[str, Any]) -> None:
        try:
            self.cluster.create(kind, namespace, body)
        except BaseException:
            self._wrote(kind, namespace)
            raise
        self._wrote(kind, namespace, body["metadata"]["name"], body)

    def replace(self, kind: Kind, namespace: str, name: str, body: dict[str, Any]) -> None:
        try:
            self.cluster.replace(kind, namespace, name, body)
        except BaseException:
            self._wrote(kind, namespace)
            raise
        self._wrote(kind, namespace, name, body)

    def delete(self, kind: Kind, namespace: str, name: str) -> None:
        try:
            self.cluster.delete(kind, namespace, name)
        except BaseException:
            self._wrote(kind, namespace)
            raise
        self._wrote(kind, namespace, name, None)

    def patch_status(self, kind: Kind, namespace: str, name: str,
                     status: dict[str, Any]) -> None:
        try:
            self.cluster.patch_status(kind, namespace, name, status)
        finally:
            self._wrote(kind, namespace)

    def evict(self, namespace: str, pod: str) -> None:
        try:
            self.cluster.evict(namespace, pod)
        finally:
            self._wrote(POD, namespace)

    def resources(self, api_version: str) -> list[dict[str, Any]]:
        return self.cluster.resources(api_version)

    def get_scale(self, kind: Kind, namespace: str, name: str) -> int:
        return self.cluster.get_scale(kind, namespace, name)

    def patch_scale(self, kind: Kind, namespace: str, name: str, replicas: int) -> None:
        try:
            self.cluster.patch_scale(kind, namespace, name, replicas)
        finally:
            self._wrote(kind, namespace)

    def event(self, body: kopf.Body, *, type: str, reason: str, message: str) -> None:
        self.cluster.event(body, type=type, reason=reason, message=message)
