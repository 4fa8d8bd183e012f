"""The seam between the trio shell (``h2session``) and an HTTP/2 state machine.

An engine is sans-IO: ``receive`` takes bytes and returns events, ``data_to_send``
returns the bytes to write. Two engines implement ``H2Engine``: ``h2`` (pure Python,
the reference, in ``h2conn``) and ``nghttp2`` (libnghttp2 through the project's cffi
module, in ``nghttp2.engine``). Events are flat tuples whose first item is an
``Ev`` tag, so the faster engine never builds an object per frame:

    (Ev.REQUEST, sid, headers, end_stream)   (Ev.RESPONSE, sid, headers, end_stream)
    (Ev.INFORMATIONAL, sid, headers)         (Ev.TRAILERS, sid, headers)
    (Ev.DATA, sid, data, flow_controlled_length)   (Ev.END, sid)
    (Ev.RESET, sid, code)        the peer's RST_STREAM
    (Ev.CLOSED, sid, code)       the engine closed the stream itself (code != 0: it reset
                                 or refused it); a normal close may also report code 0
    (Ev.WINDOW, sid, increment)  sid 0 is the connection
    (Ev.SETTINGS, acked)         (Ev.GOAWAY, code, last_stream_id, data)
    (Ev.PING_ACK, opaque)

Engines raise ``EngineError`` (h2's ``ProtocolError``, so both engines' errors are
caught the same way); from ``receive`` it means the peer broke the protocol and a
GOAWAY saying why is queued.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import h2.exceptions

from peermesh.net.http.headers import MAX_HEADER_LIST_SIZE

EngineError = h2.exceptions.ProtocolError
Event = tuple[Any, ...]
Header = tuple[bytes, bytes]

# The limits both engines advertise and the shell enforces. They live here, not with
# either engine, so that a session on nghttp2 never loads the h2 engine's modules.
STREAM_WINDOW = 1 << 20  # 1 MiB per stream bounds what one slow reader can pin
CONNECTION_WINDOW = 8 << 20  # 8 MiB per connection: what is in flight, not yet buffered
#: Bytes buffered on a connection for streams whose readers have not taken them yet.
#: Below it, the connection-level credit of received DATA goes back as soon as the DATA
#: is buffered (each stream's own window bounds what it holds), so stalled readers
#: cannot use up the connection window every other stream shares; past it, credit
#: goes back only as readers take their bytes, and the connection window bounds the rest.
UNREAD_CAP = 4 * CONNECTION_WINDOW
MAX_FRAME = 1 << 16
MAX_HEADER_LIST = MAX_HEADER_LIST_SIZE  # what fit_request_head holds senders to

READ_SIZE = 1 << 16
#: Encoded header block bytes (HEADERS + CONTINUATION) collected before decoding. HPACK
#: never makes a field list smaller than its encoding plus 32 bytes per field, so a block
#: past this cannot decode within MAX_HEADER_LIST; refusing it early saves the decode.
MAX_HEADER_BLOCK = MAX_HEADER_LIST
HIGH_WATER = 256 << 10  # unsent bytes after which a sender flushes itself


class Ev(enum.IntEnum):
    REQUEST = 1
    RESPONSE = 2
    INFORMATIONAL = 3
    TRAILERS = 4
    DATA = 5
    END = 6
    RESET = 7
    CLOSED = 8
    WINDOW = 9
    SETTINGS = 10
    GOAWAY = 11
    PING_ACK = 12


class EngineName(enum.StrEnum):
    """Which HTTP/2 implementation carries a session."""

    H2 = "h2"
    NGHTTP2 = "nghttp2"


class H2Engine(Protocol):
    """What the trio shell needs from an HTTP/2 state machine (both ends)."""

    #: Streams the engine refused on its own since the shell last looked (why, one each).
    stream_faults: list[str]

    def receive(self, data: bytes) -> list[Event]: ...

    def pop_events(self) -> list[Event]:
        """Events produced while serialising (streams closed as their last frame went)."""
        ...

    def data_to_send(self) -> bytes: ...

    @property
    def has_output(self) -> bool: ...

    @property
    def is_closed(self) -> bool: ...

    @property
    def remote_max_concurrent_streams(self) -> int: ...

    @property
    def max_outbound_frame_size(self) -> int: ...

    def get_next_available_stream_id(self) -> int: ...

    def prepare_outbound(
        self, headers: Iterable[Header], *, response: bool, trailer: bool
    ) -> list[Header]:
        """The block to hand ``send_headers`` next: ``h2fast.prepare_outbound``'s answer
        (normalised, or ``ProtocolError`` for a malformed one), however the engine gets it."""
        ...

    def send_headers(
        self, stream_id: int, headers: Sequence[Header], end_stream: bool = False
    ) -> None: ...

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None: ...

    def end_stream(self, stream_id: int) -> None: ...

    def reset_stream(self, stream_id: int, error_code: int = 8) -> None: ...

    def acknowledge_received_data(self, acknowledged_size: int, stream_id: int) -> None: ...

    def acknowledge_connection_data(self, acknowledged_size: int) -> None:
        """Return only the connection-level credit (the stream's waits for its reader)."""
        ...

    def acknowledge_stream_data(self, acknowledged_size: int, stream_id: int) -> None:
        """Return only the stream-level credit (the connection's went back earlier)."""
        ...

    def local_flow_control_window(self, stream_id: int) -> int: ...

    def ping(self, opaque_data: bytes) -> None: ...

    def send_graceful_goaway(self, last_stream_id: int) -> None: ...

    def close_connection(self, error_code: int = 0) -> None: ...
