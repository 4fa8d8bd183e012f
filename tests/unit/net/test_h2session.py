"""The HTTP/2 shell on in-memory streams: drain, resets both ways, keepalive, flow control."""

from __future__ import annotations

import functools

import h2.errors
import httpx
import pytest
import trio
import trio.testing

from peermesh.net.http.h2session import H2Session, H2Stream, PeerUnresponsive, StreamReset
from tests.support.meshkit import two_agents

REQUEST = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"x"), (b":path", b"/")]


async def _pair(nursery, handler, **server_kwargs):
    client_end, server_end = trio.testing.memory_stream_pair()
    server = H2Session(server_end, client_side=False, handler=handler, **server_kwargs)
    client = H2Session(client_end, client_side=True)
    nursery.start_soon(server.run)
    nursery.start_soon(client.run)
    return client, server


async def test_graceful_goaway_finishes_in_flight_and_refuses_new():
    release = trio.Event()
    started = trio.Event()

    async def handler(stream: H2Stream) -> None:
        started.set()
        await release.wait()
        await stream.send_headers([(b":status", b"200")])
        await stream.end()

    async with trio.open_nursery() as nursery:
        client, server = await _pair(nursery, handler)
        stream = await client.open_stream(REQUEST, end_stream=True)
        await started.wait()
        server.start_drain()
        while client.goaway_received is None:  # noqa: ASYNC110 - no event for GOAWAY
            await trio.sleep(0.001)
        assert not client.can_open_stream
        release.set()
        headers = await stream.receive_headers()
        assert (b":status", b"200") in headers
        assert await stream.receive_data() == b""
        await server.wait_closed()
        await client.wait_closed()


async def test_client_reset_cancels_server_handler():
    cancelled = trio.Event()
    started = trio.Event()

    async def handler(stream: H2Stream) -> None:
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    async with trio.open_nursery() as nursery:
        client, _server = await _pair(nursery, handler)
        stream = await client.open_stream(REQUEST)
        await started.wait()
        stream.reset()
        await cancelled.wait()
        nursery.cancel_scope.cancel()


async def test_server_reset_reaches_client():
    async def handler(stream: H2Stream) -> None:
        stream.reset(h2.errors.ErrorCodes.REFUSED_STREAM)

    async with trio.open_nursery() as nursery:
        client, _server = await _pair(nursery, handler)
        stream = await client.open_stream(REQUEST, end_stream=True)
        with pytest.raises(StreamReset) as caught:
            await stream.receive_headers()
        assert caught.value.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
        nursery.cancel_scope.cancel()


async def test_flow_control_pushes_back_until_the_reader_reads():
    reading = trio.Event()
    received = 0

    async def handler(stream: H2Stream) -> None:
        nonlocal received
        await reading.wait()
        while chunk := await stream.receive_data():
            received += len(chunk)
        await stream.send_headers([(b":status", b"204")], end_stream=True)

    async with trio.open_nursery() as nursery:
        client, _server = await _pair(nursery, handler)
        stream = await client.open_stream(REQUEST)
        payload = b"z" * (8 << 20)
        with trio.move_on_after(1):
            await stream.send_data(payload, end_stream=True)
        # The reader has not read: at most one stream window (1 MiB) got through.
        assert not stream.local_ended
        assert client.conn.local_flow_control_window(stream.stream_id) == 0
        reading.set()
        if not stream.local_ended:
            sent_so_far = 1 << 20
            await stream.send_data(payload[sent_so_far:], end_stream=True)
        headers = await stream.receive_headers()
        assert (b":status", b"204") in headers
        nursery.cancel_scope.cancel()
    assert received == 8 << 20


async def test_keepalive_closes_a_silent_peer(autojump_clock):
    client_end, silent_end = trio.testing.memory_stream_pair()
    client = H2Session(client_end, client_side=True, ping_interval=30, ping_timeout=10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.run)

        async def swallow() -> None:
            while await silent_end.receive_some(65536):
                pass

        nursery.start_soon(swallow)
        started = trio.current_time()
        await client.wait_closed()
        assert trio.current_time() - started == pytest.approx(40, abs=0.5)
        assert "PING" in client.close_reason
        nursery.cancel_scope.cancel()


async def test_probe_fails_waiting_streams_fast_when_the_peer_goes_silent(autojump_clock):
    client_end, silent_end = trio.testing.memory_stream_pair()
    client = H2Session(
        client_end, client_side=True, ping_interval=30, probe_after=1, probe_timeout=1
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.run)

        async def swallow() -> None:
            while await silent_end.receive_some(65536):
                pass

        nursery.start_soon(swallow)
        stream = await client.open_stream(REQUEST, end_stream=True)
        started = trio.current_time()
        with pytest.raises(PeerUnresponsive):
            await stream.receive_headers()
        # Silence for probe_after, then an unanswered PING for probe_timeout.
        assert trio.current_time() - started == pytest.approx(2, abs=0.1)
        assert "PING" in client.close_reason
        nursery.cancel_scope.cancel()


async def test_probe_leaves_a_slow_answer_on_a_live_peer_alone(autojump_clock):
    async def handler(stream: H2Stream) -> None:
        await trio.sleep(60)  # a slow app: the peer agent still acknowledges PINGs
        await stream.send_headers([(b":status", b"200")])
        await stream.end()

    async with trio.open_nursery() as nursery:
        client_end, server_end = trio.testing.memory_stream_pair()
        server = H2Session(server_end, client_side=False, handler=handler)
        client = H2Session(client_end, client_side=True, probe_after=1, probe_timeout=1)
        nursery.start_soon(server.run)
        nursery.start_soon(client.run)
        stream = await client.open_stream(REQUEST, end_stream=True)
        headers = await stream.receive_headers()
        assert (b":status", b"200") in headers
        assert not client.is_closed
        nursery.cancel_scope.cancel()


@pytest.fixture
def autojump_clock():
    return trio.testing.MockClock(autojump_threshold=0)


async def test_concurrent_stream_limit_is_respected():
    hold = trio.Event()

    async def handler(stream: H2Stream) -> None:
        await hold.wait()
        await stream.send_headers([(b":status", b"200")], end_stream=True)

    async with trio.open_nursery() as nursery:
        client, _ = await _pair(nursery, handler, max_concurrent_streams=2)
        await trio.sleep(0.01)  # let SETTINGS arrive
        first = await client.open_stream(REQUEST, end_stream=True)
        await client.open_stream(REQUEST, end_stream=True)
        assert not client.can_open_stream
        hold.set()
        await first.receive_headers()
        nursery.cancel_scope.cancel()


async def test_pool_opens_another_connection_when_streams_are_full(tmp_path, monkeypatch):
    import peermesh.proxy.guard as guard

    # Every server-side session (the inbound's too) is built by its listener's guard.
    monkeypatch.setattr(guard, "H2Session", functools.partial(H2Session, max_concurrent_streams=4))
    async with two_agents(tmp_path) as mesh:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=20), timeout=30) as c:
            # One request first, so the server's SETTINGS (stream limit 4) are known.
            assert (await c.get(mesh.outbound_url + "/", headers={"host": "orders"})).is_success
            statuses: list[int] = []

            async def one() -> None:
                r = await c.get(mesh.outbound_url + "/slow/200", headers={"host": "orders"})
                statuses.append(r.status_code)

            async with trio.open_nursery() as nursery:
                for _ in range(12):
                    nursery.start_soon(one)
        assert statuses == [200] * 12
        assert mesh.client.pool.dials >= 3


async def test_a_stream_the_engine_closes_before_its_end_arrives_fails_its_reader(
    autojump_clock,
):
    """A clean close with the peer's message unfinished (the engine dropped its end)
    must fail the waiting reader, not leave it waiting forever."""
    from peermesh.net.http.h2engine import Ev

    async def handler(stream: H2Stream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        client, _server = await _pair(nursery, handler)
        stream = await client.open_stream(REQUEST, end_stream=True)
        client._dispatch((Ev.CLOSED, stream.stream_id, 0))
        # Virtual time: without the fix the reader waits forever, which fails here.
        with pytest.raises(StreamReset), trio.fail_after(60):
            await stream.receive_headers()
        nursery.cancel_scope.cancel()
