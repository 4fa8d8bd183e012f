"""The destination a captured connection was really for (``SO_ORIGINAL_DST``).

After an nftables ``redirect``, the accepted socket's local address is the outbound
listener; conntrack still knows where the app was connecting, and Linux hands it back
through ``getsockopt(SOL_IP, SO_ORIGINAL_DST)`` (``IP6T_SO_ORIGINAL_DST`` for IPv6, the
same number), as Envoy's original_dst listener filter reads it.
"""

from __future__ import annotations

import socket
from typing import Any

SO_ORIGINAL_DST = 80
_SOL_IPV6 = getattr(socket, "SOL_IPV6", 41)


def original_destination(sock: Any) -> tuple[str, int] | None:
    """(address, port) the app dialled, or None when the connection was not redirected."""
    try:
        if sock.family == socket.AF_INET:
            raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
            address = socket.inet_ntop(socket.AF_INET, raw[4:8])
        elif sock.family == socket.AF_INET6:
            raw = sock.getsockopt(_SOL_IPV6, SO_ORIGINAL_DST, 28)
            address = socket.inet_ntop(socket.AF_INET6, raw[8:24])
        else:
            return None
        port = int.from_bytes(raw[2:4], "big")
        local = sock.getsockname()
    except (OSError, ValueError):
        return None  # no conntrack entry: a direct connection
    if (address, port) == (str(local[0]), int(local[1])):
        return None
    return address, port
