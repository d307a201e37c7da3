"""The webhook server over real TLS: answers, bounds, certificate reload."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509

from hegui.admission import review, server
from hegui.localcluster import pki


def _deny_everything(request: review.AdmissionRequest) -> review.Decision:
    if request.name == "boom":
        raise RuntimeError("a bug in a rule")
    return review.Decision(False, f"no {request.kind} today (Art.17)", code=403)


def _write_serving_pair(ca: pki.CertificateAuthority, directory: Path) -> None:
    pki.write_serving_pair(ca, directory, "tls", names=("localhost",), ips=("127.0.0.1",))


@pytest.fixture
async def webhook(tmp_path: Path) -> AsyncIterator[tuple[str, ssl.SSLContext, Path,
                                                         pki.CertificateAuthority]]:
    ca = pki.CertificateAuthority.create("test-ca")
    ca.write(tmp_path / "ca.crt", tmp_path / "ca.key")
    _write_serving_pair(ca, tmp_path)
    app = server.make_app(_deny_everything)
    bound: list[int] = []
    listening = asyncio.Event()

    def on_bound(port: int) -> None:
        bound.append(port)
        listening.set()

    task = asyncio.create_task(server.serve(
        app, host="127.0.0.1", port=0, cert_file=tmp_path / "tls.crt",
        key_file=tmp_path / "tls.key", reload_interval=0.05, on_bound=on_bound))
    await asyncio.wait_for(listening.wait(), 10)
    client_context = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    yield f"https://127.0.0.1:{bound[0]}", client_context, tmp_path, ca
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def _review(name: str = "d") -> dict[str, Any]:
    return {"apiVersion": review.API_VERSION, "kind": review.KIND, "request": {
        "uid": "u-9", "operation": "CREATE", "kind": {"group": "apps", "kind": "Deployment"},
        "namespace": "ns", "name": name, "object": {"metadata": {"name": name}}}}


async def _post(url: str, context: ssl.SSLContext, body: bytes) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.post(
            f"{url}/validate", data=body, ssl=context,
            headers={"Content-Type": "application/json"}) as response:
        return response.status, await response.json()


async def test_answers_a_review_over_tls(webhook: Any) -> None:
    url, context, _, _ = webhook
    status, answer = await _post(url, context, json.dumps(_review()).encode())
    assert status == 200
    assert answer["response"]["uid"] == "u-9"
    assert answer["response"]["allowed"] is False
    assert "Art.17" in answer["response"]["status"]["message"]


async def test_a_rule_that_raises_is_an_explicit_error_not_a_crash(webhook: Any) -> None:
    url, context, _, _ = webhook
    status, answer = await _post(url, context, json.dumps(_review("boom")).encode())
    assert status == 200 and answer["response"]["status"]["code"] == 500
    status, _ = await _post(url, context, json.dumps(_review()).encode())
    assert status == 200  # and the server still serves


async def test_malformed_and_huge_bodies_are_refused(webhook: Any) -> None:
    url, context, _, _ = webhook
    status, answer = await _post(url, context, b'{"apiVersion": "nope"}')
    assert status == 400 and "expected apiVersion" in answer["error"]
    status, answer = await _post(url, context, b" " * (review.MAX_BODY_BYTES + 10))
    assert status == 413


async def test_a_rotated_certificate_is_served_without_restart(webhook: Any) -> None:
    url, context, directory, ca = webhook

    async def served_serial() -> int:
        _, writer = await asyncio.open_connection(
            "127.0.0.1", int(url.rsplit(":", 1)[1]), ssl=context, server_hostname="localhost")
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        await writer.wait_closed()
        return x509.load_der_x509_certificate(der).serial_number

    before = await served_serial()
    _write_serving_pair(ca, directory)
    expected = x509.load_pem_x509_certificate((directory / "tls.crt").read_bytes()).serial_number
    for _ in range(100):
        if (serial := await served_serial()) != before:
            break
        await asyncio.sleep(0.05)
    assert serial == expected


def test_a_settled_heap_keeps_full_collections_off_the_index() -> None:
    """Each full collection of the cyclic GC walks every object the webhook holds (modules,
    the index's parsed GenerativeServices and assessments): a pause of every review in flight,
    40-90 ms with 200 services (issue 20, the tail). Once settled (as `server.run` does when
    the watches have listed), a full collection walks only what was made since, and the index
    still takes changes. In a child process: this one's heap is pytest's."""
    script = """
import gc, json
from hegui.admission import server
from hegui.rules.index import ComplianceIndex
services = [{"apiVersion": "hegui.io/v1alpha1", "kind": "GenerativeService",
             "metadata": {"name": f"svc-{i}", "namespace": "ai"},
             "spec": {"selector": {"matchLabels": {"app": f"model-{i}"}},
                      "filing": {"publicOpinion": True,
                                 "algorithm": {"number": "网信算备110108823483901230011号"}},
                      "assessment": {"external": {"reportId": f"R-{i}", "result": "Pass",
                                                  "assessedOn": "2026-06-01",
                                                  "expiresOn": "2099-06-01"}},
                      "labeling": {"modalities": ["text"],
                                   "implicit": {"contentProducer": "Example AI Co."}}}}
            for i in range(200)]
index = ComplianceIndex.from_objects(services)
assert not index.invalid, index.invalid
gc.collect()
walked = len(gc.get_objects())
server.settle_heap()
settled = len(gc.get_objects())
index.upsert({**services[0], "spec": {**services[0]["spec"], "selector": {
    "matchLabels": {"app": "renamed"}}}})
print(json.dumps({"walked": walked, "settled": settled, "services": len(index.services),
                  "changed": index.services_selecting("ai", [{"app": "renamed"}]) != []}))
"""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True, timeout=120)
    found = json.loads(done.stdout)
    assert found["walked"] > 20_000  # the modules and the index, walked by every full collection
    assert found["settled"] < 100
    assert found["services"] == 200 and found["changed"] is True
