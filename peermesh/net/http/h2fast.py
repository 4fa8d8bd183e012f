"""Per-header-block work for HTTP/2, done in one pass instead of h2/hpack's pipelines.

Profiles of two agents put about a third of each request's CPU in header handling:
``hpack.Encoder`` scans its dynamic table linearly for every field and Huffman-codes
every literal bit by bit, and h2 validates each received block through a chain of nine
generators. This module holds drop-in equivalents, used by ``h2session``:

* :class:`FastEncoder` is an RFC 7541 encoder with the interface h2 uses
  (``encode()``, ``header_table_size``). The dynamic table is indexed by dicts, so a
  lookup costs the same whatever the table holds. Fields whose value is new on every
  request (request ids, trace context) are sent as literals *without indexing*: adding
  them would only evict fields that do repeat. Indexed literals are Huffman-coded
  (paid once per entry); one-off literals are not, which saves the peer the decoding
  too. ``authorization``, ``proxy-authorization`` and short cookies are never indexed
  (h2's ``_secure_headers`` rule, which we take over since we skip its normalisation).
* :func:`check_received` raises the same ``ProtocolError`` (same messages) as h2's
  ``validate_headers`` for a received block, in one loop.
* :func:`prepare_outbound` does what h2's outbound normalisation + validation do to a
  block we send (drop connection-specific fields, lowercase names, reject what h2
  would reject) in one loop.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import hpack
from h2.exceptions import ProtocolError
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.huffman_table import decode_huffman
from hpack.struct import NeverIndexedHeaderTuple
from hpack.table import HeaderTable

Header = tuple[bytes, bytes]

# --- HPACK encoding -------------------------------------------------------------------

_STATIC_PAIR: dict[Header, int] = {}
_STATIC_NAME: dict[bytes, int] = {}
for _i, (_n, _v) in enumerate(HeaderTable.STATIC_TABLE, 1):
    _STATIC_PAIR.setdefault((_n, _v), _i)
    _STATIC_NAME.setdefault(_n, _i)
_STATIC_LEN = len(HeaderTable.STATIC_TABLE)
_ENTRY_OVERHEAD = 32  # RFC 7541 §4.1

#: Values that differ on every request: indexing them would only evict useful entries.
NOT_INDEXED = frozenset(
    {
        b"x-request-id",
        b"traceparent",
        b"tracestate",
        b"b3",
        b"x-b3-traceid",
        b"x-b3-spanid",
        b"x-b3-parentspanid",
        b"grpc-trace-bin",
    }
)
#: Fields that may carry credentials: never indexed, anywhere on the path (RFC 7541 §7.1.3).
_SECURE = frozenset({b"authorization", b"proxy-authorization"})

_HUFFMAN = [(REQUEST_CODES[i], REQUEST_CODES_LENGTH[i]) for i in range(256)]
_HUFFMAN_CACHE_LIMIT = 2048
#: The most dynamic-table memory our encoder uses per connection (nghttp2's default).
MAX_ENCODER_TABLE = 4096


def huffman_encode(data: bytes) -> bytes:
    """RFC 7541 Appendix B Huffman code of ``data``, padded with ones.

    Whole bytes leave the accumulator as soon as it holds 64 bits or more, so it never
    grows with the value: shifting one big integer would make a long value quadratic.
    """
    out = bytearray()
    acc = 0
    bits = 0
    table = _HUFFMAN
    for byte in data:
        code, length = table[byte]
        acc = (acc << length) | code
        bits += length
        if bits >= 64:
            keep = bits & 7
            out += (acc >> keep).to_bytes((bits - keep) >> 3, "big")
            acc &= (1 << keep) - 1
            bits = keep
    pad = -bits % 8
    acc = (acc << pad) | ((1 << pad) - 1)
    out += acc.to_bytes((bits + pad) >> 3, "big")
    return bytes(out)


_INDEXED = [bytes((0x80 | i,)) for i in range(127)]  # indexed field, index < 127


def encode_integer(value: int, prefix_bits: int, flags: int) -> bytes:
    """RFC 7541 §5.1 integer with ``flags`` in the bits above the prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((flags | value,))
    out = bytearray((flags | limit,))
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class FastEncoder:
    """An HPACK encoder with dict-indexed dynamic table (drop-in for ``hpack.Encoder``)."""

    def __init__(self) -> None:
        self._maxsize = 4096
        self._size = 0
        # Newest entry on the left; each remembers its insertion number.
        self._entries: deque[tuple[bytes, bytes, int, int]] = deque()
        self._inserted = 0  # insertion number of the newest entry
        self._by_pair: dict[Header, int] = {}
        self._by_name: dict[bytes, int] = {}
        self._huffman_cache: dict[bytes, bytes] = {}
        self.table_size_changes: list[int] = []

    # h2 sets this when the peer's SETTINGS_HEADER_TABLE_SIZE changes.
    @property
    def header_table_size(self) -> int:
        return self._maxsize

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        # The peer's SETTINGS_HEADER_TABLE_SIZE is a ceiling, not an order (RFC 7541
        # §4.2): we never keep more than MAX_ENCODER_TABLE, whatever it announces.
        value = min(int(value), MAX_ENCODER_TABLE)
        if value == self._maxsize:
            return
        self._maxsize = value
        self._evict()
        self.table_size_changes.append(value)

    def encode(self, headers: Iterable[Any], huffman: bool = True) -> bytes:
        """One header block; ``huffman`` is accepted for compatibility (see the module doc)."""
        parts: list[bytes] = []
        if self.table_size_changes:
            for size in self.table_size_changes:
                parts.append(encode_integer(size, 5, 0x20))
            self.table_size_changes = []
        static_pair = _STATIC_PAIR
        by_pair = self._by_pair
        for header in headers:
            name = header[0]
            value = header[1]
            if type(name) is not bytes:
                name = str(name).encode("utf-8")
            if type(value) is not bytes:
                value = str(value).encode("utf-8")
            if type(header) is tuple:
                sensitive = len(header) > 2 and bool(header[2])
            else:
                sensitive = not getattr(header, "indexable", True)
            if name in _SECURE or (name == b"cookie" and len(value) < 20):
                sensitive = True
            pair = (name, value)
            if not sensitive:
                index = static_pair.get(pair)
                if index is None:
                    seq = by_pair.get(pair)
                    if seq is not None:
                        index = _STATIC_LEN + 1 + self._inserted - seq
                if index is not None:
                    parts.append(_INDEXED[index] if index < 127 else encode_integer(index, 7, 0x80))
                    continue
            index = _STATIC_NAME.get(name, 0)
            if not index:
                seq = self._by_name.get(name)
                if seq is not None:
                    index = _STATIC_LEN + 1 + self._inserted - seq
            size = len(name) + len(value) + _ENTRY_OVERHEAD
            if sensitive:
                prefix = encode_integer(index, 4, 0x10)
                indexing = False
            elif name in NOT_INDEXED or size > self._maxsize // 2:
                prefix = encode_integer(index, 4, 0x00)
                indexing = False
            else:
                prefix = encode_integer(index, 6, 0x40)
                indexing = True
            parts.append(prefix)
            if not index:
                parts.append(self._string(name, indexing))
            parts.append(self._string(value, indexing))
            if indexing:
                self._add(name, value, size)
        return b"".join(parts)

    def _string(self, data: bytes, huffman: bool) -> bytes:
        if not huffman:
            return encode_integer(len(data), 7, 0x00) + data
        coded = self._huffman_cache.get(data)
        if coded is None:
            coded = huffman_encode(data)
            if len(self._huffman_cache) >= _HUFFMAN_CACHE_LIMIT:
                self._huffman_cache.clear()
            self._huffman_cache[data] = coded
        if len(coded) >= len(data):
            return encode_integer(len(data), 7, 0x00) + data
        return encode_integer(len(coded), 7, 0x80) + coded

    def _add(self, name: bytes, value: bytes, size: int) -> None:
        self._inserted += 1
        seq = self._inserted
        self._entries.appendleft((name, value, size, seq))
        self._by_pair[(name, value)] = seq
        self._by_name[name] = seq
        self._size += size
        self._evict()

    def _evict(self) -> None:
        # Oldest first: when the evicted entry is the newest of its name (or pair), no
        # other entry with that name (or pair) is left, so the maps drop it.
        while self._size > self._maxsize and self._entries:
            name, value, size, seq = self._entries.pop()
            self._size -= size
            if self._by_pair.get((name, value)) == seq:
                del self._by_pair[(name, value)]
            if self._by_name.get(name) == seq:
                del self._by_name[name]


# --- header block checks ---------------------------------------------------------------

CONNECTION_HEADERS = frozenset(
    {b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade"}
)
_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path", b":status", b":protocol"})
_REQUEST_ONLY = frozenset({b":scheme", b":path", b":authority", b":method", b":protocol"})
_BAD_NAME = re.compile(rb"[^\x21-\x40\x5b-\x7e]")
_BAD_VALUE = re.compile(rb"[\x00\n\r]")


def _check_name(name: bytes) -> None:
    bad = _BAD_NAME.search(name)
    if bad is not None:
        # Same first offender, same message as h2's byte loop.
        c = bad.group()[0]
        if 0x41 <= c <= 0x5A:
            raise ProtocolError(f"Received uppercase header name {name!r}.")
        raise ProtocolError(f"Illegal character '{chr(c)}' in header name: {name!r}")
    if name.find(b":", 1) != -1:
        raise ProtocolError(f"Illegal character ':' in header name: {name!r}")


def _check_value(value: bytes) -> None:
    bad = _BAD_VALUE.search(value)
    if bad is not None:
        raise ProtocolError(f"Illegal character '{chr(bad.group()[0])}' in header value: {value!r}")
    first, last = value[0], value[-1]
    if first == 0x20 or first == 0x09 or last == 0x20 or last == 0x09:
        raise ProtocolError(f"Received header value surrounded by whitespace {value!r}")


def _check_pseudo(
    pseudo: set[bytes], method: bytes | None, *, response: bool, trailer: bool
) -> None:
    """h2's ``_check_pseudo_header_field_acceptability``, same messages."""
    if trailer and pseudo:
        raise ProtocolError(f"Received pseudo-header in trailer {pseudo}")
    if response:
        if b":status" not in pseudo:
            raise ProtocolError("Header block missing mandatory b':status' header")
        invalid = pseudo & _REQUEST_ONLY
        if invalid:
            raise ProtocolError(f"Encountered request-only headers {invalid}")
    elif not trailer:
        if b":method" not in pseudo:
            raise ProtocolError("Header block missing mandatory b':method' header")
        is_connect = method == b"CONNECT"
        extended = is_connect and b":protocol" in pseudo
        if is_connect and not extended:
            if b":scheme" in pseudo or b":path" in pseudo:
                raise ProtocolError("Ordinary CONNECT MUST NOT include :scheme or :path")
        else:
            for required in (b":scheme", b":path"):
                if required not in pseudo:
                    raise ProtocolError(f"Header block missing mandatory {required!r} header")
        if b":status" in pseudo:
            raise ProtocolError(f"Encountered response-only headers { {b':status'} }")
        if not is_connect and b":protocol" in pseudo:
            raise ProtocolError(f"Encountered connect-request-only headers { {b':protocol'}!r}")


def check_received(headers: Sequence[Header], *, response: bool, trailer: bool) -> None:
    """Raise ``ProtocolError`` where h2's ``validate_headers`` would (RFC 9113 §8.2, §8.3).

    ``response`` is h2's ``is_response_header`` (a response's first block, not its
    trailers); ``trailer`` marks trailers of either direction.
    """
    pseudo: set[bytes] = set()
    seen_regular = False
    method: bytes | None = None
    authority: bytes | None = None
    host: bytes | None = None
    request = not response and not trailer
    for header in headers:
        name = header[0]
        value = header[1]
        _check_name(name)
        if value:
            _check_value(value)
        if not name:
            raise ProtocolError("Received header name with zero length.")
        if name[0] == 0x3A:  # ":"
            if name in pseudo:
                raise ProtocolError(f"Received duplicate pseudo-header field {name!r}")
            pseudo.add(name)
            if seen_regular:
                raise ProtocolError(f"Received pseudo-header field out of sequence: {name!r}")
            if name not in _PSEUDO:
                raise ProtocolError(f"Received custom pseudo-header field {name!r}")
            if name == b":method":
                method = value
            elif request and name == b":authority":
                authority = value
            elif request and name == b":path" and not value:
                raise ProtocolError("An empty :path header is forbidden")
        else:
            seen_regular = True
            if name == b"te" and value.lower() != b"trailers":
                raise ProtocolError(f"Invalid value for TE header: {value!r}")
            if name in CONNECTION_HEADERS:
                raise ProtocolError(f"Connection-specific header field present: {name!r}.")
            if request and name == b"host":
                if host is not None:
                    raise ProtocolError("Request header block has multiple Host headers.")
                host = value
    _check_pseudo(pseudo, method, response=response, trailer=trailer)
    if request:
        _check_authority(authority, host)


def check_request_host(headers: Sequence[Header]) -> None:
    """The request rule of ``check_received`` that libnghttp2 does not enforce itself:
    one Host at most, agreeing with :authority, and at least one of the two."""
    authority: bytes | None = None
    host: bytes | None = None
    for name, value in headers:
        if name == b":authority":
            authority = value
        elif name == b"host":
            if host is not None:
                raise ProtocolError("Request header block has multiple Host headers.")
            host = value
    _check_authority(authority, host)


def _check_authority(authority: bytes | None, host: bytes | None) -> None:
    if authority is None and host is None:
        raise ProtocolError("Request header block does not have an :authority or Host header.")
    if authority is not None and host is not None and authority != host:
        raise ProtocolError(
            "Request header block has mismatched :authority and "
            f"Host headers: {authority!r} / {host!r}"
        )


def _has_line_break_or_nul(field: bytes) -> bool:
    return b"\0" in field or b"\r" in field or b"\n" in field


def prepare_outbound(headers: Iterable[Header], *, response: bool, trailer: bool) -> list[Header]:
    """A block we are about to send, as h2's outbound normalisation + validation leave it.

    Names are lowercased, surrounding whitespace stripped and connection-specific fields
    dropped (h2's normalisation); then a malformed block raises ``ProtocolError`` (h2's
    outbound validation: TE, pseudo-header order and set, Host vs :authority, :path).
    Sensitive fields are marked never-indexed by :class:`FastEncoder` itself.
    """
    out: list[Header] = []
    pseudo: set[bytes] = set()
    seen_regular = False
    method: bytes | None = None
    authority: bytes | None = None
    host: bytes | None = None
    request = not response and not trailer
    for header in headers:
        name = header[0]
        value = header[1]
        if type(name) is not bytes:
            name = str(name).encode("utf-8")
        if type(value) is not bytes:
            value = str(value).encode("utf-8")
        lowered = name.lower()
        if lowered != name:
            name = lowered
        if value and (value[0] in b" \t\r\n\x0b\x0c" or value[-1] in b" \t\r\n\x0b\x0c"):
            value = value.strip()
        if name and (name[0] in b" \t\r\n\x0b\x0c" or name[-1] in b" \t\r\n\x0b\x0c"):
            name = name.strip()
        if name in CONNECTION_HEADERS:
            continue
        if not name:  # h2 itself fails with an IndexError here
            raise ProtocolError("Header name with zero length.")
        if _has_line_break_or_nul(name) or _has_line_break_or_nul(value):
            # RFC 9113 8.2.1 forbids them in any field. Neither h2 nor nghttp2 refuses
            # them outbound, and nghttp2's name\0value blob would split at a NUL.
            raise ProtocolError(f"Header field {name!r} contains NUL, CR or LF.")
        if name[0] == 0x3A:
            if name in pseudo:
                raise ProtocolError(f"Received duplicate pseudo-header field {name!r}")
            pseudo.add(name)
            if seen_regular:
                raise ProtocolError(f"Received pseudo-header field out of sequence: {name!r}")
            if name not in _PSEUDO:
                raise ProtocolError(f"Received custom pseudo-header field {name!r}")
            if name == b":method":
                method = value
            elif request and name == b":authority":
                authority = value
            elif request and name == b":path" and not value:
                raise ProtocolError("An empty :path header is forbidden")
        else:
            seen_regular = True
            if name == b"te" and value.lower() != b"trailers":
                raise ProtocolError(f"Invalid value for TE header: {value!r}")
            if request and name == b"host":
                if host is not None:
                    raise ProtocolError("Request header block has multiple Host headers.")
                host = value
        if isinstance(header, NeverIndexedHeaderTuple):
            out.append(NeverIndexedHeaderTuple(name, value))
        else:
            out.append((name, value))
    _check_pseudo(pseudo, method, response=response, trailer=trailer)
    if request:
        _check_authority(authority, host)
    return out


# --- HPACK decoding --------------------------------------------------------------------


class FastDecoder(hpack.Decoder):
    """``hpack.Decoder`` with a tighter ``decode(raw=True)`` loop (what h2 calls).

    The header table, Huffman decoding and every limit are hpack's own; only the
    per-field dispatch is inlined (no memoryview slices, per-field objects or debug
    log calls). Errors are hpack's exception types, so h2 maps them as before.
    """

    def decode(self, data: bytes, raw: bool = False) -> Any:
        if not raw:
            return super().decode(data, raw)
        if not isinstance(data, bytes):
            data = bytes(data)
        table = self.header_table
        get = table.get_by_index
        limit = self.max_header_list_size
        headers: list[Any] = []
        size = 0
        pos = 0
        end = len(data)
        while pos < end:
            first = data[pos]
            if first & 0x80:  # indexed field
                index, pos = _decode_int(data, pos, 7)
                name, value = get(index)
                headers.append((name, value))
            elif first & 0x40 or not first & 0x20:  # literal (with or without indexing)
                if first & 0x40:
                    index, pos = _decode_int(data, pos, 6)
                    never = False
                else:
                    index, pos = _decode_int(data, pos, 4)
                    never = bool(first & 0x10)
                if index:
                    name = get(index)[0]
                else:
                    name, pos = _decode_string(data, pos)
                value, pos = _decode_string(data, pos)
                if first & 0x40:
                    table.add(name, value)
                headers.append(NeverIndexedHeaderTuple(name, value) if never else (name, value))
            else:  # dynamic table size update: only before the first field
                if headers:
                    raise hpack.HPACKDecodingError(
                        "Table size update not at the start of the block"
                    )
                new_size, pos = _decode_int(data, pos, 5)
                if new_size > self.max_allowed_table_size:
                    raise hpack.InvalidTableSizeError("Encoder exceeded max allowable table size")
                self.header_table_size = new_size
                continue
            size += len(name) + len(value) + _ENTRY_OVERHEAD
            if size > limit:
                raise hpack.OversizedHeaderListError(
                    f"A header list larger than {limit} has been received"
                )
        if self.header_table_size > self.max_allowed_table_size:
            raise hpack.InvalidTableSizeError("Encoder did not shrink table size to within the max")
        return headers


_VARINT_MAX_LENGTH = 5  # continuation octets, as hpack allows


def _decode_int(data: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
    """RFC 7541 §5.1 integer at ``pos``; returns it and the position after it."""
    mask = (1 << prefix_bits) - 1
    number = data[pos] & mask
    pos += 1
    if number < mask:
        return number, pos
    shift = 0
    for _ in range(_VARINT_MAX_LENGTH):
        if pos >= len(data):
            raise hpack.HPACKDecodingError("Unable to decode HPACK integer: truncated")
        byte = data[pos]
        pos += 1
        number += (byte & 0x7F) << shift
        if byte < 0x80:
            return number, pos
        shift += 7
    raise hpack.HPACKDecodingError("Variable integer representation is too long")


def _decode_string(data: bytes, pos: int) -> tuple[bytes, int]:
    if pos >= len(data):
        raise hpack.HPACKDecodingError("Truncated header block")
    huffman = data[pos] & 0x80
    length, pos = _decode_int(data, pos, 7)
    stop = pos + length
    if stop > len(data):
        raise hpack.HPACKDecodingError("Truncated header block")
    raw = data[pos:stop]
    return (decode_huffman(raw) if huffman else raw), stop
