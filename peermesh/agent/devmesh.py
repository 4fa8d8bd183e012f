"""Threshold-CA meshes of in-process agents on loopback, for the bench, the demo and tests.

Not used by the agent itself. Everything here goes through the real protocol: real
sockets, real TLS, the real bootstrap listener and DKG.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from peermesh.agent import Agent
from peermesh.ca.channel import write_bootstrap_token
from peermesh.config import AgentConfig

# Ports are handed out below the kernel's ephemeral range, so that a port chosen now
# cannot be taken by some connection's source port before the agent binds it; each
# process starts at its own offset and never hands out a port twice.
_PORT_LOW, _PORT_HIGH = 10000, 32000
_handed_out: set[int] = set()
_next_port = _PORT_LOW + (os.getpid() * 173) % (_PORT_HIGH - _PORT_LOW)


def _bindable(port: int) -> bool:
    """Whether 127.0.0.1:port is free for both TCP and UDP (gossip uses UDP) right now."""
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_ports(count: int = 1) -> int:
    """The first of `count` consecutive free loopback ports outside the ephemeral range."""
    global _next_port
    low, high = _ephemeral_range()
    span = _PORT_HIGH - _PORT_LOW
    for _ in range(span):
        first = _next_port
        _next_port = _PORT_LOW + (_next_port - _PORT_LOW + count) % span
        ports = range(first, first + count)
        if first + count > _PORT_HIGH or any(low <= p <= high for p in ports):
            continue
        if any(p in _handed_out for p in ports) or not all(_bindable(p) for p in ports):
            continue
        _handed_out.update(ports)
        return first
    raise OSError(f"no {count} consecutive free ports on 127.0.0.1")


def free_port() -> int:
    """A loopback port that is free for TCP and UDP and outside the ephemeral range."""
    return free_ports(1)


def free_port_pair() -> int:
    """A port p with p and p+1 free (inbound and its default bootstrap listener)."""
    return free_ports(2)


def ca_agent_config(
    name: str,
    service: str,
    data_dir: Path,
    *,
    trust_domain: str,
    app_port: int = 9,
    inbound_port: int | None = None,
    **options: Any,
) -> AgentConfig:
    """An agent on loopback with gossip on (profile local, no mDNS) and CA options."""
    port = free_port_pair() if inbound_port is None else inbound_port
    options.setdefault("gossip", "127.0.0.1:0")
    options.setdefault("gossip_profile", "local")
    options.setdefault("mdns", False)
    options.setdefault("advertise", "127.0.0.1")
    return AgentConfig.build(
        name=name,
        service=f"{service}={app_port}",
        data_dir=data_dir,
        trust_domain=trust_domain,
        outbound="127.0.0.1:0",
        inbound=f"127.0.0.1:{port}",
        admin="127.0.0.1:0",
        drain_timeout=1.0,
        **options,
    )


@dataclass
class CaMesh:
    """Running agents of one bootstrapped mesh."""

    agents: dict[str, Agent]
    token_file: Path
    root: Path
    nursery: trio.Nursery
    trust_domain: str = "mesh.test"
    configs: dict[str, AgentConfig] = field(default_factory=dict)
    scopes: dict[str, trio.CancelScope] = field(default_factory=dict)
    stopped: dict[str, trio.Event] = field(default_factory=dict)

    def inbound(self, node: str) -> str:
        host, port = self.configs[node].proxy.inbound
        return f"{host}:{port}"

    async def start(self, node: str, config: AgentConfig) -> Agent:
        """Start (or restart) ``node`` with ``config`` in the mesh's nursery."""
        agent = Agent(config)
        scope = trio.CancelScope()
        stopped = trio.Event()

        async def run(task_status: trio.TaskStatus[Agent] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with scope:
                    await agent.run(task_status=task_status)
            finally:
                stopped.set()

        await self.nursery.start(run)
        self.agents[node] = agent
        self.configs[node] = config
        self.scopes[node] = scope
        self.stopped[node] = stopped
        return agent

    async def join(self, node: str, service: str, via: str, token: str) -> Agent:
        """Start a new agent ``node`` that joins with ``token`` through member ``via``."""
        config = ca_agent_config(
            node,
            service,
            self.root / node,
            trust_domain=self.trust_domain,
            join=(self.inbound(via),),
            join_token=token,
        )
        return await self.start(node, config)

    async def stop(self, node: str) -> None:
        """Stop ``node`` at once (its ports close; like a crash for the others)."""
        self.scopes[node].cancel()
        self.agents.pop(node)
        with trio.fail_after(10):
            await self.stopped[node].wait()

    async def wait_ready(self, nodes: list[str] | None = None, timeout: float = 60) -> None:
        with trio.fail_after(timeout):
            for node in nodes or list(self.agents):
                await self.agents[node].ca.identity_ready.wait()


@asynccontextmanager
async def bootstrap_mesh(
    root: Path,
    nodes: Mapping[str, str],
    *,
    trust_domain: str = "mesh.test",
    app_ports: Mapping[str, int] | None = None,
    threshold: int | None = None,
    wait: bool = True,
    inbound_ports: Mapping[str, int] | None = None,
    per_node: Mapping[str, Mapping[str, Any]] | None = None,
    **options: Any,
) -> AsyncIterator[CaMesh]:
    """Start ``nodes`` (name -> service) with ``--bootstrap-expect N``; yield when ready."""
    token = write_bootstrap_token(root / "bootstrap.token")
    async with trio.open_nursery() as nursery:
        mesh = CaMesh({}, token, root, nursery, trust_domain)
        previous: str | None = None
        for node, service in nodes.items():
            config = ca_agent_config(
                node,
                service,
                root / node,
                trust_domain=trust_domain,
                app_port=(app_ports or {}).get(node, 9),
                bootstrap_expect=len(nodes),
                bootstrap_token_file=token,
                threshold=threshold,
                join=(mesh.inbound(previous),) if previous else (),
                inbound_port=(inbound_ports or {}).get(node),
                **{**options, **(per_node or {}).get(node, {})},
            )
            await mesh.start(node, config)
            previous = node
        if wait:
            await mesh.wait_ready()
        try:
            yield mesh
        finally:
            nursery.cancel_scope.cancel()
