"""The mesh from one node: /v1/mesh/stats, ``peermesh top``, ``tap`` and ``check``."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import trio
from click.testing import CliRunner, Result

from examples.service import ExampleService, ServiceConfig
from peermesh.agent import Agent
from peermesh.cli import main
from peermesh.net.admin_guard import ADMIN_HEADERS
from peermesh.net.rpc import RpcError
from tests.support.meshkit import agent_config, eventually, gossip_mesh
from tests.support.obskit import scrape, value
from tests.support.pki import mesh_ca

NODES = {
    "node-a": "frontend",
    "node-b": "orders",
    "node-c": "orders",
    "node-d": "reviews",
    "node-e": "billing",
}


@asynccontextmanager
async def five_agents(tmp_path: Path) -> AsyncIterator[list[Agent]]:
    async with trio.open_nursery() as nursery:
        ports = {}
        for node in ("node-b", "node-c", "node-d"):
            app = ExampleService(ServiceConfig(name=NODES[node], port=0))
            ports[node] = await nursery.start(app.run)
        agents = await gossip_mesh(tmp_path, nursery, NODES, app_ports=ports)
        try:
            yield agents
        finally:
            nursery.cancel_scope.cancel()


def admin_url(agent: Agent) -> str:
    host, port = agent.addresses["admin"]
    return f"http://{host}:{port}"


async def cli(*args: str) -> Result:
    """Run the CLI in a thread (it blocks on HTTP while our agents serve in this loop)."""
    runner = CliRunner(env={"COLUMNS": "160"})
    return await trio.to_thread.run_sync(lambda: runner.invoke(main, list(args)))


async def traffic(agent: Agent, service: str, n: int, path: str = "/") -> None:
    host, port = agent.addresses["outbound"]
    async with httpx.AsyncClient() as c:
        for _ in range(n):
            r = await c.get(f"http://{host}:{port}{path}", headers={"host": service})
            assert r.status_code == 200, r.text


async def test_stats_top_tap_and_check_on_a_healthy_five_agent_mesh(tmp_path):
    async with five_agents(tmp_path) as agents:
        frontend, billing = agents[0], agents[4]

        await eventually(
            lambda: (
                len(frontend.endpoints.endpoints("orders") or []) == 2
                and bool(frontend.endpoints.endpoints("reviews"))
            )
        )
        await traffic(frontend, "orders", 20, "/orders/1")
        await traffic(frontend, "reviews", 10)
        # Any node sees the whole mesh: ask the one that served nothing.
        async with httpx.AsyncClient() as c:

            async def stats() -> dict:
                return (await c.get(admin_url(billing) + "/v1/mesh/stats")).json()

            data = await stats()
            assert data["nodes"] == sorted(NODES) and data["errors"] == []
            by_service = {s["service"]: s for s in data["services"]}
            assert by_service["orders"]["requests"] == 20
            assert by_service["orders"]["success_rate"] == 1.0
            assert by_service["reviews"]["requests"] == 10
            assert by_service["orders"]["p50_ms"] <= by_service["orders"]["p99_ms"]
            edges = {(e["source"], e["destination"]): e for e in data["edges"]}
            assert edges[("frontend", "orders")]["requests"] == 20
            assert edges[("frontend", "reviews")]["requests"] == 10

        # Control-plane metrics read live gossip state.
        # The first probe comes up to one protocol period after start: wait for it.
        with trio.fail_after(20):
            while True:
                samples = await scrape(billing)
                if value(samples, "peermesh_gossip_events_total", event="probes") > 0:
                    break
                await trio.sleep(0.2)
        assert value(samples, "peermesh_gossip_members", state="alive") == 5
        assert value(samples, "peermesh_gossip_datagrams_sent_total") > 0
        assert value(samples, "peermesh_gossip_datagrams_received_total") > 0

        top = await cli("top", "--once", "--agent", admin_url(billing))
        assert top.exit_code == 0, top.output
        for name in ("orders", "reviews", "frontend"):
            assert name in top.output
        row = next(line for line in top.output.splitlines() if "orders" in line)
        assert re.search(r"\b0\.67\b", row), row  # 20 requests over the 30 s window, 2 decimals
        assert "100.0%" in row
        live = await cli(
            "top", "--iterations", "2", "--interval", "0.1", "--agent", admin_url(billing)
        )
        assert live.exit_code == 0 and "reviews" in live.output

        # tap is authorized: billing is neither an admin nor listed, so every peer refuses.
        async with httpx.AsyncClient() as c:
            refused = (await c.get(admin_url(billing) + "/v1/mesh/tap?service=orders")).json()
            assert len(refused["errors"]) == 4, refused
            assert all("may not tap" in e["error"] for e in refused["errors"]), refused
            me = str(billing.tls.identity)
            listed = {"kind": "MeshConfig", "name": "default", "spec": {"tapIdentities": [me]}}
            r = await c.put(
                admin_url(billing) + "/v1/policy", json={"objects": [listed]}, headers=ADMIN_HEADERS
            )
            assert r.status_code == 200, r.text
        await eventually(lambda: all(a.policy.compiled().may_tap(me) for a in agents))

        # tap: subscribe (activates the ring buffers), send traffic, then read it back.
        first = await cli("tap", "orders", "--iterations", "1", "--agent", admin_url(billing))
        assert first.exit_code == 0, first.output
        await traffic(frontend, "orders", 3, "/tapped/x?token=secret")
        await traffic(frontend, "orders", 2, "/other")
        tapped = await cli(
            "tap", "orders", "--path", "/tapped", "--iterations", "1", "--agent", admin_url(billing)
        )
        assert tapped.exit_code == 0, tapped.output
        lines = [line for line in tapped.output.splitlines() if line.strip()]
        # Each request is seen by the caller's sidecar and by the server's sidecar.
        assert len(lines) == 6, tapped.output
        assert all("/tapped/x" in line and "frontend -> orders" in line for line in lines)
        # Query strings never leave an agent in tap rows.
        assert "secret" not in tapped.output and "<redacted>" in tapped.output

        check = await cli("check", "--agent", admin_url(billing))
        assert check.exit_code == 0, check.output
        assert "✘" not in check.output
        for name in (
            "agent up",
            "certificate",
            "peers reachable",
            "trust bundle consistent",
            "clock skew",
            "gossip converged",
            "policy converged",
            "signer quorum",
        ):
            assert f"✔ {name}:" in check.output, check.output


async def test_check_names_a_skewed_clock_and_diverged_policy(tmp_path):
    async with five_agents(tmp_path) as agents:
        a, d, e = agents[0], agents[3], agents[4]
        d.observability.clock_offset = 30.0  # test hook: node-d's clock runs 30 s ahead
        check = await cli("check", "--agent", admin_url(a))
        assert check.exit_code == 1
        assert re.search(r"✘ clock skew: clock skew with node-d \+(29|30)\.\ds", check.output)
        assert "✔ policy converged" in check.output
        d.observability.clock_offset = 0.0

        # node-e stops syncing policy (its anti-entropy handlers refuse) and edits locally.

        async def refuse(request: object) -> None:
            raise RpcError(503, "test: policy sync disabled")

        assert e.replicator is not None
        e.replicator.sync_interval = 1e6
        for method in list(e.control._handlers):
            if method.startswith("policy/"):
                e.control._handlers[method] = refuse
        e.policy.apply(
            [{"kind": "MeshConfig", "name": "default", "spec": {"defaultInboundPolicy": "DENY"}}],
            now=trio.current_time(),
        )
        check = await cli("check", "--agent", admin_url(a))
        assert check.exit_code == 1
        assert re.search(r"✘ policy converged: .*differs on node-e", check.output), check.output
        assert "✔ clock skew" in check.output
        assert "→ run 'peermesh policy status'" in check.output


async def test_check_names_an_expired_certificate(tmp_path):
    from tests.support.pki import make_mesh_pki

    dirs = make_mesh_pki(tmp_path)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    mesh_ca(tmp_path).issue(
        "node-a", "frontend", dirs["node-a"], now=past, lifetime=dt.timedelta(hours=1)
    )
    async with trio.open_nursery() as nursery:
        agent = Agent(agent_config("node-a", "frontend", dirs["node-a"]))
        await nursery.start(agent.run)
        check = await cli("check", "--agent", admin_url(agent))
        assert check.exit_code == 1
        assert re.search(r"✘ certificate: no usable certificate: .*expired", check.output), (
            check.output
        )
        assert "→ renew it" in check.output
        nursery.cancel_scope.cancel()


async def test_check_says_when_the_agent_is_down(tmp_path):
    from tests.support.meshkit import free_port

    check = await cli("check", "--agent", f"http://127.0.0.1:{free_port()}")
    assert check.exit_code == 1
    assert "✘ agent up: cannot reach the agent's admin API" in check.output


async def test_top_live_in_a_pty_shows_services_and_rates(tmp_path):
    import fcntl
    import os
    import pty
    import struct
    import sys
    import termios

    async with five_agents(tmp_path) as agents:
        frontend = agents[0]
        await eventually(lambda: len(frontend.endpoints.endpoints("orders") or []) == 2)
        await traffic(frontend, "orders", 15)
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 140, 0, 0))
        args = [sys.executable, "-m", "peermesh", "top", "--iterations", "3", "--interval", "0.2"]
        proc = await trio.lowlevel.open_process(
            [*args, "--agent", admin_url(agents[2])], stdin=slave, stdout=slave, stderr=slave
        )
        os.close(slave)

        def read_all() -> bytes:
            chunks = []
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            return b"".join(chunks)

        raw = await trio.to_thread.run_sync(read_all)
        assert await proc.wait() == 0
        os.close(master)
        screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw.decode("utf-8", "replace"))
        assert "orders" in screen and "frontend" in screen, screen
        row = next(line for line in screen.splitlines() if "│ orders" in line)
        assert "0.5" in row and "100.0%" in row, row  # 15 requests over the 30 s window


async def test_check_names_a_certificate_from_the_future_and_a_node_cut_off_from_its_seeds(
    tmp_path,
):
    """A node whose clock is behind the signers' holds a certificate it cannot use yet,
    and with --join seeds but no peer known it is cut off, not a one-node mesh (both
    found by the chaos clock-skew scenario, where such a node reported itself healthy)."""
    from tests.support.meshkit import free_port
    from tests.support.pki import make_mesh_pki

    dirs = make_mesh_pki(tmp_path)
    future = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
    mesh_ca(tmp_path).issue("node-a", "frontend", dirs["node-a"], now=future)
    config = agent_config(
        "node-a", "frontend", dirs["node-a"], gossip="127.0.0.1:0", insecure_gossip=True,
        mdns=False, join=(f"127.0.0.1:{free_port()}",),
    )  # fmt: skip
    async with trio.open_nursery() as nursery:
        agent = Agent(config)
        await nursery.start(agent.run)
        check = await cli("check", "--agent", admin_url(agent))
        assert check.exit_code == 1
        assert re.search(r"✘ certificate: .*(not yet valid|not valid for another)", check.output), (
            check.output
        )
        if agent.tls.loaded:  # loaded but unusable: the peers check must not look healthy
            assert "no peer agent known although --join names seeds" in check.output
            assert "nothing to compare the clock with" in check.output
        nursery.cancel_scope.cancel()
