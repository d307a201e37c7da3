"""Personal information a model server's error or metadata answer spells across its JSON
strings (`"call 138"`, `"12345678"`), each clean alone, is masked in the strings it covers, one
character for one, and the answer relayed; not passed on, and not withheld whole (Art.4(4))."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from hegui.sidecar.config import SidecarConfig
from hegui.sidecar.testing import LocalModerator, exchange, parse, posture, sidecar_client
from hegui.sidecar.testing import http_request as request

PHONE = "13812345678"


async def _through(method: str, path: str, answer: Any, status: int,
                   body: bytes = b"") -> tuple[int, dict[str, str], Any]:
    async def handle(request_: web.Request) -> web.Response:
        await request_.read()
        return web.json_response(answer, status=status)

    app = web.Application()
    app.router.add_route(method, path, handle)
    model = TestServer(app, host="127.0.0.1")
    await model.start_server()
    client = await sidecar_client(SidecarConfig(posture(), upstream=str(model.make_url(""))
                                                .rstrip("/")), LocalModerator())
    try:
        got, headers, said = parse(await exchange(client.host, client.port,
                                                  request(method, path, body)))
    finally:
        await client.close()
        await model.close()
    return got, headers, json.loads(said)


@pytest.mark.parametrize(("method", "path", "status", "body"), [
    ("POST", "/v1/chat/completions", 400,
     json.dumps({"model": "fake", "messages": [{"role": "user", "content": "hi"}]}).encode()),
    ("GET", "/v1/models", 200, b""),
])
async def test_a_number_spelled_across_strings_is_masked_where_it_stands(
        method: str, path: str, status: int, body: bytes) -> None:
    answer = {"error": {"message": f"call {PHONE[:3]}", "detail": PHONE[3:]}, "object": "x"}
    got, headers, said = await _through(method, path, answer, status, body)
    assert got == status and headers.get("x-hegui-output") == "masked"
    assert said["error"] == {"message": "call ***", "detail": "*" * 8}
    assert said["object"] == "x"  # the rest as the model wrote it


async def test_two_paths_spelling_one_number_are_both_masked() -> None:
    """Two paths whose strings join into the same text, split at different places: each is
    masked in the strings it covers (the first one found was masked alone). The strings between
    them ("y") keep the whole document's run from spelling the number."""
    answer = {"error": {"message": "bad",
                        "a": [{"x": f"call {PHONE[:3]}", "y": "z"}, {"x": PHONE[3:], "y": "z"}],
                        "b": [{"x": f"call {PHONE[:4]}", "y": "q"}, {"x": PHONE[4:], "y": "q"}]}}
    got, headers, said = await _through("GET", "/v1/models", answer, 200, b"")
    assert got == 200 and headers.get("x-hegui-output") == "masked"
    for path in ("a", "b"):
        assert PHONE not in "".join(e["x"] for e in said["error"][path])
