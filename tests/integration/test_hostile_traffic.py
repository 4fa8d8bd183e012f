"""Attackers against two real agents while a victim keeps using the same two agents.

Every test runs one attack shape from a raw socket (HTTP/1.1 bytes, HTTP/2 frames over
h2c or over mTLS with a mesh identity) while a victim client makes requests through the
same outbound → inbound pair, some of them long in flight. Each asserts that the victim
saw only successes, that the attacker's connection ended the documented way, that the
counter moved, that nothing of the attack reached the app, and that the resident
memory of the process both agents run in grew by less than RSS_GROWTH_MAX.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest
import trio
from hyperframe.frame import HeadersFrame, PingFrame, RstStreamFrame

from examples.service import ExampleService, ServiceConfig
from peermesh.agent import Agent
from tests.support.h2raw import RawPeer, request
from tests.support.memory import rss_bytes
from tests.support.meshkit import TwoAgents, two_agents
from tests.support.pki import raw_client_context

PROTOCOL_ERROR, CALM = 1, 11
#: What an attack may add to the resident memory of the process both agents run in:
#: memory, unlike time, is a property of the code, so it is asserted.
RSS_GROWTH_MAX = 64 << 20


def rejected(agent: Agent, listener: str, reason: str) -> float:
    return agent.metrics.rejected_connections.labels(listener, reason)._value.get()  # type: ignore[no-any-return]


async def under_attack(
    tmp_path, attack: Callable[[TwoAgents], Awaitable[None]], *, extra: int = 0
) -> TwoAgents:
    """Run ``attack`` while a victim makes requests; assert the victim's 100% and the app's
    count (victim requests, plus ``extra`` good ones the attacker makes); return the mesh
    for the caller's counter checks."""
    app = ExampleService(ServiceConfig(name="orders", port=0))
    async with trio.open_nursery() as outer:
        port = await outer.start(app.run)
        async with two_agents(tmp_path, app_port=port) as mesh:
            statuses: list[int] = []
            async with httpx.AsyncClient(timeout=30) as client:

                async def one(path: str) -> None:
                    response = await client.get(
                        mesh.outbound_url + path, headers={"host": "orders"}
                    )
                    statuses.append(response.status_code)

                await one("/")  # connection to the peer is up before the attack
                before = rss_bytes()
                async with trio.open_nursery() as nursery:
                    for _ in range(3):
                        nursery.start_soon(one, "/slow/400")  # long in flight during the attack
                    await trio.sleep(0)  # noqa: ASYNC115 - let the slow requests start first
                    await attack(mesh)
                    for _ in range(10):
                        await one("/")
                growth = rss_bytes() - before
            assert statuses == [200] * 14
            assert growth < RSS_GROWTH_MAX, f"RSS grew {growth >> 20} MiB under attack"
            assert app.served == 14 + extra  # nothing of the attack reached the app
            outer.cancel_scope.cancel()
    return mesh


SMUGGLING = {
    "CL and TE": b"POST / HTTP/1.1\r\nHost: orders\r\nContent-Length: 44\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: orders\r\n\r\n",
    "TE with obs-fold": b"POST / HTTP/1.1\r\nHost: orders\r\nTransfer-Encoding:\r\n chunked\r\n\r\n"
    b"0\r\n\r\n",
    "bare LF": b"GET / HTTP/1.1\nHost: orders\n\nGET /smuggled HTTP/1.1\nHost: orders\n\n",
    "chunk size over 2**64": b"POST / HTTP/1.1\r\nHost: orders\r\nTransfer-Encoding: chunked\r\n"
    b"\r\n100000000000000000\r\nab",
    "bare-LF chunk line": b"POST / HTTP/1.1\r\nHost: orders\r\nTransfer-Encoding: chunked\r\n"
    b"\r\n5\nhello\n0\n\n",
}


@pytest.mark.parametrize("shape", list(SMUGGLING))
async def test_http1_smuggling_shapes_get_400_and_close(tmp_path, shape):
    answers: list[bytes] = []

    async def attack(mesh: TwoAgents) -> None:
        stream = await trio.open_tcp_stream(*mesh.outbound)
        await stream.send_all(SMUGGLING[shape])
        received = b""
        for _ in range(100):  # until the agent closes
            chunk = await stream.receive_some(1 << 16)
            if not chunk:
                break
            received += chunk
        answers.append(received)
        await stream.aclose()

    mesh = await under_attack(tmp_path, attack)
    assert answers[0].startswith(b"HTTP/1.1 400 ")
    assert answers[0].count(b"HTTP/1.1") == 1  # nothing pipelined behind it was served
    assert rejected(mesh.client, "outbound", "h1-bad-request") == 1


async def test_header_list_over_the_peer_limit_is_431_at_the_outbound(tmp_path):
    statuses: list[tuple[int, str]] = []

    async def attack(mesh: TwoAgents) -> None:
        # 2000 tiny fields: 12 KB as HTTP/1.1, 70 KB as HTTP/2 counts them.
        headers = [("host", "orders")] + [("x", "y")] * 2000
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.get(mesh.outbound_url + "/", headers=headers)
        statuses.append((response.status_code, response.headers.get("x-peermesh-error", "")))

    await under_attack(tmp_path, attack)
    assert statuses == [(431, "headers-too-large")]


async def test_rapid_reset_on_h2c_ends_only_the_attackers_connection(tmp_path):
    goaways: list[int] = []

    async def attack(mesh: TwoAgents) -> None:
        peer = RawPeer(await trio.open_tcp_stream(*mesh.outbound))
        await peer.start()
        frames = []
        for i in range(150):
            sid = 2 * i + 1
            frames += [peer.headers(sid, request("/slow/2000"), end_stream=True), peer.rst(sid)]
        await peer.send(*frames)
        goaway = await peer.goaway()
        goaways.append(goaway.error_code if goaway is not None else -1)
        await peer.transport.aclose()

    mesh = await under_attack(tmp_path, attack)
    assert goaways == [CALM]
    assert rejected(mesh.client, "outbound", "h2-reset-flood") == 1


async def test_h2c_host_disagreeing_with_authority_resets_only_that_stream(tmp_path):
    outcomes: list[tuple[int, bytes | None]] = []

    async def attack(mesh: TwoAgents) -> None:
        peer = RawPeer(await trio.open_tcp_stream(*mesh.outbound))
        await peer.start()
        await peer.send(peer.headers(1, [*request("/"), (b"host", b"billing")]))
        rst = await peer.read_until(RstStreamFrame, stream_id=1)
        assert isinstance(rst, RstStreamFrame)
        await peer.send(peer.headers(3, request("/")))  # same connection, still served
        await peer.read_until(HeadersFrame, stream_id=3)
        outcomes.append((rst.error_code, peer.status(3)))
        await peer.transport.aclose()

    mesh = await under_attack(tmp_path, attack, extra=1)
    assert outcomes == [(PROTOCOL_ERROR, b"200")]
    assert rejected(mesh.client, "outbound", "h2-malformed") == 1


async def test_oversized_header_lists_on_h2c_reset_only_their_streams(tmp_path):
    codes: list[int] = []
    big = [(b"x-big", b"v" * 4000)] * 20  # 80 KB decoded, 4 KB on the wire once indexed

    async def attack(mesh: TwoAgents) -> None:
        peer = RawPeer(await trio.open_tcp_stream(*mesh.outbound))
        await peer.start()
        for i in range(200):
            await peer.send(peer.headers(2 * i + 1, request("/") + big))
        rst = await peer.read_until(RstStreamFrame, stream_id=399)
        codes.append(rst.error_code if isinstance(rst, RstStreamFrame) else -1)
        await peer.send(peer.headers(401, request("/")))  # same connection, still served
        await peer.read_until(HeadersFrame, stream_id=401)
        codes.append(int(peer.status(401) or 0))
        await peer.transport.aclose()

    mesh = await under_attack(tmp_path, attack, extra=1)
    assert codes == [CALM, 200]
    assert rejected(mesh.client, "outbound", "h2-headers-too-large") == 200


async def test_ping_flood_over_mtls_at_the_inbound(tmp_path):
    goaways: list[int] = []

    async def attack(mesh: TwoAgents) -> None:
        context = raw_client_context(mesh.dirs["node-a"])
        host, port = mesh.inbound
        transport = await trio.open_ssl_over_tcp_stream(host, port, ssl_context=context)
        peer = RawPeer(transport)
        await peer.start()
        await peer.send(*[PingFrame(0, b"12345678") for _ in range(20_000)])
        goaway = await peer.goaway()
        goaways.append(goaway.error_code if goaway is not None else -1)
        await trio.aclose_forcefully(transport)

    mesh = await under_attack(tmp_path, attack)
    assert goaways == [CALM]
    assert rejected(mesh.server, "inbound", "h2-outbound-control-flood") == 1
