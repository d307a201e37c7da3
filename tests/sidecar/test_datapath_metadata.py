"""Metadata routes are no channel around moderation (Art.4, Art.14): the application team runs
the model server, so it can answer `GET /v1/models/<prompt as a model name>`, `POST /api/show`
or its own `/metrics` with generated text, and its clients would read it. Each test goes through
a real sidecar over raw HTTP against a stand-in model server that answers metadata routes with
what the test says; each failed on the sidecar that relayed metadata as it came:

- a prohibited text in a model list, a model card, a health answer, a JSON key, a response
  header, a Prometheus HELP line or label value, or a body in another charset reached the client;
- a phone number in those reached the client unmasked (and masking one must leave a sample
  value that reads like a phone number alone, or Prometheus could not parse the page);
- a prohibited prompt in a metadata request's query, path or body reached the model;
- a metadata answer of any size was relayed (now: more than MAX_METADATA_BYTES is refused with
  a clear error, never buffered without bound).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from hegui.sidecar.config import SidecarConfig
from hegui.sidecar.metadata import MAX_METADATA_BYTES
from hegui.sidecar.testing import LocalModerator, exchange, parse, posture, sidecar_client
from hegui.sidecar.testing import http_request as request

BAD = "教我制作炸弹"  # terrorismExtremism, Art.4(1)
PHONE = "13812345678"  # a mainland mobile number, Art.4(4)


class Standin:
    """A model server whose metadata answers the test sets: `answers[path]` is (status, body,
    content type, extra headers); what it was asked is in `seen`."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, bytes, str, dict[str, str]]] = {}
        self.seen: list[tuple[str, str, bytes]] = []

    def says(self, path: str, body: str | bytes | dict[str, Any], *,
             content_type: str = "application/json", status: int = 200,
             headers: dict[str, str] | None = None) -> None:
        data = (json.dumps(body, ensure_ascii=False).encode() if isinstance(body, dict)
                else body.encode() if isinstance(body, str) else body)
        self.answers[path] = (status, data, content_type, headers or {})

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append((request.method, request.raw_path, await request.read()))
        status, body, content_type, headers = self.answers.get(
            request.path, (200, b'{"ok": true}', "application/json", {}))
        return web.Response(status=status, body=body, headers={"Content-Type": content_type,
                                                               **headers})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


Ask = Callable[..., Any]


@pytest.fixture
async def rig() -> AsyncIterator[tuple[Standin, Ask]]:
    standin = Standin()
    model = TestServer(standin.app(), host="127.0.0.1")
    await model.start_server()
    client = await sidecar_client(SidecarConfig(posture(), upstream=str(model.make_url(""))
                                                .rstrip("/")), LocalModerator())

    async def ask(method: str, target: str, body: bytes = b"", *headers: str
                  ) -> tuple[int, dict[str, str], bytes]:
        return parse(await exchange(client.host, client.port,
                                    request(method, target, body, *headers)))

    yield standin, ask
    await client.close()
    await model.close()


def _shows(answer: bytes, text: str) -> bool:
    """Whether the client could read `text` in the answer, raw or JSON-escaped."""
    decoded = answer.decode("utf-8", "replace")
    return text in decoded or json.dumps(text)[1:-1] in decoded


EXPOSITION = "text/plain; version=0.0.4; charset=utf-8"


@pytest.mark.parametrize(("method", "target", "path", "said", "content_type"), [
    ("GET", "/v1/models/llama", "/v1/models/llama",
     {"id": "llama", "object": "model", "owned_by": BAD}, "application/json"),
    ("GET", "/v1/models", "/v1/models",
     {"object": "list", "data": [{"id": "llama", "root": f"/models/{BAD}"}]}, "application/json"),
    ("POST", "/api/show", "/api/show", {"modelfile": "FROM llama", "license": BAD},
     "application/json"),
    ("GET", "/v1/models", "/v1/models", {"object": "list", BAD: []}, "application/json"),
    ("GET", "/health", "/health", f"ok {BAD}", "text/plain"),
    ("GET", "/version", "/version", json.dumps({"version": BAD}), "application/json"),
    ("GET", "/hegui/model/metrics", "/metrics",
     f"# HELP vllm_tokens_total {BAD}\n# TYPE vllm_tokens_total counter\n"
     f"vllm_tokens_total 12\n", EXPOSITION),
    ("GET", "/hegui/model/metrics", "/metrics",
     f'vllm_tokens_total{{model_name="{BAD}"}} 12\n', EXPOSITION),
    ("GET", "/hegui/model/metrics", "/metrics", f"# {BAD}\nvllm_tokens_total 12\n", EXPOSITION),
])
async def test_a_prohibited_text_in_a_metadata_answer_is_withheld(
        rig: tuple[Standin, Ask], method: str, target: str, path: str,
        said: str | dict[str, Any], content_type: str) -> None:
    standin, ask = rig
    standin.says(path, said, content_type=content_type)
    body = b'{"model": "llama"}' if method == "POST" else b""
    status, _, answer = await ask(method, target, body)
    assert status == 451 and not _shows(answer, BAD)
    error = json.loads(answer)["error"]
    assert error["code"] == "hegui.output_blocked" and error["direction"] == "output"
    assert error["article"] == "Art.4(1)"


async def test_a_prohibited_text_in_another_charset_or_a_header_is_withheld(
        rig: tuple[Standin, Ask]) -> None:
    standin, ask = rig
    standin.says("/health", f"ok {BAD}".encode("gb18030"),
                 content_type="text/plain; charset=gb18030")
    status, _, answer = await ask("GET", "/health")
    assert status == 451 and BAD.encode("gb18030") not in answer
    # Bytes that are not text in the declared charset: refused, not relayed as they came.
    standin.says("/health", BAD.encode("gb18030"), content_type="text/plain; charset=utf-8")
    status, _, answer = await ask("GET", "/health")
    assert status == 502 and BAD.encode("gb18030") not in answer
    assert json.loads(answer)["error"]["code"] == "hegui.upstream_malformed"
    # A response header a client reads as well as the body.
    standin.says("/ping", "ok", content_type="text/plain",
                 headers={"X-Raw": BAD})
    status, headers, answer = await ask("GET", "/ping")
    assert status == 451 and "x-raw" not in headers


async def test_an_error_answer_on_a_metadata_route_keeps_its_status(
        rig: tuple[Standin, Ask]) -> None:
    standin, ask = rig
    standin.says("/v1/models/llama", {"error": {"message": f"no model {BAD}"}}, status=404)
    status, _, answer = await ask("GET", "/v1/models/llama")
    assert status == 404 and not _shows(answer, BAD)
    assert json.loads(answer)["error"]["code"] == "hegui.output_blocked"


async def test_personal_information_in_a_metadata_answer_is_masked(
        rig: tuple[Standin, Ask]) -> None:
    standin, ask = rig
    standin.says("/v1/models/llama", {"id": "llama", "owned_by": f"call {PHONE}",
                                      f"x {PHONE}": 1})
    status, headers, answer = await ask("GET", "/v1/models/llama")
    assert status == 200 and headers["x-hegui-output"] == "masked"
    assert json.loads(answer) == {"id": "llama", "owned_by": "call " + "*" * 11,
                                  "x " + "*" * 11: 1}
    assert "aigc" not in answer.decode().lower()  # metadata is not generated content (Art.12)
    page = (f"# HELP vllm_requests_total Requests (ask {PHONE})\n"
            f"# TYPE vllm_requests_total counter\n"
            f'vllm_requests_total{{model_name="llama",owner="{PHONE}"}} {PHONE}\n'
            f"vllm_bytes_total {PHONE} 1700000000000\n")
    standin.says("/metrics", page, content_type=EXPOSITION)
    status, headers, answer = await ask("GET", "/hegui/model/metrics")
    assert status == 200 and headers["x-hegui-output"] == "masked"
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    assert answer.decode() == page.replace(f"ask {PHONE}", "ask " + "*" * 11).replace(
        f'"{PHONE}"', '"' + "*" * 11 + '"')  # the sample values stay numbers
    standin.says("/health", f"call {PHONE}", content_type="text/plain")
    status, headers, answer = await ask("GET", "/health")
    assert (status, answer) == (200, b"call " + b"*" * 11)


async def test_a_prohibited_metadata_request_never_reaches_the_model(
        rig: tuple[Standin, Ask]) -> None:
    standin, ask = rig
    for method, target, body in (
            ("GET", f"/v1/models?q={quote(BAD)}", b""),
            ("POST", "/api/show", json.dumps({"model": BAD}).encode()),
            ("POST", "/api/show", json.dumps({"model": "llama", "options": {BAD: 1}}).encode()),
            ("GET", f"/v2/models/llama/config?{quote(BAD)}=1", b"")):
        status, _, answer = await ask(method, target, body)
        assert status == 400, target
        assert json.loads(answer)["error"]["code"] == "hegui.input_blocked"
    status, _, _ = await ask("GET", "/v1/models", b"", f"X-Prompt: {quote(BAD)}")
    assert status == 200  # a percent-encoded header is no text the rules read: relayed
    assert len(standin.seen) == 1


async def test_personal_information_in_a_metadata_request_is_masked(
        rig: tuple[Standin, Ask]) -> None:
    standin, ask = rig
    status, _, _ = await ask("POST", "/api/show", json.dumps(
        {"model": "llama", "note": f"call {PHONE}"}).encode())
    assert status == 200
    _, _, sent = standin.seen[-1]
    assert json.loads(sent) == {"model": "llama", "note": "call " + "*" * 11}
    status, _, _ = await ask("GET", f"/v1/models/{PHONE}?owner={PHONE}")
    assert status == 200
    _, target, _ = standin.seen[-1]
    assert PHONE not in target and target.startswith("/v1/models/")


async def test_a_metadata_answer_larger_than_the_bound_is_refused(
        rig: tuple[Standin, Ask]) -> None:
    standin, ask = rig
    standin.says("/metrics",
                 "x_total 1\n" * (MAX_METADATA_BYTES // 10 + 1), content_type=EXPOSITION)
    status, _, answer = await ask("GET", "/hegui/model/metrics")
    assert status == 502 and len(answer) < 4096
    error = json.loads(answer)["error"]
    assert error["code"] == "hegui.upstream_too_large"
    assert str(MAX_METADATA_BYTES) in error["message"]
    # A page of a sane size is relayed as it came.
    standin.says("/metrics", "x_total 1\n" * 1000, content_type=EXPOSITION)
    status, _, answer = await ask("GET", "/hegui/model/metrics")
    assert (status, answer) == (200, b"x_total 1\n" * 1000)
