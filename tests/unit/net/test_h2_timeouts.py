"""Server-side HTTP/2 timeouts on a loopback TCP connection, and the sans-IO rules under them.

A client ``H2Session`` talks to a server ``H2Session`` given ``Timeouts`` under trio's
MockClock (autojump); each test checks how the timed-out stream ended and that another
stream of the same connection was served.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from peermesh.net.caps import Caps, ConnectionCounts, LogBudget, Refusal, StreamBudget
from peermesh.net.http.h2session import H2Session, H2Stream, StreamReset
from peermesh.net.http.timeouts import (
    Expiry,
    StreamTimes,
    Timeouts,
    connection_due,
    stream_due,
)

CANCEL = 8


def head(method: bytes = b"POST", path: bytes = b"/", *extra: tuple[bytes, bytes]):
    return [
        (b":method", method),
        (b":scheme", b"http"),
        (b":authority", b"x"),
        (b":path", path),
        *extra,
    ]


async def answer(stream: H2Stream) -> None:
    """The handler: read the whole body, then answer 200 with what came."""
    body = b""
    while chunk := await stream.receive_data():
        body += chunk
    await stream.send_headers([(b":status", b"200")])
    await stream.send_data(body, end_stream=True)


@asynccontextmanager
async def pair(timeouts: Timeouts, breaches: list[str]) -> AsyncIterator[H2Session]:
    """A client session connected over loopback TCP to a server session under ``timeouts``."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:

        async def serve(server_end: trio.SocketStream) -> None:
            session = H2Session(
                server_end,
                client_side=False,
                handler=answer,
                timeouts=timeouts,
                on_breach=breaches.append,
            )
            await session.run()

        await nursery.start(trio.serve_listeners, serve, listeners)
        client = H2Session(await trio.open_tcp_stream("127.0.0.1", port), client_side=True)
        nursery.start_soon(client.run)
        try:
            yield client
        finally:
            nursery.cancel_scope.cancel()


async def served(client: H2Session) -> bytes:
    stream = await client.open_stream(head(b"GET"), end_stream=True)
    headers = await stream.receive_headers()
    return dict(headers)[b":status"]


async def test_grpc_stream_gets_deadline_exceeded_after_stream_idle_not_body_timeout(
    autojump_clock: trio.testing.MockClock,
):
    breaches: list[str] = []
    async with pair(Timeouts(body=60, stream_idle=300), breaches) as client:
        grpc_head = head(b"POST", b"/s", (b"content-type", b"application/grpc"))
        grpc = await client.open_stream(grpc_head)
        started = trio.current_time()
        headers = dict(await grpc.receive_headers())
        assert trio.current_time() - started >= 300  # the body timeout does not apply to gRPC
        assert headers[b":status"] == b"200" and headers[b"grpc-status"] == b"4"
        assert await grpc.receive_data() == b""  # trailers-only: the answer is whole
        await trio.sleep(1)  # and the client's open half was reset
        with pytest.raises(StreamReset) as reset:
            await grpc.send_data(b"late")
        assert reset.value.error_code == CANCEL
        assert breaches == [Expiry.STREAM_IDLE.value]
        assert await served(client) == b"200"


async def test_quiet_tunnel_outlives_the_stream_idle_timeout(
    autojump_clock: trio.testing.MockClock,
):
    breaches: list[str] = []
    timeouts = Timeouts(body=60, stream_idle=300, tunnel_idle=3600)
    async with pair(timeouts, breaches) as client:
        tunnel = await client.open_stream(
            [(b":method", b"CONNECT"), (b":authority", b"redis:6379")]
        )
        await trio.sleep(1800)  # an idle redis connection, half an hour
        assert breaches == []
        await tunnel.send_data(b"PING", end_stream=True)
        assert dict(await tunnel.receive_headers())[b":status"] == b"200"
        assert await tunnel.receive_data() == b"PING"
        assert await served(client) == b"200"


async def test_body_timeout_counts_only_the_gap_between_reads(
    autojump_clock: trio.testing.MockClock,
):
    breaches: list[str] = []
    async with pair(Timeouts(body=60, stream_idle=300), breaches) as client:
        slow = await client.open_stream(head())
        for _ in range(5):  # 150 s in all, never 60 s without a byte
            await trio.sleep(30)
            await slow.send_data(b"x")
        await slow.end()
        assert dict(await slow.receive_headers())[b":status"] == b"200"
        assert await slow.receive_data() == b"xxxxx"
        stalled = await client.open_stream(head())
        await stalled.send_data(b"x")
        assert dict(await stalled.receive_headers())[b":status"] == b"408"
        assert breaches == [Expiry.BODY.value]


# the sans-IO rules ---------------------------------------------------------------------
def test_stream_deadlines():
    t = Timeouts(body=60, stream_idle=300, tunnel_idle=3600)
    assert stream_due(t, StreamTimes(last_activity=10)) == (310, Expiry.STREAM_IDLE)
    waiting = StreamTimes(last_activity=10, waiting_since=20)
    assert stream_due(t, waiting) == (80, Expiry.BODY)
    grpc = StreamTimes(last_activity=10, waiting_since=20, grpc=True)
    assert stream_due(t, grpc) == (310, Expiry.STREAM_IDLE)
    tunnel = StreamTimes(last_activity=10, waiting_since=20, tunnel=True)
    assert stream_due(t, tunnel) == (3610, Expiry.STREAM_IDLE)
    off = Timeouts(body=0, stream_idle=0)
    assert stream_due(off, waiting)[0] == math.inf


def test_connection_deadlines():
    t = Timeouts(preface=10, idle=3600)
    assert connection_due(t, started=5, preface_done=False, idle_since=5) == (
        15,
        Expiry.PREFACE,
    )
    assert connection_due(t, started=5, preface_done=True, idle_since=100) == (
        3700,
        Expiry.IDLE,
    )
    assert connection_due(t, started=5, preface_done=True, idle_since=None)[0] == math.inf


def test_timeouts_refuse_negative_or_infinite():
    with pytest.raises(ValueError, match="body timeout"):
        Timeouts(body=-1)
    with pytest.raises(ValueError, match="idle timeout"):
        Timeouts(idle=math.inf)


def test_connection_counts_per_listener_and_peer():
    counts = ConnectionCounts(Caps(connections=3, peer_connections=2))
    assert counts.admit() is None and counts.admit_peer("a") is None
    assert counts.admit() is None and counts.admit_peer("a") is None
    assert counts.admit_peer("a") is Refusal.PEER_CONNECTIONS
    assert counts.admit_peer("b") is None  # another peer still has its share
    assert counts.admit() is None
    assert counts.admit() is Refusal.CONNECTIONS
    counts.release()
    counts.release_peer("a")
    assert counts.admit() is None and counts.admit_peer("a") is None
    assert counts.of_peer("a") == 2


def test_stream_budget_and_off():
    budget = StreamBudget(1)
    assert budget.acquire() and not budget.acquire()
    budget.release()
    assert budget.acquire()
    unlimited = StreamBudget(0)
    assert all(unlimited.acquire() for _ in range(100))


def test_log_budget_holds_back_and_reports():
    logs = LogBudget(interval=10)
    assert logs.allow("cap", 0) == 0
    assert logs.allow("cap", 1) is None and logs.allow("cap", 2) is None
    assert logs.allow("other", 3) == 0  # per reason
    assert logs.allow("cap", 10) == 2
