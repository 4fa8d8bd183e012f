"""The ``h2`` engine: the pure-Python reference state machine, and the limits it announces.

h2 treats any GOAWAY (sent or received) as the end of the whole connection; we need
graceful drain (streams below last-stream-id finish), so ``DrainingH2Connection``
keeps the state machine open on a NO_ERROR GOAWAY and sends ours as a raw frame.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.frame_buffer
import h2.settings
from hyperframe.frame import (
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PushPromiseFrame,
    RstStreamFrame,
    WindowUpdateFrame,
)

from peermesh.net.http.h2engine import (
    CONNECTION_WINDOW,
    MAX_FRAME,
    MAX_HEADER_BLOCK,
    MAX_HEADER_LIST,
    STREAM_WINDOW,
    Ev,
    Event,
    Header,
)
from peermesh.net.http.h2errors import ErrorCode
from peermesh.net.http.h2fast import FastDecoder, FastEncoder, check_received, prepare_outbound

_RESPONSE_EVENTS = (h2.events.ResponseReceived, h2.events.InformationalResponseReceived)
_HEADER_EVENTS = (
    h2.events.RequestReceived,
    h2.events.ResponseReceived,
    h2.events.InformationalResponseReceived,
    h2.events.TrailersReceived,
    h2.events.PushedStreamReceived,
)


_HEADER_FRAME_TYPES = (0x1, 0x5, 0x9)  # HEADERS, PUSH_PROMISE, CONTINUATION


class CheckedFrameBuffer(h2.frame_buffer.FrameBuffer):
    """h2's frame buffer, checking each frame's length as soon as its 9-byte header is in.

    h2 checks the length only once the whole frame is buffered, so a peer could make us
    hold up to 16 MiB per connection; and it joins CONTINUATION frames into one block
    of up to 64 frames before any size check. Both are refused here, before buffering.
    """

    def __init__(self, conn: h2.connection.H2Connection, *, server: bool) -> None:
        super().__init__(server=server)
        self._conn = conn

    def __next__(self) -> Frame:
        data = self._data
        if len(data) >= 9:
            length = int.from_bytes(data[:3], "big")
            # The limit as of now: h2 sets max_frame_size once per read, before the
            # frames of that read (an ACK of our larger SETTINGS among them) are applied.
            self.max_frame_size = self._conn.max_inbound_frame_size
            self._validate_frame_length(length)  # FrameTooLargeError: FRAME_SIZE_ERROR
            if self._headers_buffer or data[3] in _HEADER_FRAME_TYPES:
                pending = length + sum(len(f.data) for f in self._headers_buffer)
                if pending > MAX_HEADER_BLOCK:
                    raise h2.exceptions.DenialOfServiceError(
                        f"header block over {MAX_HEADER_BLOCK} bytes before decoding"
                    )
        return super().__next__()


class ListSizeDecoder(FastDecoder):
    """Decodes every header block whole, and flags one whose list is over the limit.

    hpack stops at the first field past ``max_header_list_size``, leaving the rest of
    the block undecoded and the shared HPACK table out of step with the peer's, so only
    a connection error could follow. Here the block is always decoded to its end (its
    encoding is already bounded by ``MAX_HEADER_BLOCK``), an oversized list comes back
    empty with ``oversized`` set, and the connection resets just that stream.
    """

    oversized = False
    #: The last list decoded whole (None until one is): a request the stream then
    #: refuses (a bad Content-Length) is told apart from an HPACK failure by it.
    last: list[Any] | None = None
    _list_limit = MAX_HEADER_LIST

    @property
    def max_header_list_size(self) -> int:
        return 1 << 62  # hpack's own check never fires; decode() checks the whole list

    @max_header_list_size.setter
    def max_header_list_size(self, value: int) -> None:
        self._list_limit = value  # h2 sets it when our SETTINGS are acknowledged

    def decode(self, data: bytes, raw: bool = False) -> Any:
        headers = super().decode(data, raw)
        size = 0
        for name, value in headers:
            size += len(name) + len(value) + 32  # RFC 9113 §6.5.2
        if size > self._list_limit:
            self.oversized = True
            return []
        self.last = headers
        return headers


class DrainingH2Connection(h2.connection.H2Connection):
    """h2's connection, minus tearing everything down on a graceful GOAWAY.

    Two hot-path changes (see ``h2fast``): received header blocks are validated by
    ``check_received`` (same rules and messages as h2's ``validate_inbound_headers``,
    which is switched off), and ``_receive_frame`` no longer formats ``repr(frame)``
    for a trace log that h2's dummy logger throws away.
    """

    @staticmethod
    def prepare_outbound(
        headers: Iterable[Header], *, response: bool, trailer: bool
    ) -> list[Header]:
        """What is sent is normalised and checked by ``h2fast`` (h2's own pass is off)."""
        return prepare_outbound(headers, response=response, trailer=trailer)

    def _receive_frame(self, frame: Frame) -> list[h2.events.Event]:
        # h2 4.4's _receive_frame, minus the eager repr(frame) for its trace log.
        events: list[h2.events.Event]
        try:
            frames, events = self._frame_dispatch_table[frame.__class__](frame)
        except h2.exceptions.StreamClosedError as e:
            if self._stream_is_closed_by_reset(e.stream_id):
                f = RstStreamFrame(e.stream_id)
                f.error_code = e.error_code
                self._prepare_for_sending([f])
                events = e._events
            else:
                raise
        except h2.exceptions.StreamIDTooLowError as e:
            if self._stream_is_closed_by_reset(e.stream_id):
                f = RstStreamFrame(e.stream_id)
                f.error_code = ErrorCode.STREAM_CLOSED
                self._prepare_for_sending([f])
                events = []
            elif self._stream_is_closed_by_end(e.stream_id):
                raise h2.exceptions.StreamClosedError(e.stream_id) from e
            else:
                raise
        else:
            self._prepare_for_sending(frames)
        return events

    #: Streams refused or reset for a fault of their own; the session counts and clears.
    stream_faults: list[str]
    _refusing = False

    @property
    def open_inbound_streams(self) -> int:
        # While refusing one stream over the limit, h2's own check must let it through
        # so its header block is still decoded: HPACK state is shared by the connection.
        return 0 if self._refusing else super().open_inbound_streams

    def _receive_headers_frame(self, frame: HeadersFrame) -> Any:
        stream_id = frame.stream_id
        decoder: ListSizeDecoder = self.decoder  # type: ignore[assignment]
        decoder.oversized = False
        decoder.last = None
        over = (
            stream_id not in self.streams
            and super().open_inbound_streams + 1 > self.local_settings.max_concurrent_streams
        )
        if over:
            # RFC 9113 §5.1.2: a stream over the limit is refused, the connection lives on.
            self._refusing = True
            try:
                frames, events = super()._receive_headers_frame(frame)
            finally:
                self._refusing = False
            return frames, self._fault(stream_id, events, ErrorCode.REFUSED_STREAM, "refused")
        try:
            frames, events = super()._receive_headers_frame(frame)
        except h2.exceptions.ProtocolError:
            # h2 checks Content-Length once the stream is open, as a connection error;
            # it is a malformed message (RFC 9113 §8.1.1), so a stream error.
            if decoder.last is None or stream_id not in self.streams:
                raise
            if not _bad_content_length(decoder.last):
                raise
            return [], self._fault(stream_id, [], ErrorCode.PROTOCOL_ERROR, "malformed")
        if decoder.oversized:
            # RFC 9113 §10.5.1: an oversized header list is refused on its stream only.
            code = ErrorCode.ENHANCE_YOUR_CALM
            return frames, self._fault(stream_id, events, code, "headers-too-large")
        try:
            check_events(events)
        except h2.exceptions.ProtocolError:
            # RFC 9113 §8.1.1: a malformed message is a stream error, not a connection one.
            return frames, self._fault(stream_id, events, ErrorCode.PROTOCOL_ERROR, "malformed")
        return frames, events

    def _receive_data_frame(self, frame: DataFrame) -> Any:
        try:
            return super()._receive_data_frame(frame)
        except h2.exceptions.InvalidBodyLengthError:
            # A body that disagrees with its Content-Length is malformed (RFC 9113
            # §8.1.1): a stream error. Its bytes still count against the connection
            # window, so give that credit back, and tell the session the stream is gone.
            stream_id = frame.stream_id
            self._fault(stream_id, [], ErrorCode.PROTOCOL_ERROR, "body-length")
            self.acknowledge_received_data(frame.flow_controlled_length, stream_id)
            reset = h2.events.StreamReset(
                stream_id=stream_id, error_code=ErrorCode.PROTOCOL_ERROR, remote_reset=False
            )
            return [], [reset]

    def _fault(
        self, stream_id: int, events: list[h2.events.Event], code: ErrorCode, why: str
    ) -> list[h2.events.Event]:
        """Reset one stream whose header block was decoded; drop its events.

        The session learns of it as a stream the engine closed (a response or trailers
        it waits for will not come), as it does on nghttp2.
        """
        self.stream_faults.append(why)
        stream = self.streams.get(stream_id)
        if stream is not None and not stream.closed:
            self.reset_stream(stream_id, error_code=code)
        kept = [e for e in events if getattr(e, "stream_id", None) != stream_id]
        kept.append(h2.events.StreamReset(stream_id=stream_id, error_code=code, remote_reset=False))
        return kept

    def _receive_push_promise_frame(self, frame: PushPromiseFrame) -> Any:
        frames, events = super()._receive_push_promise_frame(frame)
        check_events(events)
        return frames, events

    def _receive_goaway_frame(self, frame: GoAwayFrame) -> Any:
        if frame.error_code != 0:
            return super()._receive_goaway_frame(frame)
        event = h2.events.ConnectionTerminated()
        event.error_code = ErrorCode.NO_ERROR
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]

    def acknowledge_connection_data(self, acknowledged_size: int) -> None:
        """The connection half of ``acknowledge_received_data``: the data is buffered."""
        increment = self._inbound_flow_control_window_manager.process_bytes(acknowledged_size)
        if increment:
            frame = WindowUpdateFrame(0)
            frame.window_increment = increment
            self._prepare_for_sending([frame])

    def acknowledge_stream_data(self, acknowledged_size: int, stream_id: int) -> None:
        """The stream half of ``acknowledge_received_data``: its reader took the data."""
        stream = self.streams.get(stream_id)
        if stream is not None and stream.open:
            self._prepare_for_sending(stream.acknowledge_received_data(acknowledged_size))

    def send_graceful_goaway(self, last_stream_id: int) -> None:
        """Queue a NO_ERROR GOAWAY without closing h2's state machine."""
        frame = GoAwayFrame(stream_id=0, last_stream_id=last_stream_id, error_code=0)
        self._prepare_for_sending([frame])

    # the H2Engine interface (h2engine) on top of h2's own API --------------------
    def receive(self, data: bytes) -> list[Event]:
        """h2's events as the engine's flat tuples."""
        out: list[Event] = []
        for event in self.receive_data(data):
            convert = _CONVERT.get(type(event))
            if convert is not None:
                out.append(convert(event))
        return out

    def pop_events(self) -> list[Event]:
        return []  # h2 reports every stream change from receive_data or the call that made it

    @property
    def has_output(self) -> bool:
        # ``_data_to_send`` is h2's outgoing buffer (h2 4.x; test_dataplane_stalls checks it).
        return bool(self._data_to_send)

    @property
    def is_closed(self) -> bool:
        return self.state_machine.state == h2.connection.ConnectionState.CLOSED

    @property
    def remote_max_concurrent_streams(self) -> int:
        return int(self.remote_settings.max_concurrent_streams)


def _reset(event: h2.events.StreamReset) -> Event:
    return (Ev.RESET if event.remote_reset else Ev.CLOSED, event.stream_id, int(event.error_code))


def _goaway(event: h2.events.ConnectionTerminated) -> Event:
    code = int(event.error_code) if event.error_code is not None else 0
    last = event.last_stream_id if event.last_stream_id is not None else 0
    return (Ev.GOAWAY, code, last, event.additional_data or b"")


_CONVERT: dict[type[h2.events.Event], Callable[[Any], Event]] = {
    h2.events.RequestReceived: lambda e: (
        Ev.REQUEST,
        e.stream_id,
        e.headers,
        e.stream_ended is not None,
    ),
    h2.events.ResponseReceived: lambda e: (
        Ev.RESPONSE,
        e.stream_id,
        e.headers,
        e.stream_ended is not None,
    ),
    h2.events.InformationalResponseReceived: lambda e: (Ev.INFORMATIONAL, e.stream_id, e.headers),
    h2.events.TrailersReceived: lambda e: (Ev.TRAILERS, e.stream_id, e.headers),
    h2.events.DataReceived: lambda e: (Ev.DATA, e.stream_id, e.data, e.flow_controlled_length),
    h2.events.StreamEnded: lambda e: (Ev.END, e.stream_id),
    h2.events.StreamReset: _reset,
    h2.events.WindowUpdated: lambda e: (Ev.WINDOW, e.stream_id, e.delta),
    h2.events.RemoteSettingsChanged: lambda e: (Ev.SETTINGS, False),
    h2.events.SettingsAcknowledged: lambda e: (Ev.SETTINGS, True),
    h2.events.ConnectionTerminated: _goaway,
    h2.events.PingAckReceived: lambda e: (Ev.PING_ACK, e.ping_data),
}


def _bad_content_length(headers: list[Any]) -> bool:
    """A Content-Length that is not 1*DIGIT, or two that disagree (RFC 9110 §8.6)."""
    values = {value for name, value in headers if name == b"content-length"}
    return len(values) > 1 or any(not value.isdigit() for value in values)


def check_events(events: list[h2.events.Event]) -> None:
    """Validate every received header block (raises h2's ProtocolError, as h2 would)."""
    for event in events:
        if isinstance(event, _HEADER_EVENTS):
            check_received(
                event.headers or [],
                response=isinstance(event, _RESPONSE_EVENTS),
                trailer=isinstance(event, h2.events.TrailersReceived),
            )


def reference_engine(*, client_side: bool, max_concurrent_streams: int) -> DrainingH2Connection:
    """The ``h2`` engine (``h2engine.H2Engine``), configured as every session needs it."""
    return new_connection(client_side=client_side, max_concurrent_streams=max_concurrent_streams)


def new_connection(*, client_side: bool, max_concurrent_streams: int) -> DrainingH2Connection:
    """A connection with its preface and our SETTINGS queued, ready for its first bytes."""
    # Header validation and normalisation are done by h2fast (same rules, one pass):
    # inbound in DrainingH2Connection, outbound in prepare_outbound before sending.
    config = h2.config.H2Configuration(
        client_side=client_side,
        header_encoding=None,
        validate_inbound_headers=False,
        normalize_inbound_headers=True,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
    )
    conn = DrainingH2Connection(config=config)
    conn.stream_faults = []
    conn.incoming_buffer = CheckedFrameBuffer(conn, server=not client_side)
    conn.encoder = FastEncoder()  # type: ignore[assignment]
    decoder = ListSizeDecoder()
    decoder.max_header_list_size = conn.decoder.max_header_list_size
    decoder.max_allowed_table_size = conn.decoder.max_allowed_table_size
    conn.decoder = decoder
    conn.initiate_connection()
    # Announced after the preface; h2 applies each value when the peer ACKs it.
    settings: dict[h2.settings.SettingCodes | int, int] = {
        h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_concurrent_streams,
        h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
        h2.settings.SettingCodes.MAX_FRAME_SIZE: MAX_FRAME,
        h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
    }
    if client_side:
        settings[h2.settings.SettingCodes.ENABLE_PUSH] = 0
    conn.update_settings(settings)
    conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)
    return conn
