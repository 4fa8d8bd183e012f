"""Strict HTTP/1.1 request framing and the request limits the sending agent enforces."""

from __future__ import annotations

import pytest

from peermesh.net.http.h1strict import FramingError, RequestFraming
from peermesh.net.http.headers import (
    MAX_HEADER_LIST_SIZE,
    HeaderError,
    HeadersTooLarge,
    RequestHead,
    fit_request_head,
    h2_list_size,
    h2_request_to_head,
)

GOOD = {
    "pipelined GETs": b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
    "chunked with extension and trailer": b"POST / HTTP/1.1\r\nHost: a\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n0\r\nT: 1\r\n\r\n"
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "content-length": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "leading empty line": b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
}
BAD = {
    "CL and TE": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "obs-fold": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    "bare LF": b"GET / HTTP/1.1\nHost: a\n\n",
    "bare CR": b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
    "chunk size over 2**64": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"10000000000000000\r\nab",
    "bare-LF chunk line": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\nhello\n0\n\n",
    "chunk without CRLF": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhelloX\r\n",
    "invalid chunk size": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\n",
    "TE not ending in chunked": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
    "conflicting lengths": b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    "head too large": b"GET / HTTP/1.1\r\nX: " + b"a" * (70 << 10),
}


def _feed(data: bytes, step: int) -> None:
    framing = RequestFraming()
    for i in range(0, len(data), step):
        framing.feed(data[i : i + step])


@pytest.mark.parametrize("step", [1, 7, 1 << 20])
@pytest.mark.parametrize("name", list(GOOD))
def test_strict_framing_accepts(name, step):
    _feed(GOOD[name], step)


@pytest.mark.parametrize("step", [1, 7, 1 << 20])
@pytest.mark.parametrize("name", list(BAD))
def test_strict_framing_refuses(name, step):
    with pytest.raises(FramingError):
        _feed(BAD[name], step)


def _head(headers: list[tuple[bytes, bytes]]) -> RequestHead:
    return RequestHead(b"GET", b"http", b"orders", b"/", tuple(headers))


def test_header_list_counts_the_http2_field_overhead():
    head = _head([(b"a", b"b")])
    assert h2_list_size(head) == sum(
        len(n) + len(v) + 32
        for n, v in [
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":authority", b"orders"),
            (b":path", b"/"),
            (b"a", b"b"),
        ]
    )
    # 2000 one-byte fields are 70 KB the HTTP/2 way though only 6 KB on an HTTP/1.1 wire.
    with pytest.raises(HeadersTooLarge):
        fit_request_head(_head([(b"x", b"y")] * 2000))
    with pytest.raises(HeadersTooLarge):
        fit_request_head(_head([(b"x-%d" % i, b"y") for i in range(101)]))


def test_cookie_crumbs_travel_joined_when_they_alone_are_too_many():
    crumbs = [(b"cookie", b"c%d=1" % i) for i in range(3000)]
    head = fit_request_head(_head(crumbs))
    assert [n for n, _ in head.headers] == [b"cookie"]
    assert h2_list_size(head) <= MAX_HEADER_LIST_SIZE


def test_host_that_disagrees_with_authority_is_refused():
    block = [(b":method", b"GET"), (b":path", b"/"), (b":authority", b"orders")]
    assert h2_request_to_head([*block, (b"host", b"orders")], client_address=None)
    with pytest.raises(HeaderError):
        h2_request_to_head([*block, (b"host", b"billing")], client_address=None)
