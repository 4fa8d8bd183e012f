"""Request deadlines from the route timeout and the caller's deadline headers.

Honoured headers (the smallest of everything wins, so a caller can shorten but never
extend the route's timeout):

- ``grpc-timeout`` (gRPC over HTTP/2 spec): 1-8 ASCII digits and a unit, ``H`` hours,
  ``M`` minutes, ``S`` seconds, ``m`` milliseconds, ``u`` microseconds, ``n`` nanoseconds.
- ``x-peermesh-timeout-ms``: a positive integer count of milliseconds (our spelling of
  Envoy's ``x-envoy-upstream-rq-timeout-ms``; Envoy's header is not read, so an app
  behind Envoy elsewhere cannot steer us by accident).

Invalid values are ignored (treated as absent), not errors: a bad deadline header should
not fail a request that would otherwise succeed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

__all__ = [
    "GRPC_TIMEOUT",
    "TIMEOUT_MS_HEADER",
    "format_grpc_timeout",
    "parse_grpc_timeout",
    "parse_timeout_ms",
    "request_deadline",
]

GRPC_TIMEOUT = b"grpc-timeout"
TIMEOUT_MS_HEADER = b"x-peermesh-timeout-ms"

_GRPC_UNITS: dict[bytes, float] = {
    b"H": 3600.0,
    b"M": 60.0,
    b"S": 1.0,
    b"m": 1e-3,
    b"u": 1e-6,
    b"n": 1e-9,
}
#: Finest first: formatting picks the finest unit whose value fits in 8 digits.
_FORMAT_ORDER: tuple[bytes, ...] = (b"n", b"u", b"m", b"S", b"M", b"H")
_GRPC_TIMEOUT_RE = re.compile(rb"([0-9]{1,8})([HMSmun])")
_MAX_VALUE = 99_999_999


def parse_grpc_timeout(value: bytes) -> float | None:
    """Seconds in a ``grpc-timeout`` value, or None if it does not follow the spec."""
    match = _GRPC_TIMEOUT_RE.fullmatch(value)
    if match is None:
        return None
    return int(match.group(1)) * _GRPC_UNITS[match.group(2)]


def format_grpc_timeout(seconds: float) -> bytes:
    """``grpc-timeout`` for ``seconds``: the finest unit that fits in 8 digits, rounded up
    (never promising the callee more time than there is). Negative counts as 0;
    values beyond the format's range become the largest one (99999999H)."""
    if math.isnan(seconds) or seconds <= 0:
        return b"0n"
    for unit in _FORMAT_ORDER:
        scaled = seconds / _GRPC_UNITS[unit]
        nearest = round(scaled)
        count = nearest if abs(scaled - nearest) <= 1e-9 * max(1.0, scaled) else math.ceil(scaled)
        count = max(count, 1)  # a positive timeout never becomes "already expired"
        if count <= _MAX_VALUE:
            return str(count).encode() + unit
    return str(_MAX_VALUE).encode() + b"H"


def parse_timeout_ms(value: bytes) -> float | None:
    """Seconds in an ``x-peermesh-timeout-ms`` value; None unless a positive integer."""
    text = value.strip()
    if not text.isdigit() or len(text) > 12:
        return None
    millis = int(text)
    return millis / 1000 if millis > 0 else None


def request_deadline(
    now: float, *, route_timeout: float | None, headers: Iterable[tuple[bytes, bytes]]
) -> float | None:
    """The absolute deadline (on ``now``'s clock) for the whole request, or None.

    ``route_timeout`` of None or 0 means no route timeout (Istio: 0 disables it). A
    ``grpc-timeout`` of 0 is honoured: the deadline is ``now`` (already expired).
    """
    timeouts: list[float] = []
    if route_timeout is not None and route_timeout > 0:
        timeouts.append(route_timeout)
    for name, value in headers:
        if name == GRPC_TIMEOUT:
            parsed = parse_grpc_timeout(value)
        elif name == TIMEOUT_MS_HEADER:
            parsed = parse_timeout_ms(value)
        else:
            continue
        if parsed is not None:
            timeouts.append(parsed)
    if not timeouts:
        return None
    return now + min(timeouts)
