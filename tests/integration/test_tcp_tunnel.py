"""TCP through the mesh: a CONNECT stream on the agents' mTLS connection, both ways.

The outbound half is driven directly with an accepted app socket (what capture hands it
after SO_ORIGINAL_DST); tests/integration/test_capture_tcp.py does it all through nftables.
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

from peermesh.agent import Agent
from peermesh.agent.devmesh import free_port
from peermesh.agent.wiring import listen
from peermesh.net.admin_guard import ADMIN_HEADERS
from peermesh.observability.accesslog import AccessLog
from peermesh.proxy.tunnel import OpenFailure
from tests.support.meshkit import agent_config, eventually, two_agents
from tests.support.pki import make_mesh_pki

AppServer = Callable[[trio.SocketListener], Awaitable[None]]

DENY_TCP = {
    "kind": "AuthorizationPolicy",
    "name": "orders-deny-6379",
    "spec": {
        "service": "orders",
        "action": "DENY",
        "rules": [{"to": [{"operation": {"ports": [6379]}}]}],
    },
}

ROUND_ROBIN = {
    "kind": "TrafficPolicy",
    "name": "orders",
    "spec": {"host": "orders", "loadBalancer": {"simple": "ROUND_ROBIN"}},
}


async def echo_app(listener: trio.SocketListener) -> None:
    """Echo until the client half-closes, then half-close back."""

    async def serve(stream: trio.SocketStream) -> None:
        async with stream:
            async for chunk in stream:
                await stream.send_all(chunk)
            await stream.send_eof()

    await trio.serve_listeners(serve, [listener])


async def resetting_app(listener: trio.SocketListener) -> None:
    """Read a little, then reset the connection (SO_LINGER 0)."""

    async def serve(stream: trio.SocketStream) -> None:
        await stream.receive_some(10)
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()

    await trio.serve_listeners(serve, [listener])


async def tunnel_client(mesh, port: int = 6379, endpoints=None) -> trio.SocketStream:
    """An app connection whose far end the client agent tunnels to orders:port (on one
    of ``endpoints``, by default every orders endpoint the client knows)."""
    outbound = mesh.client.outbound
    if endpoints is None:
        endpoints = list(mesh.client.endpoints.endpoints("orders"))
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    app_side = await trio.open_tcp_stream("127.0.0.1", listeners[0].socket.getsockname()[1])
    agent_side = await listeners[0].accept()
    await listeners[0].aclose()
    mesh.nursery.start_soon(outbound.tunnel.run, agent_side, b"", "orders", port, endpoints)
    return app_side


async def read_all(stream: trio.SocketStream) -> bytes:
    got = bytearray()
    async for chunk in stream:
        got += chunk
    return bytes(got)


async def echo_through(mesh, count: int, port: int = 7000) -> None:
    """``count`` connections, one after another, each echoed whole through the mesh."""
    for i in range(count):
        app = await tunnel_client(mesh, port=port)
        await app.send_all(b"ping %d" % i)
        await app.send_eof()
        assert await read_all(app) == b"ping %d" % i  # every connection gets through
        await app.aclose()


@asynccontextmanager
async def app_mesh(tmp_path, app: AppServer) -> AsyncIterator[Any]:
    """Two agents in front of ``app`` on a loopback port; ``mesh.nursery`` runs the app."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    async with trio.open_nursery() as apps:
        apps.start_soon(app, listener)
        async with two_agents(tmp_path, app_port=listener.socket.getsockname()[1]) as mesh:
            mesh.nursery = apps
            yield mesh
        apps.cancel_scope.cancel()


@dataclass
class Backends:
    """A frontend agent in front of one orders agent per app port (some with no app)."""

    client: Agent
    servers: list[Agent]
    nursery: trio.Nursery
    access: Path

    def lines(self) -> list[dict]:
        text = self.access.read_text() if self.access.exists() else ""
        return [json.loads(line) for line in text.splitlines()]


@asynccontextmanager
async def backends(
    tmp_path,
    app_ports: list[int],
    *,
    dead_agents: int = 0,
    silent: tuple[int, ...] = (),
    settings: Mapping[int, Mapping[str, object]] | None = None,
) -> AsyncIterator[Backends]:
    """``dead_agents`` more orders endpoints are addresses where no agent listens;
    ``silent`` ports are more endpoints, where something takes TCP and never speaks;
    ``settings`` are extra agent settings by server index (``{0: {"max_streams": 1}}``)."""
    nodes = {"node-a": "frontend"} | {f"node-{i}": "orders" for i in range(len(app_ports))}
    dirs = make_mesh_pki(tmp_path, nodes=nodes)
    async with trio.open_nursery() as nursery:
        servers = []
        for i, app_port in enumerate(app_ports):
            extra = (settings or {}).get(i, {})
            config = agent_config(
                f"node-{i}", "orders", dirs[f"node-{i}"], app_port=app_port, **extra
            )
            agent = Agent(config)
            await nursery.start(agent.run)
            servers.append(agent)
        peers = tuple("orders={}:{}".format(*agent.addresses["inbound"]) for agent in servers)
        peers += tuple(f"orders=127.0.0.1:{free_port()}" for _ in range(dead_agents))
        peers += tuple(f"orders=127.0.0.1:{port}" for port in silent)
        client = Agent(agent_config("node-a", "frontend", dirs["node-a"], peers=peers))
        await nursery.start(client.run)
        access = tmp_path / "frontend-access.log"
        writer = AccessLog(str(access))
        client.observability.access_log = writer
        nursery.start_soon(writer.run)
        try:
            yield Backends(client, servers, nursery, access)
        finally:
            nursery.cancel_scope.cancel()


def closed_port() -> int:
    """A loopback port nothing listens on: an app that refuses every connection."""
    return free_port()


def metric(agent, name: str) -> str:
    return "\n".join(
        line for line in agent.metrics.exposition().decode().splitlines() if line.startswith(name)
    )


async def test_bytes_cross_both_ways_with_half_close(tmp_path):
    async with app_mesh(tmp_path, echo_app) as mesh:
        app = await tunnel_client(mesh)
        payload = bytes(range(256)) * 8192  # 2 MiB: well past every flow-control window
        async with trio.open_nursery() as io:

            async def send() -> None:
                await app.send_all(payload)
                await app.send_eof()  # our FIN must reach the echo app ...

            io.start_soon(send)
            echoed = await read_all(app)  # ... and its FIN must come back
        assert echoed == payload
        await app.aclose()
        for agent in (mesh.server, mesh.client):
            await eventually(
                lambda a=agent: 'outcome="ok"' in metric(a, "peermesh_tcp_connections")
            )
        sent = metric(mesh.client, "peermesh_tcp_bytes_total")
        assert f'way="sent"}} {float(len(payload)):.6e}' in sent, sent


async def test_far_side_reset_reaches_the_caller(tmp_path):
    async with app_mesh(tmp_path, resetting_app) as mesh:
        app = await tunnel_client(mesh)
        await app.send_all(b"hello, are you there?")
        try:
            rest = await read_all(app)
        except trio.BrokenResourceError:
            rest = b""  # a reset, as a direct connection would see it
        assert rest == b""
        await eventually(lambda: "reset" in metric(mesh.client, "peermesh_tcp_connections"))
        # The agents are untouched: HTTP still crosses.
        async with httpx.AsyncClient() as client:
            r = await client.get(mesh.outbound_url + "/", headers={"host": "orders"})
        assert r.status_code in (200, 502)  # the app is not HTTP; the agent answered


async def test_authorization_policy_on_the_port_denies_the_tunnel(tmp_path):
    async with app_mesh(tmp_path, echo_app) as mesh:
        host, port = mesh.server.addresses["admin"]
        async with httpx.AsyncClient() as client:
            r = await client.put(
                f"http://{host}:{port}/v1/policy",
                json={"objects": [DENY_TCP]},
                headers=ADMIN_HEADERS,
            )
            assert r.status_code == 200, r.text
        app = await tunnel_client(mesh, port=6379)
        await app.send_all(b"PING\r\n")
        try:
            assert await read_all(app) == b""
        except trio.BrokenResourceError:
            pass
        other = await tunnel_client(mesh, port=7000)  # another port is still allowed
        await other.send_all(b"PING\r\n")
        await other.send_eof()
        assert await read_all(other) == b"PING\r\n"
        assert 'outcome="denied"' in metric(mesh.server, "peermesh_tcp_connections")


async def test_each_tunnelled_connection_is_one_json_access_line_on_both_agents(tmp_path):
    async with app_mesh(tmp_path, echo_app) as mesh:
        files = {}
        for agent in (mesh.client, mesh.server):
            files[agent] = tmp_path / f"{agent.config.name}-access.log"
            writer = AccessLog(str(files[agent]))
            agent.observability.access_log = writer
            mesh.nursery.start_soon(writer.run)
        app = await tunnel_client(mesh)
        await app.send_all(b"x" * 1000)
        await app.send_eof()
        assert await read_all(app) == b"x" * 1000
        await app.aclose()

        def lines(agent) -> list[dict]:
            path = files[agent]
            text = path.read_text() if path.exists() else ""
            return [json.loads(line) for line in text.splitlines()]

        for agent in (mesh.client, mesh.server):
            await eventually(lambda a=agent: len(lines(a)) == 1)
        [out] = lines(mesh.client)
        assert out["protocol"] == "tcp" and out["direction"] == "outbound"
        assert (out["source"], out["destination"], out["port"]) == ("frontend", "orders", 6379)
        assert (out["sent_bytes"], out["received_bytes"], out["outcome"]) == (1000, 1000, "ok")
        assert out["peer"] and out["duration_ms"] >= 0
        assert out["peer_identity"].startswith("spiffe://")
        assert out["peer_identity"].endswith("/orders")
        [into] = lines(mesh.server)
        assert into["direction"] == "inbound" and into["outcome"] == "ok"
        assert into["peer_identity"].startswith("spiffe://")
        assert into["peer_identity"].endswith("/frontend")
        assert (into["sent_bytes"], into["received_bytes"]) == (1000, 1000)


async def test_a_backend_whose_app_refuses_is_retried_on_another(tmp_path):
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    live = listener.socket.getsockname()[1]
    async with backends(tmp_path, [closed_port(), live]) as mesh:
        mesh.nursery.start_soon(echo_app, listener)
        # Round robin keeps sending first tries to the dead backend, whatever it learnt.
        mesh.client.policy.apply([ROUND_ROBIN], now=0.0)
        await echo_through(mesh, 12)
        await eventually(lambda: len(mesh.lines()) == 12)
        lines = mesh.lines()
        assert {line["outcome"] for line in lines} == {"ok"}
        dead = "{}:{}".format(*mesh.servers[0].addresses["inbound"])
        assert all(line["peer"] != dead for line in lines)
        retried = [line for line in lines if line["attempts"] == 2]
        # Round robin turns to the dead backend at least every other connection: retried.
        assert len(retried) >= len(lines) // 2, lines
        assert all(line["attempts"] in (1, 2) for line in lines)
        failed = metric(mesh.client, "peermesh_sidecar_errors_total")
        assert 'error="tcp-app-refused"' in failed, failed  # ... and each such try is counted
        assert f"{float(len(retried)):.1f}" in metric(mesh.client, "peermesh_retries_total")


async def test_an_endpoint_whose_agent_is_gone_is_retried_on_another(tmp_path):
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    async with backends(tmp_path, [listener.socket.getsockname()[1]], dead_agents=1) as mesh:
        mesh.nursery.start_soon(echo_app, listener)
        mesh.client.policy.apply([ROUND_ROBIN], now=0.0)
        await echo_through(mesh, 6)
        await eventually(lambda: len(mesh.lines()) == 6)
        assert {line["outcome"] for line in mesh.lines()} == {"ok"}
        assert any(line["attempts"] == 2 for line in mesh.lines())
        failed = metric(mesh.client, "peermesh_sidecar_errors_total")
        assert 'error="tcp-peer-unreachable"' in failed, failed


async def test_an_agent_that_takes_tcp_but_never_speaks_costs_only_the_connect_timeout(tmp_path):
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    # The kernel completes the handshake into the backlog; nothing ever reads or answers.
    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(64)
        silent = blackhole.getsockname()[1]
        async with backends(tmp_path, [listener.socket.getsockname()[1]], silent=(silent,)) as mesh:
            mesh.nursery.start_soon(echo_app, listener)
            short = {"tcp": {"connectTimeout": "250ms"}}
            policy = {**ROUND_ROBIN, "spec": {**ROUND_ROBIN["spec"], "connectionPool": short}}
            mesh.client.policy.apply([policy], now=0.0)
            await echo_through(mesh, 4)
            await eventually(lambda: len(mesh.lines()) == 4)
            lines = mesh.lines()
            assert {line["outcome"] for line in lines} == {"ok"}
            assert all(line["peer"] != f"127.0.0.1:{silent}" for line in lines)
            retried = [line for line in lines if line["attempts"] == 2]
            assert len(retried) >= 2, lines  # round robin tries the silent one every other time
            failed = metric(mesh.client, "peermesh_sidecar_errors_total")
            # The policy's 250 ms, not the pool's own (longer) dial bound, ended those tries.
            assert 'error="tcp-connect-timeout"' in failed, failed
            assert 'error="tcp-peer-unreachable"' not in failed, failed
            assert f"{float(len(retried)):.1f}" in metric(mesh.client, "peermesh_retries_total")


async def test_an_agent_that_refuses_the_stream_is_retried_on_another(tmp_path):
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    app_port = listener.socket.getsockname()[1]
    capped = {0: {"max_streams": 1}}
    async with backends(tmp_path, [app_port, app_port], settings=capped) as mesh:
        mesh.nursery.start_soon(echo_app, listener)
        mesh.client.policy.apply([ROUND_ROBIN], now=0.0)
        full = "{}:{}".format(*mesh.servers[0].addresses["inbound"])
        # One tunnel held open to the capped agent takes its only stream.
        [only] = [e for e in mesh.client.endpoints.endpoints("orders") if e.address == full]
        held = await tunnel_client(mesh, port=7000, endpoints=[only])
        await held.send_all(b"hold")
        assert await held.receive_some(4) == b"hold"
        await echo_through(mesh, 6)
        await eventually(lambda: len(mesh.lines()) == 6)
        lines = mesh.lines()
        assert {line["outcome"] for line in lines} == {"ok"}
        assert all(line["peer"] != full for line in lines)
        assert any(line["attempts"] == 2 for line in lines), lines
        failed = metric(mesh.client, "peermesh_sidecar_errors_total")
        assert 'error="tcp-refused-stream"' in failed, failed
        refused = metric(mesh.servers[0], "peermesh_connections_rejected_total")
        assert 'reason="stream-cap"' in refused, refused
        await held.send_eof()
        assert await read_all(held) == b""  # the held tunnel was never touched
        await held.aclose()


async def test_all_backends_down_closes_the_connection_with_a_line_and_a_counter(tmp_path):
    async with backends(tmp_path, [closed_port(), closed_port()]) as mesh:
        app = await tunnel_client(mesh, port=7000)
        await app.send_all(b"hello?")
        try:
            assert await read_all(app) == b""
        except trio.BrokenResourceError:
            pass  # reset, as a host with nothing on the port answers
        await eventually(lambda: len(mesh.lines()) == 1)
        [line] = mesh.lines()
        assert line["outcome"] == "app-refused"
        assert line["attempts"] == 3  # the default connect attempts, over both endpoints
        assert (line["sent_bytes"], line["received_bytes"]) == (0, 0)
        counted = metric(mesh.client, "peermesh_tcp_connections_total")
        assert 'outcome="app-refused"' in counted, counted


async def test_the_loopbacks_listener_takes_ipv4_and_ipv6_on_one_port():
    listeners = await listen(("localhost", 0), "outbound")
    families = {listener.socket.family for listener in listeners}
    assert families == {socket.AF_INET, socket.AF_INET6}  # the default --outbound's host
    port = listeners[0].socket.getsockname()[1]
    assert {listener.socket.getsockname()[1] for listener in listeners} == {port}
    async with trio.open_nursery() as nursery:

        async def greet(stream: trio.SocketStream) -> None:
            await stream.send_all(str(stream.socket.family.name).encode())
            await stream.aclose()

        nursery.start_soon(trio.serve_listeners, greet, listeners)
        for host, family in (("127.0.0.1", "AF_INET"), ("::1", "AF_INET6")):
            client = await trio.open_tcp_stream(host, port)
            assert await read_all(client) == family.encode()
            await client.aclose()
        nursery.cancel_scope.cancel()


def test_only_opens_that_put_no_byte_before_an_app_are_retried():
    retried = {f for f in OpenFailure if f.retryable(sent=False)}
    assert retried == {
        OpenFailure.UNREACHABLE,
        OpenFailure.CONNECT_TIMEOUT,
        OpenFailure.GOAWAY,
        OpenFailure.REFUSED,
        OpenFailure.LOST,
        OpenFailure.APP_REFUSED,
    }
    # A connection lost before the answer may already have relayed the app's first bytes.
    assert not OpenFailure.LOST.retryable(sent=True)
    assert OpenFailure.REFUSED.retryable(sent=True)  # REFUSED_STREAM: never processed
    assert not OpenFailure.DENIED.retryable(sent=False)  # the same answer anywhere
