"""Shared fixtures. Tests marked `cluster` run against the real local control plane.

`pytest -m "not cluster"` runs the unit tests alone, in seconds. The control plane is started once
per session; if one is already running (a developer ran `hegui cluster up`) it is reused and left
running, otherwise the session stops it at the end.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from hegui.localcluster.cluster import LocalCluster


@pytest.fixture(scope="session")
def local_cluster() -> Iterator[LocalCluster]:
    cluster = LocalCluster.from_environment()
    result = cluster.up(timeout=float(os.environ.get("HEGUI_CLUSTER_TIMEOUT", "240")))
    yield cluster
    if not result.already_running and not os.environ.get("HEGUI_KEEP_CLUSTER"):
        cluster.down()


@pytest.fixture(scope="session")
def api_client(local_cluster: LocalCluster) -> Iterator[object]:
    """A `kubernetes.client.ApiClient` authenticated as the cluster admin."""
    from kubernetes import config

    client = config.new_client_from_config(config_file=str(local_cluster.kubeconfig))
    yield client
    client.close()
