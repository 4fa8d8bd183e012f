"""What the agent needs beside its components: listeners, the ping route, the CA's settings."""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path
from typing import Any, Protocol

import trio

from peermesh.ca.settings import CA_DIR, CaSettings
from peermesh.ca.state import COMMITTEE_FILE
from peermesh.config import AgentConfig
from peermesh.core.endpoint import Endpoint, EndpointError, parse_host_port
from peermesh.net.admin import AdminResponse
from peermesh.net.caps import StreamBudget
from peermesh.net.rpc import RpcError
from peermesh.net.rpc.ping import PING, PingReply, PingRequest
from peermesh.observability.metrics import AgentMetrics
from peermesh.proxy.guard import ListenerGuard

log = logging.getLogger(__name__)


class PingCaller(Protocol):
    """Calls the ping control method on an agent at an address."""

    async def call(self, endpoint: Endpoint, method: Any, body: PingRequest) -> PingReply: ...


#: The listener host that stands for both loopbacks: 127.0.0.1 and [::1] on one port, as
#: capture redirects IPv4 connections to the first and IPv6 ones to the second.
LOOPBACKS = "localhost"
#: Errors that mean the host has no IPv6 loopback: the IPv4 one then serves alone.
_NO_IPV6 = frozenset({errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT})


async def listen(address: tuple[str, int], what: str) -> list[trio.SocketListener]:
    """Open the listeners for ``address``; a failure names what could not listen where.

    ``localhost`` is both loopbacks on one port (the port of the IPv4 one when 0 was
    asked); any other host is exactly that address.
    """
    host, port = address
    if host == LOOPBACKS:
        return await _listen_loopbacks(port, what)
    return await _listen_one(host, port, what)


async def _listen_one(host: str, port: int, what: str) -> list[trio.SocketListener]:
    try:
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise OSError(
            exc.errno, f"cannot listen for {what} on {host}:{port}: {exc.strerror}"
        ) from None


async def _listen_loopbacks(port: int, what: str) -> list[trio.SocketListener]:
    # An ephemeral IPv4 port may be taken on [::1]: pick another a few times.
    for _try in range(8 if port == 0 else 1):
        v4 = await _listen_one("127.0.0.1", port, what)
        chosen = bound(v4)[1]
        try:
            v6 = await trio.open_tcp_listeners(chosen, host="::1")
        except OSError as exc:
            if exc.errno in _NO_IPV6:
                log.info("no IPv6 loopback here: %s listens on 127.0.0.1:%d only", what, chosen)
                return v4
            for listener in v4:
                await listener.aclose()
            if port == 0 and exc.errno == errno.EADDRINUSE:
                continue
            raise OSError(
                exc.errno, f"cannot listen for {what} on [::1]:{chosen}: {exc.strerror}"
            ) from None
        return v4 + v6
    raise OSError(errno.EADDRINUSE, f"cannot listen for {what} on both loopbacks: ports taken")


def bound(listeners: list[trio.SocketListener]) -> tuple[str, int]:
    """The address the first of ``listeners`` is bound to (the real port when 0 was asked)."""
    host, port = listeners[0].socket.getsockname()[:2]
    return str(host), int(port)


async def serve(
    handler: Any,
    listeners: list[trio.SocketListener],
    nursery: trio.Nursery,
    guard: ListenerGuard | None = None,
    *,
    per_address: bool = False,
) -> None:
    """Serve ``listeners``, running each connection's handler in ``nursery``.

    With ``guard``, a connection over the listener's cap (or, with ``per_address``, over
    its source address's share) is closed at accept; the open ones are not disturbed.
    """
    if guard is not None:
        handler = guard.admitting(handler, per_address=per_address)
    await trio.serve_listeners(handler, listeners, handler_nursery=nursery)


def listener_guards(cfg: AgentConfig, metrics: AgentMetrics) -> dict[str, ListenerGuard]:
    """One guard per listener with the configured timeouts and caps, and one stream
    budget shared by all of them (the cap on concurrent requests is the agent's)."""
    timeouts = cfg.limits.timeouts()
    caps = cfg.limits.caps()
    streams = StreamBudget(caps.streams)
    return {
        name: ListenerGuard(name, metrics, timeouts=timeouts, caps=caps, streams=streams)
        for name in ("outbound", "inbound", "plaintext")
    }


async def admin_ping(client: PingCaller, method: bytes, body: bytes) -> AdminResponse:
    """``POST /v1/ping {"address": "HOST:PORT"}``: a control RPC to a peer agent."""
    if method != b"POST":
        return AdminResponse.json(405, {"error": 'POST /v1/ping {"address": "HOST:PORT"}'})
    try:
        request = json.loads(body or b"{}")
        host, port = parse_host_port(str(request.get("address", "")), what="address")
    except (ValueError, EndpointError, AttributeError) as exc:
        return AdminResponse.json(400, {"error": str(exc)})
    endpoint = Endpoint(service="", host=host, port=port)
    started = trio.current_time()
    try:
        reply = await client.call(endpoint, PING, PingRequest(request.get("echo")))
    except RpcError as exc:
        return AdminResponse.json(502, {"error": str(exc)})
    result = reply.to_wire()
    result["rtt_ms"] = round((trio.current_time() - started) * 1000, 3)
    return AdminResponse.json(200, result)


def threshold_ca_configured(cfg: AgentConfig) -> bool:
    """Whether this agent takes part in a threshold CA: bootstrap or join flags, or the
    committee it holds on disk. Its MeshConfig admin set is then anchored in the root key
    (only the committee can endorse a change); a dev-CA agent has no such key to trust."""
    committee = Path(cfg.data_dir) / CA_DIR / COMMITTEE_FILE
    return (
        cfg.ca.bootstrap_token_file is not None
        or cfg.ca.join_token is not None
        or committee.exists()
    )


def _bootstrap_listen(cfg: AgentConfig) -> tuple[str, int] | None:
    """The bootstrap listener's address; None means the inbound port + 1.

    An inbound listener on an ephemeral port (0) has no fixed neighbour: the port after
    whatever the kernel picked may belong to any other socket, so the bootstrap
    listener takes an ephemeral port too (it is announced, like every listener).
    """
    if cfg.ca.bootstrap_listen is not None:
        return cfg.ca.bootstrap_listen
    host, port = cfg.proxy.inbound
    return (host, 0) if port == 0 else None


def ca_settings(cfg: AgentConfig) -> CaSettings:
    """The threshold CA's settings from the agent's configuration."""
    return CaSettings(
        name=cfg.name,
        service=cfg.service.name,
        trust_domain=cfg.trust_domain,
        data_dir=cfg.data_dir,
        cert_lifetime=cfg.ca.cert_lifetime,
        max_cert_lifetime=cfg.ca.max_cert_lifetime,
        bootstrap_token_file=cfg.ca.bootstrap_token_file,
        bootstrap_expect=cfg.ca.bootstrap_expect,
        threshold=cfg.ca.threshold,
        bootstrap_listen=_bootstrap_listen(cfg),
        advertise=cfg.gossip.advertise,
        join=tuple(cfg.gossip.join),
        join_token=cfg.ca.join_token,
    )
