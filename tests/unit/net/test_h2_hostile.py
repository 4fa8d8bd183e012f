"""Hostile HTTP/2 peers against one server session over a real socket pair.

Each test drives raw frames (``tests.support.h2raw``) and asserts how the connection
ends: per-stream faults reset only their stream, floods end it with GOAWAY
ENHANCE_YOUR_CALM and move the counter, cancelled requests never reach the handler.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    ExtensionFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
)

from peermesh.net.http.h2engine import EngineName
from peermesh.net.http.h2fast import MAX_ENCODER_TABLE, FastEncoder
from peermesh.net.http.h2limits import Flood, FloodGuard, FrameKind, FrameScanner, H2Limits
from peermesh.net.http.h2select import nghttp2_available
from peermesh.net.http.h2session import MAX_HEADER_LIST, H2Session, H2Stream
from tests.support.h2raw import RawPeer, request

ENGINES = [
    EngineName.H2,
    pytest.param(
        EngineName.NGHTTP2,
        marks=pytest.mark.skipif(not nghttp2_available(), reason="nghttp2 engine not built"),
    ),
]

NO_ERROR, PROTOCOL_ERROR, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, CALM = 0, 1, 6, 7, 8, 11


class App:
    """Echoes the body length; records every request that reached it."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    async def __call__(self, stream: H2Stream) -> None:
        self.seen.append(dict(stream.headers or [])[b":path"])
        size = 0
        for _ in range(10_000):
            chunk = await stream.receive_data()
            if not chunk:
                break
            size += len(chunk)
        await stream.send_headers([(b":status", b"200")])
        await stream.send_data(str(size).encode(), end_stream=True)


@asynccontextmanager
async def served(**kwargs: object) -> AsyncIterator[tuple[H2Session, RawPeer, App, list[str]]]:
    app = App()
    limits: list[str] = []
    a, b = trio.socket.socketpair()
    server = H2Session(
        trio.SocketStream(a),
        client_side=False,
        handler=app,
        on_limit=limits.append,
        **kwargs,  # type: ignore[arg-type]
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.run)
        peer = RawPeer(trio.SocketStream(b))
        await peer.start()
        await peer.send(SettingsFrame(0, flags=["ACK"]))
        yield server, peer, app, limits
        nursery.cancel_scope.cancel()


def body(peer: RawPeer, stream_id: int) -> bytes:
    return b"".join(
        f.data for f in peer.received if isinstance(f, DataFrame) and f.stream_id == stream_id
    )


async def answered(peer: RawPeer, stream_id: int) -> bytes:
    """The body of the response on ``stream_id`` (waits for its END_STREAM)."""
    for _ in range(1000):
        if any(
            isinstance(f, DataFrame) and f.stream_id == stream_id and "END_STREAM" in f.flags
            for f in peer.received
        ):
            return body(peer, stream_id)
        assert await peer.read_until(DataFrame, stream_id=stream_id) is not None
    raise AssertionError("no answer")  # pragma: no cover


# --- per-stream faults stay per-stream ---------------------------------------------------


async def test_headers_and_reset_in_one_read_never_reach_the_app():
    async with served() as (server, peer, app, _):
        await peer.send(
            peer.headers(1, request("/cancelled"), end_stream=False),
            peer.rst(1, CANCEL),
            peer.headers(3, request("/ok")),
        )
        assert await answered(peer, 3) == b"0"
        assert app.seen == [b"/ok"]
        assert not server.is_closed


@pytest.mark.parametrize("engine", ENGINES)
async def test_stream_over_the_concurrency_limit_is_refused_alone(engine):
    async with served(max_concurrent_streams=2, engine=engine) as (
        server,
        peer,
        _app,
        limits,
    ):
        for sid in (1, 3, 5):
            await peer.send(peer.headers(sid, request("/wait"), end_stream=False))
        rst = await peer.read_until(RstStreamFrame, stream_id=5)
        assert isinstance(rst, RstStreamFrame) and rst.error_code == REFUSED_STREAM
        await peer.send(peer.data(1, b"ab", end_stream=True), peer.data(3, b"", end_stream=True))
        assert await answered(peer, 1) == b"2"
        assert await answered(peer, 3) == b"0"
        assert limits == ["refused"] and server.stats.stream_faults == 1
        assert not server.is_closed


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    "bad",
    [
        (b"X-Upper", b"1"),  # refused by h2fast's rules on both engines
        (b"content-length", b"abc"),  # nghttp2 refuses it on its own
        (b"host", b"elsewhere"),  # Host that disagrees with :authority
    ],
)
async def test_malformed_request_is_a_stream_error(engine, bad):
    async with served(engine=engine) as (server, peer, app, limits):
        await peer.send(peer.headers(1, [*request("/bad"), bad]))
        rst = await peer.read_until(RstStreamFrame, stream_id=1)
        assert isinstance(rst, RstStreamFrame) and rst.error_code == PROTOCOL_ERROR
        await peer.send(peer.headers(3, request("/ok")))
        assert await answered(peer, 3) == b"0"
        assert app.seen == [b"/ok"] and limits == ["malformed"]
        assert not server.is_closed


@pytest.mark.parametrize("engine", ENGINES)
async def test_header_list_over_the_limit_is_a_stream_error(engine):
    # Under the encoded-block limit, over the decoded one: an indexed 4 KiB field
    # repeated costs one byte each on the wire.
    big = [(b"x-big", b"v" * 4000)]
    repeats = MAX_HEADER_LIST // 4000 + 2
    async with served(engine=engine) as (server, peer, app, limits):
        await peer.send(peer.headers(1, request("/big") + big * repeats))
        rst = await peer.read_until(RstStreamFrame, stream_id=1)
        assert isinstance(rst, RstStreamFrame) and rst.error_code == CALM
        # HPACK is still in step: the next block refers to the table the big one filled.
        await peer.send(peer.headers(3, request("/ok") + big))
        assert await answered(peer, 3) == b"0"
        assert app.seen == [b"/ok"] and limits == ["headers-too-large"]
        assert server.stats.stream_faults == 1 and not server.is_closed


@pytest.mark.parametrize("engine", ENGINES)
async def test_body_that_disagrees_with_content_length_is_a_stream_error(engine):
    async with served(engine=engine) as (server, peer, _app, limits):
        fields = [*request("/post", method="POST"), (b"content-length", b"5")]
        await peer.send(
            peer.headers(1, fields, end_stream=False), peer.data(1, b"abc", end_stream=True)
        )
        rst = await peer.read_until(RstStreamFrame, stream_id=1)
        assert isinstance(rst, RstStreamFrame) and rst.error_code == PROTOCOL_ERROR
        await peer.send(peer.headers(3, request("/ok")))
        assert await answered(peer, 3) == b"0"
        assert limits == ["body-length"] and not server.is_closed


async def test_empty_data_frame_does_not_end_the_body():
    async with served() as (_server, peer, _app, _):
        await peer.send(
            peer.headers(1, request("/post", method="POST"), end_stream=False),
            peer.data(1, b""),
            peer.data(1, b"abc", end_stream=True),
        )
        assert await answered(peer, 1) == b"3"


# --- frame size and header blocks ---------------------------------------------------------


async def test_frame_length_is_checked_when_its_header_arrives():
    async with served() as (server, peer, _app, _):
        # Only the 9-byte header of a 1 MiB DATA frame: refused without waiting for the rest.
        await peer.send_raw((1 << 20).to_bytes(3, "big") + b"\x00\x00" + (1).to_bytes(4, "big"))
        goaway = await peer.goaway()
        assert goaway is not None and goaway.error_code == FRAME_SIZE_ERROR
        await server.wait_closed()


@pytest.mark.parametrize("engine", ENGINES)
async def test_header_block_is_size_checked_before_decoding(engine):
    async with served(engine=engine) as (server, peer, app, limits):
        first = HeadersFrame(1, b"\x00" * 16000)
        rest = [ContinuationFrame(1, b"\x00" * 16000) for _ in range(5)]
        await peer.send(first, *rest)
        goaway = await peer.goaway()
        assert goaway is not None and goaway.error_code == CALM
        await server.wait_closed()
        assert limits == [Flood.HEADER_BLOCK.value] and app.seen == []


# --- floods ----------------------------------------------------------------------------------


async def _flood(frames: list, expected: Flood, **kwargs: object) -> None:  # type: ignore[type-arg]
    async with served(**kwargs) as (server, peer, _app, limits):
        await peer.send(*frames)
        goaway = await peer.goaway()
        assert goaway is not None and goaway.error_code == CALM
        await server.wait_closed()
        assert server.stats.flood is expected and limits == [expected.value]


async def test_ping_flood_with_a_reader_that_never_reads():
    await _flood([PingFrame(0, b"12345678") for _ in range(20_000)], Flood.CONTROL_FRAMES)


async def test_settings_flood():
    await _flood([SettingsFrame(0) for _ in range(101)], Flood.SETTINGS)


async def test_empty_data_flood():
    peer = RawPeer(trio.testing.memory_stream_pair()[0])  # only for building frames
    frames = [peer.headers(1, request("/", method="POST"), end_stream=False)]
    frames += [DataFrame(1, b"") for _ in range(2)]
    await _flood(frames, Flood.EMPTY_FRAMES)


async def test_priority_flood():
    await _flood([PriorityFrame(1, depends_on=0) for _ in range(101)], Flood.PRIORITY)


class _Unknown(ExtensionFrame):
    """An unknown frame type (hyperframe's own serialises a zero length)."""

    def serialize(self) -> bytes:
        return len(self.body).to_bytes(3, "big") + bytes((self.type, 0)) + b"\0\0\0\0" + self.body


async def test_unknown_frame_flood():
    frames = [_Unknown(0xEE, 0, 0, b"x") for _ in range(101)]
    await _flood(frames, Flood.UNKNOWN_FRAMES)


async def test_rapid_reset_abuse_ends_the_connection():
    async with served() as (server, peer, app, limits):
        frames = []
        for i in range(150):
            sid = 2 * i + 1
            frames += [peer.headers(sid, request("/r"), end_stream=False), peer.rst(sid)]
        await peer.send(*frames)
        goaway = await peer.goaway()
        assert goaway is not None and goaway.error_code == CALM
        await server.wait_closed()
        assert limits == [Flood.RESETS.value]
        assert app.seen == []  # every one was reset before its task ran


async def test_relayed_cancellations_are_not_abuse():
    """A peer agent cancelling a quarter of its apps' requests keeps its connection."""
    async with served() as (server, peer, app, limits):
        for i in range(300):
            sid = 2 * i + 1
            if i % 4 == 0:
                await peer.send(peer.headers(sid, request("/c"), end_stream=False), peer.rst(sid))
            else:
                await peer.send(peer.headers(sid, request("/ok")))
        assert await answered(peer, 599) == b"0"
        assert limits == [] and not server.is_closed
        assert b"/c" not in app.seen


# --- sans-IO guard and encoder ------------------------------------------------------------


def test_guard_counts_resets_only_past_the_stream_floor():
    guard = FloodGuard(H2Limits(reset_min_streams=10))
    for _ in range(9):
        guard.stream_opened(0.0)
        assert guard.stream_reset(0.0) is None  # every stream reset, but too few streams
    guard.stream_opened(0.0)
    assert guard.stream_reset(0.0) is Flood.RESETS
    # A new window starts clean.
    assert guard.stream_reset(100.0) is None


def test_guard_resets_empty_run_on_payload():
    guard = FloodGuard()
    for _ in range(5):
        assert guard.received(FrameKind.EMPTY_DATA, 0.0) is None
        assert guard.received(FrameKind.DATA, 0.0) is None
    guard.flushed()
    assert guard.queued(control=1000) is None
    assert guard.queued(control=1) is Flood.CONTROL_FRAMES


def test_encoder_caps_the_table_a_peer_offers():
    encoder = FastEncoder()
    encoder.header_table_size = 1 << 31
    assert encoder.header_table_size == MAX_ENCODER_TABLE
    block = encoder.encode([(b"x-big", b"v" * 3000), (b"x-big2", b"w" * 3000)])
    assert block and encoder._size <= MAX_ENCODER_TABLE


@pytest.mark.parametrize("size", [7, 1 << 10, 1 << 15])
def test_huffman_encoding_in_bounded_steps_matches_hpack(size):
    from hpack.huffman import HuffmanEncoder
    from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH

    from peermesh.net.http.h2fast import huffman_encode

    value = bytes(range(32, 127)) * (size // 95 + 1)
    value = value[:size]
    assert huffman_encode(value) == HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode(
        value
    )


def test_scanner_sums_a_header_block_across_frames_and_reads():
    block = [HeadersFrame(1, b"h" * 16000)] + [ContinuationFrame(1, b"c" * 16000)] * 3
    under = b"".join(f.serialize() for f in block)  # 64000 bytes: at the limit, not past
    last = ContinuationFrame(1, b"c" * 2000, flags=["END_HEADERS"]).serialize()
    scanner = FrameScanner(server_side=False)
    kinds = [k for i in range(0, len(under), 7) for k in scanner.scan(under[i : i + 7])]
    assert FrameKind.OVERSIZED_HEADER_BLOCK not in kinds
    assert FrameKind.OVERSIZED_HEADER_BLOCK not in scanner.scan(
        ContinuationFrame(1, b"").serialize()
    )
    assert scanner.scan(last + last) == [FrameKind.OVERSIZED_HEADER_BLOCK]  # 66000 > 64 KiB
    # A finished block starts the count again.
    small = HeadersFrame(3, b"h", flags=["END_HEADERS"]).serialize()
    assert scanner.scan(small + under[:9]) == [FrameKind.HEADERS, FrameKind.HEADERS]
