"""Strict HTTP/1.1 request framing, checked on the raw bytes before h11 parses them.

h11 is lenient where RFC 9112 allows a recipient to be: it accepts bare LF line ends,
unfolds obs-fold, takes Transfer-Encoding over Content-Length when both are present and
reads chunk sizes of up to 20 hex digits. Each leniency is a request-smuggling shape
when another parser on the path is less lenient, so a proxy refuses all of them
(RFC 9112 §2.2, §5.2, §6.1, §6.3, §7.1). :class:`RequestFraming` follows the same bytes
h11 is fed, frames each request itself and raises :class:`FramingError` at the first
byte that is not strict HTTP/1.1; the server answers 400 and closes.
"""

from __future__ import annotations

import enum
import re

from peermesh.core.errors import TransportError

MAX_HEAD = 64 << 10
MAX_CHUNK_LINE = 4096
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?")


class FramingError(TransportError):
    """The request is not strictly framed HTTP/1.1."""


class HeadTooLarge(FramingError):
    """The request head (or trailer section) is over ``MAX_HEAD``: answered 431."""


class _State(enum.Enum):
    HEAD = "head"
    BODY = "body"
    CHUNK_SIZE = "chunk-size"
    CHUNK_DATA = "chunk-data"
    CHUNK_CRLF = "chunk-crlf"
    TRAILERS = "trailers"
    PASSTHROUGH = "passthrough"  # CONNECT or Upgrade: no longer HTTP/1.1 after the head


class RequestFraming:
    """Follows a request stream byte by byte (bounded state) and refuses loose framing."""

    def __init__(self) -> None:
        self._state = _State.HEAD
        self._buf = bytearray()
        self._remaining = 0

    def feed(self, data: bytes) -> None:
        """Check ``data`` (the next bytes from the client); raises FramingError."""
        view = memoryview(data)
        while view and self._state is not _State.PASSTHROUGH:
            if self._state is _State.BODY or self._state is _State.CHUNK_DATA:
                take = min(self._remaining, len(view))
                self._remaining -= take
                view = view[take:]
                if not self._remaining:
                    self._state = (
                        _State.CHUNK_CRLF if self._state is _State.CHUNK_DATA else _State.HEAD
                    )
                    if self._state is _State.CHUNK_CRLF:
                        self._buf.clear()
                continue
            # Line-oriented states: take up to the next LF.
            end = bytes(view[:MAX_HEAD]).find(b"\n")
            if end < 0:
                self._buf += view
                view = view[len(view) :]
                self._check_partial()
                return
            self._buf += view[: end + 1]
            view = view[end + 1 :]
            self._line_done()

    def _check_partial(self) -> None:
        limit = MAX_HEAD if self._state is _State.HEAD or self._state is _State.TRAILERS else 0
        if self._state is _State.CHUNK_SIZE and len(self._buf) > MAX_CHUNK_LINE:
            raise FramingError("chunk size line is too long")
        if self._state is _State.CHUNK_CRLF and len(self._buf) > 2:
            raise FramingError("chunk data is not followed by CRLF")
        if limit and len(self._buf) > limit:
            raise HeadTooLarge(f"request head is larger than {MAX_HEAD >> 10} KiB")

    def _line_done(self) -> None:
        """``self._buf`` ends with LF: one more line of the current state."""
        buf = self._buf
        if buf[-2:-1] != b"\r":
            raise FramingError("bare LF line ending (RFC 9112 §2.2)")
        if self._state is _State.CHUNK_CRLF:
            if buf != b"\r\n":
                raise FramingError("chunk data is not followed by CRLF")
            buf.clear()
            self._state = _State.CHUNK_SIZE
            return
        if self._state is _State.CHUNK_SIZE:
            match = _CHUNK_SIZE.fullmatch(bytes(buf[:-2]))
            if match is None:
                raise FramingError(f"invalid chunk size line {bytes(buf[:40])!r}")
            size = int(match.group(1), 16)
            buf.clear()
            if size:
                self._remaining = size
                self._state = _State.CHUNK_DATA
            else:
                self._state = _State.TRAILERS
            return
        if self._state is _State.TRAILERS:
            if buf == b"\r\n":
                self._state = _State.HEAD
            else:
                self._check_line(first=False)
            buf.clear()
            return
        if len(buf) > MAX_HEAD:
            raise HeadTooLarge(f"request head is larger than {MAX_HEAD >> 10} KiB")
        if buf == b"\r\n":
            buf.clear()  # empty lines before a request line are ignored (§2.2)
            return
        if buf.endswith(b"\r\n\r\n"):
            self._head_done()
            return
        self._check_line(first=buf.find(b"\n") == len(buf) - 1)

    def _check_line(self, *, first: bool) -> None:
        """The line that just ended (the tail of the buffer, CRLF included)."""
        line = self._buf[self._buf.rfind(b"\n", 0, len(self._buf) - 1) + 1 :]
        if b"\r" in line[:-2]:
            raise FramingError("bare CR in the request head (RFC 9112 §2.2)")
        if not first and line[:1] in (b" ", b"\t"):
            raise FramingError("obs-fold line folding in the request head (RFC 9112 §5.2)")

    def _head_done(self) -> None:
        head = bytes(self._buf[:-4])
        self._buf.clear()
        lines = head.split(b"\r\n")
        method = lines[0].split(b" ", 1)[0]
        lengths: list[bytes] = []
        codings: list[bytes] = []
        upgrade = False
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise FramingError("header line without a colon")
            name = name.lower()
            value = value.strip(b" \t")
            if name == b"content-length":
                lengths.append(value)
            elif name == b"transfer-encoding":
                codings += [c.strip(b" \t").lower() for c in value.split(b",")]
            elif name == b"upgrade":
                upgrade = True
        if method == b"CONNECT" or upgrade:
            self._state = _State.PASSTHROUGH
            return
        if codings and lengths:
            raise FramingError("request has both Transfer-Encoding and Content-Length (§6.1)")
        if codings:
            if codings[-1] != b"chunked" or codings.count(b"chunked") != 1:
                raise FramingError("Transfer-Encoding of a request must end in chunked (§6.3)")
            self._state = _State.CHUNK_SIZE
            return
        if lengths:
            values = set(lengths)
            if len(values) != 1 or not next(iter(values)).isdigit() or len(lengths[0]) > 18:
                raise FramingError(f"invalid Content-Length {b', '.join(lengths)[:60]!r}")
            self._remaining = int(lengths[0])
            if self._remaining:
                self._state = _State.BODY
