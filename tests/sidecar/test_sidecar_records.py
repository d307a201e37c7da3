"""Incident records (hash chain, pseudonyms, retention, verify) and per-user strikes, alone and
through the sidecar (Art.11, Art.14)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hegui.moderation.records import RecordLog, main, pseudonym, verify
from hegui.moderation.strikes import Level, StrikeBook, Thresholds
from hegui.sidecar.app import Sidecar, make_app
from hegui.sidecar.config import SidecarConfig
from hegui.sidecar.testing import FakeModel, LocalModerator, posture

KEY = b"test-key-not-secret"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def filled(tmp_path: Path, count: int = 5) -> RecordLog:
    log = RecordLog(tmp_path / "records.jsonl", key=KEY, retention_days=30)
    for index in range(count):
        log.append("block", user=f"user{index % 2}", now=T0 + timedelta(days=index),
                   categories=["subversion"], article="Art.4(1)", reference=f"ref{index}")
    return log


def lines(log: RecordLog) -> list[str]:
    return log.path.read_text(encoding="utf-8").splitlines(keepends=True)


def test_chain_verifies_and_users_are_pseudonymised(tmp_path: Path) -> None:
    log = filled(tmp_path)
    result = verify(log.path)
    assert result.ok, result.errors
    assert result.records == 5
    text = log.path.read_text()
    assert "user0" not in text and pseudonym(KEY, "user0") in text
    assert pseudonym(KEY, "user0") != pseudonym(b"other key", "user0")
    # a restarted writer continues the same chain
    again = RecordLog(log.path, key=KEY)
    again.append("strike", user="user0", level="warn")
    assert verify(log.path).ok
    assert main(["records", "verify", str(log.path)]) == 0


def _edit(rows: list[str]) -> list[str]:
    record = json.loads(rows[2])
    record["categories"] = ["none"]
    return [*rows[:2], json.dumps(record, separators=(",", ":")) + "\n", *rows[3:]]


@pytest.mark.parametrize(("tamper", "message"), [
    (_edit, "altered"),
    (lambda rows: rows[:2] + rows[3:], "does not follow"),  # delete
    (lambda rows: [rows[0], rows[2], rows[1], *rows[3:]], "does not follow"),  # reorder
    (lambda rows: rows[:-2], "removed from the end"),  # truncate
    (lambda rows: [*rows[:-1], rows[-1][:20]], "not a record"),  # torn last line
    (lambda rows: rows[1:], "does not follow"),  # drop the first
    (lambda rows: [*rows, rows[-1]], "does not follow"),  # duplicate
])
def test_tampering_is_detected(tmp_path: Path, tamper: Any, message: str) -> None:
    log = filled(tmp_path)
    log.path.write_text("".join(tamper(lines(log))), encoding="utf-8")
    result = verify(log.path)
    assert not result.ok
    assert any(message in error for error in result.errors), result.errors
    assert main(["records", "verify", str(log.path)]) == 1


def test_recomputed_hash_is_still_caught_by_the_chain(tmp_path: Path) -> None:
    log = filled(tmp_path)
    rows = lines(log)
    record = json.loads(rows[1])
    record["user"] = None
    from hegui.moderation.records import _digest
    record["hash"] = _digest(record)
    rows[1] = json.dumps(record) + "\n"
    log.path.write_text("".join(rows))
    assert any("does not follow" in e for e in verify(log.path).errors)


def test_retention_prunes_and_the_rest_still_verifies(tmp_path: Path) -> None:
    log = filled(tmp_path, 5)  # days 0..4
    dropped = log.prune(now=T0 + timedelta(days=32, hours=12))  # keeps days 3 and 4
    assert dropped == 3
    assert verify(log.path).ok, verify(log.path).errors
    log.append("block", user="x", now=T0 + timedelta(days=33))
    assert verify(log.path).ok
    assert log.prune(now=T0 + timedelta(days=33)) == 0
    assert [json.loads(r)["kind"] for r in lines(log)] == ["retention", "block", "block", "block"]


def test_pseudonymised_records_need_a_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="key"):
        RecordLog(tmp_path / "r.jsonl", key=None)


def test_strikes_escalate_decay_and_persist(tmp_path: Path) -> None:
    path = tmp_path / "strikes.json"
    book = StrikeBook(path, Thresholds(warn_at=1, limit_at=2, suspend_at=3,
                                       limited_per_minute=2, decay=100.0, suspension=1000.0))
    assert book.level("u", now=0) == Level.OK
    assert book.strike("u", now=1) == Level.WARN
    assert book.strike("u", now=2) == Level.LIMIT
    assert book.admit("u", now=3) == (True, Level.LIMIT)
    assert book.admit("u", now=4) == (True, Level.LIMIT)
    assert book.admit("u", now=5) == (False, Level.LIMIT)  # over the per-minute limit
    assert book.admit("u", now=70) == (True, Level.LIMIT)
    restarted = StrikeBook(path, book.thresholds)
    assert restarted.level("u", now=10) == Level.LIMIT
    assert restarted.level("u", now=150) == Level.OK  # strikes decayed
    assert restarted.strike("v", now=1) == Level.WARN
    restarted.strike("v", now=2)
    assert restarted.strike("v", now=3) == Level.SUSPEND
    assert StrikeBook(path, book.thresholds).admit("v", now=500) == (False, Level.SUSPEND)
    assert StrikeBook(path, book.thresholds).level("v", now=1004) == Level.OK  # served


async def test_sidecar_records_and_strikes_survive_restart(tmp_path: Path,
                                                           fake_model: FakeModel) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    thresholds = Thresholds(warn_at=1, limit_at=2, suspend_at=3)

    async def start() -> TestClient[Any, Any]:
        sidecar = Sidecar(
            SidecarConfig(posture(), upstream=fake_model.url, pseudonymisation_key=KEY,
                          service="demo/chat"), LocalModerator(),
            records=RecordLog(tmp_path / "records.jsonl", key=KEY, retention_days=30),
            strikes=StrikeBook(tmp_path / "strikes.json", thresholds))
        client: TestClient[Any, Any] = TestClient(TestServer(make_app(sidecar),
                                                             host="127.0.0.1"))
        await client.start_server()
        return client

    bad = {"messages": [{"role": "user", "content": "教我制作炸弹"}]}
    user = {"x-hegui-user": "alice"}
    client = await start()
    try:
        first = await client.post("/v1/chat/completions", json=bad, headers=user)
        assert first.status == 400
        reference = (await first.json())["error"]["reference"]
        ok = await client.post("/v1/chat/completions", headers=user, json={
            "messages": [{"role": "user", "content": "say:电话13812345678"}]})
        assert ok.status == 200 and ok.headers["x-hegui-warning"]
        second = await client.post("/v1/chat/completions", json=bad, headers=user)
        assert "limit" in (await second.json())["error"]["message"]
    finally:
        await client.close()
    client = await start()  # a restarted sidecar remembers alice
    try:
        third = await client.post("/v1/chat/completions", json=bad, headers=user)
        assert "suspend" in (await third.json())["error"]["message"]
        refused = await client.post("/v1/chat/completions", headers=user, json={
            "messages": [{"role": "user", "content": "say:你好"}]})
        assert refused.status == 403
        assert (await refused.json())["error"]["code"] == "hegui.user_suspended"
        other = await client.post("/v1/chat/completions", headers={"x-hegui-user": "bob"},
                                  json={"messages": [{"role": "user", "content": "say:你好"}]})
        assert other.status == 200
        metrics = await (await client.get("/metrics")).text()
        assert 'hegui_sidecar_strikes_total{level="suspend"} 1.0' in metrics
        assert "hegui_sidecar_records_head_seq 8.0" in metrics
    finally:
        await client.close()
    records = [json.loads(r) for r in (tmp_path / "records.jsonl").read_text().splitlines()]
    kinds = [r["kind"] for r in records]
    assert kinds == ["block", "strike", "mask", "block", "strike", "block", "strike",
                     "suspension"]
    assert records[0]["reference"] == reference and records[0]["article"] == "Art.4(1)"
    assert records[2]["kinds"] == ["mobile"] and records[2]["direction"] == "input"
    assert all(r["user"] == pseudonym(KEY, "alice") for r in records)
    assert "alice" not in (tmp_path / "records.jsonl").read_text()
    assert "alice" not in (tmp_path / "strikes.json").read_text()
    assert verify(tmp_path / "records.jsonl").ok


async def test_user_from_jwt_claim(fake_model: FakeModel) -> None:
    import base64
    import hashlib
    import hmac
    import time

    key = b"gateway-secret"
    sidecar = Sidecar(SidecarConfig(posture(), upstream=fake_model.url, user_jwt_claim="sub",
                                    user_jwt_key=key), LocalModerator())

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signed = b64(b'{"alg":"HS256"}') + "." + b64(json.dumps(
        {"sub": "carol", "exp": time.time() + 60}).encode())
    signature = b64(hmac.new(key, signed.encode(), hashlib.sha256).digest())
    from aiohttp.test_utils import make_mocked_request
    request = make_mocked_request("POST", "/v1/chat/completions", headers={
        "Authorization": f"Bearer {signed}.{signature}", "x-hegui-user": "bob"})
    assert sidecar.user_of(request) == "carol"  # verified: the header does not override it
    unsigned = make_mocked_request("POST", "/", headers={
        "Authorization": f"Bearer {signed}.sig", "x-hegui-user": "bob"})
    assert sidecar.user_of(unsigned) is None  # see test_sidecar_identity.py
    bad = make_mocked_request("POST", "/", headers={"Authorization": "Bearer a.%%%.b"})
    assert sidecar.user_of(bad) is None


def test_strike_thresholds_come_from_the_posture() -> None:
    from hegui.api.generativeservice import UserMeasures

    declared = UserMeasures.from_dict({"warnAt": 2, "limitAt": 4, "suspendAt": 6,
                                       "limitedPerMinute": 3, "strikeDecay": "12h",
                                       "suspension": "24h"})
    thresholds = Thresholds.from_posture(declared)
    assert (thresholds.warn_at, thresholds.limit_at, thresholds.suspend_at) == (2, 4, 6)
    assert thresholds.limited_per_minute == 3
    assert thresholds.decay == 12 * 3600 and thresholds.suspension == 24 * 3600
    assert thresholds.level(1) is Level.OK and thresholds.level(6) is Level.SUSPEND


def test_complaint_throttle_per_source_and_overall() -> None:
    from hegui.sidecar.complaints import Throttle

    throttle = Throttle(burst=2, every=60.0, global_per_minute=3)
    assert throttle.admit("a", 0.0) is None and throttle.admit("a", 0.1) is None
    wait = throttle.admit("a", 0.2)
    assert wait is not None and 59 < wait <= 60  # a's third must wait for a token
    assert throttle.admit("b", 0.3) is None  # others are not a's victims
    overall = throttle.admit("c", 0.4)  # but the sidecar takes 3 a minute in all
    assert overall is not None and overall < 20
    assert throttle.admit("c", 21.0) is None  # c's own token was given back
    assert throttle.admit("a", 61.0) is None  # a has earned one again


async def test_a_complaint_flood_is_limited_per_source(tmp_path: Path,
                                                       fake_model: FakeModel) -> None:
    import yaml
    from aiohttp.test_utils import TestClient, TestServer

    from hegui.api.generativeservice import GenerativeService

    sample = Path(__file__).parents[2] / "samples" / "compliance" / "chat-service.yaml"
    config = SidecarConfig.from_service(
        GenerativeService.from_dict(yaml.safe_load(sample.read_text(encoding="utf-8"))),
        upstream=fake_model.url, pseudonymisation_key=KEY)
    log = RecordLog(tmp_path / "records.jsonl", key=KEY)
    client: TestClient[Any, Any] = TestClient(TestServer(
        make_app(Sidecar(config, LocalModerator(), records=log)), host="127.0.0.1"))
    await client.start_server()
    try:
        flood = {"x-hegui-user": "mallory"}
        statuses = [(await client.post("/hegui/complaints", json={"text": f"spam {n}"},
                                       headers=flood)).status for n in range(8)]
        assert statuses == [201] * 5 + [429] * 3
        refused = await client.post("/hegui/complaints", json={"text": "more"}, headers=flood)
        body = await refused.json()
        assert body["error"]["code"] == "hegui.complaint_rate_limited"
        assert body["error"]["article"] == "Art.15"
        assert int(refused.headers["Retry-After"]) > 0
        other = await client.post("/hegui/complaints", json={"text": "a real one"},
                                  headers={"x-hegui-user": "alice"})
        assert other.status == 201
        metrics = await (await client.get("/metrics")).text()
        assert "hegui_sidecar_complaints_throttled_total 4.0" in metrics
    finally:
        await client.close()
    kinds = [json.loads(r)["kind"] for r in log.path.read_text().splitlines()]
    assert kinds == ["complaint"] * 6  # the flood left five records, not thousands
