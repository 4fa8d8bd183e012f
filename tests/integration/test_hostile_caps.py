"""Greedy clients against real agents with small connection and stream caps.

Each test fills a cap from raw sockets, checks that the next connection or stream is
refused the documented way with the counter moved, and that what was already open (and
a victim once there is room) is still served.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import trio
from hyperframe.frame import HeadersFrame, RstStreamFrame

from peermesh.agent import Agent
from tests.support.h2raw import RawPeer, request
from tests.support.meshkit import two_agents
from tests.support.pki import raw_client_context

REFUSED_STREAM = 7


def rejected(agent: Agent, listener: str, reason: str) -> float:
    return agent.metrics.rejected_connections.labels(listener, reason)._value.get()  # type: ignore[no-any-return]


async def until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) for the agent's own tasks to reach a state."""
    with trio.fail_after(10):
        while not condition():  # noqa: ASYNC110 - the agent's counters have no event to wait on
            await trio.sleep(0.01)


def streams(agent: Agent) -> int:
    return agent.outbound.guard.streams.active


async def closed_at_once(stream: trio.abc.Stream) -> bool:
    """The agent closed the connection without a byte."""
    try:
        return await stream.receive_some(1 << 16) == b""
    except trio.BrokenResourceError:
        return True


async def get(stream: trio.abc.Stream) -> bytes:
    """One HTTP/1.1 request on an open connection; the response's first bytes."""
    await stream.send_all(b"GET / HTTP/1.1\r\nHost: orders\r\n\r\n")
    return bytes(await stream.receive_some(1 << 16))


async def test_connection_cap_refuses_at_accept(tmp_path):
    async with two_agents(tmp_path, client_settings={"max_connections": "2"}) as mesh:
        held = [await trio.open_tcp_stream(*mesh.outbound) for _ in range(2)]
        assert (await get(held[0])).startswith(b"HTTP/1.1 200 ")  # both admitted
        extra = await trio.open_tcp_stream(*mesh.outbound)
        assert await closed_at_once(extra)
        assert rejected(mesh.client, "outbound", "connection-cap") == 1
        assert (await get(held[1])).startswith(b"HTTP/1.1 200 ")  # open ones undisturbed
        await held[0].aclose()
        await until(lambda: mesh.client.outbound.guard.counts.total < 2)
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.get(mesh.outbound_url + "/", headers={"host": "orders"})
        assert response.status_code == 200


async def test_per_address_cap(tmp_path):
    settings = {"max_connections": "10", "max_peer_connections": "2"}
    async with two_agents(tmp_path, client_settings=settings) as mesh:
        held = [await trio.open_tcp_stream(*mesh.outbound) for _ in range(2)]
        await get(held[0])
        extra = await trio.open_tcp_stream(*mesh.outbound)
        assert await closed_at_once(extra)
        assert rejected(mesh.client, "outbound", "peer-connection-cap") == 1
        assert rejected(mesh.client, "outbound", "connection-cap") == 0
        assert (await get(held[1])).startswith(b"HTTP/1.1 200 ")


async def test_per_identity_cap_at_the_inbound(tmp_path):
    # node-a's agent already holds one pooled connection to node-b: its identity's share.
    settings = {"max_peer_connections": "1"}
    async with (
        two_agents(tmp_path, server_settings=settings) as mesh,
        httpx.AsyncClient(timeout=30) as client,
    ):
        url = mesh.outbound_url + "/"
        assert (await client.get(url, headers={"host": "orders"})).status_code == 200
        context = raw_client_context(mesh.dirs["node-a"])
        extra = await trio.open_ssl_over_tcp_stream(*mesh.inbound, ssl_context=context)
        await extra.do_handshake()
        assert await closed_at_once(extra)
        assert rejected(mesh.server, "inbound", "peer-connection-cap") == 1
        # The pooled connection carries on.
        assert (await client.get(url, headers={"host": "orders"})).status_code == 200


async def test_stream_cap_refuses_the_stream_over_it(tmp_path):
    async with two_agents(tmp_path, client_settings={"max_streams": "1"}) as mesh:
        peer = RawPeer(await trio.open_tcp_stream(*mesh.outbound))
        await peer.start()
        await peer.send(peer.headers(1, request("/slow/300")))  # holds the agent's one stream
        await until(lambda: streams(mesh.client) == 1)
        await peer.send(peer.headers(3, request("/")))
        rst = await peer.read_until(RstStreamFrame, stream_id=3)
        assert isinstance(rst, RstStreamFrame) and rst.error_code == REFUSED_STREAM
        assert rejected(mesh.client, "outbound", "stream-cap") == 1
        await peer.read_until(HeadersFrame, stream_id=1)  # the one in flight is served
        assert peer.status(1) == b"200"
        await until(lambda: streams(mesh.client) == 0)
        await peer.send(peer.headers(5, request("/")))  # room again: served
        await peer.read_until(HeadersFrame, stream_id=5)
        assert peer.status(5) == b"200"


async def test_stream_cap_answers_503_on_http1(tmp_path):
    async with two_agents(tmp_path, client_settings={"max_streams": "1"}) as mesh:
        slow = await trio.open_tcp_stream(*mesh.outbound)
        await slow.send_all(b"GET /slow/300 HTTP/1.1\r\nHost: orders\r\n\r\n")
        await until(lambda: streams(mesh.client) == 1)
        other = await trio.open_tcp_stream(*mesh.outbound)
        assert (await get(other)).startswith(b"HTTP/1.1 503 ")
        assert rejected(mesh.client, "outbound", "stream-cap") == 1
        assert (await slow.receive_some(1 << 16)).startswith(b"HTTP/1.1 200 ")
