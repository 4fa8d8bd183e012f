"""HTTP/1.1 <-> HTTP/2 header translation (pure functions)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peermesh.net.http.headers import (
    HeaderError,
    destination_service,
    h1_request_to_head,
    h2_request_to_head,
    head_to_h1,
    head_to_h2,
    join_cookies,
    response_to_h1,
    split_cookies,
    strip_hop_by_hop,
)


@pytest.mark.parametrize(
    ("authority", "service"),
    [
        (b"orders", "orders"),
        (b"orders:80", "orders"),
        (b"orders.mesh", "orders"),
        (b"Orders.MESH:8080", "orders"),
        (b"orders.default.svc.cluster.local", "orders"),
    ],
)
def test_destination_service(authority, service):
    assert destination_service(authority) == service


@pytest.mark.parametrize("authority", [b"", b"[::1]:80", b"bad name", b"a/b"])
def test_destination_service_refuses(authority):
    with pytest.raises(HeaderError):
        destination_service(authority)


def test_strip_hop_by_hop_drops_connection_named_and_keeps_te_trailers():
    headers = [
        (b"connection", b"close, x-secret"),
        (b"x-secret", b"1"),
        (b"keep-alive", b"timeout=5"),
        (b"proxy-authorization", b"x"),
        (b"proxy-connection", b"keep-alive"),
        (b"transfer-encoding", b"chunked"),
        (b"upgrade", b"websocket"),
        (b"te", b"trailers, deflate"),
        (b"x-kept", b"yes"),
    ]
    assert strip_hop_by_hop(headers) == [(b"te", b"trailers"), (b"x-kept", b"yes")]
    assert strip_hop_by_hop([(b"te", b"deflate")]) == []


def test_h1_origin_and_absolute_form():
    origin = h1_request_to_head(
        b"get",
        b"/a?b=1",
        [(b"host", b"orders"), (b"cookie", b"a=1; b=2")],
        client_address="10.0.0.1",
    )
    assert (origin.method, origin.authority, origin.path) == (b"GET", b"orders", b"/a?b=1")
    assert origin.header(b"x-forwarded-for") == b"10.0.0.1"
    assert origin.header(b"x-request-id")
    assert [v for n, v in origin.headers if n == b"cookie"] == [b"a=1", b"b=2"]
    absolute = h1_request_to_head(
        b"GET", b"http://payments:80/x?y", [(b"host", b"ignored")], client_address=None
    )
    assert (absolute.authority, absolute.path) == (b"payments:80", b"/x?y")


def test_existing_request_id_and_xff_are_kept_and_appended():
    head = h1_request_to_head(
        b"GET",
        b"/",
        [(b"host", b"o"), (b"x-request-id", b"abc"), (b"x-forwarded-for", b"1.2.3.4")],
        client_address="127.0.0.1",
    )
    assert head.header(b"x-request-id") == b"abc"
    assert head.header(b"x-forwarded-for") == b"1.2.3.4, 127.0.0.1"


def test_h1_refuses_missing_host_and_connect():
    with pytest.raises(HeaderError, match="no Host"):
        h1_request_to_head(b"GET", b"/", [], client_address=None)
    with pytest.raises(HeaderError, match="CONNECT"):
        h1_request_to_head(b"CONNECT", b"orders:443", [(b"host", b"orders")], client_address=None)


def test_h2_round_trip_and_h1_rendering():
    head = h2_request_to_head(
        [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":authority", b"orders"),
            (b":path", b"/p"),
            (b"cookie", b"a=1"),
            (b"cookie", b"b=2"),
            (b"te", b"trailers"),
        ],
        client_address=None,
    )
    h2 = head_to_h2(head, scheme=b"https")
    assert h2[:4] == [
        (b":method", b"POST"),
        (b":scheme", b"https"),
        (b":authority", b"orders"),
        (b":path", b"/p"),
    ]
    h1 = head_to_h1(head)
    assert h1[0] == (b"host", b"orders")
    assert (b"cookie", b"a=1; b=2") in h1
    assert all(n != b"te" for n, _ in h1)


def test_response_to_h1():
    status, headers = response_to_h1(
        [(b":status", b"201"), (b"set-cookie", b"a=1"), (b"connection", b"close"), (b"x", b"y")]
    )
    assert status == 201
    assert headers == [(b"set-cookie", b"a=1"), (b"x", b"y")]


crumb = st.from_regex(rb"\A[a-z]{1,5}=[a-z0-9]{0,5}\Z")


@given(st.lists(crumb, min_size=1, max_size=8))
def test_cookie_split_join_round_trip(crumbs):
    joined = b"; ".join(crumbs)
    split = split_cookies([(b"cookie", joined)])
    assert [v for _, v in split] == crumbs
    assert join_cookies(split) == [(b"cookie", joined)]
