"""KubeCluster, the operator's requests to the apiserver, against a real HTTP server through the
kubernetes client: what a listing decodes to (issue 20, scale: decoded with orjson)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from hegui.operator.cluster import POD, KubeCluster

#: What the server answers, by path: (status, body).
_ANSWERS: dict[str, tuple[int, bytes]] = {}


class _Apiserver(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status, body = _ANSWERS.get(self.path.split("?")[0], (404, b'{"kind":"Status"}'))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def kube() -> Iterator[KubeCluster]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Apiserver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    configuration = client.Configuration(host=f"http://127.0.0.1:{server.server_address[1]}")
    try:
        yield KubeCluster(client.ApiClient(configuration))
    finally:
        server.shutdown()
        server.server_close()


def _pod(name: str, **extra: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "team", "labels": {"app": "chat"},
                         "annotations": {"note": "模型 ✓ \u2028"}},
            "spec": {"containers": [{"name": "model", "image": "llm:1",
                                     "ports": [{"containerPort": 8000}]}]},
            "status": {"phase": "Pending"}, **extra}


def test_a_listing_reads_as_the_json_module_reads_it(kube: KubeCluster) -> None:
    listing = {"kind": "PodList", "metadata": {"resourceVersion": "7"},
               "items": [_pod("a"), _pod("b", priority=-3, ratio=0.25, flag=None)]}
    _ANSWERS["/api/v1/namespaces/team/pods"] = (
        200, json.dumps(listing, ensure_ascii=False).encode())
    assert kube.objects(POD, "team") == listing["items"]


def test_an_answer_orjson_refuses_is_read_as_the_json_module_reads_it(
        kube: KubeCluster) -> None:
    # A lone surrogate escape and a number beyond a double: orjson refuses both, the json
    # module reads them; the listing must read as before, not fail every reconcile of the
    # namespace.
    _ANSWERS["/api/v1/namespaces/odd/pods"] = (
        200, b'{"items": [{"metadata": {"name": "a", "annotations": {"note": "\\ud800"}},'
             b' "spec": {"weight": 1e400}}]}')
    [pod] = kube.objects(POD, "odd")
    assert pod["metadata"]["annotations"]["note"] == "\ud800"
    assert pod["spec"]["weight"] == float("inf")


def test_an_error_answer_is_still_the_clients_exception_with_its_status(
        kube: KubeCluster) -> None:
    with pytest.raises(ApiException) as raised:
        kube.get(POD, "team", "missing")
    assert raised.value.status == 404
