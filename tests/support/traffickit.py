"""A frontend agent in front of several backend agents (one per :class:`Backend`), each
fronting an example app that answers its ``version``; endpoints are a static table."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio
import yaml

from examples.service import ExampleService, ServiceConfig
from peermesh.agent import Agent
from peermesh.net.admin_guard import ADMIN_HEADERS
from tests.support.meshkit import agent_config
from tests.support.pki import make_mesh_pki


@dataclass
class Backend:
    version: str
    delay_ms: int = 0
    fail_all: int = 0
    service: str = "reviews"


@dataclass
class TrafficMesh:
    client: Agent
    servers: list[Agent]
    apps: list[ExampleService]

    @property
    def url(self) -> str:
        host, port = self.client.addresses["outbound"]
        return f"http://{host}:{port}"

    async def apply(self, *objects: dict) -> None:
        host, port = self.client.addresses["admin"]
        async with httpx.AsyncClient() as c:
            r = await c.put(
                f"http://{host}:{port}/v1/policy",
                json={"objects": list(objects)},
                headers=ADMIN_HEADERS,
            )
        assert r.status_code == 200, r.text


@asynccontextmanager
async def traffic_mesh(tmp_path: Path, backends: Sequence[Backend]) -> AsyncIterator[TrafficMesh]:
    nodes = {"node-c": "frontend"} | {f"node-{i}": b.service for i, b in enumerate(backends)}
    dirs = make_mesh_pki(tmp_path, nodes=nodes)
    async with trio.open_nursery() as nursery:
        servers: list[Agent] = []
        apps: list[ExampleService] = []
        table: dict[str, list[dict]] = {}
        for i, backend in enumerate(backends):
            app = ExampleService(
                ServiceConfig(
                    name=backend.service,
                    port=0,
                    version=backend.version,
                    delay_ms=backend.delay_ms,
                    fail_all=backend.fail_all,
                )
            )
            port = await nursery.start(app.run)
            agent = Agent(
                agent_config(f"node-{i}", backend.service, dirs[f"node-{i}"], app_port=port)
            )
            await nursery.start(agent.run)
            host, inbound = agent.addresses["inbound"]
            table.setdefault(backend.service, []).append(
                {
                    "address": f"{host}:{inbound}",
                    "node": f"node-{i}",
                    "labels": {"version": backend.version},
                }
            )
            servers.append(agent)
            apps.append(app)
        endpoints = tmp_path / "endpoints.yaml"
        endpoints.write_text(yaml.safe_dump({"services": table}))
        client = Agent(agent_config("node-c", "frontend", dirs["node-c"], endpoints_file=endpoints))
        await nursery.start(client.run)
        try:
            yield TrafficMesh(client, servers, apps)
        finally:
            nursery.cancel_scope.cancel()


async def versions(
    mesh: TrafficMesh, n: int, host: str = "reviews", path: str = "/", **kwargs: object
) -> Counter[str]:
    """Which backend ``version`` answered each of ``n`` GETs (10 concurrent clients)."""
    seen: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=20)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker(count: int) -> None:
            for _ in range(count):
                r = await client.get(mesh.url + path, headers={"host": host, **kwargs})  # type: ignore[arg-type]
                assert r.status_code == 200, r.text
                seen[r.json()["version"]] += 1

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(worker, n // 10)
    return seen
