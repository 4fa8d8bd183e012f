"""Slow and idle clients against two real agents, under trio's MockClock.

Every test holds one connection (or stream) of an attacker still, or trickles it, on
real loopback sockets; the agents' timeouts fire in mock time (autojump), so nothing
here depends on wall time. Each asserts how the attacker's connection or stream ended,
that the counter moved, and that a victim on another connection (or another stream of
the same connection) was served.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import httpx
import trio
import trio.testing
from hyperframe.frame import GoAwayFrame, HeadersFrame, RstStreamFrame

from peermesh.agent import Agent
from tests.support.h2raw import PREFACE, RawPeer, request
from tests.support.meshkit import TwoAgents, two_agents
from tests.support.pki import raw_client_context

CANCEL, NO_ERROR, REFUSED_STREAM = 8, 0, 7


def rejected(agent: Agent, listener: str, reason: str) -> float:
    return agent.metrics.rejected_connections.labels(listener, reason)._value.get()  # type: ignore[no-any-return]


@asynccontextmanager
async def mesh_of(
    tmp_path, client: Mapping[str, object] | None = None, server: Mapping[str, object] | None = None
) -> AsyncIterator[TwoAgents]:
    # The serving agent's own timeouts are stretched so the agent under test decides.
    relaxed = {"stream_idle_timeout": "1d", "body_timeout": "1d", "idle_timeout": "1d"}
    async with two_agents(
        tmp_path, client_settings=client, server_settings={**relaxed, **(server or {})}
    ) as mesh:
        yield mesh


async def victim(mesh: TwoAgents) -> None:
    """A request on a fresh connection of its own is served."""
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(mesh.outbound_url + "/", headers={"host": "orders"})
    assert response.status_code == 200, (response.headers, response.text)


async def read_all(stream: trio.abc.Stream) -> bytes:
    """Everything the agent sends until it closes the connection."""
    received = b""
    while True:
        try:
            chunk = await stream.receive_some(1 << 16)
        except trio.BrokenResourceError:
            return received
        if not chunk:
            return received
        received += chunk


async def served(peer: RawPeer, stream_id: int) -> None:
    """A plain GET on ``stream_id`` of the attacker's connection still gets its 200."""
    await peer.send(peer.headers(stream_id, request("/")))
    await peer.read_until(HeadersFrame, stream_id=stream_id)
    assert peer.status(stream_id) == b"200"


# HTTP/1.1 ------------------------------------------------------------------------------


async def test_trickled_head_gets_408_and_close(tmp_path, autojump_clock: trio.testing.MockClock):
    async with mesh_of(tmp_path) as mesh:
        attacker = await trio.open_tcp_stream(*mesh.outbound)
        await attacker.send_all(b"GET / HTTP/1.1\r\nHost: ord")
        started = trio.current_time()
        answer = await read_all(attacker)
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert trio.current_time() - started >= 60  # mock time: the timeout, not before
        assert rejected(mesh.client, "outbound", "header-timeout") == 1
        await victim(mesh)


async def test_silent_connection_is_closed_without_an_answer(
    tmp_path, autojump_clock: trio.testing.MockClock
):
    async with mesh_of(tmp_path) as mesh:
        attacker = await trio.open_tcp_stream(*mesh.outbound)
        assert await read_all(attacker) == b""
        assert rejected(mesh.client, "outbound", "header-timeout") == 1
        await victim(mesh)


async def test_idle_keepalive_is_closed(tmp_path, autojump_clock: trio.testing.MockClock):
    async with mesh_of(tmp_path) as mesh:
        attacker = await trio.open_tcp_stream(*mesh.outbound)
        await attacker.send_all(b"GET / HTTP/1.1\r\nHost: orders\r\n\r\n")
        answer = await read_all(attacker)  # the answer, then the close at the idle timeout
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.count(b"HTTP/1.1") == 1
        assert rejected(mesh.client, "outbound", "keepalive-timeout") == 1
        assert rejected(mesh.client, "outbound", "header-timeout") == 0
        await victim(mesh)


async def test_stalled_body_gets_408(tmp_path, autojump_clock: trio.testing.MockClock):
    async with mesh_of(tmp_path) as mesh:
        attacker = await trio.open_tcp_stream(*mesh.outbound)
        await attacker.send_all(
            b"POST /upload HTTP/1.1\r\nHost: orders\r\nContent-Length: 100\r\n\r\n0123456789"
        )
        answer = await read_all(attacker)
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert rejected(mesh.client, "outbound", "body-timeout") == 1
        await victim(mesh)


async def test_slow_but_moving_body_survives(tmp_path, autojump_clock: trio.testing.MockClock):
    async with mesh_of(tmp_path) as mesh:
        attacker = await trio.open_tcp_stream(*mesh.outbound)
        await attacker.send_all(
            b"POST /upload HTTP/1.1\r\nHost: orders\r\nContent-Length: 4\r\n"
            b"Connection: close\r\n\r\n"
        )
        started = trio.current_time()
        for byte in b"abcd":  # a byte every 30 s against a 60 s body timeout
            await trio.sleep(30)
            await attacker.send_all(bytes([byte]))
        answer = await read_all(attacker)
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        assert trio.current_time() - started >= 120
        assert rejected(mesh.client, "outbound", "body-timeout") == 0
        await victim(mesh)


# HTTP/2 --------------------------------------------------------------------------------
async def test_stalled_h2_body_resets_that_stream_only(
    tmp_path, autojump_clock: trio.testing.MockClock
):
    async with mesh_of(tmp_path) as mesh:
        peer = RawPeer(await trio.open_tcp_stream(*mesh.outbound))
        await peer.start()
        post = [*request("/upload", method="POST"), (b"content-length", b"100")]
        await peer.send(peer.headers(1, post, end_stream=False), peer.data(1, b"0123456789"))
        await served(peer, 3)  # same connection: served
        rst = await peer.read_until(RstStreamFrame, stream_id=1)
        assert isinstance(rst, RstStreamFrame) and rst.error_code == CANCEL
        assert peer.status(1) == b"408"
        assert rejected(mesh.client, "outbound", "body-timeout") == 1
        await served(peer, 5)  # and still served afterwards
        await victim(mesh)


async def test_slow_but_moving_h2_body_survives(tmp_path, autojump_clock: trio.testing.MockClock):
    async with mesh_of(tmp_path) as mesh:
        peer = RawPeer(await trio.open_tcp_stream(*mesh.outbound))
        await peer.start()
        post = [*request("/upload", method="POST"), (b"content-length", b"4")]
        await peer.send(peer.headers(1, post, end_stream=False))
        for i, byte in enumerate(b"abcd"):
            await trio.sleep(30)
            await peer.send(peer.data(1, bytes([byte]), end_stream=i == 3))
        await peer.read_until(HeadersFrame, stream_id=1)
        assert peer.status(1) == b"200"
        assert rejected(mesh.client, "outbound", "body-timeout") == 0
        await victim(mesh)


async def test_idle_h2_stream_is_answered_and_reset(
    tmp_path, autojump_clock: trio.testing.MockClock
):
    # No body timeout here, so the stream idle timeout is what ends a stalled upload.
    async with mesh_of(tmp_path, client={"body_timeout": "0"}) as mesh:
        peer = RawPeer(await trio.open_tcp_stream(*mesh.outbound))
        await peer.start()
        post = [*request("/upload", method="POST"), (b"content-length", b"100")]
        await peer.send(peer.headers(1, post, end_stream=False))
        started = trio.current_time()
        rst = await peer.read_until(RstStreamFrame, stream_id=1)
        assert isinstance(rst, RstStreamFrame) and rst.error_code == CANCEL
        assert peer.status(1) == b"408"
        assert trio.current_time() - started >= 300
        assert rejected(mesh.client, "outbound", "stream-idle-timeout") == 1
        await served(peer, 3)  # the connection lives on
        await victim(mesh)


async def test_idle_h2_connection_gets_goaway(tmp_path, autojump_clock: trio.testing.MockClock):
    async with mesh_of(tmp_path) as mesh:
        peer = RawPeer(await trio.open_tcp_stream(*mesh.outbound))
        await peer.start()
        await peer.send(peer.headers(1, request("/")))
        await peer.read_until(HeadersFrame, stream_id=1)
        started = trio.current_time()
        goaway = await peer.goaway()
        assert isinstance(goaway, GoAwayFrame) and goaway.error_code == NO_ERROR
        assert trio.current_time() - started >= 3600
        assert rejected(mesh.client, "outbound", "idle-timeout") == 1
        await victim(mesh)


async def test_h2c_without_settings_is_closed(tmp_path, autojump_clock: trio.testing.MockClock):
    async with mesh_of(tmp_path) as mesh:
        attacker = await trio.open_tcp_stream(*mesh.outbound)
        await attacker.send_all(PREFACE)  # the magic, then nothing
        await read_all(attacker)
        assert rejected(mesh.client, "outbound", "preface-timeout") == 1
        await victim(mesh)


async def test_mtls_without_preface_is_closed(tmp_path, autojump_clock: trio.testing.MockClock):
    async with mesh_of(tmp_path) as mesh:
        context = raw_client_context(mesh.dirs["node-a"])
        transport = await trio.open_ssl_over_tcp_stream(*mesh.inbound, ssl_context=context)
        await transport.do_handshake()
        started = trio.current_time()
        await read_all(transport)
        assert trio.current_time() - started >= 10
        assert rejected(mesh.server, "inbound", "preface-timeout") == 1
        await victim(mesh)  # through the same inbound, on the agents' pooled connection


async def test_stalled_body_on_the_mtls_inbound_resets_that_stream_only(
    tmp_path, autojump_clock: trio.testing.MockClock
):
    async with two_agents(tmp_path) as mesh:  # the serving agent's own defaults decide here
        context = raw_client_context(mesh.dirs["node-a"])
        transport = await trio.open_ssl_over_tcp_stream(*mesh.inbound, ssl_context=context)
        peer = RawPeer(transport)
        await peer.start()
        post = [*request("/upload", method="POST"), (b"content-length", b"100")]
        await peer.send(peer.headers(1, post, end_stream=False), peer.data(1, b"0123456789"))
        await served(peer, 3)
        rst = await peer.read_until(RstStreamFrame, stream_id=1)
        assert isinstance(rst, RstStreamFrame) and rst.error_code == CANCEL
        assert peer.status(1) == b"408"
        assert rejected(mesh.server, "inbound", "body-timeout") == 1
        await victim(mesh)


async def test_quiet_tcp_tunnel_outlives_stream_idle_and_ends_at_tunnel_idle(
    tmp_path, autojump_clock: trio.testing.MockClock
):
    from tests.integration.test_tcp_tunnel import app_mesh, tunnel_client

    async def echo(listener: trio.SocketListener) -> None:
        """Echo; the tunnel's idle end resets this side, as Envoy's tcp_proxy does."""

        async def serve(stream: trio.SocketStream) -> None:
            with contextlib.suppress(trio.BrokenResourceError):
                async for chunk in stream:
                    await stream.send_all(chunk)

        await trio.serve_listeners(serve, [listener])

    async with app_mesh(tmp_path, echo) as mesh:
        app = await tunnel_client(mesh)
        await app.send_all(b"PING")
        assert await app.receive_some(16) == b"PING"
        await trio.sleep(1800)  # a redis client idle for half an hour: 6x the stream idle
        await app.send_all(b"again")
        assert await app.receive_some(16) == b"again"
        assert rejected(mesh.server, "inbound", "stream-idle-timeout") == 0
        started = trio.current_time()
        assert await read_all(app) == b""  # ended by the serving agent after the tunnel idle
        assert trio.current_time() - started >= 3600
        assert rejected(mesh.server, "inbound", "stream-idle-timeout") == 1
        other = await tunnel_client(mesh)  # the victim: a new tunnel is served
        await other.send_all(b"victim")
        assert await other.receive_some(16) == b"victim"
