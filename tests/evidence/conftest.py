"""A real MinIO with Object Lock for the evidence tests: its own instance, data directory and
free loopback port (never the one `hegui cluster up` started), stopped at the end.

The binary is built by dev/controlplane/build (minio), like the control plane's; these tests
are marked `cluster` because they need those binaries, not the apiserver.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hegui.admission.local import free_port
from hegui.localcluster.cluster import default_home
from hegui.localcluster.objectstore import LocalObjectStore


@pytest.fixture(scope="session")
def objectstore(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalObjectStore]:
    bin_dir = default_home() / "controlplane" / "bin"
    if not os.access(bin_dir / "minio", os.X_OK):
        pytest.fail(f"{bin_dir / 'minio'} is missing: run dev/controlplane/build minio "
                    "(dev/bootstrap builds it)")
    store = LocalObjectStore(home=Path(tmp_path_factory.mktemp("objectstore")),
                             port=free_port(), bin_dir=bin_dir)
    assert store.up(timeout=120) is True
    try:
        yield store
    finally:
        assert store.down() is True
        assert not store.ready()
