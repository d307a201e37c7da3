"""The sidecar's complaint intake (Art.15): the published process, complaints recorded in the
hash-chained records with their deadline, Art.11 pseudonymisation, bounds, and the overdue gauge
that follows the deadline and the closures."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from hegui.api.generativeservice import GenerativeService
from hegui.moderation.records import RecordLog, pseudonym, verify
from hegui.sidecar.app import Sidecar, make_app
from hegui.sidecar.complaints import close, load
from hegui.sidecar.config import SidecarConfig
from hegui.sidecar.testing import FakeModel, LocalModerator

KEY = b"test-key-not-secret"
SAMPLE = Path(__file__).parents[2] / "samples" / "compliance" / "chat-service.yaml"

Start = Callable[..., Awaitable[TestClient[Any, Any]]]


def service(**complaints: Any) -> GenerativeService:
    data = yaml.safe_load(SAMPLE.read_text(encoding="utf-8"))
    if complaints.get("absent"):
        del data["spec"]["complaints"]
    else:
        data["spec"]["complaints"].update(complaints)
    return GenerativeService.from_dict(data)


@pytest.fixture
async def start(fake_model: FakeModel, moderator: LocalModerator,
                tmp_path: Path) -> AsyncIterator[Start]:
    clients: list[TestClient[Any, Any]] = []

    async def started(posture: GenerativeService | None = None, *, records: bool = True,
                      pseudonymise: bool = True) -> TestClient[Any, Any]:
        config = SidecarConfig.from_service(posture or service(), upstream=fake_model.url,
                                            pseudonymisation_key=KEY)
        log = (RecordLog(tmp_path / "records.jsonl", key=KEY, pseudonymise=pseudonymise)
               if records else None)
        client: TestClient[Any, Any] = TestClient(TestServer(
            make_app(Sidecar(config, moderator, records=log)), host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield started
    for client in clients:
        await client.close()


async def gauge(client: TestClient[Any, Any], name: str) -> float:
    text = await (await client.get("/metrics")).text()
    line = next(line for line in text.splitlines() if line.startswith(name + " "))
    return float(line.split()[1])


async def test_published_process(start: Start) -> None:
    client = await start()
    answer = await client.get("/hegui/complaints")
    assert answer.status == 200
    body = await answer.json()
    assert body["responseDeadline"] == "72h" and body["article"] == "Art.15"
    assert body["processUrl"] == "https://chat.example.cn/report/process"
    assert body["channels"]["email"] == "report@example.cn"


async def test_complaint_is_recorded_with_deadline_and_pseudonyms(start: Start,
                                                                  tmp_path: Path) -> None:
    client = await start()
    answer = await client.post("/hegui/complaints", headers={"x-hegui-user": "alice"}, json={
        "text": "回答里有我的手机号 13812345678 请删除", "category": "personalInformation",
        "about": "chat-0123abcd", "contact": "alice@example.cn"})
    assert answer.status == 201, await answer.text()
    body = await answer.json()
    reference = body["reference"]
    assert answer.headers["x-hegui-reference"] == reference
    assert "72h" in body["message"] and body["article"] == "Art.15"

    path = tmp_path / "records.jsonl"
    assert verify(path).ok
    raw = path.read_text(encoding="utf-8")
    # Art.11: neither the user, the contact nor the phone number in the text is kept in clear.
    assert "alice" not in raw and "13812345678" not in raw
    record = json.loads(raw.splitlines()[-1])
    assert record["kind"] == "complaint" and record["reference"] == reference
    assert record["user"] == pseudonym(KEY, "alice")
    assert record["contact_pseudonym"] == pseudonym(KEY, "alice@example.cn")
    assert "***********" in record["text"]
    complaint = load(path).find(reference)
    assert complaint is not None
    assert (complaint.deadline - complaint.received).total_seconds() == 72 * 3600
    assert complaint.about == "chat-0123abcd" and complaint.service == "hegui-demo/chat"


async def test_contact_kept_when_records_are_not_pseudonymised(start: Start,
                                                                tmp_path: Path) -> None:
    client = await start(pseudonymise=False)
    answer = await client.post("/hegui/complaints",
                               json={"text": "wrong answer", "contact": "+86 138 1234 5678"})
    assert answer.status == 201
    complaint = load(tmp_path / "records.jsonl").find((await answer.json())["reference"])
    assert complaint is not None and complaint.contact == "+86 138 1234 5678"


async def test_the_declared_url_path_takes_web_forms(start: Start, fake_model: FakeModel,
                                                     tmp_path: Path) -> None:
    client = await start()
    form = {"text": "这个回答不实", "category": "falseInformation", "submit": "Send"}
    answer = await client.post("/report", data=form)
    assert answer.status == 201, await answer.text()
    # Only POST is taken over: the form page itself still comes from the service.
    assert (await client.get("/report")).status == 404
    assert len(load(tmp_path / "records.jsonl").complaints) == 1


@pytest.mark.parametrize(("body", "status", "field"), [
    ({"category": "other"}, 400, "text"),
    ({"text": "x" * 4001}, 400, "text"),
    ({"text": 42}, 400, "text"),
    ({"text": "x", "contact": "not a contact"}, 400, "contact"),
    ({"text": "x", "category": "Not Camel"}, 400, "category"),
    ({"text": "x", "about": "<script>"}, 400, "about"),
])
async def test_bad_complaints_name_the_field(start: Start, tmp_path: Path,
                                             body: dict[str, Any], status: int,
                                             field: str) -> None:
    client = await start()
    answer = await client.post("/hegui/complaints", json=body)
    assert answer.status == status
    error = (await answer.json())["error"]
    assert error["field"] == field and error["article"] == "Art.15"
    assert not (tmp_path / "records.jsonl").exists()


@pytest.mark.parametrize(("data", "status"), [
    (b"\xff\xfe garbage", 400),
    (b"[1, 2, 3]", 400),
    (b"{not json", 400),
    (json.dumps({"text": "x" * 20000}).encode(), 413),
])
async def test_hostile_bodies(start: Start, data: bytes, status: int) -> None:
    client = await start()
    answer = await client.post("/hegui/complaints", data=data,
                               headers={"Content-Type": "application/json"})
    assert answer.status == status
    assert (await answer.json())["error"]["code"].startswith("hegui.complaint")
    assert (await client.get("/hegui/healthz")).status == 200


async def test_without_records_the_complainant_is_sent_to_the_channel(start: Start) -> None:
    client = await start(records=False)
    answer = await client.post("/hegui/complaints", json={"text": "x"})
    assert answer.status == 503
    assert "https://chat.example.cn/report" in (await answer.json())["error"]["message"]


async def test_no_declared_channel_no_intake(start: Start, fake_model: FakeModel) -> None:
    client = await start(service(absent=True))
    answer = await client.post("/hegui/complaints", json={"text": "x"})
    assert answer.status == 404  # passed through to the model server, which has no such page
    assert "hegui_sidecar_complaints_overdue" not in await (await client.get("/metrics")).text()


async def test_overdue_gauge_follows_deadline_closure_and_restart(start: Start,
                                                                  tmp_path: Path) -> None:
    client = await start(service(responseDeadline="300ms"))
    references = []
    for text in ("first", "second"):
        answer = await client.post("/hegui/complaints", json={"text": text})
        references.append((await answer.json())["reference"])
    assert await gauge(client, "hegui_sidecar_complaints_overdue") == 0
    assert await gauge(client, "hegui_sidecar_complaints_open") == 2
    await asyncio.sleep(0.4)
    assert await gauge(client, "hegui_sidecar_complaints_overdue") == 2

    close(load(tmp_path), references[0], "answered by phone", closed_by="ops")
    assert await gauge(client, "hegui_sidecar_complaints_overdue") == 1

    # A restarted sidecar finds its open complaints and the closures in its records.
    again = await start(service(responseDeadline="300ms"))
    assert await gauge(again, "hegui_sidecar_complaints_overdue") == 1
    assert await gauge(again, "hegui_sidecar_complaints_open") == 1
    assert verify(tmp_path / "records.jsonl").ok
