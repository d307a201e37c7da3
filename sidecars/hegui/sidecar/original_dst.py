"""Which port a captured connection was sent to, before the capture step redirected it to the
sidecar (Art.14).

hegui-capture (hegui.sidecar.capture) redirects every inbound TCP connection of the pod to the
sidecar's port, except the ports the GenerativeService declares open between its pods
(PodToPod). A port it declares for Metrics is captured too: the team writes that declaration
and the model server listens where the team says, so a second API declared "Metrics" would
otherwise reach users around the sidecar. On such a connection the sidecar serves nothing but
the model's `GET /metrics`, moderated as metadata; to tell it from the pod's other traffic it
asks the kernel where the connection was going (SO_ORIGINAL_DST, as Envoy's original_dst
listener filter does behind Istio's iptables REDIRECT).
"""

from __future__ import annotations

import socket
import struct
import weakref
from typing import Any

#: linux/netfilter_ipv4.h SO_ORIGINAL_DST; linux/netfilter_ipv6/ip6_tables.h
#: IP6T_SO_ORIGINAL_DST has the same number at SOL_IPV6.
SO_ORIGINAL_DST = 80
_SOL_IP = getattr(socket, "SOL_IP", 0)
_SOL_IPV6 = getattr(socket, "SOL_IPV6", 41)

#: Per connection (its transport): the port asked once, then remembered for keep-alive requests.
_PORTS: weakref.WeakKeyDictionary[Any, int | None] = weakref.WeakKeyDictionary()


def original_port(sock: Any) -> int | None:
    """The destination port the connection had before a nat REDIRECT, or None when it was not
    redirected (the kernel keeps no original destination for it) or the socket is not TCP.
    `sock`: a socket.socket, or the asyncio transport's view of one."""
    try:
        if sock.family == socket.AF_INET6:
            raw = sock.getsockopt(_SOL_IPV6, SO_ORIGINAL_DST, 28)  # struct sockaddr_in6
        elif sock.family == socket.AF_INET:
            raw = sock.getsockopt(_SOL_IP, SO_ORIGINAL_DST, 16)  # struct sockaddr_in
        else:
            return None
    except OSError:  # ENOENT: no nat entry (a connection to the sidecar's own port)
        return None
    (port,) = struct.unpack_from("!H", raw, 2)
    return int(port) if port and port != sock.getsockname()[1] else None


def connection_port(transport: Any) -> int | None:
    """`original_port` of the connection behind an asyncio transport, asked once per
    connection."""
    if transport is None:
        return None
    try:
        return _PORTS[transport]
    except KeyError:
        pass
    except TypeError:  # not weakly referenceable: ask every time
        sock = transport.get_extra_info("socket")
        return original_port(sock) if sock is not None else None
    sock = transport.get_extra_info("socket")
    port = original_port(sock) if sock is not None else None
    _PORTS[transport] = port
    return port
