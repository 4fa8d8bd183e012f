"""HTTP/1.1 Upgrade (WebSocket and others) across the mesh, on the TCP tunnel.

The first request on an app connection is read whole (bounded); when it asks for an
``Upgrade``, the connection is routed as that request would be (service from the authority,
Route rules) and carried raw on a CONNECT stream marked ``x-peermesh-tunnel: upgrade``. The
destination agent reads the same request head off the stream, authorizes it as it would
the HTTP request (SPIFFE ID, method, path, headers), and only then dials the app and hands
it the head, so the app answers ``101`` itself and both ends speak the upgraded protocol.
Like Envoy, only the first request on a connection may upgrade.
"""

from __future__ import annotations

import h11
import trio

from peermesh.net.http.h2session import H2Stream
from peermesh.net.http.headers import RequestHead

MAX_HEAD_BYTES = 64 * 1024
HEAD_TIMEOUT = 10.0
TUNNEL_HEADER = b"x-peermesh-tunnel"
UPGRADE = b"upgrade"


class HeadTooLarge(ValueError):
    """A request head over :data:`MAX_HEAD_BYTES`."""


def head_end(data: bytes) -> int:
    """Where the first request head ends (after the blank line), or -1."""
    end = data.find(b"\r\n\r\n")
    return -1 if end < 0 else end + 4


def parse_head(data: bytes) -> RequestHead | None:
    """The first request in ``data`` (a complete head), or None when it is not HTTP/1.1."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    try:
        conn.receive_data(data)
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return None
    if not isinstance(event, h11.Request):
        return None
    headers = tuple((bytes(n).lower(), bytes(v)) for n, v in event.headers)
    host = next((v for n, v in headers if n == b"host"), b"")
    return RequestHead(bytes(event.method), b"http", host, bytes(event.target), headers)


def wants_upgrade(head: RequestHead) -> bool:
    connection = head.header(b"connection") or b""
    return head.header(b"upgrade") is not None and b"upgrade" in connection.lower()


async def read_first_head(transport: trio.abc.ReceiveStream, data: bytes) -> bytes:
    """Read until the first request head is complete, the limit, the timeout or EOF."""
    with trio.move_on_after(HEAD_TIMEOUT):
        while head_end(data) < 0 and len(data) < MAX_HEAD_BYTES:
            try:
                chunk = await transport.receive_some(MAX_HEAD_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                break
            if not chunk:
                break
            data += chunk
    return data


async def read_stream_head(stream: H2Stream) -> bytes:
    """The upgrade request head off a tunnel stream (raises HeadTooLarge past the limit)."""
    data = b""
    with trio.move_on_after(HEAD_TIMEOUT):
        while head_end(data) < 0:
            chunk = await stream.receive_data()
            if not chunk:
                break
            data += chunk
            if len(data) > MAX_HEAD_BYTES:
                raise HeadTooLarge(f"upgrade request head over {MAX_HEAD_BYTES} bytes")
    return data


def refusal(status: int, reason: str) -> bytes:
    """What the app sees when the mesh refuses its upgrade: a plain HTTP/1.1 answer."""
    body = f"{reason}\n".encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body
