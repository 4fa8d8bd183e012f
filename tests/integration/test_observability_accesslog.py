"""Access logs: one JSON line per request on each side; a stuck sink never blocks traffic."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import trio

from examples.service import ExampleService, ServiceConfig
from peermesh.agent import Agent
from peermesh.observability.accesslog import AccessLog
from tests.support.meshkit import TwoAgents, agent_config, eventually
from tests.support.obskit import scrape, value
from tests.support.pki import make_mesh_pki


@asynccontextmanager
async def logged_agents(tmp_path: Path, **options: object) -> AsyncIterator[TwoAgents]:
    """frontend → orders like ``two_agents``, with extra agent options (access log, OTLP)."""
    dirs = make_mesh_pki(tmp_path)
    async with trio.open_nursery() as nursery:
        app_port = await nursery.start(ExampleService(ServiceConfig(name="orders", port=0)).run)
        server_opts = {
            k[len("server_") :]: v for k, v in options.items() if k.startswith("server_")
        }
        client_opts = {
            k[len("client_") :]: v for k, v in options.items() if k.startswith("client_")
        }
        server = Agent(
            agent_config("node-b", "orders", dirs["node-b"], app_port=app_port, **server_opts)
        )
        await nursery.start(server.run)
        host, port = server.addresses["inbound"]
        client = Agent(
            agent_config(
                "node-a",
                "frontend",
                dirs["node-a"],
                peers=(f"orders={host}:{port}",),
                **client_opts,
            )
        )
        await nursery.start(client.run)
        try:
            yield TwoAgents(client, server, app_port, dirs)
        finally:
            nursery.cancel_scope.cancel()


CODES = (200, 201, 202, 404, 418)


def _lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_one_json_line_per_request_on_both_sides(tmp_path):
    out_log, in_log = tmp_path / "frontend.log", tmp_path / "orders.log"
    async with (
        logged_agents(
            tmp_path, client_access_log=str(out_log), server_access_log=str(in_log)
        ) as mesh,
        httpx.AsyncClient() as c,
    ):
        for i, code in enumerate(CODES):
            r = await c.get(
                mesh.outbound_url + f"/status/{code}",
                headers={"host": "orders", "x-request-id": f"req-{i}"},
            )
            assert r.status_code == code
        r = await c.post(
            mesh.outbound_url + "/upload", content=b"z" * 300, headers={"host": "orders"}
        )
        assert r.status_code == 200
        await eventually(lambda: len(_lines(out_log)) == 6 and len(_lines(in_log)) == 6)
        outbound, inbound = _lines(out_log), _lines(in_log)
        upstream = "{}:{}".format(*mesh.inbound)
        for i, code in enumerate(CODES):
            o = next(x for x in outbound if x["request_id"] == f"req-{i}")
            s = next(x for x in inbound if x["request_id"] == f"req-{i}")
            assert (o["method"], o["path"], o["status"]) == ("GET", f"/status/{code}", code)
            assert (s["method"], s["path"], s["status"]) == ("GET", f"/status/{code}", code)
            assert o["direction"] == "outbound" and s["direction"] == "inbound"
            assert o["authority"] == "orders"
            assert o["source_identity"] == s["source_identity"] == "spiffe://mesh.test/svc/frontend"
            assert (
                o["destination_identity"]
                == s["destination_identity"]
                == ("spiffe://mesh.test/svc/orders")
            )
            assert o["upstream"] == upstream and o["attempts"] == 1
            assert len(o["trace_id"]) == 32 and o["trace_id"] == s["trace_id"]
            assert o["duration_ms"] >= s["duration_ms"] >= 0
            assert o["time"].endswith("+00:00")
        upload = [x for x in outbound + inbound if x["path"] == "/upload"]
        assert [x["request_bytes"] for x in upload] == [300, 300]
        # A request id is created when absent and is the same on both sides.
        assert upload[0]["request_id"] == upload[1]["request_id"]


async def test_a_blocked_sink_drops_lines_and_traffic_continues(tmp_path):
    read_fd, write_fd = os.pipe()  # nobody reads: the writer thread blocks once it is full
    sink = os.fdopen(write_fd, "wb", buffering=0)  # closed after the mesh stops
    try:
        async with logged_agents(tmp_path) as mesh, httpx.AsyncClient() as c:
            stuck = AccessLog(sink, capacity=16)
            hub = mesh.client.observability
            hub.access_log = stuck
            mesh.client.pool.nursery.start_soon(stuck.run)
            n = 400
            for _ in range(n):
                r = await c.get(mesh.outbound_url + "/headers", headers={"host": "orders"})
                assert r.status_code == 200
            assert stuck.dropped > 0
            assert stuck.pending <= 16
            assert stuck.written + stuck.dropped + stuck.pending <= n
            samples = await scrape(mesh.client)
            assert value(samples, "peermesh_access_log_dropped_total") == stuck.dropped
            assert value(samples, "peermesh_requests_total", direction="outbound") == n
    finally:
        os.close(read_fd)  # unblocks the abandoned writer thread (EPIPE)
        try:
            sink.close()
        except OSError:
            pass
