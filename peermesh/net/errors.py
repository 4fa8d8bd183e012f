"""Responses the sidecar gives itself, each with a cause an operator can act on.

Every one carries ``x-peermesh-error`` so a caller can tell the mesh's refusal from
the app's own status codes. A gRPC caller (``content-type: application/grpc*``) gets
them gRPC-shaped, as Envoy sends its local replies: HTTP 200, trailers-only, with
``grpc-status`` and ``grpc-message``; a plain 504 would reach it as UNAVAILABLE.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from peermesh.core.errors import PeermeshError
from peermesh.net.http.exchange import ResponseWriter
from peermesh.net.http.headers import Header, RequestHead


@dataclass(frozen=True)
class ProxyError(PeermeshError):
    """A request the sidecar answers itself."""

    status: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


def no_route(service: str) -> ProxyError:
    return ProxyError(
        503,
        "no-route",
        f"no service named {service!r} is known to this mesh; check the name or the endpoints",
    )


def no_endpoints(service: str) -> ProxyError:
    return ProxyError(503, "no-endpoints", f"service {service!r} has no live endpoints")


def peer_unreachable(service: str, address: str, why: str) -> ProxyError:
    return ProxyError(
        503, "peer-unreachable", f"peer for {service!r} at {address} is unreachable: {why}"
    )


def tls_refused(service: str, address: str, why: str) -> ProxyError:
    return ProxyError(503, "tls-refused", f"mTLS to {service!r} at {address} failed: {why}")


def no_identity() -> ProxyError:
    return ProxyError(
        503,
        "no-identity",
        "this agent has no certificate yet; it cannot open mTLS connections to peers",
    )


def upstream_reset(why: str) -> ProxyError:
    return ProxyError(502, "upstream-reset", f"upstream reset the request: {why}")


def app_unavailable(why: str) -> ProxyError:
    return ProxyError(502, "app-unavailable", why)


def bad_request(why: str) -> ProxyError:
    return ProxyError(400, "bad-request", why)


def draining() -> ProxyError:
    return ProxyError(503, "draining", "this agent is shutting down; retry on another endpoint")


class GrpcStatus(IntEnum):
    """The gRPC status codes the sidecar's own answers use."""

    OK = 0
    UNKNOWN = 2
    DEADLINE_EXCEEDED = 4
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    UNAUTHENTICATED = 16


# Envoy's HTTP-to-gRPC mapping (the gRPC project's http-grpc-status-mapping): a 429 is
# UNAVAILABLE, as Envoy's rate-limit filters answer by default, so clients retry it.
_GRPC_FOR_HTTP = {
    400: GrpcStatus.INTERNAL,
    401: GrpcStatus.UNAUTHENTICATED,
    403: GrpcStatus.PERMISSION_DENIED,
    404: GrpcStatus.UNIMPLEMENTED,
    429: GrpcStatus.UNAVAILABLE,
    502: GrpcStatus.UNAVAILABLE,
    503: GrpcStatus.UNAVAILABLE,
    504: GrpcStatus.DEADLINE_EXCEEDED,
}
# Where the cause says more than the status: Envoy answers an unknown route 404
# (UNIMPLEMENTED); a timed-out request is DEADLINE_EXCEEDED, not a bare 504.
_GRPC_FOR_CODE = {
    "no-route": GrpcStatus.UNIMPLEMENTED,
    "timeout": GrpcStatus.DEADLINE_EXCEEDED,
}


def is_grpc(head: RequestHead) -> bool:
    """A gRPC request (``application/grpc``, ``application/grpc+proto``, ...)."""
    content_type = head.header(b"content-type") or b""
    return content_type.lower().startswith(b"application/grpc")


def grpc_status_for(error: ProxyError) -> GrpcStatus:
    return _GRPC_FOR_CODE.get(error.code) or _GRPC_FOR_HTTP.get(error.status, GrpcStatus.UNKNOWN)


def grpc_message(text: str) -> bytes:
    """``grpc-message`` as the spec encodes it: percent-encode all but printable ASCII."""
    out = bytearray()
    for byte in text.encode():
        if 0x20 <= byte <= 0x7E and byte != 0x25:
            out.append(byte)
        else:
            out += b"%%%02X" % byte
    return bytes(out)


async def send_grpc_status(
    writer: ResponseWriter, status: GrpcStatus, message: str, extra: Sequence[Header] = ()
) -> None:
    """A trailers-only gRPC answer (HTTP 200, one HEADERS frame with END_STREAM)."""
    if writer.headers_sent:
        writer.abort()
        return
    await writer.send_head(
        200,
        [
            (b"content-type", b"application/grpc"),
            (b"grpc-status", str(int(status)).encode()),
            (b"grpc-message", grpc_message(message)),
            *extra,
        ],
        end=True,
    )


async def send_error(writer: ResponseWriter, error: ProxyError, *, grpc: bool = False) -> None:
    """Answer with ``error`` if no response has started yet; otherwise abort the stream."""
    if writer.headers_sent:
        writer.abort()
        return
    if grpc:
        await send_grpc_status(
            writer,
            grpc_status_for(error),
            error.message,
            [(b"x-peermesh-error", error.code.encode())],
        )
        return
    body = (error.message + "\n").encode()
    await writer.send_head(
        error.status,
        [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"x-peermesh-error", error.code.encode()),
        ],
    )
    await writer.send_data(body)
    await writer.finish()
