"""Responses the sidecar gives itself, each with a cause an operator can act on.

Every one carries ``x-peermesh-error`` so a caller can tell the mesh's refusal from
the app's own status codes.
"""

from __future__ import annotations

from dataclasses import dataclass

from peermesh.core.errors import PeermeshError
from peermesh.net.http.exchange import ResponseWriter


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


async def send_error(writer: ResponseWriter, error: ProxyError) -> None:
    """Answer with ``error`` if no response has started yet; otherwise abort the stream."""
    if writer.headers_sent:
        writer.abort()
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
