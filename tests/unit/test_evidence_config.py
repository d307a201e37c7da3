"""How a sidecar finds its evidence store (Art.11): the operator's evidence.yaml and the
projected Secret, each service sealing with its own key derived from the cluster's."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pytest
import yaml

from hegui.api.generativeservice import FailureMode, GenerativeService
from hegui.api.policy import CompliancePolicy
from hegui.evidence import config
from hegui.evidence import sidecar as evidence
from hegui.evidence.shipper import Shipper
from hegui.evidence.store import DirectoryStore, StoreCredentials
from hegui.evidence.verify import verify_store
from hegui.moderation.records import RecordLog

SAMPLES = Path(__file__).parents[2] / "samples" / "compliance"
MASTER = b"the-clusters-evidence-key"


def _policy(name: str, days: int) -> CompliancePolicy:
    doc = yaml.safe_load((SAMPLES / "policy.yaml").read_text(encoding="utf-8"))
    doc["metadata"]["name"] = name
    doc["spec"]["evidence"] = {"store": {"endpoint": "http://minio.hegui-system:9000",
                                         "bucket": "hegui-evidence",
                                         "credentialsSecretName": "hegui-evidence",
                                         "retentionDays": days}}
    return CompliancePolicy.from_dict(doc)


def _service(failure_mode: str | None = None, retention: int = 180) -> GenerativeService:
    doc = yaml.safe_load((SAMPLES / "chat-service.yaml").read_text(encoding="utf-8"))
    doc["spec"]["dataProtection"]["retentionDays"] = retention
    if failure_mode:
        doc["spec"]["dataProtection"]["evidenceFailureMode"] = failure_mode
    return GenerativeService.from_dict(doc)


def test_the_longest_retention_applies_and_renders_for_the_sidecar(tmp_path: Path) -> None:
    chosen = config.choose([_policy("short", 30), _policy("long", 400)])
    rendered = config.render(chosen)
    (tmp_path / config.CONFIG_FILE).write_text(rendered[config.CONFIG_FILE], encoding="utf-8")
    settings = config.load(tmp_path / config.CONFIG_FILE)
    assert settings == config.Settings("http://minio.hegui-system:9000/hegui-evidence", 400)
    assert config.render(config.choose([])) == {}


@pytest.mark.parametrize("text, named", [
    ("store: s3.example.cn/bucket\n", "store must be http"),
    ("store: http://minio:9000/b\nretentionDays: 0\n", "retentionDays"),
    ("- a list\n", "a mapping"),
    ("store: [unclosed\n", "not YAML"),
])
def test_a_bad_evidence_yaml_is_named(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / config.CONFIG_FILE
    path.write_text(text, encoding="utf-8")
    with pytest.raises(config.EvidenceConfigError, match=named):
        config.load(path)


def test_the_services_secret_holds_its_own_key_and_session_never_the_clusters() -> None:
    source = {"accessKey": b"sidecar", "secretKey": b"secret", "evidenceKey": MASTER,
              "anchorKey": b"anchor"}
    session = StoreCredentials("SESSION", "session-secret", "session-token")
    data = config.secret_data(source, "team-a", "chat", session)
    assert set(data) == {"access-key", "secret-key", "evidence.key"}
    assert MASTER not in data.values() and b"anchor" not in data.values()
    assert data["access-key"] == b"SESSION" and b"secret" not in data["secret-key"].split(b"\n")
    assert data["evidence.key"] != config.secret_data(source, "team-b", "chat",
                                                      session)["evidence.key"]
    with pytest.raises(config.EvidenceConfigError, match=r"evidenceKey.*Art\.11"):
        config.secret_data({"accessKey": b"a", "secretKey": b"s"}, "team-a", "chat", session)


def test_one_services_key_cannot_seal_another_services_stream(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "store")
    for namespace, sealing_as in (("team-a", "team-a"), ("team-b", "team-a")):
        log = RecordLog(tmp_path / namespace / "records.jsonl", key=b"k")
        for n in range(3):
            log.append("block", user="u", reference=f"{namespace}-{n}")
        Shipper(log, store, key=config.service_key(MASTER, sealing_as, "chat"),
                service=f"{namespace}/chat", pod="chat-0", retention_days=1).ship_once()
    report = verify_store(store, MASTER, derive=True, workers=1)
    assert report.records == 6
    bad = [p for p in report.problems if "MAC does not verify" in p]
    assert len(bad) == 1 and bad[0].startswith("team-b/chat/"), report.problems


def _args(tmp_path: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--service", type=Path)
    evidence.add_arguments(parser)
    return parser.parse_args(["--service", str(tmp_path / "service.yaml"),
                              "--evidence-credentials-dir", str(tmp_path / "creds"), *extra])


def test_a_declared_store_without_credentials_follows_the_fail_mode(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / config.CONFIG_FILE).write_text(
        "store: http://127.0.0.1:9/hegui-evidence\nretentionDays: 30\n", encoding="utf-8")
    records = RecordLog(tmp_path / "records.jsonl", key=b"k")
    with pytest.raises(SystemExit, match=r"no access key, secret key, evidence key.*Closed"):
        evidence.attach(_args(tmp_path), records, _service("Closed"), registry=None)
    with caplog.at_level(logging.ERROR):
        assert evidence.attach(_args(tmp_path), records, _service("Open"), registry=None) is None
    assert "kept in the pod only" in caplog.text


def test_the_policy_s_closed_floor_wins_over_a_team_s_open(tmp_path: Path) -> None:
    """With Open, a team could drop records at will by blocking the store (a NetworkPolicy of
    its own); a CompliancePolicy's evidence.failureMode Closed makes its sidecars refuse
    service instead, whatever the service declares (Art.11)."""
    policy = _policy("floor", 180)
    assert policy.spec.evidence is not None
    floored = policy.spec.evidence.model_copy(update={"failure_mode": FailureMode.CLOSED})
    (tmp_path / config.CONFIG_FILE).write_text(config.render(floored)[config.CONFIG_FILE],
                                               encoding="utf-8")
    settings = config.load(tmp_path / config.CONFIG_FILE)
    assert settings is not None and settings.failure_mode == "Closed"
    assert evidence.fail_open(_service("Open"))  # the service's own choice, without a floor
    assert not evidence.fail_open(_service("Open"), settings)
    records = RecordLog(tmp_path / "records.jsonl", key=b"k")
    with pytest.raises(SystemExit, match=r"the fail mode is Closed"):
        evidence.attach(_args(tmp_path), records, _service("Open"), registry=None)
    (tmp_path / config.CONFIG_FILE).write_text("store: http://m:9000/b\nfailureMode: Maybe\n",
                                               encoding="utf-8")
    with pytest.raises(config.EvidenceConfigError, match="failureMode must be Closed or Open"):
        config.load(tmp_path / config.CONFIG_FILE)


def test_the_sidecar_ships_where_the_operator_says_with_the_projected_secret(
        tmp_path: Path) -> None:
    (tmp_path / config.CONFIG_FILE).write_text(
        "store: http://127.0.0.1:9/hegui-evidence\nretentionDays: 400\nregion: cn-north-1\n",
        encoding="utf-8")
    creds = tmp_path / "creds"
    creds.mkdir()
    for name, value in config.secret_data({"accessKey": b"sidecar", "secretKey": b"s3cret",
                                           "evidenceKey": MASTER}, "hegui-demo", "chat",
                                          StoreCredentials("S", "s", "t")).items():
        (creds / name).write_bytes(value)
    records = RecordLog(tmp_path / "records.jsonl", key=b"k")
    shipper = evidence.attach(_args(tmp_path, "--evidence-interval", "60"), records,
                              _service(retention=180), registry=None)
    assert shipper is not None
    try:
        assert shipper.key == config.service_key(MASTER, "hegui-demo", "chat")
        assert shipper.retention.days == 400  # the policy's floor is longer than the posture's
        assert shipper.store.url == "http://127.0.0.1:9/hegui-evidence"
        assert records.fail_open is False  # Closed unless the posture says Open
    finally:
        shipper.stop(timeout=10)
