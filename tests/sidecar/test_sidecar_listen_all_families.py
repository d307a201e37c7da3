"""The sidecar holds its port in every address family the pod has (Art.14). Bound to 0.0.0.0
alone, it left [::]:<port> free: the model container, the team's code, could bind it (IPv6
only) and in a dual-stack cluster take every IPv6 connection meant for the sidecar, the capture's
redirected ones included, unmoderated."""

from __future__ import annotations

import asyncio
import errno
import socket

import pytest

from hegui.sidecar.app import Sidecar, serve
from hegui.sidecar.config import SidecarConfig
from hegui.sidecar.testing import FakeModel, LocalModerator, posture


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("0.0.0.0", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 in this network namespace")
async def test_the_model_cannot_take_the_sidecar_s_port_over_ipv6(
        fake_model: FakeModel, moderator: LocalModerator) -> None:
    port = _free_port()
    runner = await serve(Sidecar(SidecarConfig(posture(), upstream=fake_model.url), moderator),
                         "0.0.0.0", port)
    try:
        squatter = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        squatter.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        with squatter, pytest.raises(OSError) as refused:
            squatter.bind(("::", port))
        assert refused.value.errno == errno.EADDRINUSE
        # And the sidecar answers there itself.
        reader, writer = await asyncio.open_connection("::1", port)
        writer.write(b"GET /hegui/healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200")
    finally:
        await runner.cleanup()


async def test_an_explicit_address_is_kept(fake_model: FakeModel,
                                           moderator: LocalModerator) -> None:
    runner = await serve(Sidecar(SidecarConfig(posture(), upstream=fake_model.url), moderator),
                         "127.0.0.1", 0)
    try:
        assert [address[0] for address in runner.addresses] == ["127.0.0.1"]
    finally:
        await runner.cleanup()
