"""HTTP/1.1 for the sidecar's own calls to its local app: request bytes out, response
events in (sans-IO).

This used to go through h11, whose generality (both roles, every framing, event
objects validated field by field) cost about a quarter of the inbound agent's CPU per
request. A client that sends one request at a time on a connection and reads one
response needs far less: one regular expression checks a whole header section, and
the body is framed per RFC 9112 §6.3. Anything malformed raises
:class:`BadResponse` (or :class:`BadRequest` for a head we refuse to write) with a
message that says what was wrong; the connection is then not reused.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from peermesh.core.errors import PeermeshError

Header = tuple[bytes, bytes]

MAX_HEAD = 64 << 10  # status line + header section (h11's limit as we configured it)
MAX_CHUNK_LINE = 1024

# RFC 9110 §5.1 / §5.5, as h11 checks them.
_TOKEN = rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
_FIELD_VALUE = rb"(?:[\x21-\x7e\x80-\xff](?:[ \t]*[\x21-\x7e\x80-\xff])*)?"
_HEADER_LINE = re.compile(rb"(" + _TOKEN + rb"):[ \t]*(" + _FIELD_VALUE + rb")[ \t]*")
_TOKEN_RE = re.compile(_TOKEN)
# Whole header sections at once (two regex calls, not two per field). Names are joined
# with LF and values with NUL, which neither may contain: the separator counts prove
# that no field smuggled one in.
_NAMES = re.compile(rb"(?:" + _TOKEN + rb"\n)*" + _TOKEN)
_VALUES = re.compile(rb"(?:" + _FIELD_VALUE + rb"\x00)*" + _FIELD_VALUE)
_SECTION_IN = re.compile(
    rb"(?:"
    + _TOKEN
    + rb":[ \t]*"
    + _FIELD_VALUE
    + rb"[ \t]*)(?:\r\n"
    + _TOKEN
    + rb":[ \t]*"
    + _FIELD_VALUE
    + rb"[ \t]*)*"
)
_VALUE_RE = re.compile(_FIELD_VALUE)
_TARGET_RE = re.compile(rb"[\x21-\x7e]+")
_STATUS_LINE = re.compile(rb"HTTP/(1\.[01]) ([0-9]{3})(?: [\t \x21-\x7e\x80-\xff]*)?")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?")


class BadResponse(PeermeshError):
    """The app's bytes are not a valid HTTP/1.1 response."""

    default_status = 502
    default_code = "bad-response"


class BadRequest(PeermeshError, ValueError):
    """A request head we will not put on the wire (it would not be valid HTTP/1.1)."""

    default_status = 400
    default_code = "bad-request"


def serialize_request(method: bytes, target: bytes, headers: Sequence[Header]) -> bytes:
    """Request line and header section; every name, value and the target are checked."""
    if _TOKEN_RE.fullmatch(method) is None:
        raise BadRequest(f"method {method[:40]!r} is not an HTTP token")
    if _TARGET_RE.fullmatch(target) is None:
        raise BadRequest(f"request target {target[:80]!r} has spaces or control characters")
    if headers:
        names = b"\n".join([n for n, _ in headers])
        values = b"\x00".join([v for _, v in headers])
        if (
            _NAMES.fullmatch(names) is None
            or _VALUES.fullmatch(values) is None
            or names.count(b"\n") != len(headers) - 1
            or values.count(b"\x00") != len(headers) - 1
        ):
            for name, value in headers:  # say which field is wrong
                if _TOKEN_RE.fullmatch(name) is None:
                    raise BadRequest(f"header name {name[:40]!r} is not an HTTP token")
                if _VALUE_RE.fullmatch(value) is None:
                    raise BadRequest(f"header {name.decode('latin-1')} has an invalid value")
            raise BadRequest("header section is not valid HTTP/1.1")  # pragma: no cover
    section = b"".join([b"%s: %s\r\n" % (name, value) for name, value in headers])
    return b"%s %s HTTP/1.1\r\n%s\r\n" % (method, target, section)


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked request body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def last_chunk(trailers: Sequence[Header] | None) -> bytes:
    """The end of a chunked body, with trailers if any."""
    parts = [b"0\r\n"]
    for name, value in trailers or ():
        if _TOKEN_RE.fullmatch(name) is None or _VALUE_RE.fullmatch(value) is None:
            raise BadRequest(f"trailer {name[:40]!r} is not a valid HTTP/1.1 field")
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class ResponseHead:
    status: int
    headers: list[Header]


@dataclass(frozen=True, slots=True)
class EndOfMessage:
    trailers: list[Header]


class NeedData:
    """Marker: feed more bytes (or b"" at end of file)."""


NEED_DATA = NeedData()

_HEAD, _LENGTH, _CHUNK_HEADER, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _UNTIL_CLOSE, _DONE = range(8)


class ResponseReader:
    """Events of one response to a request with ``method``: 1xx heads are skipped, then
    a :class:`ResponseHead`, body ``bytes`` chunks and one :class:`EndOfMessage`."""

    def __init__(self, method: bytes) -> None:
        self._method = method
        self._buf = bytearray()
        self._eof = False
        self._state = _HEAD
        self._remaining = 0
        #: True once the response is complete and the connection may carry another.
        self.keep_alive = True

    @property
    def done(self) -> bool:
        return self._state == _DONE

    @property
    def reusable(self) -> bool:
        """Complete, framed, not asked to close, and nothing left over in the buffer."""
        return self._state == _DONE and self.keep_alive and not self._buf and not self._eof

    def feed(self, data: bytes) -> None:
        if data:
            self._buf += data
        else:
            self._eof = True

    def next_event(self) -> ResponseHead | bytes | EndOfMessage | NeedData:
        while True:
            state = self._state
            if state == _HEAD:
                head = self._head()
                if head is None or isinstance(head, ResponseHead):
                    return NEED_DATA if head is None else head
                continue  # a 1xx: read the next head
            if state == _LENGTH:
                if not self._buf:
                    if self._eof:
                        raise BadResponse(
                            f"the app closed the connection {self._remaining} bytes short of"
                            " its Content-Length"
                        )
                    return NEED_DATA
                return self._take(_DONE)
            if state == _CHUNK_HEADER:
                if not self._chunk_header():
                    return NEED_DATA
                continue
            if state == _CHUNK_DATA:
                if not self._buf:
                    if self._eof:
                        raise BadResponse("the app closed the connection inside a chunk")
                    return NEED_DATA
                return self._take(_CHUNK_END)
            if state == _CHUNK_END:
                if len(self._buf) < 2:
                    if self._eof:
                        raise BadResponse("the app closed the connection inside a chunk")
                    return NEED_DATA
                if self._buf[:2] != b"\r\n":
                    raise BadResponse("chunk data is not followed by CRLF")
                del self._buf[:2]
                self._state = _CHUNK_HEADER
                continue
            if state == _TRAILERS:
                trailers = self._trailers()
                if trailers is None:
                    return NEED_DATA
                self._state = _DONE
                return EndOfMessage(trailers)
            if state == _UNTIL_CLOSE:
                if self._buf:
                    data = bytes(self._buf)
                    self._buf.clear()
                    return data
                if self._eof:
                    self._state = _DONE
                    return EndOfMessage([])
                return NEED_DATA
            if state == _DONE:
                return EndOfMessage([])
            raise AssertionError(state)  # pragma: no cover

    # ------------------------------------------------------------------------------
    def _section(self, what: str) -> bytes | None:
        """Bytes up to the blank line ending a head or trailer section (consumed)."""
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_HEAD:
                raise BadResponse(f"the app's {what} is larger than {MAX_HEAD >> 10} KiB")
            if self._eof:
                raise BadResponse(
                    f"the app closed the connection in the middle of its {what}"
                    if self._buf
                    else "the app closed the connection without answering"
                )
            return None
        if end > MAX_HEAD:
            raise BadResponse(f"the app's {what} is larger than {MAX_HEAD >> 10} KiB")
        section = bytes(self._buf[:end])
        del self._buf[: end + 4]
        return section

    def _head(self) -> ResponseHead | bool | None:
        # Tolerate empty lines before a status line (RFC 9112 §2.2 allows it for requests).
        while self._buf[:2] == b"\r\n":
            del self._buf[:2]
        section = self._section("response head")
        if section is None:
            return None
        status_line, _, block = section.partition(b"\r\n")
        match = _STATUS_LINE.fullmatch(status_line)
        if match is None:
            raise BadResponse(f"invalid status line {status_line[:80]!r}")
        status = int(match.group(2))
        headers = _parse_fields(block, "header")
        if status < 100:
            raise BadResponse(f"invalid status code {status}")
        if 100 <= status < 200:
            if status == 101:
                raise BadResponse("the app switched protocols (101) without being asked to")
            return True  # informational: skip
        if match.group(1) == b"1.0":
            self.keep_alive = False
        framing = self._framing(status, headers)
        self._state = framing
        return ResponseHead(status, headers)

    def _framing(self, status: int, headers: list[Header]) -> int:
        """RFC 9112 §6.3: how the body of this response is delimited."""
        transfer_encoding: bytes | None = None
        lengths: list[bytes] = []
        for name, value in headers:
            if name == b"connection":
                if b"close" in [t.strip().lower() for t in value.split(b",")]:
                    self.keep_alive = False
            elif name == b"transfer-encoding":
                if transfer_encoding is not None:
                    transfer_encoding += b", " + value
                else:
                    transfer_encoding = value
            elif name == b"content-length":
                lengths.extend(v.strip() for v in value.split(b","))
        if self._method == b"HEAD" or status in (204, 304):
            return _DONE
        if transfer_encoding is not None:
            if lengths:
                raise BadResponse("response has both Transfer-Encoding and Content-Length")
            if transfer_encoding.strip().lower() != b"chunked":
                raise BadResponse(
                    f"unsupported Transfer-Encoding {transfer_encoding[:40]!r} (only chunked)"
                )
            return _CHUNK_HEADER
        if lengths:
            if len(set(lengths)) != 1 or not lengths[0].isdigit() or len(lengths[0]) > 18:
                raise BadResponse(f"invalid Content-Length {b', '.join(lengths)[:60]!r}")
            self._remaining = int(lengths[0])
            return _LENGTH if self._remaining else _DONE
        self.keep_alive = False  # the body ends when the app closes the connection
        return _UNTIL_CLOSE

    def _take(self, then: int) -> bytes:
        """What the buffer holds of the bytes the body still owes; state ``then`` once none are."""
        data = bytes(self._buf[: self._remaining])
        del self._buf[: len(data)]
        self._remaining -= len(data)
        if not self._remaining:
            self._state = then
        return data

    def _chunk_header(self) -> bool:
        end = self._buf.find(b"\r\n")
        if end < 0:
            if len(self._buf) > MAX_CHUNK_LINE:
                raise BadResponse("chunk size line is too long")
            if self._eof:
                raise BadResponse("the app closed the connection inside a chunked body")
            return False
        line = bytes(self._buf[:end])
        del self._buf[: end + 2]
        match = _CHUNK_SIZE.fullmatch(line)
        if match is None:
            raise BadResponse(f"invalid chunk size line {line[:40]!r}")
        size = int(match.group(1), 16)
        if size == 0:
            self._state = _TRAILERS
        else:
            self._remaining = size
            self._state = _CHUNK_DATA
        return True

    def _trailers(self) -> list[Header] | None:
        if self._buf[:2] == b"\r\n":
            del self._buf[:2]
            return []
        section = self._section("trailer section")
        if section is None:
            return None
        return _parse_fields(section, "trailer")


def _parse_fields(block: bytes, what: str) -> list[Header]:
    """``name: value`` lines; names lowercased; obs-fold replaced by a space (RFC 9112 §5.2)."""
    if not block:
        return []
    lines = block.split(b"\r\n")
    if _SECTION_IN.fullmatch(block) is not None:  # no folding, every line valid
        fields: list[Header] = []
        for line in lines:
            name, _, value = line.partition(b":")
            fields.append((name.lower(), value.strip(b" \t")))
        return fields
    fields = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if not fields:
                raise BadResponse(f"{what} section starts with a continuation line")
            name, value = fields[-1]
            folded = (value + b" " + line.strip(b" \t")).strip(b" ")
            if _VALUE_RE.fullmatch(folded) is None:
                raise BadResponse(f"invalid folded {what} {name.decode('latin-1')}")
            fields[-1] = (name, folded)
            continue
        match = _HEADER_LINE.fullmatch(line)
        if match is None:
            raise BadResponse(f"invalid {what} line {line[:80]!r}")
        fields.append((match.group(1).lower(), match.group(2)))
    return fields
