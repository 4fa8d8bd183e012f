"""Data-plane stalls: work that waits for something that never (or only later) comes.

Virtual time only (MockClock with autojump): a stall shows up as the clock jumping past
the ``fail_after`` limit, never as a slow test.
"""

from __future__ import annotations

import trio
import trio.testing

from peermesh.net.http.h2engine import UNREAD_CAP
from peermesh.net.http.h2session import (
    CONNECTION_WINDOW,
    STREAM_WINDOW,
    H2Session,
    H2Stream,
    StreamReset,
)

REQUEST = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"x"), (b":path", b"/")]
BODY = 256 << 10
ROUNDS = 3 * CONNECTION_WINDOW // BODY  # three connection windows' worth


async def _pair(nursery: trio.Nursery, handler):  # type: ignore[no-untyped-def]
    client_end, server_end = trio.testing.memory_stream_pair()
    server = H2Session(server_end, client_side=False, handler=handler)
    client = H2Session(client_end, client_side=True)
    nursery.start_soon(server.run)
    nursery.start_soon(client.run)
    return client, server


async def test_abandoned_responses_do_not_leak_the_connection_window(autojump_clock):
    """A client that resets streams with response DATA still unread (a retry, a client
    gone) must give that credit back, or the connection stalls for every stream."""

    async def handler(stream: H2Stream) -> None:
        await stream.send_headers([(b":status", b"200")])
        try:
            await stream.send_data(b"x" * BODY, end_stream=True)
        except StreamReset:
            pass

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            client, _server = await _pair(nursery, handler)
            for _ in range(ROUNDS):
                stream = await client.open_stream(REQUEST, end_stream=True)
                await stream.receive_headers()
                while not stream._chunks and not stream.remote_ended:  # some DATA arrived
                    await stream._changed.wait()
                stream.reset()
            # The connection still carries a whole response.
            stream = await client.open_stream(REQUEST, end_stream=True)
            await stream.receive_headers()
            received = 0
            while chunk := await stream.receive_data():
                received += len(chunk)
            assert received == BODY
            nursery.cancel_scope.cancel()


async def test_unread_request_bodies_do_not_leak_the_connection_window(autojump_clock):
    """A handler that answers without reading the request body (a 403, a 429) must not
    keep the body's flow-control credit: later uploads on the connection would stall."""

    async def handler(stream: H2Stream) -> None:
        while not stream.remote_ended and not stream._chunks:
            await stream._changed.wait()  # the body has started to arrive; answer without it
        await stream.send_headers([(b":status", b"403")], end_stream=True)

    async def upload(stream: H2Stream) -> None:
        try:
            await stream.send_data(b"y" * BODY, end_stream=True)
        except StreamReset:
            pass

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            client, _server = await _pair(nursery, handler)
            for _ in range(ROUNDS):
                stream = await client.open_stream(REQUEST)
                async with trio.open_nursery() as inner:
                    inner.start_soon(upload, stream)
                    headers = await stream.receive_headers()
                    assert (b":status", b"403") in headers
            nursery.cancel_scope.cancel()


def test_h2_still_keeps_its_outgoing_buffer_where_the_session_looks():
    """H2Session wakes its writer only when h2's ``_data_to_send`` holds bytes."""
    import h2.config
    import h2.connection

    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    assert not conn._data_to_send
    conn.initiate_connection()
    assert conn._data_to_send
    conn.data_to_send()
    assert not conn._data_to_send


async def test_stalled_readers_leave_the_connection_window_to_the_others(autojump_clock):
    """Streams whose readers stopped pin their own window, never the connection's, until
    the connection's unread bytes reach UNREAD_CAP; past it the connection window bounds
    them again, so memory stays bounded whatever the number of stalled streams."""

    async def handler(stream: H2Stream) -> None:
        await stream.send_headers([(b":status", b"200")])
        size = int(dict(stream.headers or [])[b":path"][1:])
        try:
            await stream.send_data(b"z" * size, end_stream=True)
        except StreamReset:
            pass

    stalled = UNREAD_CAP // STREAM_WINDOW + 8  # more than the cap holds
    path = [(k, v) for k, v in REQUEST if k != b":path"]
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            client, _server = await _pair(nursery, handler)
            streams = []
            for _ in range(stalled):
                request = [*path, (b":path", b"/%d" % (2 * STREAM_WINDOW))]
                streams.append(await client.open_stream(request, end_stream=True))
            for _ in range(1000):  # the stalled streams fill up to the cap, and past it
                if client._unread >= UNREAD_CAP + CONNECTION_WINDOW // 2:
                    break
                await trio.sleep(0.01)
            await trio.sleep(1)  # and whatever the connection window still lets in
            assert client._unread <= UNREAD_CAP + CONNECTION_WINDOW
            assert all(s._conn_owed <= STREAM_WINDOW for s in streams)
            # Past the cap the connection window holds what it owes; stalled streams that
            # read again make room under the cap, which pays that credit back (in steps
            # of half the connection window: nghttp2 batches its WINDOW_UPDATEs so).
            async with trio.open_nursery() as readers:
                for stream in streams[: CONNECTION_WINDOW // STREAM_WINDOW]:
                    readers.start_soon(_drain, stream)
                victim = await client.open_stream(
                    [*path, (b":path", b"/%d" % BODY)], end_stream=True
                )
                await victim.receive_headers()
                assert len(b"".join([c async for c in _chunks(victim)])) == BODY
            nursery.cancel_scope.cancel()


async def test_a_few_stalled_readers_do_not_freeze_the_others(autojump_clock):
    async def handler(stream: H2Stream) -> None:
        await stream.send_headers([(b":status", b"200")])
        await stream.send_data(b"z" * (4 * STREAM_WINDOW), end_stream=True)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            client, _server = await _pair(nursery, handler)
            for _ in range(2 * CONNECTION_WINDOW // STREAM_WINDOW):  # twice the connection window
                stalled = await client.open_stream(REQUEST, end_stream=True)
                await stalled.receive_headers()
            for _ in range(1000):
                if client._unread >= 2 * CONNECTION_WINDOW - STREAM_WINDOW:
                    break
                await trio.sleep(0.01)
            assert client._unread >= 2 * CONNECTION_WINDOW - STREAM_WINDOW
            for _ in range(20):  # none of them is read, yet every other response completes
                victim = await client.open_stream(REQUEST, end_stream=True)
                await victim.receive_headers()
                assert len(b"".join([c async for c in _chunks(victim)])) == 4 * STREAM_WINDOW
            nursery.cancel_scope.cancel()


async def _chunks(stream: H2Stream):  # type: ignore[no-untyped-def]
    while chunk := await stream.receive_data():
        yield chunk


async def _drain(stream: H2Stream) -> None:
    while await stream.receive_data():
        pass
