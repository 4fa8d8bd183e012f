"""Load generation with h2load: preflight, closed loop (max req/s), open loop (latency)."""

from __future__ import annotations

import itertools
import math
import re
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from bench._common import ProcessGroup, percentile
from bench.dataplane.measure import check_alive, cpu_seconds
from bench.dataplane.model import (
    AUTHORITY,
    MAX_PACED_RATE_PER_CLIENT,
    MAX_STREAMS,
    PAYLOAD,
    BenchError,
    OpenLoop,
    Options,
    RunStats,
    Setup,
)

_FINISHED = re.compile(r"finished in [\d.]+\w*, ([\d.]+) req/s")
_REQUESTS = re.compile(
    r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout"
)
_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
_TRAFFIC = re.compile(r"traffic: .*?\((\d+)\) data")


def h2load(
    h2load_path: str, args: Sequence[str], setup: Setup, group: ProcessGroup, timeout: float
) -> RunStats:
    """Run h2load against ``setup`` and parse its summary; CPU per sidecar is measured around it."""
    check_alive(group, setup)
    cmd = [h2load_path, "-t", "1", "-H", f":authority: {AUTHORITY}", *args, setup.url]
    before = cpu_seconds(setup)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"h2load did not finish within {timeout:.0f} s: {' '.join(cmd)}") from None
    after = cpu_seconds(setup)
    out = done.stdout
    if done.returncode != 0 or not _REQUESTS.search(out):
        raise BenchError(f"h2load failed ({done.returncode}): {' '.join(cmd)}\n{out}{done.stderr}")
    stats = RunStats()
    if m := _FINISHED.search(out):
        stats.rps = float(m.group(1))
    if m := _REQUESTS.search(out):
        stats.requests, stats.succeeded = int(m.group(1)), int(m.group(2))
        stats.failed = int(m.group(3))
    if m := _STATUS.search(out):
        stats.non_2xx = sum(int(x) for x in m.groups()[1:])
    if m := _TRAFFIC.search(out):
        stats.data_bytes = int(m.group(1))
    ok = stats.succeeded - stats.non_2xx
    for role, used in after.items():
        if role in before and ok > 0:
            stats.cpu_per_1k[role] = (used - before[role]) / ok * 1000
    check_alive(group, setup)
    return stats


def preflight(h2load_path: str, setup: Setup, group: ProcessGroup, n: int = 300) -> float:
    """Warm up and prove the path works: all 200, 1 KiB each. Returns a rough req/s."""
    started = time.monotonic()
    stats = h2load(h2load_path, ["-n", str(n), "-c", "4", "-m", "8"], setup, group, timeout=120)
    elapsed = time.monotonic() - started
    if stats.succeeded != n or stats.non_2xx or stats.data_bytes != n * PAYLOAD:
        raise BenchError(
            f"{setup.name}: preflight expected {n} x 200 with {PAYLOAD} bytes each, got "
            f"{stats.succeeded} succeeded, {stats.non_2xx} non-2xx, {stats.data_bytes} bytes"
        )
    return n / max(elapsed, 1e-3)


def closed_loop(
    h2load_path: str, setup: Setup, group: ProcessGroup, opts: Options, estimate: float
) -> None:
    """Maximum req/s over the configured (clients x streams) settings; keeps the best.

    Runs a fixed request count (sized from ``estimate`` to last about ``closed_seconds``)
    rather than ``-D``, so no run ends with streams cancelled in flight.
    """
    best = setup.closed
    for clients, streams in opts.closed:
        n = int(min(500_000, max(500, estimate * opts.closed_seconds, clients * streams * 4)))
        stats = h2load(
            h2load_path,
            ["-n", str(n), "-c", str(clients), "-m", str(streams)],
            setup,
            group,
            timeout=max(120.0, n / max(estimate, 1.0) * 5),
        )
        errors = stats.requests - (stats.succeeded - stats.non_2xx)
        failed = f" ({errors} failed)" if errors else ""
        best.tried.append(f"{clients}x{streams}: {stats.rps:,.0f}{failed}")
        if stats.rps > best.rps:
            best.rps, best.clients, best.streams = stats.rps, clients, streams
            best.errors, best.cpu_per_1k = errors, stats.cpu_per_1k
        estimate = max(estimate, stats.rps)
        print(
            f"  {setup.name:9s} closed {clients:3d}x{streams:<3d} {stats.rps:10,.0f} req/s",
            flush=True,
        )


def timing_script(path: Path, url: str, rate: float, count: int) -> None:
    """One line per request: send offset in ms, tab, URI (h2load --timing-script-file)."""
    step = 1000.0 / rate
    path.write_text("".join(f"{i * step:.3f}\t{url}\n" for i in range(count)))


def open_loop(
    h2load_path: str,
    setup: Setup,
    group: ProcessGroup,
    opts: Options,
    rate: int,
    work: Path,
    *,
    paced: bool = True,
) -> OpenLoop:
    """Per-request latency at a fixed rate, up to 1000 streams in flight per connection.

    *Paced* sends one request every 1/rate s from a timing script (the way wrk2 and vegeta
    hold a constant rate), over as few h2c connections as h2load's millisecond timer
    allows. Otherwise ``h2load --rps``, one connection: its timer fires about every 10 ms
    and catches up by sending the requests due since, so they arrive in bursts of rate/100.
    """
    clients = math.ceil(rate / MAX_PACED_RATE_PER_CLIENT) if paced else 1
    per_client = max(10, int(rate / clients * opts.seconds))
    count = per_client * clients
    kind = "paced" if paced else "burst"
    log = work / f"{setup.name}-{kind}-{rate}.log"
    log.unlink(missing_ok=True)  # h2load appends to an existing log
    if paced:
        script = work / f"{setup.name}-{rate}.script"
        timing_script(script, setup.url, rate / clients, per_client)
        generator = ["--timing-script-file", str(script)]
    else:
        generator = ["--rps", str(rate), "-n", str(count)]
    stats = h2load(
        h2load_path,
        ["-c", str(clients), "-m", str(MAX_STREAMS), "--log-file", str(log), *generator],
        setup,
        group,
        timeout=opts.seconds * 4 + 60,
    )
    rows: list[tuple[int, int, int]] = []
    for line in log.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 3:
            rows.append((int(parts[0]), int(parts[1]), int(parts[2])))
    rows.sort()
    good = sorted(d / 1000 for _, status, d in rows if status == 200)
    result = OpenLoop(rate, clients=clients, count=len(rows), cpu_per_1k=stats.cpu_per_1k)
    result.errors = count - len(good)
    if len(rows) >= 2:
        span = (rows[-1][0] - rows[0][0]) / 1e6
        result.achieved_rps = (len(rows) - 1) / span if span > 0 else math.nan
        gaps = sorted((b[0] - a[0]) / 1000 for a, b in itertools.pairwise(rows))
        result.gap_p50_ms, result.gap_p99_ms = percentile(gaps, 50), percentile(gaps, 99)
    result.p50, result.p90 = percentile(good, 50), percentile(good, 90)
    result.p99, result.pmax = percentile(good, 99), (good[-1] if good else math.nan)
    return result
