"""Which service a captured connection is for, and carrying an app's Upgrade request."""

from __future__ import annotations

import contextlib
import ipaddress
import random

import trio

from peermesh.capture.vips import VipTable
from peermesh.core.endpoint import Endpoint, EndpointSource
from peermesh.net import errors
from peermesh.net.http.headers import HeaderError, RequestHead, destination_service
from peermesh.observability.metrics import AgentMetrics
from peermesh.policy.compiled import CompiledPolicy
from peermesh.policy.model import Retries
from peermesh.proxy.traffic import matching
from peermesh.proxy.tunnel import TunnelOut
from peermesh.proxy.upgrade import refusal


def service_of_destination(
    destination: tuple[str, int] | None, vips: VipTable | None, endpoints: EndpointSource
) -> str | None:
    """A mesh VIP names its service; a member's own address names the service it runs."""
    if destination is None:
        return None
    address = destination[0]
    if vips is not None:
        service = vips.service(address)
        if service is not None:
            return service
    for name in endpoints.services():
        for endpoint in endpoints.endpoints(name) or ():
            if endpoint.host == address:
                return endpoint.service
    return None


def service_of_authority(authority: bytes, captured: str | None) -> str:
    """The destination service: the authority's name, else what the capture says.

    An app that dialled a VIP or a member's address by number (``Host: 240.240.7.9``)
    names no service; the original destination does.
    """
    if captured is not None:
        host = authority.decode("ascii", "replace").strip()
        host = host[1:].split("]", 1)[0] if host.startswith("[") else host.rsplit(":", 1)[0]
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not host:
                return captured
        else:
            return captured
    try:
        return destination_service(authority)
    except HeaderError as exc:
        raise errors.bad_request(str(exc)) from None


async def serve_upgrade(
    transport: trio.SocketStream,
    data: bytes,
    head: RequestHead,
    captured: str | None,
    destination: tuple[str, int] | None,
    *,
    policy: CompiledPolicy | None,
    endpoints: EndpointSource,
    rng: random.Random,
    tunnel: TunnelOut,
    metrics: AgentMetrics,
) -> None:
    """An Upgrade request: routed like any request, then carried raw on the tunnel."""
    try:
        target, candidates, retries = route_upgrade(head, captured, policy, endpoints, rng)
    except errors.ProxyError as exc:
        metrics.sidecar_errors.labels("outbound", exc.code).inc()
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await transport.send_all(refusal(exc.status, exc.code))
        await trio.aclose_forcefully(transport)
        return
    port = authority_port(head, destination)
    metrics.open_connections.labels("outbound").inc()
    try:
        await tunnel.run(transport, data, target, port, candidates, upgrade=True, retries=retries)
    finally:
        metrics.open_connections.labels("outbound").dec()


def route_upgrade(
    head: RequestHead,
    captured: str | None,
    policy: CompiledPolicy | None,
    endpoints: EndpointSource,
    rng: random.Random,
) -> tuple[str, list[Endpoint], Retries | None]:
    """Where an upgrade request goes, by the same Route rules as any request to its service:
    the destination, its endpoints the balancer picks from, and the matched rule's retries.

    Raises ProxyError (no route, no endpoints, bad authority) for the app's refusal.
    """
    service = service_of_authority(head.authority, captured)
    target: str = service
    labels: tuple[tuple[str, str], ...] = ()
    retries: Retries | None = None
    if policy is not None and policy.routes.get(service):
        headers = {n.decode("latin-1"): v.decode("latin-1") for n, v in head.headers}
        decision = policy.match_route(
            service, head.method.decode("ascii", "replace"), head.path.decode("latin-1"), headers
        )
        if decision is not None:
            dest = decision.pick(rng.random())
            target, labels = dest.host, tuple(dest.labels or ())
            retries = decision.retries
    known = endpoints.endpoints(target)
    if known is None:
        raise errors.no_route(target)
    candidates = matching(known, labels)
    if not candidates:
        raise errors.no_endpoints(target)
    return target, candidates, retries


def authority_port(head: RequestHead, destination: tuple[str, int] | None) -> int:
    """The port the app asked for: the captured destination's, the authority's, else 80."""
    if destination is not None:
        return destination[1]
    _host, sep, port = head.authority.rpartition(b":")
    if sep and port.isdigit() and 0 < int(port) < 65536:
        return int(port)
    return 80
