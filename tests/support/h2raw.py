"""A raw HTTP/2 peer for attack tests: hand-built frames out, parsed frames back.

It does no flow control or validation of its own, so it can send what a real client
never would; it reads what the server answers so tests can assert on RST_STREAM and
GOAWAY codes.
"""

from __future__ import annotations

import hpack
import trio
from h2.frame_buffer import FrameBuffer
from hyperframe.frame import (
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    RstStreamFrame,
    SettingsFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def request(
    path: str = "/", *, authority: str = "orders", method: str = "GET"
) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", method.encode()),
        (b":scheme", b"http"),
        (b":authority", authority.encode()),
        (b":path", path.encode()),
    ]


class RawPeer:
    """The client end of one HTTP/2 connection, driven frame by frame."""

    def __init__(self, transport: trio.abc.Stream) -> None:
        self.transport = transport
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self._buffer = FrameBuffer(server=False)
        self._buffer.max_frame_size = 1 << 24
        self.received: list[Frame] = []
        self.closed = False

    async def start(self, settings: dict[int, int] | None = None) -> None:
        frame = SettingsFrame(0, settings=settings or {})
        await self.send_raw(PREFACE + frame.serialize())

    async def send(self, *frames: Frame) -> None:
        await self.send_raw(b"".join(f.serialize() for f in frames))

    async def send_raw(self, data: bytes) -> None:
        try:
            await self.transport.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self.closed = True

    def headers(
        self, stream_id: int, fields: list[tuple[bytes, bytes]], *, end_stream: bool = True
    ) -> HeadersFrame:
        frame = HeadersFrame(stream_id, self.encoder.encode(fields))
        frame.flags.add("END_HEADERS")
        if end_stream:
            frame.flags.add("END_STREAM")
        return frame

    @staticmethod
    def data(stream_id: int, payload: bytes, *, end_stream: bool = False) -> DataFrame:
        frame = DataFrame(stream_id, payload)
        if end_stream:
            frame.flags.add("END_STREAM")
        return frame

    @staticmethod
    def rst(stream_id: int, code: int = 8) -> RstStreamFrame:
        return RstStreamFrame(stream_id, error_code=code)

    async def read_until(
        self, done: type[Frame] | None = None, *, stream_id: int | None = None
    ) -> Frame | None:
        """Frames until one of type ``done`` (on ``stream_id``) or the connection ends."""
        for _ in range(100_000):  # bounded: each pass reads or ends
            for frame in self._buffer:
                self.received.append(frame)
                if isinstance(frame, HeadersFrame):
                    frame.decoded = self.decoder.decode(frame.data, raw=True)  # type: ignore[attr-defined]
                wanted = done is not None and isinstance(frame, done)
                if wanted and (stream_id is None or frame.stream_id == stream_id):
                    return frame
            try:
                data = await self.transport.receive_some(1 << 16)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                data = b""
            if not data:
                self.closed = True
                return None
            self._buffer.add_data(data)
        raise AssertionError("peer kept talking")  # pragma: no cover

    async def goaway(self) -> GoAwayFrame | None:
        frame = await self.read_until(GoAwayFrame)
        assert frame is None or isinstance(frame, GoAwayFrame)
        return frame

    def status(self, stream_id: int) -> bytes | None:
        for frame in self.received:
            if isinstance(frame, HeadersFrame) and frame.stream_id == stream_id:
                return dict(frame.decoded).get(b":status")  # type: ignore[attr-defined]
        return None
