"""Constants, the error and the result records the data-plane benchmark shares."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import psutil

SECTION = "dataplane"
TRUST_DOMAIN = "bench.local"
AUTHORITY = "orders"  # the destination service, sent as :authority; nginx insists on it
PATH = "/1k"
PAYLOAD = 1024
MAX_STREAMS = 1000  # h2load -m in open loop: far above what is ever in flight
# h2load's event loop (libev over epoll) waits in whole milliseconds, so one paced client
# cannot send more often than about once per millisecond: faster rates get more clients.
MAX_PACED_RATE_PER_CLIENT = 1000
MIB = 1 << 20
NA = "-"  # table cell without a value

# Steering targets (reported, never asserted): added latency through two sidecars at
# fixed rates (rate, p50 ms, p99 ms or None), closed-loop throughput of one pair, CPU per
# request per sidecar at that maximum, idle RSS per sidecar.
TARGET_ADDED: tuple[tuple[int, float, float | None], ...] = ((100, 1.5, None), (1000, 2.0, 5.0))
TARGET_MAX_RPS = 3000
TARGET_CPU_MS = 0.2
TARGET_IDLE_RSS_MIB = 40

SETUP_LABELS = {
    "direct": "direct (h2c → nginx)",
    "peermesh": "peermesh, nghttp2 engine (2 agents, mTLS h2)",
    "peermesh-h2": "peermesh, h2 engine (2 agents, mTLS h2)",
    "haproxy": "HAProxy (2 proxies, mTLS h2)",
}


class BenchError(RuntimeError):
    """Something in the set-up failed; the message says what."""


# --- results -------------------------------------------------------------------------


@dataclass
class RunStats:
    """What one h2load run printed, plus the per-sidecar CPU it cost."""

    requests: int = 0
    succeeded: int = 0
    failed: int = 0
    non_2xx: int = 0
    data_bytes: int = 0
    rps: float = 0.0
    cpu_per_1k: dict[str, float] = field(default_factory=dict)


@dataclass
class OpenLoop:
    """Latency at one fixed request rate."""

    rate: int
    skipped: str = ""
    count: int = 0
    errors: int = 0
    clients: int = 1
    achieved_rps: float = 0.0
    gap_p50_ms: float = math.nan  # time between consecutive sends: ~0 when sent in bursts
    gap_p99_ms: float = math.nan
    p50: float = math.nan
    p90: float = math.nan
    p99: float = math.nan
    pmax: float = math.nan
    cpu_per_1k: dict[str, float] = field(default_factory=dict)


@dataclass
class ClosedLoop:
    """Best closed-loop throughput over the concurrency settings tried."""

    rps: float = 0.0
    clients: int = 0
    streams: int = 0
    errors: int = 0
    tried: list[str] = field(default_factory=list)
    cpu_per_1k: dict[str, float] = field(default_factory=dict)


@dataclass
class Setup:
    """One way of reaching the upstream, and everything measured about it."""

    name: str
    port: int
    sidecars: dict[str, psutil.Process] = field(default_factory=dict)
    proc_names: dict[str, str] = field(default_factory=dict)  # role -> ProcessGroup name
    idle_rss: dict[str, int] = field(default_factory=dict)
    peak_rss: dict[str, int] = field(default_factory=dict)
    open_loop: dict[int, OpenLoop] = field(default_factory=dict)  # paced arrivals
    burst_loop: dict[int, OpenLoop] = field(default_factory=dict)  # h2load --rps bursts
    closed: ClosedLoop = field(default_factory=ClosedLoop)
    failure: str = ""

    @property
    def label(self) -> str:
        return SETUP_LABELS[self.name]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"


@dataclass
class Options:
    """Command-line settings."""

    seconds: float
    rates: list[int]
    closed: list[tuple[int, int]]
    closed_seconds: float
    burst_rates: list[int]
    write: bool
    output: Path
    wait_idle: float
