"""Flood and abuse limits for one HTTP/2 connection, as a sans-IO guard.

Every engine behind ``H2Session`` (h2 today) reports what it received as
:class:`FrameKind` values and what it queued for sending; the guard counts them and
answers with a :class:`Flood` verdict when a limit is crossed, which the shell turns into
GOAWAY ENHANCE_YOUR_CALM and a counter. Nothing here does I/O or reads a clock: callers
pass ``now``. The defaults are Envoy's ``http2_protocol_options`` (with its
``max_outbound_control_frames`` 1000, ``max_outbound_frames`` 10000,
``max_consecutive_inbound_frames_with_empty_payload`` 1,
``max_inbound_priority_frames_per_stream`` 100) and Envoy's reset-abuse rule: act only once
a connection has opened enough streams *and* more than half of them were reset within the
window, so a peer agent relaying its apps' cancellations is told apart from a client that
opens streams only to reset them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from peermesh.net.http.headers import MAX_HEADER_LIST_SIZE


class FrameKind(enum.Enum):
    """What the engine saw, at the granularity the limits need."""

    HEADERS = "headers"
    DATA = "data"
    EMPTY_DATA = "empty-data"  # DATA with no payload and no END_STREAM
    PRIORITY = "priority"
    PING = "ping"
    SETTINGS = "settings"
    WINDOW_UPDATE = "window-update"
    UNKNOWN = "unknown"
    OTHER = "other"
    #: A header block (HEADERS or PUSH_PROMISE plus CONTINUATION) past the size limit.
    OVERSIZED_HEADER_BLOCK = "oversized-header-block"


class Flood(enum.Enum):
    """Why the guard wants the connection closed (the counter's label)."""

    CONTROL_FRAMES = "outbound-control-flood"
    OUTBOUND_FRAMES = "outbound-frame-flood"
    EMPTY_FRAMES = "empty-frame-flood"
    PRIORITY = "priority-flood"
    UNKNOWN_FRAMES = "unknown-frame-flood"
    SETTINGS = "settings-flood"
    RESETS = "reset-flood"
    HEADER_BLOCK = "header-block-flood"


@dataclass(frozen=True)
class H2Limits:
    """Per-connection limits; each is one number so docs/security.md can name it."""

    max_outbound_control_frames: int = 1000
    max_outbound_frames: int = 10000
    max_consecutive_empty_frames: int = 1
    max_priority_frames_per_stream: int = 100
    max_unknown_frames: int = 100  # per window
    max_settings_frames: int = 100  # per window
    #: Streams a connection must have opened in the window before resets can count as abuse.
    reset_min_streams: int = 100
    #: Share of those streams that were reset (by the peer or by us) that is abuse.
    reset_max_ratio: float = 0.5
    window_seconds: float = 10.0


@dataclass
class _Window:
    start: float = 0.0
    opened: int = 0
    resets: int = 0
    unknown: int = 0
    settings: int = 0


class FloodGuard:
    """Counts one connection's frames, resets and queued replies; returns verdicts."""

    def __init__(self, limits: H2Limits | None = None) -> None:
        self.limits = limits or H2Limits()
        self._window = _Window()
        self._empty_run = 0
        self._priority = 0
        self._streams_seen = 0
        self._control_queued = 0
        self._frames_queued = 0

    def _roll(self, now: float) -> _Window:
        if now - self._window.start > self.limits.window_seconds:
            self._window = _Window(start=now)
        return self._window

    def received(self, kind: FrameKind, now: float) -> Flood | None:
        """One received frame; control frames that need an answer count as queued replies."""
        lim = self.limits
        if kind is FrameKind.OVERSIZED_HEADER_BLOCK:
            return Flood.HEADER_BLOCK
        if kind is FrameKind.EMPTY_DATA:
            self._empty_run += 1
            if self._empty_run > lim.max_consecutive_empty_frames:
                return Flood.EMPTY_FRAMES
            return None
        if kind is not FrameKind.OTHER:
            self._empty_run = 0
        if kind is FrameKind.HEADERS:
            self._streams_seen += 1
            return None
        if kind is FrameKind.PRIORITY:
            # Envoy's bound: 100 per stream opened (plus one stream's worth to start).
            self._priority += 1
            if self._priority > lim.max_priority_frames_per_stream * (1 + self._streams_seen):
                return Flood.PRIORITY
            return None
        if kind is FrameKind.PING:
            return self.queued(control=1)
        window = self._roll(now)
        if kind is FrameKind.SETTINGS:
            window.settings += 1
            if window.settings > lim.max_settings_frames:
                return Flood.SETTINGS
            return self.queued(control=1)
        if kind is FrameKind.UNKNOWN:
            window.unknown += 1
            if window.unknown > lim.max_unknown_frames:
                return Flood.UNKNOWN_FRAMES
        return None

    def queued(self, *, control: int = 0, frames: int = 0) -> Flood | None:
        """Frames queued for the peer and not yet written (control frames count in both)."""
        self._control_queued += control
        self._frames_queued += control + frames
        if self._control_queued > self.limits.max_outbound_control_frames:
            return Flood.CONTROL_FRAMES
        if self._frames_queued > self.limits.max_outbound_frames:
            return Flood.OUTBOUND_FRAMES
        return None

    def flushed(self) -> None:
        """Everything queued reached the transport."""
        self._control_queued = 0
        self._frames_queued = 0

    def stream_opened(self, now: float) -> None:
        self._roll(now).opened += 1

    def stream_reset(self, now: float) -> Flood | None:
        """A stream ended by RST_STREAM, whoever sent it."""
        window = self._roll(now)
        window.resets += 1
        if (
            window.opened >= self.limits.reset_min_streams
            and window.resets > window.opened * self.limits.reset_max_ratio
        ):
            return Flood.RESETS
        return None


_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_FLAG_END_STREAM = 0x1
_FLAG_ACK = 0x1
_FLAG_END_HEADERS = 0x4
_HEADER_BLOCK_START = (0x1, 0x5)  # HEADERS, PUSH_PROMISE
_CONTINUATION = 0x9
_FRAME_KINDS = {
    0x1: FrameKind.HEADERS,
    0x2: FrameKind.PRIORITY,
    0x4: FrameKind.SETTINGS,
    0x6: FrameKind.PING,
    0x8: FrameKind.WINDOW_UPDATE,
}


class FrameScanner:
    """Frame kinds from the raw bytes a peer sends, whatever engine decodes them.

    Reads only the 9-byte frame headers (length, type, flags) and skips payloads, so
    the flood limits see every frame the same way on every engine, and see it before
    the engine does any work on it. A server skips the client preface first. It also
    adds up the lengths of one header block's frames, so a block past
    ``max_header_block`` encoded bytes (the CONTINUATION flood) is refused on every
    engine before any of it is decoded; HPACK never decodes a block to a list smaller
    than its encoding, so such a block could not fit the header-list limit anyway.
    """

    def __init__(self, *, server_side: bool, max_header_block: int = MAX_HEADER_LIST_SIZE) -> None:
        self._preface = len(_PREFACE) if server_side else 0
        self._skip = 0  # payload bytes of the current frame still to pass over
        self._header = b""
        self._max_block = max_header_block
        self._block = -1  # encoded bytes of the header block in progress (-1: none)

    def scan(self, data: bytes) -> list[FrameKind]:
        """The kinds of the frames whose headers complete in ``data``.

        Walks ``data`` by offset (no slice per frame): a header is read in place, and
        only one split across two reads is copied.
        """
        kinds: list[FrameKind] = []
        pos, end = 0, len(data)
        if self._preface:
            pos = min(self._preface, end)
            self._preface -= pos
        if self._skip and pos < end:
            taken = min(self._skip, end - pos)
            self._skip -= taken
            pos += taken
        while pos < end:
            if self._header:  # the rest of a header split across reads
                need = 9 - len(self._header)
                self._header += data[pos : pos + need]
                pos += need
                if len(self._header) < 9:
                    break
                header, at, self._header = self._header, 0, b""
            elif end - pos >= 9:
                header, at = data, pos
                pos += 9
            else:
                self._header = data[pos:end]
                break
            length = (header[at] << 16) | (header[at + 1] << 8) | header[at + 2]
            frame_type, flags = header[at + 3], header[at + 4]
            if length <= end - pos:
                pos += length
            else:
                self._skip = length - (end - pos)
                pos = end
            if frame_type in _HEADER_BLOCK_START or (
                frame_type == _CONTINUATION and self._block >= 0
            ):
                self._block = length if frame_type != _CONTINUATION else self._block + length
                if self._block > self._max_block:
                    kinds.append(FrameKind.OVERSIZED_HEADER_BLOCK)
                    self._block = -1
                elif flags & _FLAG_END_HEADERS:
                    self._block = -1
            if frame_type == 0x0:
                empty = length == 0 and not flags & _FLAG_END_STREAM
                kinds.append(FrameKind.EMPTY_DATA if empty else FrameKind.DATA)
            elif frame_type in (0x4, 0x6) and flags & _FLAG_ACK:
                continue  # answers to our own SETTINGS and PINGs cost the peer nothing
            elif frame_type in _FRAME_KINDS:
                kinds.append(_FRAME_KINDS[frame_type])
            elif frame_type > 0x9:
                kinds.append(FrameKind.UNKNOWN)
        return kinds
