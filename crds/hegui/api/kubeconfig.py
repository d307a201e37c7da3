"""How every part of hegui finds the apiserver: one function, two precedences.

- Components that run in the cluster (the webhook, the operator, the sidecar's anchoring) take
  an explicit `--kubeconfig`, else the pod's service account, else $KUBECONFIG.
- Commands a person runs (`kubectl hegui`) follow kubectl: an explicit file, else $KUBECONFIG
  (or ~/.kube/config), else the service account when run in a pod.

Each call fills a configuration of its own: the kubernetes client's process-wide default is left
alone, so two callers with different credentials never see each other's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class KubeAccess:
    """A client configuration and where it came from."""

    configuration: Any  # kubernetes.client.Configuration
    in_cluster: bool

    def api_client(self) -> Any:
        from kubernetes import client

        return client.ApiClient(self.configuration)


def load(kubeconfig: str | None, *, in_cluster_first: bool = True) -> KubeAccess:
    """The apiserver's address and credentials. `kubeconfig` wins when given; otherwise the
    service account and the kubeconfig file are tried in the order `in_cluster_first` says.
    Raises kubernetes' ConfigException when neither is there."""
    from kubernetes import client, config

    configuration = client.Configuration()
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        return KubeAccess(configuration, in_cluster=False)

    def in_cluster() -> KubeAccess:
        config.load_incluster_config(client_configuration=configuration)
        return KubeAccess(configuration, in_cluster=True)

    def from_file() -> KubeAccess:
        config.load_kube_config(client_configuration=configuration)
        return KubeAccess(configuration, in_cluster=False)

    first, second = (in_cluster, from_file) if in_cluster_first else (from_file, in_cluster)
    try:
        return first()
    except config.ConfigException:
        return second()


def api_client(kubeconfig: str | None, *, in_cluster_first: bool = True) -> Any:
    """A kubernetes ApiClient by `load`'s rules."""
    return load(kubeconfig, in_cluster_first=in_cluster_first).api_client()
