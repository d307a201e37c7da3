"""A device plugin that advertises `nvidia.com/gpu` devices without hardware, through the kubelet's
device-plugin API (v1beta1, gRPC over unix sockets), so that the scheduler, the webhook and the
injector see a GPU pod on the local cluster's real node exactly as on a GPU cluster.

It does what NVIDIA's plugin does minus the hardware: registers `nvidia.com/gpu` with the kubelet,
lists N healthy devices (ListAndWatch), and on Allocate tells the container which ones it got
(`NVIDIA_VISIBLE_DEVICES`, as NVIDIA's plugin does), mounting nothing. Re-registers when the
kubelet restarts (its socket is recreated).

The messages are described here, field numbers as in the kubelet's api.proto
(k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1), so no generated code is needed: only grpcio and
protobuf, which hegui's core already installs (tritonclient[grpc]).

The kubelet listens on /var/lib/kubelet/device-plugins/kubelet.sock whatever its --root-dir (the
path is a constant of the API), so one machine has one real node at a time.

    python -m hegui.localcluster.deviceplugin [--plugin-dir DIR] [--devices 4]
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

API_VERSION = "v1beta1"
RESOURCE = "nvidia.com/gpu"
SOCKET_NAME = "hegui-gpu.sock"
#: Where the kubelet's Registration service listens (kubelet.sock) and plugins put theirs.
PLUGIN_DIR = Path("/var/lib/kubelet/device-plugins")
_log = logging.getLogger("hegui.deviceplugin")

_F = descriptor_pb2.FieldDescriptorProto
_STRING, _BOOL, _INT64, _INT32, _MESSAGE = (_F.TYPE_STRING, _F.TYPE_BOOL, _F.TYPE_INT64,
                                            _F.TYPE_INT32, _F.TYPE_MESSAGE)
_REPEATED, _OPTIONAL = _F.LABEL_REPEATED, _F.LABEL_OPTIONAL

# name: [(field, number, type, repeated, message type)]
_MESSAGES: dict[str, list[tuple[str, int, int, bool, str]]] = {
    "DevicePluginOptions": [("pre_start_required", 1, _BOOL, False, ""),
                            ("get_preferred_allocation_available", 2, _BOOL, False, "")],
    "RegisterRequest": [("version", 1, _STRING, False, ""), ("endpoint", 2, _STRING, False, ""),
                        ("resource_name", 3, _STRING, False, ""),
                        ("options", 4, _MESSAGE, False, "DevicePluginOptions")],
    "Empty": [],
    "NUMANode": [("ID", 1, _INT64, False, "")],
    "TopologyInfo": [("nodes", 1, _MESSAGE, True, "NUMANode")],
    "Device": [("ID", 1, _STRING, False, ""), ("health", 2, _STRING, False, ""),
               ("topology", 3, _MESSAGE, False, "TopologyInfo")],
    "ListAndWatchResponse": [("devices", 1, _MESSAGE, True, "Device")],
    "ContainerPreferredAllocationRequest": [
        ("available_deviceIDs", 1, _STRING, True, ""),
        ("must_include_deviceIDs", 2, _STRING, True, ""),
        ("allocation_size", 3, _INT32, False, "")],
    "PreferredAllocationRequest": [
        ("container_requests", 1, _MESSAGE, True, "ContainerPreferredAllocationRequest")],
    "ContainerPreferredAllocationResponse": [("deviceIDs", 1, _STRING, True, "")],
    "PreferredAllocationResponse": [
        ("container_responses", 1, _MESSAGE, True, "ContainerPreferredAllocationResponse")],
    "ContainerAllocateRequest": [("devices_ids", 1, _STRING, True, "")],
    "AllocateRequest": [("container_requests", 1, _MESSAGE, True, "ContainerAllocateRequest")],
    # map<string, string> is a repeated entry message on the wire.
    "StringEntry": [("key", 1, _STRING, False, ""), ("value", 2, _STRING, False, "")],
    "ContainerAllocateResponse": [("envs", 1, _MESSAGE, True, "StringEntry"),
                                  ("annotations", 4, _MESSAGE, True, "StringEntry")],
    "AllocateResponse": [("container_responses", 1, _MESSAGE, True,
                          "ContainerAllocateResponse")],
    "PreStartContainerRequest": [("devices_ids", 1, _STRING, True, "")],
    "PreStartContainerResponse": [],
}


def _classes() -> dict[str, Any]:
    proto = descriptor_pb2.FileDescriptorProto(name="hegui_deviceplugin_v1beta1.proto",
                                               package=API_VERSION, syntax="proto3")
    for name, fields in _MESSAGES.items():
        message = proto.message_type.add(name=name)
        for field, number, kind, repeated, type_name in fields:
            message.field.add(name=field, number=number, type=kind,
                              label=_REPEATED if repeated else _OPTIONAL,
                              type_name=f".{API_VERSION}.{type_name}" if type_name else None)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {name: message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"{API_VERSION}.{name}")) for name in _MESSAGES}


M = _classes()


def device_ids(count: int) -> list[str]:
    return [f"hegui-fake-gpu-{i}" for i in range(count)]


class FakeGpuPlugin:
    """Serves the DevicePlugin service on `<plugin-dir>/<socket name>`."""

    def __init__(self, plugin_dir: Path, devices: int, socket_name: str = SOCKET_NAME) -> None:
        self.plugin_dir = plugin_dir
        self.socket = plugin_dir / socket_name
        self.devices = device_ids(devices)
        self.stopped = threading.Event()
        self.server: grpc.Server | None = None

    # --- the DevicePlugin service ---
    def options(self, request: Any, context: Any) -> Any:
        return M["DevicePluginOptions"]()

    def list_and_watch(self, request: Any, context: Any) -> Iterator[Any]:
        yield M["ListAndWatchResponse"](devices=[M["Device"](ID=d, health="Healthy")
                                                 for d in self.devices])
        # The list never changes; the stream stays open while the kubelet listens.
        while not self.stopped.wait(5) and context.is_active():
            pass

    def preferred(self, request: Any, context: Any) -> Any:
        return M["PreferredAllocationResponse"](container_responses=[
            M["ContainerPreferredAllocationResponse"](
                deviceIDs=list(r.available_deviceIDs)[:r.allocation_size])
            for r in request.container_requests])

    def allocate(self, request: Any, context: Any) -> Any:
        responses = []
        for container in request.container_requests:
            unknown = [d for d in container.devices_ids if d not in self.devices]
            if unknown:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown devices {unknown}")
            ids = ",".join(container.devices_ids)
            _log.info("allocate %s", ids)
            responses.append(M["ContainerAllocateResponse"](envs=[
                M["StringEntry"](key="NVIDIA_VISIBLE_DEVICES", value=ids)]))
        return M["AllocateResponse"](container_responses=responses)

    def pre_start(self, request: Any, context: Any) -> Any:
        return M["PreStartContainerResponse"]()

    def _handler(self) -> grpc.GenericRpcHandler:
        def unary(method: Any, request: str, response: str) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                method, request_deserializer=M[request].FromString,
                response_serializer=M[response].SerializeToString)

        return grpc.method_handlers_generic_handler(f"{API_VERSION}.DevicePlugin", {
            "GetDevicePluginOptions": unary(self.options, "Empty", "DevicePluginOptions"),
            "ListAndWatch": grpc.unary_stream_rpc_method_handler(
                self.list_and_watch, request_deserializer=M["Empty"].FromString,
                response_serializer=M["ListAndWatchResponse"].SerializeToString),
            "GetPreferredAllocation": unary(self.preferred, "PreferredAllocationRequest",
                                            "PreferredAllocationResponse"),
            "Allocate": unary(self.allocate, "AllocateRequest", "AllocateResponse"),
            "PreStartContainer": unary(self.pre_start, "PreStartContainerRequest",
                                       "PreStartContainerResponse"),
        })

    # --- serving and registering ---
    def serve(self) -> None:
        self.plugin_dir.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers((self._handler(),))
        self.server.add_insecure_port(f"unix://{self.socket}")
        self.server.start()

    def register(self, timeout: float = 10.0) -> None:
        kubelet = self.plugin_dir / "kubelet.sock"
        with grpc.insecure_channel(f"unix://{kubelet}") as channel:
            register = channel.unary_unary(
                f"/{API_VERSION}.Registration/Register",
                request_serializer=M["RegisterRequest"].SerializeToString,
                response_deserializer=M["Empty"].FromString)
            register(M["RegisterRequest"](version=API_VERSION, endpoint=self.socket.name,
                                          resource_name=RESOURCE,
                                          options=M["DevicePluginOptions"]()), timeout=timeout)
        _log.info("registered %d %s devices with the kubelet", len(self.devices), RESOURCE)

    def run(self) -> None:
        """Serve, register, and register again whenever the kubelet restarts (it removes every
        plugin socket when it starts)."""
        kubelet = self.plugin_dir / "kubelet.sock"
        registered_with: tuple[int, int] | None = None
        while not self.stopped.is_set():
            if not self.socket.exists():
                if self.server is not None:
                    self.server.stop(0)
                self.serve()
                registered_with = None
            try:
                info = kubelet.stat()
                current: tuple[int, int] | None = (info.st_ino, info.st_mtime_ns)
            except FileNotFoundError:
                current = None
            if current is not None and current != registered_with:
                try:
                    self.register()
                    registered_with = current
                except grpc.RpcError as error:
                    _log.warning("registration failed, retrying: %s", error)
            self.stopped.wait(0.5)
        if self.server is not None:
            self.server.stop(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hegui.localcluster.deviceplugin",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plugin-dir", type=Path, default=PLUGIN_DIR,
                        help="the kubelet's device-plugin folder (default: %(default)s)")
    parser.add_argument("--socket-name", default=SOCKET_NAME,
                        help="this plugin's socket in it (default: %(default)s)")
    parser.add_argument("--devices", type=int, default=4, help="how many GPUs to advertise")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    plugin = FakeGpuPlugin(args.plugin_dir, args.devices, args.socket_name)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: plugin.stopped.set())
    _log.info("pid %d: %d fake %s devices", os.getpid(), args.devices, RESOURCE)
    started = time.monotonic()
    plugin.run()
    _log.info("stopped after %.0fs", time.monotonic() - started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
