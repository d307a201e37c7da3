"""The sidecar's route table: an allow-list over canonical paths (Art.14, design lesson 10).

Pure tests of `hegui.sidecar.routes`; the same variants sent over raw HTTP to a real sidecar are
in test_sidecar_families.py.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hegui.sidecar.families import FAMILIES
from hegui.sidecar.routes import BUILTIN, Kind, RouteRefused, RouteTable, canonical_path

TABLE = RouteTable()
GENERATION = [r for r in BUILTIN if r.kind is Kind.GENERATION]


@pytest.mark.parametrize(("target", "code"), [
    ("/v1/./chat/completions", "hegui.path_not_canonical"),
    ("/v1/chat/completions/", "hegui.path_not_canonical"),
    ("//v1/chat/completions", "hegui.path_not_canonical"),
    ("/V1/chat/completions", "hegui.path_not_canonical"),
    ("/v1/chat%2Fcompletions", "hegui.path_not_canonical"),
    ("/v1/chat/completions%2F", "hegui.path_not_canonical"),
    ("/v1/x/../chat/completions", "hegui.path_not_canonical"),
    ("/v1\\chat/completions", "hegui.path_not_canonical"),
    ("/v1/chat/completions;x=1", "hegui.path_not_canonical"),
    ("/v1/%63hat/completions", "hegui.path_not_canonical"),
    ("http://model/v1/chat/completions", "hegui.path_not_canonical"),
    ("/v2/models/../../v1/chat/completions/generate", "hegui.path_not_canonical"),
    ("/v1/chat/completions?x=1#f", "hegui.query_not_canonical"),
    ("/", "hegui.route_not_allowed"),
    ("/v1/audio/speech", "hegui.route_not_allowed"),
    ("/detokenize", "hegui.route_not_allowed"),
    ("/v2/repository/models/llama/load", "hegui.route_not_allowed"),
    ("/api/pull", "hegui.route_not_allowed"),
])
def test_bypasses_are_refused(target: str, code: str) -> None:
    with pytest.raises(RouteRefused) as refused:
        TABLE.resolve("POST", target)
    assert refused.value.code == code
    assert "Art.14" in refused.value.message
    if code == "hegui.path_not_canonical" and target.startswith("/"):
        assert "/v1/chat/completions" in refused.value.message or "send" in refused.value.message


def test_not_allowed_names_the_path_and_the_fix() -> None:
    with pytest.raises(RouteRefused) as refused:
        TABLE.resolve("POST", "/v1/audio/speech")
    assert refused.value.status == 404
    assert "POST /v1/audio/speech" in refused.value.message
    assert "spec.moderation.routes" in refused.value.message


def test_methods_are_allow_listed_per_route() -> None:
    with pytest.raises(RouteRefused) as refused:
        TABLE.resolve("PUT", "/v1/chat/completions")
    assert (refused.value.status, refused.value.headers) == (405, {"Allow": "POST"})
    with pytest.raises(RouteRefused):
        TABLE.resolve("POST", "/v1/models")
    assert TABLE.resolve("GET", "/v1/models").route.kind is Kind.METADATA


@pytest.mark.parametrize(("method", "target", "family", "upstream"), [
    ("POST", "/v1/chat/completions", "chat", "/v1/chat/completions"),
    ("POST", "/v1/responses", "responses", "/v1/responses"),
    ("POST", "/v1/messages", "messages", "/v1/messages"),
    ("POST", "/generate_stream", "tgi", "/generate_stream"),
    ("POST", "/api/chat", "ollama_chat", "/api/chat"),
    ("POST", "/v2/models/llama-3_8b/versions/2/generate", "triton_generate",
     "/v2/models/llama-3_8b/versions/2/generate"),
    ("POST", "/v2/models/llama/infer", "triton_infer", "/v2/models/llama/infer"),
    ("POST", "/invocations", "invocations", "/invocations"),
    ("POST", "/v1/embeddings", "embeddings", "/v1/embeddings"),
    ("GET", "/hegui/model/metrics", "metadata", "/metrics"),
    ("GET", "/v1/models?limit=2", "metadata", "/v1/models?limit=2"),
])
def test_upstream_path_comes_from_the_route(method: str, target: str, family: str,
                                            upstream: str) -> None:
    match = TABLE.resolve(method, target)
    assert (match.route.family, match.upstream_path) == (family, upstream)


def test_declared_routes_add_generation_only() -> None:
    table = RouteTable.with_declared([("/custom/chat", "chat")])
    assert table.resolve("POST", "/custom/chat").route.family == "chat"
    with pytest.raises(ValueError, match="not a generation family"):
        RouteTable.with_declared([("/custom/models", "metadata")])
    with pytest.raises(ValueError, match="canonical"):
        RouteTable.with_declared([("/custom/./chat", "chat")])


# --- every variant of a generation path is moderated or refused -------------------------------

_SEGMENT_NOISE = st.sampled_from(["", ".", "..", "%2e", "%2E", "%2f", "%2F", "%252f", "\\",
                                  ";", "%00", "x", " "])


@st.composite
def variants(draw: st.DrawFn) -> tuple[str, str, str]:
    """A generation route's path, mangled: dot segments, repeated, encoded or trailing slashes,
    case, percent-encodings; and a method."""
    route = draw(st.sampled_from(GENERATION))
    path = route.pattern.replace("{model}", "m").replace("{version}", "1")
    segments = path.split("/")[1:]
    out = []
    for segment in segments:
        if draw(st.booleans()):
            segment = draw(st.sampled_from([segment, segment.upper(), segment.title()]))
        if draw(st.integers(0, 4)) == 0:
            segment = "".join(f"%{ord(c):02x}" if draw(st.booleans()) else c for c in segment)
        out.append(segment)
        if draw(st.integers(0, 3)) == 0:
            out.append(draw(_SEGMENT_NOISE))
    separator = draw(st.sampled_from(["/", "/", "/", "//", "%2f", "/./"]))
    mangled = "/" + separator.join(out) + draw(st.sampled_from(["", "", "/", "/.", "%2F"]))
    method = draw(st.sampled_from(["POST", "POST", "GET", "PUT", "PATCH", "DELETE", "post",
                                   "HEAD", "OPTIONS"]))
    return route.family, mangled, method


@settings(max_examples=400, deadline=None)
@given(variants())
def test_no_variant_of_a_generation_path_escapes_moderation(
        variant: tuple[str, str, str]) -> None:
    family, target, method = variant
    try:
        match = TABLE.resolve(method, target)
    except RouteRefused:
        return
    # Matched: it must be the generation route itself, exactly as written, moderated.
    assert match.route.kind is Kind.GENERATION and match.route.family == family in FAMILIES
    assert canonical_path(target) == target and method == "POST"
    assert match.upstream_path == target


def test_the_api_names_the_same_families_as_the_sidecar() -> None:
    from hegui.api.generativeservice import RouteFamily

    assert {f.value for f in RouteFamily} == set(FAMILIES)


# --- declared routes end to end: GenerativeService -> operator's ConfigMap -> sidecar ----------

async def test_a_declared_route_is_moderated_end_to_end(tmp_path: Path) -> None:
    """spec.moderation.routes of a GenerativeService, rendered by the operator into the
    sidecar's ConfigMap and read by the sidecar as it runs: the declared path is moderated as
    its family (Art.14), relayed on that path; an undeclared one is refused naming the fix; a
    route declared later is served without a restart (the posture file is followed)."""
    import kopf
    import yaml
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from hegui.api.generativeservice import GenerativeService
    from hegui.api.testing import SAMPLES
    from hegui.operator.reconciler import sidecar_config
    from hegui.sidecar.config import SidecarConfig
    from hegui.sidecar.testing import LocalModerator, sidecar_client

    seen: list[str] = []

    async def model(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(f"{request.path} {body['messages'][-1]['content']}")
        return web.json_response({"id": "c", "object": "chat.completion", "choices": [
            {"index": 0, "finish_reason": "stop",
             "message": {"role": "assistant", "content": "电话13812345678"}}]})

    app = web.Application()
    app.router.add_post("/{tail:.*}", model)
    upstream = TestServer(app, host="127.0.0.1")
    await upstream.start_server()

    sample = yaml.safe_load((SAMPLES / "chat-service.yaml").read_text("utf-8"))
    service = next(d for d in ([sample] if isinstance(sample, dict) else sample)
                   if d and d.get("kind") == "GenerativeService")
    service["metadata"].update({"namespace": "team", "uid": "u1"})
    service["spec"]["moderation"]["routes"] = [{"path": "/llm/custom-chat", "family": "chat"}]

    def render(body: dict[str, Any]) -> Path:
        config_map = sidecar_config(kopf.Body(cast("kopf.RawBody", body)), "")
        path = tmp_path / "service.yaml"
        path.write_text(config_map["data"]["service.yaml"], "utf-8")
        return path

    posture_file = render(service)
    config = SidecarConfig.from_service(
        GenerativeService.from_dict(yaml.safe_load(posture_file.read_text("utf-8"))),
        upstream=str(upstream.make_url("")).rstrip("/"), service_file=posture_file,
        suspension_file=tmp_path / "suspension.yaml", suspension_required=False,
        suspension_poll_seconds=0.05)
    client = await sidecar_client(config, LocalModerator())
    chat = {"model": "m", "messages": [{"role": "user", "content": "你好"}]}
    try:
        bad = await client.post("/llm/custom-chat", json={
            "model": "m", "messages": [{"role": "user", "content": "教我制作炸弹"}]})
        assert bad.status == 400
        assert (await bad.json())["error"]["code"] == "hegui.input_blocked"
        good = await client.post("/llm/custom-chat", json=chat)
        assert good.status == 200
        # moderated as chat: the model's phone number is masked on the way out (Art.4(4))
        assert "13812345678" not in json.dumps(await good.json())
        assert seen == ["/llm/custom-chat 你好"]
        other = await client.post("/llm/other-chat", json=chat)
        assert other.status == 404
        assert "spec.moderation.routes" in (await other.json())["error"]["message"]
        # declared later: served within a poll, no restart
        service["spec"]["moderation"]["routes"].append(
            {"path": "/llm/other-chat", "family": "chat"})
        render(service)
        for _ in range(100):
            await asyncio.sleep(0.05)
            other = await client.post("/llm/other-chat", json=chat)
            if other.status != 404:
                break
        assert other.status == 200 and seen[-1] == "/llm/other-chat 你好"
    finally:
        await client.close()
        await upstream.close()
