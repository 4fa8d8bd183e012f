"""Bodies at the admin and RPC boundary are bounded: depth, integer range, finite numbers."""

from __future__ import annotations

import msgpack
import pytest

from peermesh.core.bounded import (
    MAX_DEPTH,
    BoundsError,
    check_bounds,
    json_bounds_problem,
    loads_json,
)
from peermesh.net.admin_guard import BrowserGuard, split_host
from peermesh.net.http.headers import RequestHead


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "nested deeper"),
        (b'{"n": ' + b"9" * 5000 + b"}", "does not fit in 64 bits"),
        (b'{"n": 18446744073709551616}', "does not fit in 64 bits"),
        (b'{"n": 1e999}', "does not fit in a double"),
        (b'{"n": NaN}', "not a JSON number"),
        (b'{"n": -Infinity}', "not a JSON number"),
    ],
)
def test_out_of_bounds_json_is_refused_with_a_reason(body: bytes, problem: str) -> None:
    reason = json_bounds_problem(body)
    assert reason is not None and problem in reason
    with pytest.raises(BoundsError):
        loads_json(body)


def test_ordinary_and_non_json_bodies_pass_to_their_route() -> None:
    assert json_bounds_problem(b'{"objects": [{"a": [1, 2.5, -3, true, null]}]}') is None
    assert json_bounds_problem(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is None
    assert json_bounds_problem(b"\xff\xfe not json") is None  # the route says what it wanted
    assert loads_json(b'{"n": 18446744073709551615}') == {"n": 2**64 - 1}


def test_decoded_msgpack_is_checked_without_recursion() -> None:
    deep: object = 1
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(BoundsError, match="nested deeper"):
        check_bounds(msgpack.unpackb(msgpack.packb(deep)))
    check_bounds({"a": [b"x", 1.5, {"b": -(2**63)}]})


def _head(method: bytes, host: bytes, **headers: bytes) -> RequestHead:
    extra = tuple((k.replace("_", "-").encode(), v) for k, v in headers.items())
    return RequestHead(method, b"http", host, b"/v1/policy", extra)


def test_the_guard_reads_host_origin_and_the_request_header() -> None:
    guard = BrowserGuard(["127.0.0.1"])
    assert split_host("[::1]:15000") == "::1" and split_host("LocalHost:1") == "localhost"
    assert guard.check(_head(b"GET", b"127.0.0.1:15000")) is None
    assert guard.check(_head(b"GET", b"[::1]:15000")) is None
    assert guard.check(_head(b"GET", b"127.9.9.9")) is None
    assert guard.check(_head(b"GET", b"localhost.evil.example")).status == 421  # type: ignore[union-attr]
    assert guard.check(_head(b"GET", b"0x7f000001.example")).status == 421  # type: ignore[union-attr]
    same = _head(b"PUT", b"localhost:1", origin=b"http://localhost:1", x_peermesh_request=b"1")
    assert guard.check(same) is None
    other_port = _head(
        b"PUT", b"localhost:1", origin=b"http://localhost:2", x_peermesh_request=b"1"
    )
    assert guard.check(other_port).status == 403  # type: ignore[union-attr]
    assert guard.check(_head(b"DELETE", b"localhost:1")).status == 403  # type: ignore[union-attr]
    wrong = _head(b"POST", b"localhost:1", x_peermesh_request=b"true")
    assert guard.check(wrong).status == 403  # type: ignore[union-attr]
    assert guard.check(_head(b"OPTIONS", b"localhost:1")).status == 405  # type: ignore[union-attr]
    assert guard.refused == 6
