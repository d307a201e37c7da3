"""Each service's store session (Art.11): cut from the sidecars' user by STS AssumeRole with a
session policy naming the service's own records, rotated by the operator at half-life, and
picked up by a running sidecar from its projected Secret without a restart."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest

from hegui.api.policy import CompliancePolicy
from hegui.evidence import config
from hegui.evidence.shipper import Shipper
from hegui.evidence.store import (
    SESSION_SECONDS,
    S3Store,
    StoreCredentials,
    StoreError,
    service_policy,
    service_prefix,
)
from hegui.localcluster.objectstore import LocalObjectStore
from hegui.moderation.records import RecordLog
from hegui.operator import anchoring

MASTER = b"the-clusters-evidence-key"
SOURCE = {"accessKey": b"hegui-sidecar", "secretKey": b"long-lived", "evidenceKey": MASTER}


def _evidence(url: str = "http://minio:9000/hegui-evidence") -> Any:
    endpoint, _, bucket = url.rpartition("/")
    return CompliancePolicy.from_dict({
        "apiVersion": "hegui.io/v1alpha1", "kind": "CompliancePolicy",
        "metadata": {"name": "p"},
        "spec": {"namespaces": ["team-a"],
                 "evidence": {"store": {"endpoint": endpoint, "bucket": bucket,
                                        "credentialsSecretName": "hegui-evidence"}}}}
    ).spec.evidence


def _project(directory: Path, session: StoreCredentials) -> None:
    """The service's Secret as the operator writes it and the kubelet projects it."""
    directory.mkdir(exist_ok=True)
    for name, value in config.secret_data(SOURCE, "team-a", "chat", session).items():
        (directory / name).write_bytes(value)


def test_a_session_policy_names_one_service_and_no_wildcard() -> None:
    policy = service_policy("hegui-evidence", "team-a", "chat")
    resources = [r for s in policy["Statement"] for r in s["Resource"]]  # type: ignore[attr-defined]
    assert "arn:aws:s3:::hegui-evidence/records/team-a/chat/*" in resources
    assert not any("anchors" in r or r.endswith("/records/*") for r in resources)
    assert not any(a.startswith("s3:Delete") or a == "s3:*" or a.startswith("s3:Bypass")
                   for s in policy["Statement"] for a in s["Action"])  # type: ignore[attr-defined]
    for namespace, name in (("team-*", "chat"), ("team-a", "c?at"), ("team-a", "x/../y"),
                            ("", "chat")):
        with pytest.raises(ValueError, match="not a Kubernetes name"):
            service_prefix(namespace, name)


def test_the_operator_keeps_a_session_until_half_life_then_mints_the_next(
        monkeypatch: pytest.MonkeyPatch) -> None:
    minted: list[tuple[str, str]] = []
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)

    def mint(url: str, parent: tuple[str, str], namespace: str, name: str,
             **_: Any) -> StoreCredentials:
        minted.append(parent)
        return StoreCredentials(f"S{len(minted)}", "s", "token",
                                now + dt.timedelta(seconds=SESSION_SECONDS))

    monkeypatch.setattr(anchoring, "service_session", mint)
    monkeypatch.setattr(anchoring, "_SESSIONS", {})
    service = {"metadata": {"namespace": "team-a", "name": "chat", "uid": "u1"}}
    evidence = _evidence()
    first = anchoring.session_for(service, evidence, SOURCE, now=now)
    assert anchoring.session_for(service, evidence, SOURCE,
                                 now=now + dt.timedelta(hours=5)) == first
    assert anchoring.session_for(service, evidence, SOURCE,
                                 now=now + dt.timedelta(hours=7)).access_key == "S2"
    # The store's user rotated in the policy's Secret: a session cut from the new one.
    rotated = {**SOURCE, "secretKey": b"rotated"}
    assert anchoring.session_for(service, evidence, rotated,
                                 now=now + dt.timedelta(hours=7)).access_key == "S3"
    assert minted == [("hegui-sidecar", "long-lived")] * 2 + [("hegui-sidecar", "rotated")]
    with pytest.raises(config.EvidenceConfigError,
                       match=r"Secret hegui-system/hegui-evidence lacks evidenceKey.*Art\.11"):
        anchoring.session_for(service, evidence, {**SOURCE, "evidenceKey": b""}, now=now)


@pytest.mark.cluster
def test_a_rotated_session_reaches_a_running_sidecar_without_a_restart(
        objectstore: LocalObjectStore, tmp_path: Path) -> None:
    """The sidecar's store reads the projected Secret again: an expired or replaced session
    in it is followed by the operator's next one, with nothing lost meanwhile."""
    projected = tmp_path / "hegui-evidence"
    _project(projected, StoreCredentials("EXPIREDSESSION", "no-longer-valid", "old-token"))
    found = config.read_credentials(projected, env={})
    assert found.session_token == "old-token" and found.source is not None
    store = S3Store(objectstore.url, source=found.source, refresh_seconds=0.2, retries=0)
    log = RecordLog(tmp_path / "records.jsonl", key=b"k")
    shipper = Shipper(log, store, key=found.key, service=f"team-a{time.time_ns() % 10**8}/chat",
                      pod="chat-0", retention_days=1)
    for n in range(3):
        log.append("block", user="u", reference=f"r{n}")
    with pytest.raises(StoreError):
        shipper.ship_once()
    assert log.shipped_seq == 0  # still in the pod
    namespace = shipper.stream.split("/")[0]
    session = objectstore.session(namespace, "chat")  # the operator's next one
    _project(projected, StoreCredentials(session.access_key, session.secret_key,
                                         session.session_token))
    time.sleep(0.3)
    assert shipper.ship_once() == 3


def test_a_local_store_from_before_the_anchor_user_keeps_its_root_password(
        tmp_path: Path) -> None:
    """`hegui cluster up` on a cache written before the anchor user: the anchor user's secret is
    added, the root password the data directory was initialised with is kept."""
    import json

    store = LocalObjectStore(home=tmp_path, port=9)
    store.directory.mkdir(parents=True)
    old = {"root_user": "hegui-root", "root_password": "kept", "sidecar_secret": "kept-too"}
    (store.directory / "credentials.json").write_text(json.dumps(old), encoding="utf-8")
    assert store.root.secret_key == "kept" and store.sidecar.secret_key == "kept-too"
    anchor = store.anchor
    assert anchor.access_key == "hegui-anchor" and len(anchor.secret_key) >= 24
    assert anchor.access_key != store.sidecar.access_key
    assert store.anchor == anchor  # written once
    assert (store.directory / "credentials.json").stat().st_mode & 0o777 == 0o600
