"""Sans-IO HTTP/2 engine over libnghttp2 (the ``_ng`` cffi module ``build`` compiles).

Implements ``h2engine.H2Engine``. The C side collects every callback into flat int32
records; ``_collect`` decodes them once per ``receive`` or ``data_to_send``.

Where nghttp2 and the ``h2`` engine differ, and what this wrapper does about it:

* A connection error gets no callback: nghttp2 just queues a GOAWAY. ``ng_recv``
  serialises right after parsing, and a non-zero GOAWAY we did not ask for turns into
  ``NgProtocolError`` from ``receive``, as h2 raises ``ProtocolError``.
* nghttp2 validates no outbound header. ``prepare_outbound`` gives h2fast's answer: a
  block with nothing to change is checked by ``ng_outbound_ready`` in C over the blob
  that is submitted next (one pass, no Python loop per field); any other block goes to
  ``h2fast.prepare_outbound``, which normalises it or raises its ProtocolError, so both
  engines send and refuse the same blocks (``test_outbound_engines_agree``).
* Received blocks nghttp2 checks itself against RFC 9113's field rules, which are
  h2's too (the oracle test in ``test_h2_engines_agree`` holds them to the same
  answers), except one: a request whose Host disagrees with :authority. That rule is
  checked here (``check_request_host``), and a block it refuses resets just that
  stream with PROTOCOL_ERROR (RFC 9113 §8.1.1), as the h2 engine does. What nghttp2
  refuses itself (DEL in values, a bad content-length, a ``:path`` without ``/``, a
  body that disagrees with its Content-Length) it resets per stream too; those are
  counted here. Checking nothing else again saves a Python pass over every block.
* A stream over our MAX_CONCURRENT_STREAMS is refused with RST_STREAM REFUSED_STREAM
  and a decoded header list over MAX_HEADER_LIST reset with ENHANCE_YOUR_CALM, both in
  the C callbacks (``build.py``), the header block still decoded so HPACK stays in step.
* After our graceful GOAWAY nghttp2 ignores newer streams instead of resetting them;
  the client learns from the GOAWAY's last-stream-id that they were not processed.
* One body provider per stream, attached when its head is submitted; an empty buffer
  defers it until ``send_data``/trailers/EOF resume it. Trailers are submitted from the
  provider at EOF, so they never overtake queued DATA.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from peermesh.net.http.h2engine import EngineError, Ev, Event, Header
from peermesh.net.http.h2fast import check_request_host, prepare_outbound
from peermesh.net.http.nghttp2._ng import ffi, lib

# C record tags (build.py)
_H, _D, _E, _R, _C, _W, _S, _G, _P, _X, _I, _T, _N, _F, _RS = range(1, 16)
# EV_FAULT reasons (build.py), as the session's counter names them
_FAULTS = {1: "refused", 2: "headers-too-large"}

SETTINGS_ENABLE_PUSH = 2
SETTINGS_MAX_CONCURRENT_STREAMS = 3
SETTINGS_INITIAL_WINDOW_SIZE = 4
SETTINGS_MAX_FRAME_SIZE = 5
SETTINGS_MAX_HEADER_LIST_SIZE = 6

_NO_ERROR, _PROTOCOL_ERROR, _REFUSED_STREAM, _CANCEL = 0, 1, 7, 8
_ERR_STREAM_CLOSED = -510
_ERR_INVALID_ARGUMENT = -501
_ERR_FATAL_GOAWAY = -505
# nghttp2 rejected a header block or a message (content-length, pseudo-headers): a
# stream error there, a connection error in h2; answered as h2 answers it.
_HTTP_ERRORS = (-531, -532)  # NGHTTP2_ERR_HTTP_HEADER, NGHTTP2_ERR_HTTP_MESSAGING
_DATA_FRAME = 0x0
_OWN_RESETS_MAX = 4096
_BYTES_ONLY = frozenset({bytes})
_TUPLES_ONLY = frozenset({tuple})  # no hpack.NeverIndexedHeaderTuple in the block


def _strerror(code: int) -> str:
    return str(ffi.string(lib.nghttp2_strerror(code)).decode())


class NgError(EngineError):
    """A call into nghttp2 failed (stream closed, bad state, out of memory)."""

    def __init__(self, code: int, what: str = "") -> None:
        self.lib_error = code
        super().__init__(f"{what}: {_strerror(code)} ({code})")


class NgProtocolError(EngineError):
    """The peer broke the protocol; nghttp2 has queued a GOAWAY (send data_to_send())."""

    def __init__(self, code: int, message: str = "") -> None:
        self.lib_error = code
        super().__init__(message or _strerror(code))


class NgEngine:
    """One HTTP/2 connection on libnghttp2, either end, with the shell's limits."""

    def __init__(self, *, client_side: bool, max_concurrent_streams: int = 1000) -> None:
        self.stream_faults: list[str] = []  # streams reset for a fault of their own
        from peermesh.net.http.h2engine import (
            CONNECTION_WINDOW,
            MAX_FRAME,
            MAX_HEADER_LIST,
            STREAM_WINDOW,
        )

        self.client_side = client_side
        # The last block prepare_outbound passed in C, with its blob and never-index mask.
        self._prepared: tuple[list[Header], bytes, int] | None = None
        iv = [
            (SETTINGS_MAX_CONCURRENT_STREAMS, max_concurrent_streams),
            (SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW),
            (SETTINGS_MAX_FRAME_SIZE, MAX_FRAME),
            (SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST),
        ]
        if client_side:
            iv.append((SETTINGS_ENABLE_PUSH, 0))
        civ = ffi.new("nghttp2_settings_entry[]", iv)
        ctx = lib.ng_new(
            0 if client_side else 1,
            civ,
            len(iv),
            CONNECTION_WINDOW,
            MAX_HEADER_LIST,
            max_concurrent_streams,
        )
        if ctx == ffi.NULL:
            raise MemoryError("nghttp2 session")
        self._ctx: Any = ffi.gc(ctx, lib.ng_free)
        self._s: Any = ctx.s
        self._streams: dict[int, Any] = {}  # sid -> ng_stream* (body provider attached)
        self._final_sent: set[int] = set()  # server: streams whose final response went out
        self._want_final: set[int] = set()  # client: streams that got a 1xx, want the final
        self._pending: list[Event] = []  # events produced while sending (stream closes)
        self._out: Any = ffi.new("ng_stream **")
        self._fatal: str | None = None  # reason of a GOAWAY nghttp2 sent on its own
        # Streams reset by us or counted already: any other RST_STREAM(PROTOCOL_ERROR)
        # going out is nghttp2's own verdict on a body, counted when it is sent.
        self._own_resets: set[int] = set()
        self._asked_error = False  # we asked for a non-zero GOAWAY ourselves
        self.goaway_received: int | None = None

    # receiving -----------------------------------------------------------------
    def receive(self, data: bytes) -> list[Event]:
        rv = lib.ng_recv(self._ctx, data, len(data), 1)
        events, errors = self._collect(data)
        if rv < 0:
            raise NgProtocolError(rv, "; ".join(errors) or _strerror(rv))
        if self._fatal is not None:
            # nghttp2 found a connection error; its GOAWAY is already in data_to_send().
            raise NgProtocolError(_ERR_FATAL_GOAWAY, self._fatal)
        return events

    def pop_events(self) -> list[Event]:
        out, self._pending = self._pending, []
        return out

    def _collect(self, data: bytes | None) -> tuple[list[Event], list[str]]:
        ctx = self._ctx
        n = ctx.ev_len
        out = self._pending
        self._pending = []
        errors: list[str] = []
        faulted: set[int] = set()  # streams reset in this batch: later events dropped
        if not n:
            return out, errors
        ev = ffi.unpack(ctx.ev, n)
        arena: bytes = ffi.buffer(ctx.arena, ctx.ar_len)[:] if ctx.ar_len else b""
        hd = ffi.unpack(ctx.hd, ctx.hd_len) if ctx.hd_len else ()
        append = out.append
        try:
            for i in range(0, n, 6):
                t = ev[i]
                sid = ev[i + 1]
                if faulted and sid in faulted and t in (_D, _H, _E):
                    if t == _D:  # its credit goes back to the connection at once
                        lib.ng_consume(ctx, sid, ev[i + 4])
                    continue
                if t == _D:
                    off = ev[i + 3]
                    ln = ev[i + 4]
                    source = data if ev[i + 2] and data is not None else arena
                    append((Ev.DATA, sid, source[off : off + ln], ln))
                elif t == _H:
                    cat = ev[i + 2]
                    end = cat >> 8 != 0
                    cat &= 0xFF
                    j = ev[i + 3] * 4
                    headers = [
                        (arena[hd[k] : hd[k + 1]], arena[hd[k + 2] : hd[k + 3]])
                        for k in range(j, j + ev[i + 4] * 4, 4)
                    ]
                    event = self._headers_event(sid, cat, headers, end)
                    if event is None:
                        faulted.add(sid)
                    else:
                        append(event)
                elif t == _E:
                    append((Ev.END, sid))
                elif t in (_C, _N):
                    self._own_resets.discard(sid)
                    st = self._streams.pop(sid, None)
                    if st is not None:
                        lib.ng_stream_free(ctx, st)
                    self._final_sent.discard(sid)
                    self._want_final.discard(sid)
                    # _N: our request HEADERS never went out (a GOAWAY came first): refused
                    append((Ev.CLOSED, sid, ev[i + 2] if t == _C else _REFUSED_STREAM))
                elif t == _R:
                    append((Ev.RESET, sid, ev[i + 2] & 0xFFFFFFFF))
                elif t == _W:
                    append((Ev.WINDOW, sid, ev[i + 2]))
                elif t == _S:
                    append((Ev.SETTINGS, bool(ev[i + 2])))
                elif t == _G:
                    self.goaway_received = ev[i + 3]
                    off = ev[i + 4]
                    append(
                        (Ev.GOAWAY, ev[i + 2] & 0xFFFFFFFF, ev[i + 3], arena[off : off + ev[i + 5]])
                    )
                elif t == _P:
                    off = ev[i + 4]
                    append((Ev.PING_ACK, arena[off : off + 8]))
                elif t == _T:
                    code = ev[i + 2] & 0xFFFFFFFF
                    off = ev[i + 4]
                    reason = arena[off : off + ev[i + 5]].decode("latin-1")
                    if code != _NO_ERROR and not self._asked_error and self._fatal is None:
                        self._fatal = f"{reason or 'connection error'} (GOAWAY error code {code})"
                elif t == _X:
                    off = ev[i + 4]
                    errors.append(arena[off : off + ev[i + 5]].decode("latin-1"))
                elif t == _I and ev[i + 2] in _HTTP_ERRORS:
                    # nghttp2 has reset the stream (PROTOCOL_ERROR) itself: count it.
                    body = ev[i + 3] == _DATA_FRAME and ev[i + 2] == _HTTP_ERRORS[1]
                    self.stream_faults.append("body-length" if body else "malformed")
                    faulted.add(sid)
                    self._own_resets.add(sid)
                elif t == _F:
                    self.stream_faults.append(_FAULTS.get(ev[i + 2], "malformed"))
                    faulted.add(sid)
                    self._own_resets.add(sid)
                elif t == _RS and ev[i + 2] == _PROTOCOL_ERROR and sid not in self._own_resets:
                    self.stream_faults.append("body-length")
                    faulted.add(sid)
        finally:
            lib.ng_reset_events(ctx)
        return out, errors

    def _headers_event(self, sid: int, cat: int, headers: list[Header], end: bool) -> Event | None:
        """The event for a received header block, or None if it reset the stream."""
        if cat == 0:  # NGHTTP2_HCAT_REQUEST
            if not self._valid_request(sid, headers):
                return None
            return (Ev.REQUEST, sid, headers, end)
        if cat == 1 or (cat == 3 and sid in self._want_final):  # a (final) response
            if headers and headers[0][1][:1] == b"1":
                self._want_final.add(sid)
                return (Ev.INFORMATIONAL, sid, headers)
            self._want_final.discard(sid)
            return (Ev.RESPONSE, sid, headers, end)
        return (Ev.TRAILERS, sid, headers)

    def _valid_request(self, sid: int, headers: list[Header]) -> bool:
        """The Host rule nghttp2 lacks; a request breaking it resets its stream."""
        try:
            check_request_host(headers)
        except EngineError:
            self.stream_faults.append("malformed")
            self._own_resets.add(sid)
            rv = lib.nghttp2_submit_rst_stream(self._s, 0, sid, _PROTOCOL_ERROR)
            if rv:
                raise NgError(rv, "rst_stream") from None
            return False
        return True

    # sending -------------------------------------------------------------------
    def data_to_send(self) -> bytes:
        ctx = self._ctx
        n = lib.ng_drain(ctx)
        if ctx.ev_len:  # stream closes (and the like) happen as frames are serialised
            events, _ = self._collect(None)  # keeps earlier pending ones first
            self._pending = events
        if n < 0:
            raise NgError(n, "mem_send")
        if not n:
            return b""
        ctx.out_len = 0
        return bytes(ffi.buffer(ctx.out, n))

    @property
    def has_output(self) -> bool:
        return self._ctx.out_len > 0 or bool(lib.nghttp2_session_want_write(self._s))

    @property
    def is_closed(self) -> bool:
        s = self._s
        return not lib.nghttp2_session_want_read(s) and not lib.nghttp2_session_want_write(s)

    @staticmethod
    def _blob(headers: Sequence[Header]) -> tuple[bytes, int]:
        """name\\0value\\0... (C marks authorization and short cookies never-indexed)."""
        return b"\0".join([x for h in headers for x in h]), NgEngine._mask(headers)

    @staticmethod
    def _mask(headers: Sequence[Header]) -> int:
        """Bit k set: field k is an ``hpack.NeverIndexedHeaderTuple`` (first 64 fields)."""
        mask = 0
        for k, h in enumerate(headers):
            if type(h) is not tuple and not getattr(h, "indexable", True) and k < 64:
                mask |= 1 << k
        return mask

    def get_next_available_stream_id(self) -> int:
        return int(lib.nghttp2_session_get_next_stream_id(self._s))

    def prepare_outbound(
        self, headers: Iterable[Header], *, response: bool, trailer: bool
    ) -> list[Header]:
        """``h2fast.prepare_outbound``'s answer, checked in C when there is nothing to change.

        The usual block (bytes fields, already normal and valid) is checked in one C pass
        over the blob ``send_headers`` needs anyway, and kept for it; anything else goes to
        ``prepare_outbound``, which normalises it or raises its exact ``ProtocolError``.
        """
        block = list(headers)  # ours alone: send_headers knows it by identity
        flat = [x for h in block for x in h]
        if set(map(type, flat)) <= _BYTES_ONLY and len(flat) == 2 * len(block):
            blob = b"\0".join(flat)
            if not lib.ng_outbound_ready(blob, len(blob), len(block), response, trailer):
                mask = 0 if set(map(type, block)) <= _TUPLES_ONLY else self._mask(block)
                self._prepared = (block, blob, mask)
                return block
        return prepare_outbound(block, response=response, trailer=trailer)

    def send_headers(
        self, stream_id: int, headers: Sequence[Header], end_stream: bool = False
    ) -> None:
        prepared = self._prepared
        if prepared is not None and prepared[0] is headers:
            self._prepared = None
            blob, mask = prepared[1], prepared[2]
        else:
            blob, mask = self._blob(headers)
        ctx = self._ctx
        out = self._out
        if (
            self.client_side
            and stream_id not in self._streams
            and stream_id >= lib.nghttp2_session_get_next_stream_id(self._s)
        ):
            sid = lib.ng_submit_request(ctx, blob, len(blob), mask, end_stream, out)
            if sid < 0:
                raise NgError(sid, "submit_request")
            if sid != stream_id:
                raise NgError(-501, f"stream id {stream_id} is not the next one ({sid})")
            if not end_stream:
                self._streams[sid] = out[0]
            return
        if not self.client_side and stream_id not in self._final_sent:
            informational = bool(headers) and headers[0][1][:1] == b"1"
            if not informational:
                rv = lib.ng_submit_response(ctx, stream_id, blob, len(blob), mask, end_stream, out)
                if rv:
                    raise NgError(rv, "submit_response")
                self._final_sent.add(stream_id)
                if not end_stream:
                    self._streams[stream_id] = out[0]
                return
        st = self._streams.get(stream_id, ffi.NULL)
        rv = lib.ng_submit_headers(ctx, stream_id, st, blob, len(blob), mask, end_stream)
        if rv:
            raise NgError(rv, "submit_headers")

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        st = self._streams.get(stream_id)
        if st is None:
            raise NgError(_ERR_STREAM_CLOSED, f"send_data on stream {stream_id}")
        rv = lib.ng_send_data(self._ctx, st, ffi.from_buffer(data), len(data), end_stream)
        if rv:
            raise NgError(rv, "send_data")

    def end_stream(self, stream_id: int) -> None:
        self.send_data(stream_id, b"", end_stream=True)

    def reset_stream(self, stream_id: int, error_code: int = _CANCEL) -> None:
        """RST_STREAM after what was queued before it, as h2 sends them.

        nghttp2 sends RST_STREAM ahead of queued DATA (and drops a request HEADERS not
        yet sent), so the peer would see a reset without the head and body that preceded
        it. Serialising first keeps the order; the body still buffered is beyond the
        peer's window and is dropped with the stream, as h2 would never have queued it.
        """
        lib.ng_drain(self._ctx)
        if len(self._own_resets) > _OWN_RESETS_MAX:  # ids of streams that never closed
            self._own_resets.clear()
        self._own_resets.add(stream_id)
        rv = lib.nghttp2_submit_rst_stream(self._s, 0, stream_id, int(error_code))
        if rv:
            raise NgError(rv, "rst_stream")

    def acknowledge_received_data(self, acknowledged_size: int, stream_id: int) -> None:
        if acknowledged_size:
            rv = lib.ng_consume(self._ctx, stream_id, acknowledged_size)
            if rv:
                raise NgError(rv, "consume")

    def acknowledge_connection_data(self, acknowledged_size: int) -> None:
        if acknowledged_size:
            rv = lib.nghttp2_session_consume_connection(self._s, acknowledged_size)
            if rv:
                raise NgError(rv, "consume_connection")

    def acknowledge_stream_data(self, acknowledged_size: int, stream_id: int) -> None:
        if acknowledged_size:
            rv = lib.nghttp2_session_consume_stream(self._s, stream_id, acknowledged_size)
            if rv and rv != _ERR_INVALID_ARGUMENT:  # the stream is gone: nothing to return
                raise NgError(rv, "consume_stream")

    def local_flow_control_window(self, stream_id: int) -> int:
        """Bytes we may still queue on the stream (peer window minus our unsent buffer)."""
        return int(lib.ng_send_window(self._ctx, stream_id, self._streams.get(stream_id, ffi.NULL)))

    @property
    def max_outbound_frame_size(self) -> int:
        return int(lib.nghttp2_session_get_remote_settings(self._s, SETTINGS_MAX_FRAME_SIZE))

    @property
    def remote_max_concurrent_streams(self) -> int:
        s = self._s
        return int(lib.nghttp2_session_get_remote_settings(s, SETTINGS_MAX_CONCURRENT_STREAMS))

    def ping(self, opaque_data: bytes) -> None:
        rv = lib.nghttp2_submit_ping(self._s, 0, opaque_data)
        if rv:
            raise NgError(rv, "ping")

    def send_graceful_goaway(self, last_stream_id: int) -> None:
        rv = lib.nghttp2_submit_goaway(self._s, 0, last_stream_id, _NO_ERROR, b"", 0)
        if rv:
            raise NgError(rv, "goaway")

    def close_connection(self, error_code: int = _NO_ERROR) -> None:
        """Hard close: GOAWAY(last processed, code); nghttp2 stops once it is sent."""
        if error_code:
            self._asked_error = True
        rv = lib.nghttp2_session_terminate_session(self._s, int(error_code))
        if rv:
            raise NgError(rv, "terminate")
