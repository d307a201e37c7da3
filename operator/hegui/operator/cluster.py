"""The few Kubernetes calls the operator makes, behind one narrow interface.

The reconcile path (handlers.py) talks to a `Cluster`: `KubeCluster` is the apiserver through the
kubernetes client; unit tests hand it an in-memory one. Errors are the kubernetes client's
`ApiException` with its HTTP status either way (404 gone, 409 conflict, 429 not now), so callers
decide on the status alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

import kopf


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

    def objects(self, kind: Kind, namespace: str | None = None) -> list[dict[str, Any]]:
        """The objects of `kind` in `namespace` (None: every namespace); items carry no
        apiVersion/kind, as a list's items do not."""

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


#: Built-in kinds: the typed API class and the client's snake_case name of the kind.
_TYPED: dict[Kind, tuple[str, str]] = {
    POD: ("CoreV1Api", "pod"), SERVICE: ("CoreV1Api", "service"),
    CONFIG_MAP: ("CoreV1Api", "config_map"), DEPLOYMENT: ("AppsV1Api", "deployment"),
    STATEFUL_SET: ("AppsV1Api", "stateful_set"), REPLICA_SET: ("AppsV1Api", "replica_set"),
    DAEMON_SET: ("AppsV1Api", "daemon_set"), JOB: ("BatchV1Api", "job"),
    CRON_JOB: ("BatchV1Api", "cron_job"), NETWORK_POLICY: ("NetworkingV1Api", "network_policy"),
}


def _json(response: Any) -> Any:
    return json.loads(response.data) if response.data else None


class KubeCluster:
    """`Cluster` on the apiserver, through the kubernetes client (raw JSON: nothing is
    deserialised into the client's models)."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self._apis: dict[str, Any] = {}

    def _client(self, name: str) -> Any:
        # Made on first use: importing the client's API modules takes seconds, which would
        # otherwise delay kopf's start (and its liveness endpoint).
        if name not in self._apis:
            from kubernetes import client

            self._apis[name] = getattr(client, name)(self.api)
        return self._apis[name]

    def warm(self) -> None:
        """Make every API object now (in a thread while kopf starts), so that the first
        reconcile does not wait seconds for the client's modules."""
        for name in ("CoreV1Api", "AppsV1Api", "BatchV1Api", "NetworkingV1Api",
                     "CustomObjectsApi"):
            self._client(name)

    @property
    def custom(self) -> Any:
        return self._client("CustomObjectsApi")

    @property
    def core(self) -> Any:
        return self._client("CoreV1Api")

    def _typed(self, kind: Kind) -> tuple[Any, str] | None:
        found = _TYPED.get(kind)
        return (self._client(found[0]), found[1]) if found else None

    def objects(self, kind: Kind, namespace: str | None = None) -> list[dict[str, Any]]:
        typed = self._typed(kind)
        if typed is not None:
            api, snake = typed
            response = (getattr(api, f"list_namespaced_{snake}")(namespace, _preload_content=False)
                        if namespace is not None else
                        getattr(api, f"list_{snake}_for_all_namespaces")(_preload_content=False))
        elif namespace is not None:
            response = self.custom.list_namespaced_custom_object(
                kind.group, kind.version, namespace, kind.plural, _preload_content=False)
        else:
            response = self.custom.list_cluster_custom_object(
                kind.group, kind.version, kind.plural, _preload_content=False)
        items: list[dict[str, Any]] = (_json(response) or {}).get("items") or []
        return items

    def _namespaced(self, verb: str, kind: Kind, namespace: str, name: str | None = None,
                    body: dict[str, Any] | None = None) -> Any:
        """One namespaced call (read, create, replace, delete) through the typed API of a
        built-in kind or the custom-objects API of hegui's: the argument orders differ."""
        named = [name] if name is not None else []
        given = [body] if body is not None else []
        typed = self._typed(kind)
        if typed is not None:
            api, snake = typed
            return getattr(api, f"{verb}_namespaced_{snake}")(*named, namespace, *given,
                                                               _preload_content=False)
        custom_verb = "get" if verb == "read" else verb
        return getattr(self.custom, f"{custom_verb}_namespaced_custom_object")(
            kind.group, kind.version, namespace, kind.plural, *named, *given,
            _preload_content=False)

    def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = _json(self._namespaced("read", kind, namespace, name))
        return found

    def create(self, kind: Kind, namespace: str, body: dict[str, Any]) -> None:
        self._namespaced("create", kind, namespace, body=body)

    def replace(self, kind: Kind, namespace: str, name: str, body: dict[str, Any]) -> None:
        self._namespaced("replace", kind, namespace, name, body)

    def delete(self, kind: Kind, namespace: str, name: str) -> None:
        self._namespaced("delete", kind, namespace, name)

    def patch_status(self, kind: Kind, namespace: str, name: str,
                     status: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            kind.group, kind.version, namespace, kind.plural, name, {"status": status},
            _content_type="application/merge-patch+json", _preload_content=False)

    def evict(self, namespace: str, pod: str) -> None:
        self.core.create_namespaced_pod_eviction(pod, namespace, {
            "apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": pod, "namespace": namespace}}, _preload_content=False)

    def resources(self, api_version: str) -> list[dict[str, Any]]:
        group, _, version = api_version.rpartition("/")
        found = self.custom.get_api_resources(group, version, _preload_content=False)
        resources: list[dict[str, Any]] = (_json(found) or {}).get("resources") or []
        return resources

    def get_scale(self, kind: Kind, namespace: str, name: str) -> int:
        scale = self.custom.get_namespaced_custom_object_scale(
            kind.group, kind.version, namespace, kind.plural, name, _preload_content=False)
        return int(((_json(scale) or {}).get("spec") or {}).get("replicas") or 0)

    def patch_scale(self, kind: Kind, namespace: str, name: str, replicas: int) -> None:
        self.custom.patch_namespaced_custom_object_scale(
            kind.group, kind.version, namespace, kind.plural, name,
            {"spec": {"replicas": replicas}},
            _content_type="application/merge-patch+json", _preload_content=False)

    def event(self, body: kopf.Body, *, type: str, reason: str, message: str) -> None:
        kopf.event(body, type=type, reason=reason, message=message)
