"""Telling a new connection's protocol from its first bytes, shared by both listeners."""

from __future__ import annotations

import trio

#: The HTTP/2 client connection preface (RFC 9113 section 3.4).
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: How long a new connection may take to send enough bytes to tell h2c from HTTP/1.1.
FIRST_BYTES_TIMEOUT = 30.0


async def sniff_preface(
    transport: trio.abc.Stream, timeout: float = FIRST_BYTES_TIMEOUT
) -> tuple[str, bytes]:
    """Read just enough to tell h2c from HTTP/1.1: ("h2c"|"h1"|"truncated"|"timeout", bytes)."""
    data = b""
    with trio.move_on_after(timeout):
        while len(data) < len(H2_PREFACE) and H2_PREFACE.startswith(data):
            try:
                chunk = await transport.receive_some(1 << 16)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return "truncated", data
            if not chunk:
                return ("truncated" if data else "closed"), data
            data += chunk
        if data.startswith(H2_PREFACE):
            return "h2c", data
        return "h1", data
    return "timeout", data


def peer_ip(transport: trio.SocketStream) -> str:
    """The connecting peer's address, or "" once the socket has gone."""
    try:
        return str(transport.socket.getpeername()[0])
    except OSError:
        return ""
