"""How an HTTP/2 stream or connection ended, as exceptions the callers of a session catch."""

from __future__ import annotations

import h2.errors

from peermesh.core.errors import TransportError

ErrorCode = h2.errors.ErrorCodes


class StreamReset(TransportError):
    """The peer (or the connection going away) reset a stream."""

    def __init__(self, error_code: int, message: str = "") -> None:
        self.error_code = error_code
        name = error_name(error_code)
        super().__init__(message or f"stream reset by peer ({name})")


class ConnectionLost(StreamReset):
    """The whole connection ended while the stream was still open."""

    def __init__(self, message: str = "connection closed") -> None:
        super().__init__(int(ErrorCode.CONNECT_ERROR), message)


class PeerUnresponsive(ConnectionLost):
    """The peer stopped answering PINGs while streams waited on it (partition, hung host)."""


class ConnectionUnavailable(TransportError):
    """The connection cannot take new streams (closed, GOAWAY, or full)."""


class StreamRefused(StreamReset):
    """The peer refused the stream (REFUSED_STREAM): safe to retry elsewhere."""


def error_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"error {code}"
