"""Threshold-CA meshes of in-process agents on loopback, for the bench, the demo and tests.

Not used by the agent itself. Everything here goes through the real protocol: real
sockets, real TLS, the real bootstrap listener and DKG.
"""

from __future__ import annotations

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


def free_port_pair() -> int:
    """A port p with p and p+1 free (inbound and its default bootstrap listener)."""
    for _ in range(200):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = int(a.getsockname()[1])
            if port >= 65535:
                continue
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise OSError("no two adjacent free ports on 127.0.0.1")


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
