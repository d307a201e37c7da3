"""A real MinIO with Object Lock for the evidence tests: its own instance, data directory and
free loopback port (never the one `hegui cluster up` started), stopped at the end.

The binary is built by dev/controlplane/build (minio), like the control plane's; these tests
are marked `cluster` because they need those binaries, not the apiserver.

Who talks to it, in one place: a bucket with a sidecars' user and an anchor user of a test's own
(`own_bucket`), and `access`: a fresh user's name, hegui's client or MinIO's as a given user, a
sidecar process's environment (a service's own session, as the operator hands it out) and the
root user's for the CLI.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hegui.admission.local import free_port
from hegui.evidence.store import S3Store
from hegui.localcluster.cluster import default_home
from hegui.localcluster.objectstore import Credentials, LocalObjectStore


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


def new_user(prefix: str) -> Credentials:
    """A store user of a test's own (not yet added to the store): a unique name."""
    return Credentials(f"{prefix}-{time.time_ns() % 10**8}", "a-long-enough-secret-key")


@dataclass(frozen=True)
class Access:
    """How the evidence tests reach a store (the session's unless one is named) and as whom."""

    objectstore: LocalObjectStore
    monkeypatch: pytest.MonkeyPatch

    new_user = staticmethod(new_user)

    def s3(self, who: Credentials | None = None, *, store: LocalObjectStore | None = None,
           url: str | None = None, **options: Any) -> S3Store:
        """hegui's client of the store's bucket (or `url`), as `who` (default: the sidecars'
        user)."""
        store = store or self.objectstore
        who = who or store.sidecar
        return S3Store(url or store.url, access_key=who.access_key,
                       secret_key=who.secret_key, session_token=who.session_token, **options)

    def minio(self, who: Credentials, *, store: LocalObjectStore | None = None) -> Any:
        """MinIO's own client as `who`: raw calls hegui's client never makes (deletes,
        retention)."""
        from minio import Minio

        store = store or self.objectstore
        return Minio(f"127.0.0.1:{store.port}", access_key=who.access_key,
                     secret_key=who.secret_key, session_token=who.session_token, secure=False)

    def sidecar_env(self, pod: str, service: str = "hegui-demo/chat") -> dict[str, str]:
        """A sidecar process's environment: a store session of service NAMESPACE/NAME's own
        (limited to its records, as the operator mints it), and its pod's name."""
        namespace, _, name = service.partition("/")
        return {**os.environ, **self.objectstore.session(namespace, name).env(), "POD_NAME": pod}

    def use_root(self, store: LocalObjectStore | None = None) -> None:
        """`hegui records ...` in this process acts as the store's root user (an inspector's
        or the operator's credentials) until the test ends."""
        for variable, setting in (store or self.objectstore).root.env().items():
            self.monkeypatch.setenv(variable, setting)


@pytest.fixture
def access(objectstore: LocalObjectStore, monkeypatch: pytest.MonkeyPatch) -> Access:
    return Access(objectstore, monkeypatch)


@dataclass(frozen=True)
class OwnBucket:
    url: str
    sidecar: Credentials  # the policy Secret's accessKey/secretKey
    anchor: Credentials  # its anchorAccessKey/anchorSecretKey


@pytest.fixture
def own_bucket(objectstore: LocalObjectStore) -> OwnBucket:
    """A bucket with a sidecars' user and an anchor user of the test's own, as `hegui records
    init-store` makes them. Anchors are bucket-wide, so a test that anchors keeps its anchor
    key away from the other tests' verifications this way."""
    from hegui.evidence.store import provision_minio

    user = new_user("h3-anchoring")
    anchor = Credentials(f"{user.access_key}-anchor", "another-long-enough-secret-key")
    url = f"{objectstore.url.rpartition('/')[0]}/{user.access_key}"
    root = objectstore.root
    provision_minio(url, root=(root.access_key, root.secret_key),
                    sidecar=(user.access_key, user.secret_key),
                    anchor=(anchor.access_key, anchor.secret_key))
    return OwnBucket(url, user, anchor)
