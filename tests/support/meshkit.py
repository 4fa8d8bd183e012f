"""Real agents and example apps on loopback, in the test's own trio loop or as processes."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from examples.service import ExampleService, ServiceConfig
from peermesh.agent import Agent
from peermesh.agent.devmesh import free_port as free_port
from peermesh.config import AgentConfig
from tests.support.pki import TRUST_DOMAIN, make_mesh_pki

REPO = Path(__file__).resolve().parents[2]


@dataclass
class TwoAgents:
    """frontend agent (node-a) → orders agent (node-b) → orders app."""

    client: Agent
    server: Agent
    app_port: int
    dirs: Mapping[str, Path]

    @property
    def outbound(self) -> tuple[str, int]:
        return self.client.addresses["outbound"]

    @property
    def outbound_url(self) -> str:
        host, port = self.outbound
        return f"http://{host}:{port}"

    @property
    def inbound(self) -> tuple[str, int]:
        return self.server.addresses["inbound"]


def agent_config(
    name: str,
    service: str,
    data_dir: Path,
    *,
    app_port: int = 9,
    proto: str = "h1",
    peers: tuple[str, ...] = (),
    drain_timeout: float = 5.0,
    **gossip: object,
) -> AgentConfig:
    """An agent on ephemeral loopback ports; static endpoints unless gossip options are given."""
    gossip.setdefault("gossip", "off")
    return AgentConfig.build(  # type: ignore[arg-type]
        name=name,
        service=f"{service}={app_port},proto={proto}",
        data_dir=data_dir,
        trust_domain=TRUST_DOMAIN,
        outbound="127.0.0.1:0",
        inbound="127.0.0.1:0",
        admin="127.0.0.1:0",
        peers=peers,
        drain_timeout=drain_timeout,
        **gossip,
    )


@asynccontextmanager
async def two_agents(
    tmp_path: Path,
    *,
    app_port: int | None = None,
    proto: str = "h1",
    client_settings: Mapping[str, object] | None = None,
    server_settings: Mapping[str, object] | None = None,
) -> AsyncIterator[TwoAgents]:
    """Start an example orders app (unless ``app_port``), both agents, and yield them.

    ``client_settings``/``server_settings`` are extra agent settings (``max_streams=1``).
    """
    dirs = make_mesh_pki(tmp_path)
    async with trio.open_nursery() as nursery:
        if app_port is None:
            app = ExampleService(ServiceConfig(name="orders", port=0))
            app_port = await nursery.start(app.run)
        server = Agent(
            agent_config(
                "node-b",
                "orders",
                dirs["node-b"],
                app_port=app_port,
                proto=proto,
                **(server_settings or {}),
            )
        )
        await nursery.start(server.run)
        host, port = server.addresses["inbound"]
        client = Agent(
            agent_config(
                "node-a",
                "frontend",
                dirs["node-a"],
                peers=(f"orders={host}:{port}",),
                **(client_settings or {}),
            )
        )
        await nursery.start(client.run)
        try:
            yield TwoAgents(client, server, app_port, dirs)
        finally:
            nursery.cancel_scope.cancel()


@contextmanager
def process(args: list[str], **kwargs: object) -> Iterator[subprocess.Popen[bytes]]:
    """A child process that is killed (if still running) when the block ends."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args, env=env, **kwargs)  # type: ignore[call-overload]
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def lone_agent(tmp_path: Path, admin: int | None = None) -> tuple[list[str], str]:
    """One agent on its own (node-1 serving web, gossip off): its command line and admin URL."""
    dirs = make_mesh_pki(tmp_path, nodes={"node-1": "web"})
    admin = free_port() if admin is None else admin
    cmd = python(
        "-m", "peermesh", "agent", "--name", "node-1", "--service", "web=9",
        "--data-dir", str(dirs["node-1"]), "--trust-domain", TRUST_DOMAIN,
        "--outbound", f"127.0.0.1:{free_port()}", "--inbound", f"127.0.0.1:{free_port()}",
        "--admin", f"127.0.0.1:{admin}", "--gossip", "off", "--log-level", "warning",
    )  # fmt: skip
    return cmd, f"http://127.0.0.1:{admin}"


def peermesh_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``peermesh ARGS`` with a wide terminal (tables unwrapped), capturing its output."""
    return subprocess.run(
        python("-m", "peermesh", *args),
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip


def wait_http_ok(url: str, timeout: float = 20.0) -> None:
    """Poll an admin URL until it answers 200 (process start-up, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{url} not ready: {last}")


async def eventually(predicate: object, *, timeout: float = 10.0) -> None:
    """Wait until ``predicate()`` is true: for counters another task updates after replying."""
    assert callable(predicate)
    with trio.fail_after(timeout):
        while True:
            result = predicate()
            if inspect.iscoroutine(result):  # a truthy coroutine would pass at once
                result.close()
                raise TypeError("eventually() needs a plain predicate, not an async function")
            if result:
                return
            await trio.sleep(0.01)


async def gossip_mesh(
    tmp_path: Path,
    nursery: trio.Nursery,
    nodes: Mapping[str, str],
    *,
    app_ports: Mapping[str, int] | None = None,
) -> list[Agent]:
    """Agents with gossip (each joins the previous one), dev-CA identities, local profile."""
    from gossip.codec import generate_gossip_key, save_keyring

    dirs = make_mesh_pki(tmp_path, nodes=nodes)
    key = tmp_path / "gossip.key"
    save_keyring(key, [generate_gossip_key()])
    agents: list[Agent] = []
    for node, service in nodes.items():
        seed: tuple[str, ...] = ()
        if agents:
            host, port = agents[-1].addresses["inbound"]
            seed = (f"{host}:{port}",)
        config = agent_config(
            node,
            service,
            dirs[node],
            app_port=(app_ports or {}).get(node, 9),
            gossip="127.0.0.1:0",
            join=seed,
            gossip_key_file=key,
            gossip_profile="local",
            mdns=False,
            advertise="127.0.0.1",
        )
        agent = Agent(config)
        await nursery.start(agent.run)
        agents.append(agent)
    names = set(nodes)

    def converged() -> bool:
        for agent in agents:
            assert agent.membership is not None
            alive = {
                m["name"] for m in agent.membership.status()["members"] if m["state"] == "alive"
            }
            if alive != names:
                return False
        return True

    await eventually(converged, timeout=30)
    return agents
