"""Downstream timeouts as data: which deadline a connection or stream is under, and when.

The HTTP/1.1 and HTTP/2 server shells keep timestamps (last frame on a stream, when a
body read started waiting, when the connection last had no streams) and ask these
functions for the next deadline; they sleep until it and act on what expired. Nothing
here reads a clock or sleeps: callers pass ``now``. A zero timeout means "off".

Idle means no progress, not duration: every deadline here restarts on progress (a
byte of a head or body, a frame on a stream), so a slow but moving transfer and a
long-lived stream that keeps talking are never cut.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass


class Expiry(enum.Enum):
    """Which timeout fired; the value is the ``peermesh_connections_rejected_total`` reason."""

    HEADER = "header-timeout"
    BODY = "body-timeout"
    KEEPALIVE = "keepalive-timeout"
    IDLE = "idle-timeout"
    STREAM_IDLE = "stream-idle-timeout"
    PREFACE = "preface-timeout"


@dataclass(frozen=True)
class Timeouts:
    """Seconds for each downstream timeout (0 turns one off).

    Defaults are nginx's ``client_header_timeout``/``client_body_timeout`` (60 s) and
    ``keepalive_timeout`` (75 s), Envoy's ``stream_idle_timeout`` (5 min) and its HTTP
    ``idle_timeout`` (1 h); a tunnel stream (CONNECT: TCP, WebSocket) carries
    connections that are idle by nature (a redis client between commands), so it gets
    Envoy's ``tcp_proxy`` idle timeout (1 h) instead of the stream idle one.
    """

    header: float = 60.0
    body: float = 60.0
    keepalive: float = 75.0
    idle: float = 3600.0
    stream_idle: float = 300.0
    tunnel_idle: float = 3600.0
    preface: float = 10.0

    def __post_init__(self) -> None:
        for name in ("header", "body", "keepalive", "idle", "stream_idle", "tunnel_idle"):
            value = getattr(self, name)
            if not value >= 0 or math.isinf(value):
                raise ValueError(f"{name} timeout must be ≥ 0 seconds (0 is off), not {value}")
        if not self.preface >= 0 or math.isinf(self.preface):
            raise ValueError(f"preface timeout must be ≥ 0 seconds, not {self.preface}")


def after(since: float | None, seconds: float) -> float:
    """``since + seconds``, or never when the clock is not running or the timeout is off."""
    if since is None or seconds <= 0:
        return math.inf
    return since + seconds


@dataclass
class StreamTimes:
    """What a server stream's deadlines are computed from (kept by the shell)."""

    #: The last frame on the stream, either way.
    last_activity: float
    #: When the handler started waiting for body bytes that have not come; None when not.
    waiting_since: float | None = None
    #: A CONNECT stream (TCP tunnel, WebSocket): idle by nature, the tunnel timeout applies.
    tunnel: bool = False
    #: gRPC: a quiet client between messages is normal; only the stream idle timeout applies.
    grpc: bool = False


def stream_due(timeouts: Timeouts, times: StreamTimes) -> tuple[float, Expiry]:
    """The stream's next deadline and which timeout it is."""
    idle = timeouts.tunnel_idle if times.tunnel else timeouts.stream_idle
    due = (after(times.last_activity, idle), Expiry.STREAM_IDLE)
    if not times.tunnel and not times.grpc:
        body = (after(times.waiting_since, timeouts.body), Expiry.BODY)
        due = min(due, body, key=lambda pair: pair[0])
    return due


def connection_due(
    timeouts: Timeouts, *, started: float, preface_done: bool, idle_since: float | None
) -> tuple[float, Expiry]:
    """An HTTP/2 server connection's next deadline: the preface, else idle with no streams.

    ``idle_since`` is when the last stream ended (or the connection began), None while
    streams are open.
    """
    if not preface_done:
        return after(started, timeouts.preface), Expiry.PREFACE
    return after(idle_since, timeouts.idle), Expiry.IDLE
