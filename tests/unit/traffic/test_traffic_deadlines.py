"""grpc-timeout parsing and formatting, and request deadlines."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peermesh.traffic.deadlines import (
    format_grpc_timeout,
    parse_grpc_timeout,
    parse_timeout_ms,
    request_deadline,
)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (b"1H", 3600.0),
        (b"2M", 120.0),
        (b"3S", 3.0),
        (b"250m", 0.25),
        (b"100u", 1e-4),
        (b"5n", 5e-9),
        (b"0S", 0.0),
        (b"99999999S", 99_999_999.0),
        (b"00000001m", 1e-3),
    ],
)
def test_parse_valid(value: bytes, seconds: float) -> None:
    assert parse_grpc_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    [b"", b"S", b"10", b"123456789S", b"1.5S", b"-1S", b"10s", b"10ms", b" 10S", b"10S ", b"1x"],
)
def test_parse_invalid(value: bytes) -> None:
    assert parse_grpc_timeout(value) is None


def test_format_examples() -> None:
    assert format_grpc_timeout(0.0) == b"0n"
    assert format_grpc_timeout(-3) == b"0n"
    assert format_grpc_timeout(0.1) == b"100000u"
    assert format_grpc_timeout(1.0) == b"1000000u"
    assert format_grpc_timeout(30.0) == b"30000000u"
    assert format_grpc_timeout(300.0) == b"300000m"
    assert format_grpc_timeout(1e12) == b"99999999H"


@given(st.floats(min_value=0.0, max_value=3.5e11, allow_nan=False))
def test_round_trip(seconds: float) -> None:
    encoded = format_grpc_timeout(seconds)
    assert len(encoded) <= 9
    parsed = parse_grpc_timeout(encoded)
    assert parsed is not None
    # Never less time than asked (up to float noise), and at most one step of the unit
    # chosen more: units differ by at most 1000x, so the finest unit that fits keeps at
    # least 99999999/1000 steps and the relative excess stays below 1000/99999999.
    assert parsed >= seconds * (1 - 1e-9)
    assert parsed <= seconds * (1 + 1.001e-5) + 1e-9


def test_timeout_ms() -> None:
    assert parse_timeout_ms(b"1500") == 1.5
    for bad in (b"0", b"-5", b"1.5", b"", b"abc", b"9" * 20):
        assert parse_timeout_ms(bad) is None


def test_request_deadline_smallest_wins() -> None:
    assert request_deadline(100.0, route_timeout=None, headers=[]) is None
    assert request_deadline(100.0, route_timeout=0.0, headers=[]) is None
    assert request_deadline(100.0, route_timeout=5.0, headers=[]) == 105.0
    headers = [(b"grpc-timeout", b"2S"), (b"x-peermesh-timeout-ms", b"3000")]
    assert request_deadline(100.0, route_timeout=5.0, headers=headers) == 102.0
    # A caller can shorten the route timeout but not extend it.
    assert request_deadline(100.0, route_timeout=1.0, headers=headers) == 101.0
    assert request_deadline(
        0.0, route_timeout=None, headers=[(b"x-peermesh-timeout-ms", b"250")]
    ) == pytest.approx(0.25)
    # Invalid or foreign headers are ignored.
    ignored = [(b"grpc-timeout", b"soon"), (b"x-envoy-upstream-rq-timeout-ms", b"10")]
    assert request_deadline(0.0, route_timeout=None, headers=ignored) is None
    # grpc-timeout 0 is an already expired deadline.
    assert request_deadline(7.0, route_timeout=5.0, headers=[(b"grpc-timeout", b"0m")]) == 7.0
