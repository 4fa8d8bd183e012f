"""EagerStream: reads and writes the kernel completes at once cost no scheduler round."""

from __future__ import annotations

import statistics

import pytest
import trio

from peermesh.net.eager import STREAK, EagerStream
from peermesh.net.http.h2session import H2Session, H2Stream


class _Steps(trio.abc.Instrument):
    """Counts the steps of one task (each resumption after a yield is a step)."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1


class _Scheduler(trio.abc.Instrument):
    """Scheduler rounds (each batch of runnable tasks ends in an I/O wait) and task steps."""

    def __init__(self) -> None:
        self.rounds = 0
        self.steps = 0
        self.writer_steps = 0  # of the sessions' writer tasks

    def before_io_wait(self, timeout: float) -> None:
        self.rounds += 1

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1
        if task.name.endswith("._writer"):
            self.writer_steps += 1


async def _socket_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = trio.socket.socketpair()
    return trio.SocketStream(a), trio.SocketStream(b)


async def _yields(call) -> int:
    """How many times the current task yielded to the scheduler inside ``call()``."""
    steps = _Steps(trio.lowlevel.current_task())
    trio.lowlevel.add_instrument(steps)
    try:
        await call()
    finally:
        trio.lowlevel.remove_instrument(steps)
    return steps.steps


async def test_a_ready_send_does_not_yield_where_trio_stream_does_and_a_receive_still_does():
    left, right = await _socket_pair()
    eager_left, eager_right = EagerStream(left), EagerStream(right)
    assert await _yields(lambda: left.send_all(b"plain")) == 1  # trio's own stream yields
    assert await right.receive_some(100) == b"plain"
    assert await _yields(lambda: eager_left.send_all(b"eager")) == 0
    got: list[bytes] = []

    async def receive() -> None:
        got.append(await eager_right.receive_some(100))

    # Reads keep trio's yield: under load it lets the tasks a read woke queue their
    # frames before the reader parses the next one.
    assert await _yields(receive) == 1
    assert got == [b"eager"]


async def test_a_streak_of_ready_calls_still_lets_other_tasks_run():
    left, right = await _socket_pair()
    eager_left = EagerStream(left)

    async def many() -> None:
        for _ in range(3 * STREAK):
            await eager_left.send_all(b"x")

    yielded = await _yields(many)
    assert yielded >= 3 - 1  # at least one yield per STREAK calls
    assert yielded <= 3
    data = b""
    while len(data) < 3 * STREAK:
        data += await right.receive_some(1 << 16)
    assert data == b"x" * (3 * STREAK)


async def test_a_send_the_kernel_cannot_take_at_once_waits_and_keeps_order():
    left, right = await _socket_pair()
    eager_left, eager_right = EagerStream(left), EagerStream(right)
    payload = bytes(range(256)) * (8 << 12)  # 8 MiB: far past any socket buffer
    received = bytearray()

    async def read_all() -> None:
        while len(received) < len(payload):
            chunk = await eager_right.receive_some(1 << 16)
            assert chunk
            received.extend(chunk)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_all)
        await eager_left.send_all(payload)
    assert bytes(received) == payload


async def test_a_cancelled_caller_is_cancelled_before_any_byte_moves():
    left, right = await _socket_pair()
    eager_left, eager_right = EagerStream(left), EagerStream(right)
    await left.send_all(b"waiting")
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await eager_left.send_all(b"never")
        with pytest.raises(trio.Cancelled):
            await eager_right.receive_some(100)
    assert await eager_right.receive_some(100) == b"waiting"  # still there, unread
    await eager_left.send_eof()
    assert await eager_right.receive_some(100) == b""  # "never" was not sent


async def test_end_of_stream_closed_and_broken_sockets_raise_as_trio_streams_do():
    left, right = await _socket_pair()
    eager_left, eager_right = EagerStream(left), EagerStream(right)
    await eager_left.aclose()
    assert await eager_right.receive_some(100) == b""
    with pytest.raises(trio.ClosedResourceError):
        await eager_left.send_all(b"after close")  # never written to a reused descriptor
    with pytest.raises(trio.ClosedResourceError):
        await eager_left.receive_some(100)
    with pytest.raises(trio.BrokenResourceError):
        for _ in range(64):  # the peer is gone: EPIPE or ECONNRESET, never silence
            await eager_right.send_all(b"x" * 4096)


async def _answer(stream: H2Stream) -> None:
    await stream.send_headers([(b":status", b"200"), (b"content-type", b"text/plain")])
    await stream.send_data(b"x" * 64, end_stream=True)


REQUEST = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"t"), (b":path", b"/")]


async def _lone_requests(client: H2Session, n: int = 20) -> list[tuple[int, int, int]]:
    """(scheduler rounds, task steps, writer steps) of each of ``n`` lone requests."""
    seen = _Scheduler()
    counts = []
    for _ in range(n + 5):
        await trio.sleep(0.001)  # everything settles: the request runs alone
        trio.lowlevel.add_instrument(seen)
        before = (seen.rounds, seen.steps, seen.writer_steps)
        stream = await client.open_stream(REQUEST, end_stream=True)
        assert (await stream.receive_headers())[0] == (b":status", b"200")
        body = b""
        while chunk := await stream.receive_data():
            body += chunk
        trio.lowlevel.remove_instrument(seen)
        assert body == b"x" * 64
        counts.append(
            (seen.rounds - before[0], seen.steps - before[1], seen.writer_steps - before[2])
        )
    return counts[5:]


async def test_a_lone_request_over_eager_loopback_sessions_takes_few_task_steps():
    """Regression guard for the hot path's task switches (a count, not a time).

    One request at a time through a client and a server session over TCP on loopback
    (both in this process, so their I/O waits overlap and the rounds say little): the
    client's inline flush, the server's reader and new handler, the server's inline
    flush, the client's reader. Over trio's own streams, where every ready socket call
    yields, the same request takes 7 steps.
    """
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:

        async def serve(tcp: trio.SocketStream) -> None:
            await H2Session(EagerStream(tcp), client_side=False, handler=_answer).run()

        nursery.start_soon(trio.serve_listeners, serve, listeners)
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        client = H2Session(EagerStream(tcp), client_side=True)
        nursery.start_soon(client.run)
        assert await client.wait_settings()
        counts = await _lone_requests(client)
        nursery.cancel_scope.cancel()
    assert statistics.median(steps for _, steps, _ in counts) <= 5, counts


async def test_the_writer_does_not_queue_behind_a_stream_flushing_inline():
    """A handler's head wakes the writer; its final DATA is then flushed inline, and over
    a transport whose send yields (TLS) the writer wakes mid-flush. The flush sends what
    the writer was woken for, so the writer must not wait for the lock and flush nothing.
    """
    client_end, server_end = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        server = H2Session(server_end, client_side=False, handler=_answer)
        client = H2Session(client_end, client_side=True)
        nursery.start_soon(server.run)
        nursery.start_soon(client.run)
        assert await client.wait_settings()
        counts = await _lone_requests(client)
        nursery.cancel_scope.cancel()
    # Woken once by the head, it finds the lock held and goes back to sleep (2 before).
    assert statistics.median(writer for _, _, writer in counts) <= 1, counts
