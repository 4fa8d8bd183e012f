"""What the agent needs beside its components: listeners, the ping route, the CA's settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import trio

from peermesh.ca.settings import CA_DIR, CaSettings
from peermesh.ca.state import COMMITTEE_FILE
from peermesh.config import AgentConfig
from peermesh.core.endpoint import Endpoint, EndpointError, parse_host_port
from peermesh.net.admin import AdminResponse
from peermesh.net.rpc import RpcError
from peermesh.net.rpc.ping import PING, PingReply, PingRequest


class PingCaller(Protocol):
    """Calls the ping control method on an agent at an address."""

    async def call(self, endpoint: Endpoint, method: Any, body: PingRequest) -> PingReply: ...


async def listen(address: tuple[str, int], what: str) -> list[trio.SocketListener]:
    """Open the listeners for ``address``; a failure names what could not listen where."""
    host, port = address
    try:
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise OSError(
            exc.errno, f"cannot listen for {what} on {host}:{port}: {exc.strerror}"
        ) from None


def bound(listeners: list[trio.SocketListener]) -> tuple[str, int]:
    """The address the first of ``listeners`` is bound to (the real port when 0 was asked)."""
    host, port = listeners[0].socket.getsockname()[:2]
    return str(host), int(port)


async def serve(handler: Any, listeners: list[trio.SocketListener], nursery: trio.Nursery) -> None:
    """Serve ``listeners``, running each connection's handler in ``nursery``."""
    await trio.serve_listeners(handler, listeners, handler_nursery=nursery)


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
        bootstrap_listen=cfg.ca.bootstrap_listen,
        advertise=cfg.gossip.advertise,
        join=tuple(cfg.gossip.join),
        join_token=cfg.ca.join_token,
    )
