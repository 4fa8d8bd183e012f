"""h1wire: the local-app HTTP/1.1 client's framing, good and bad responses."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peermesh.net.http import h1wire


def _events(raw: bytes, *, method: bytes = b"GET", step: int = 0, eof: bool = True) -> list:
    reader = h1wire.ResponseReader(method)
    pieces = [raw[i : i + step] for i in range(0, len(raw), step)] if step else [raw]
    out: list = []
    for piece in [*pieces, b""] if eof else pieces:
        reader.feed(piece)
        while True:
            event = reader.next_event()
            if event is h1wire.NEED_DATA:
                break
            out.append(event)
            if isinstance(event, h1wire.EndOfMessage):
                return [*out, reader]
    return [*out, reader]


def _body(events: list) -> bytes:
    return b"".join(e for e in events if isinstance(e, bytes))


@pytest.mark.parametrize("step", [0, 1, 7])
def test_content_length_response_in_any_pieces(step):
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
    *events, reader = _events(raw, step=step, eof=False)
    head = events[0]
    assert head == h1wire.ResponseHead(
        200, [(b"content-type", b"text/plain"), (b"content-length", b"5")]
    )
    assert _body(events) == b"hello"
    assert events[-1] == h1wire.EndOfMessage([])
    assert reader.reusable


@pytest.mark.parametrize("step", [0, 1, 5])
def test_chunked_response_with_trailers_and_extensions(step):
    raw = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nGrpc-Status: 0\r\n\r\n"
    )
    *events, reader = _events(raw, step=step, eof=False)
    assert _body(events) == b"hello world"
    assert events[-1] == h1wire.EndOfMessage([(b"grpc-status", b"0")])
    assert reader.reusable


def test_informational_heads_are_skipped_and_bodyless_statuses_end_at_once():
    raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nServer: x\r\n\r\n"
    *events, _ = _events(raw, eof=False)
    assert events[0].status == 204 and events[1] == h1wire.EndOfMessage([])
    *events, _ = _events(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", method=b"HEAD", eof=False)
    assert events[-1] == h1wire.EndOfMessage([])


def test_response_without_framing_reads_until_close_and_is_not_reused():
    *events, reader = _events(b"HTTP/1.1 200 OK\r\n\r\nall of it")
    assert _body(events) == b"all of it"
    assert isinstance(events[-1], h1wire.EndOfMessage)
    assert not reader.reusable


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n",  # extra bytes
    ],
)
def test_connections_that_cannot_carry_another_request_are_not_reused(raw):
    *_, reader = _events(raw, eof=False)
    assert reader.done and not reader.reusable


def test_obsolete_line_folding_becomes_a_space():
    raw = b"HTTP/1.1 200 OK\r\nX-Long: a\r\n  b\r\nContent-Length: 0\r\n\r\n"
    events = _events(raw, eof=False)
    assert (b"x-long", b"a b") in events[0].headers


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"HTTP/1.1 OK\r\n\r\n", "invalid status line"),
        (b"HTTP/2 200 OK\r\n\r\n", "invalid status line"),
        (b"garbage\r\n\r\n", "invalid status line"),
        (b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n", "invalid header line"),
        (b"HTTP/1.1 200 OK\r\nX: a\x01b\r\n\r\n", "invalid header line"),
        (b"HTTP/1.1 200 OK\r\n: x\r\n\r\n", "invalid header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            "both Transfer-Encoding and Content-Length",
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "unsupported Transfer-Encoding"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n", "CRLF"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "short of its Content-Length"),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "switched protocols"),
        (b"HTTP/1.1 200 OK\r\nX: y", "middle of its response head"),
        (b"", "without answering"),
    ],
)
def test_malformed_responses_get_a_clear_error(raw, why):
    with pytest.raises(h1wire.BadResponse, match=why):
        _events(raw)


def test_oversized_head_is_refused():
    raw = b"HTTP/1.1 200 OK\r\n" + b"X: " + b"a" * (h1wire.MAX_HEAD + 10)
    with pytest.raises(h1wire.BadResponse, match="larger than"):
        _events(raw, eof=False)


def test_requests_are_serialised_and_checked():
    wire = h1wire.serialize_request(b"GET", b"/a?b=1", [(b"host", b"orders"), (b"x-a", b"1 2")])
    assert wire == b"GET /a?b=1 HTTP/1.1\r\nhost: orders\r\nx-a: 1 2\r\n\r\n"
    for method, target, headers in [
        (b"G ET", b"/", []),
        (b"GET", b"/a b", []),
        (b"GET", b"/", [(b"bad name", b"x")]),
        (b"GET", b"/", [(b"x", b"a\r\nInjected: 1")]),
        (b"GET", b"/", [(b"x", b" padded")]),
    ]:
        with pytest.raises(h1wire.BadRequest):
            h1wire.serialize_request(method, target, headers)
    assert h1wire.chunk(b"abc") == b"3\r\nabc\r\n"
    assert h1wire.last_chunk([(b"grpc-status", b"0")]) == b"0\r\ngrpc-status: 0\r\n\r\n"


_FIELD_BYTES = st.binary(max_size=12) | st.sampled_from(
    [b"x", b"a b", b"\x00", b"a\r\nb: c", b"a\nb", b": ", b"x: y", b" v", b"v\t", b"\xff"]
)


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.tuples(_FIELD_BYTES, _FIELD_BYTES), max_size=4))
def test_request_serialiser_refuses_exactly_the_invalid_fields(headers):
    token = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
    value = re.compile(rb"(?:[\x21-\x7e\x80-\xff](?:[ \t]*[\x21-\x7e\x80-\xff])*)?")
    valid = all(token.fullmatch(n) and value.fullmatch(v) for n, v in headers)
    try:
        wire = h1wire.serialize_request(b"GET", b"/", headers)
    except h1wire.BadRequest:
        assert not valid
    else:
        assert valid
        assert wire.count(b"\r\n") == len(headers) + 2  # nothing smuggled a line in


_LINES = st.sampled_from(
    [b"a: b", b"A-B:c", b"x:  y  ", b"x:\t", b"bad name: v", b"x: a\rb", b" folded", b"y: \xff",
     b"k: v: w", b":v", b"x: a\nb", b"z: 1 2"]
)  # fmt: skip


@settings(max_examples=800, deadline=None)
@given(st.lists(_LINES | st.binary(max_size=10), min_size=1, max_size=5))
def test_header_section_fast_path_agrees_with_the_line_by_line_parser(lines):
    block = b"\r\n".join(lines)
    if h1wire._SECTION_IN.fullmatch(block) is None:
        return  # the line-by-line parser handles it (and its errors)
    expected = []
    for line in block.split(b"\r\n"):
        match = h1wire._HEADER_LINE.fullmatch(line)
        assert match is not None
        expected.append((match.group(1).lower(), match.group(2)))
    assert h1wire._parse_fields(block, "header") == expected
