"""What ``/readyz`` and ``/v1/status`` say about an agent, read off its parts."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Protocol

from peermesh import __version__
from peermesh.ca.service import CaService
from peermesh.config import AgentConfig
from peermesh.core.endpoint import CompositeEndpoints
from peermesh.net.pool import PeerPool
from peermesh.net.tls import MeshTls, TlsNotReady
from peermesh.observability.metrics import AgentMetrics
from peermesh.proxy.tracker import ConnectionTracker


class AgentParts(Protocol):
    """The running agent's parts these reports read."""

    config: AgentConfig
    metrics: AgentMetrics
    tls: MeshTls
    ca: CaService
    endpoints: CompositeEndpoints
    outbound_tracker: ConnectionTracker
    inbound_tracker: ConnectionTracker
    addresses: dict[str, tuple[str, int]]
    listening: bool
    draining: bool

    @property
    def ready(self) -> bool: ...

    @property
    def running_pool(self) -> PeerPool | None: ...


def not_ready_reasons(agent: AgentParts) -> list[str]:
    """Why the agent is not ready, in the order an operator would fix them."""
    why = []
    if not agent.listening:
        why.append("listeners not up")
    if agent.draining:
        why.append("draining")
    if not agent.tls.loaded and agent.ca.enabled:
        last = agent.ca.last_error
        why.append(
            f"no certificate yet: threshold CA {agent.ca.phase}" + (f" ({last})" if last else "")
        )
    elif not agent.tls.loaded:
        why.append(f"no certificate loaded ({agent.tls.last_reload_error})")
    return why


def status_document(agent: AgentParts) -> dict[str, Any]:
    """The JSON behind ``/v1/status``."""
    config = agent.config
    try:
        identity: str | None = str(agent.tls.identity)
        not_after: str | None = agent.tls.not_after.isoformat()
    except TlsNotReady:
        identity = not_after = None
    traffic = [
        {"direction": d, "service": s, "status": code, "count": n}
        for (d, s, code), n in sorted(agent.metrics.tally.items())
    ]
    pool = agent.running_pool
    return {
        "node": config.name,
        "service": config.service.name,
        "version": __version__,
        "pid": os.getpid(),
        "ready": agent.ready,
        "draining": agent.draining,
        "identity": identity,
        "certificate_not_after": not_after,
        "trust_domain": config.trust_domain,
        "listeners": {k: f"{h}:{p}" for k, (h, p) in agent.addresses.items()},
        "app": {
            "address": f"{config.service.host}:{config.service.port}",
            "protocol": config.service.protocol,
        },
        "connections": {
            "outbound": {
                "connections": agent.outbound_tracker.connections,
                "streams": agent.outbound_tracker.streams,
            },
            "inbound": {
                "connections": agent.inbound_tracker.connections,
                "streams": agent.inbound_tracker.streams,
            },
        },
        "peers": [dataclasses.asdict(p) for p in pool.status()] if pool else [],
        "endpoints": {
            service: [e.address for e in (agent.endpoints.endpoints(service) or [])]
            for service in agent.endpoints.services()
        },
        "traffic": traffic,
    }
