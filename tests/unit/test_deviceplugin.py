"""The fake GPU device plugin against a kubelet's side of the device-plugin API made in the test
(the Registration service on kubelet.sock, then the calls the kubelet makes on the plugin's
socket). The real kubelet is in tests/integration/test_real_node.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from hegui.localcluster import deviceplugin
from hegui.localcluster.deviceplugin import API_VERSION, FakeGpuPlugin, M


class Kubelet:
    """The kubelet's Registration service, recording each RegisterRequest."""

    def __init__(self, plugin_dir: Path) -> None:
        self.requests: list[Any] = []
        self.registered = threading.Event()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))

        def register(request: Any, context: Any) -> Any:
            self.requests.append(request)
            self.registered.set()
            return M["Empty"]()

        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            f"{API_VERSION}.Registration", {"Register": grpc.unary_unary_rpc_method_handler(
                register, request_deserializer=M["RegisterRequest"].FromString,
                response_serializer=M["Empty"].SerializeToString)}),))
        plugin_dir.mkdir(parents=True, exist_ok=True)
        self.server.add_insecure_port(f"unix://{plugin_dir / 'kubelet.sock'}")
        self.server.start()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Kubelet, FakeGpuPlugin]]:
    # A short path: unix socket paths are limited to 107 bytes.
    kubelet = Kubelet(tmp_path / "device-plugins")
    plugin = FakeGpuPlugin(tmp_path / "device-plugins", devices=3)
    thread = threading.Thread(target=plugin.run, daemon=True)
    thread.start()
    yield kubelet, plugin
    plugin.stopped.set()
    thread.join(5)
    kubelet.server.stop(0)


def _call(plugin: FakeGpuPlugin, method: str, request: Any, response: str) -> Any:
    with grpc.insecure_channel(f"unix://{plugin.socket}") as channel:
        stub = channel.unary_unary(f"/{API_VERSION}.DevicePlugin/{method}",
                                   request_serializer=type(request).SerializeToString,
                                   response_deserializer=M[response].FromString)
        return stub(request, timeout=5)


def test_registers_lists_and_allocates_gpus(running: tuple[Kubelet, FakeGpuPlugin]) -> None:
    kubelet, plugin = running
    assert kubelet.registered.wait(10)
    (request,) = kubelet.requests
    assert (request.version, request.resource_name, request.endpoint) == (
        "v1beta1", "nvidia.com/gpu", deviceplugin.SOCKET_NAME)
    with grpc.insecure_channel(f"unix://{plugin.socket}") as channel:
        watch = channel.unary_stream(f"/{API_VERSION}.DevicePlugin/ListAndWatch",
                                     request_serializer=M["Empty"].SerializeToString,
                                     response_deserializer=M["ListAndWatchResponse"].FromString)
        first = next(iter(watch(M["Empty"](), timeout=5)))
    assert [(d.ID, d.health) for d in first.devices] == [
        (f"hegui-fake-gpu-{i}", "Healthy") for i in range(3)]
    allocated = _call(plugin, "Allocate", M["AllocateRequest"](container_requests=[
        M["ContainerAllocateRequest"](devices_ids=["hegui-fake-gpu-0", "hegui-fake-gpu-2"])]),
        "AllocateResponse")
    (container,) = allocated.container_responses
    assert {e.key: e.value for e in container.envs} == {
        "NVIDIA_VISIBLE_DEVICES": "hegui-fake-gpu-0,hegui-fake-gpu-2"}
    with pytest.raises(grpc.RpcError) as refused:
        _call(plugin, "Allocate", M["AllocateRequest"](container_requests=[
            M["ContainerAllocateRequest"](devices_ids=["gpu-that-is-not-there"])]),
            "AllocateResponse")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_registers_again_when_the_kubelet_restarts(tmp_path: Path) -> None:
    first = Kubelet(tmp_path / "device-plugins")
    plugin = FakeGpuPlugin(tmp_path / "device-plugins", devices=1)
    thread = threading.Thread(target=plugin.run, daemon=True)
    thread.start()
    try:
        assert first.registered.wait(10)
        first.server.stop(0)
        # A restarted kubelet removes the plugins' sockets and makes its own anew.
        (tmp_path / "device-plugins" / "kubelet.sock").unlink(missing_ok=True)
        plugin.socket.unlink()
        time.sleep(1.1)
        second = Kubelet(tmp_path / "device-plugins")
        assert second.registered.wait(10)
        second.server.stop(0)
    finally:
        plugin.stopped.set()
        thread.join(5)
