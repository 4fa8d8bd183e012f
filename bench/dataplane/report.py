"""The markdown report: tables per setup, ratios, reading notes and the steering targets."""

from __future__ import annotations

import math

from bench.dataplane.model import (
    AUTHORITY,
    MAX_PACED_RATE_PER_CLIENT,
    MAX_STREAMS,
    MIB,
    NA,
    PATH,
    PAYLOAD,
    TARGET_ADDED,
    TARGET_CPU_MS,
    TARGET_IDLE_RSS_MIB,
    TARGET_MAX_RPS,
    OpenLoop,
    Options,
    Setup,
)

# --- report ------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return NA if math.isnan(value) else f"{value:.2f}"


def _added(value: float, base: float) -> str:
    if math.isnan(value) or math.isnan(base):
        return NA
    return f"{value - base:+.2f}"


def _mib(value: int | None) -> str:
    return NA if not value else f"{value / MIB:.1f}"


def _pair(values: dict[str, float], fmt: str = "{:.2f}") -> str:
    if not values:
        return NA
    return " / ".join(fmt.format(values[r]) if r in values else NA for r in ("A", "B"))


def _rss_pair(values: dict[str, int]) -> str:
    if not values:
        return NA
    return " / ".join(_mib(values.get(r)) for r in ("A", "B"))


def render(
    setups: dict[str, Setup],
    opts: Options,
    facts: dict[str, str],
    vers: dict[str, str],
    elapsed: float,
) -> str:
    """The markdown section for docs/benchmarks.md (also printed)."""
    direct, mesh, ha = setups["direct"], setups["peermesh"], setups["haproxy"]
    lines = [
        "## Data plane: direct vs peermesh (nghttp2 and h2 engines) vs HAProxy",
        "",
        f"Measured {facts['date']} by `python -m bench.dataplane {facts['args']}`"
        f" (the run took {elapsed:.0f} s).",
        "",
        f"- **Machine:** {facts['nproc']} CPUs ({facts['cpu']}), {facts['memory']} RAM,"
        f" Linux {facts['kernel']}. Other processes kept {facts['background']} of the CPUs"
        f" busy just before the run and used {facts['others']} of all CPU time during it.",
        "- **Versions:** " + ", ".join(f"{k} {v}" for k, v in vers.items()) + ".",
        "",
        "### Method",
        "",
        f"- Upstream: one nginx worker serving a {PAYLOAD}-byte file (`GET {PATH}`) over"
        " HTTP/1.1 to the proxies and over h2c to the direct client; it answers 421 unless the"
        f" authority is `{AUTHORITY}`, so every 200 proves the authority arrived intact.",
        "- Client: h2load, one thread, HTTP/2 prior knowledge (h2c) to the first hop,"
        f" `:authority: {AUTHORITY}` (the destination service for peermesh).",
        "- **peermesh:** two agent pairs, one per HTTP/2 engine (`--h2-engine nghttp2`, `h2`),"
        " every HTTP/2 leg of a pair on that engine. Agent A's outbound listener ← h2c; A → B"
        " one pooled TLS 1.3 mTLS HTTP/2 connection (dev-CA Ed25519 certificates);"
        " B → nginx HTTP/1.1 keep-alive. Agents run"
        " with `--gossip off --no-mdns` (static `--peer`: the data plane alone) and log level"
        " warning.",
        "- **HAProxy reference:** HAProxy A (`bind` h2c) → `server ... ssl crt ca-file verify"
        " required alpn h2` (TLS 1.3, same Ed25519 certificates, cert+key in one PEM) → HAProxy B"
        " (`bind ... ssl crt ca-file verify required alpn h2`) → nginx HTTP/1.1. `nbthread 1`"
        " (the agents are single-threaded too), `http-reuse always`. nginx cannot proxy to an"
        " HTTP/2 upstream, so it cannot be the two-proxy reference; HAProxy can.",
        f"- Open loop, paced, at {', '.join(str(r) for r in opts.rates)} req/s for"
        f" {opts.seconds:g} s per rate: one request every 1/rate s, the way wrk2 and vegeta"
        " hold a constant rate, from an `h2load --timing-script-file` (one line per request:"
        f" its send offset), up to {MAX_STREAMS} streams in flight per h2c connection."
        " h2load's event loop (libev over epoll) waits in whole milliseconds, so one client"
        f" sends at most about {MAX_PACED_RATE_PER_CLIENT} req/s: faster rates use"
        f" ceil(rate / {MAX_PACED_RATE_PER_CLIENT}) clients (connections), each paced at its"
        " share, and each wake-up comes a little late, so the rate really sent (*sent*) is a"
        " below the one asked: libev waits at least 1 ms once woken early (by a response), so"
        " the slower a setup answers, the later h2load sends (up to a third below the asked"
        " rate). The targets are judged at the lowest asked rate whose *sent* rate reaches 90 %"
        " of the target's. `--log-file` gives every request's send time and latency (send to"
        " last byte).",
        *(
            [
                f"- Open loop in bursts at {', '.join(str(r) for r in opts.burst_rates)} req/s:"
                " `h2load --rps R -n N`, one connection. Its timer fires about every 10 ms and"
                " sends every request due since, so requests arrive rate/100 at a time and each"
                " burst queues behind its own first requests in a single-threaded proxy; this"
                " shows that queueing cost, which paced arrivals hide.",
            ]
            if opts.burst_rates
            else []
        ),
        "  *Added* = the setup's percentile minus direct's at the same rate and arrivals."
        " *Send gap* p50 / p99 is the time between consecutive sends (paced: about 1/rate;"
        " bursts: p50 near 0).",
        "  Rates above 90 % of a setup's closed-loop maximum are skipped as over capacity: the"
        " queue would only grow for the whole run.",
        "- Closed loop: h2load `-n N -c C -m M` for each CxM in "
        + ", ".join(f"{c}x{m}" for c, m in opts.closed)
        + f", N sized to about {opts.closed_seconds:g} s; the best is reported.",
        "- CPU: user+system seconds of each sidecar process (psutil) around each h2load run,"
        " per 1000 successful requests. RSS: after start and before any request (idle), and"
        " the peak sampled every 20 ms during the whole run. A / B = first / second sidecar.",
        "- The setups run one at a time on the same machine as the load generator and nginx;"
        " all share 2 CPUs, so absolute figures are lower than on dedicated hosts.",
        "",
        "### Latency at fixed rates, paced arrivals (ms)",
        "",
        *latency_table(setups, opts.rates, paced=True),
    ]
    if opts.burst_rates:
        lines += [
            "",
            "### Latency at fixed rates, bursts of rate/100 every 10 ms (ms)",
            "",
            *latency_table(setups, opts.burst_rates, paced=False),
        ]
    lines += [
        "",
        "### Throughput, CPU and memory",
        "",
        "| setup | closed-loop max req/s (CxM) | CPU s / 1000 req at max (A / B) |"
        " CPU s / 1000 req, open loop at the highest rate run (A / B) | idle RSS MiB (A / B) |"
        " peak RSS MiB (A / B) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for setup in setups.values():
        ran = [r for r in setup.open_loop.values() if not r.skipped and r.cpu_per_1k]
        top = max(ran, key=lambda r: r.rate, default=None)
        cpu_at_rate = f"{_pair(top.cpu_per_1k, '{:.3f}')} @ {top.rate} rps" if top else NA
        closed = setup.closed
        best = f"{closed.rps:,.0f} ({closed.clients}x{closed.streams})" if closed.rps else NA
        lines.append(
            f"| {setup.label} | {best} | {_pair(closed.cpu_per_1k, '{:.3f}')} | {cpu_at_rate} |"
            f" {_rss_pair(setup.idle_rss)} | {_rss_pair(setup.peak_rss)} |"
        )
    lines += ratios(setups, ha)
    lines += ["", "All closed-loop settings tried (req/s):", ""]
    for setup in setups.values():
        lines.append(f"- {setup.label}: {'; '.join(setup.closed.tried) or NA}")
    failures = [s for s in setups.values() if s.failure]
    if failures:
        lines += ["", "### Failures", ""]
        for setup in failures:
            lines += [f"- **{setup.label}:**", "", "```", setup.failure.strip(), "```"]
    lines += ["", "### Steering targets (reported, not asserted)", ""]
    lines += targets(mesh, ha, direct)
    lines += reading_notes(mesh, ha, direct)
    return "\n".join(lines) + "\n"


def latency_table(setups: dict[str, Setup], rates: list[int], *, paced: bool) -> list[str]:
    """One row per rate and setup, with the cost added over direct at the same arrivals."""
    lines = [
        "| asked rate | setup | p50 | p90 | p99 | max | added p50 | added p90 | added p99 |"
        " added max | clients | sent req/s | send gap p50 / p99 | errors |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    direct = setups["direct"]
    for rate in rates:
        base = (direct.open_loop if paced else direct.burst_loop).get(rate, OpenLoop(rate))
        for setup in setups.values():
            results = setup.open_loop if paced else setup.burst_loop
            res = results.get(rate, OpenLoop(rate, skipped="not run"))
            if res.skipped:
                lines.append(f"| {rate} | {setup.label} | {res.skipped} |" + " |" * 11)
                continue
            added = (
                [NA] * 4
                if setup is direct
                else [
                    _added(res.p50, base.p50),
                    _added(res.p90, base.p90),
                    _added(res.p99, base.p99),
                    _added(res.pmax, base.pmax),
                ]
            )
            lines.append(
                f"| {rate} | {setup.label} | {_ms(res.p50)} | {_ms(res.p90)} | {_ms(res.p99)} |"
                f" {_ms(res.pmax)} | {' | '.join(added)} | {res.clients} |"
                f" {res.achieved_rps:,.0f} | {_ms(res.gap_p50_ms)} / {_ms(res.gap_p99_ms)} |"
                f" {res.errors} |"
            )
    return lines


def ratios(setups: dict[str, Setup], ha: Setup) -> list[str]:
    """Each peermesh pair against HAProxy in the same run (throughput and CPU per request)."""
    lines = [
        "",
        "Ratios to HAProxy in the same run (peermesh ÷ HAProxy; throughput: higher is better,"
        " CPU: lower is better):",
        "",
        "| setup | closed-loop req/s | CPU per request at max (A / B) |",
        "|---|---:|---:|",
    ]
    for name, setup in setups.items():
        if not name.startswith("peermesh"):
            continue
        rps = (
            f"{setup.closed.rps / ha.closed.rps:.2f}" if setup.closed.rps and ha.closed.rps else NA
        )
        cpu = " / ".join(
            f"{setup.closed.cpu_per_1k[r] / ha.closed.cpu_per_1k[r]:.1f}x"
            if setup.closed.cpu_per_1k.get(r) and ha.closed.cpu_per_1k.get(r)
            else NA
            for r in ("A", "B")
        )
        lines.append(f"| {setup.label} | {rps} | {cpu} |")
    return lines


def reading_notes(mesh: Setup, ha: Setup, direct: Setup) -> list[str]:
    """A few sentences derived from the figures, to read the tables right."""
    notes = []
    low = min(direct.open_loop.values(), key=lambda r: r.rate, default=None)
    if low is not None and not low.skipped and low.p99 > 4 * low.p50:
        notes.append(
            f"- Tails include scheduling noise of the shared machine: even direct has p99"
            f" {low.p99:.2f} ms against p50 {low.p50:.2f} ms at {low.rate} req/s. Compare"
            " p50/p90 for the cost of the hops."
        )
    cpu = mesh.closed.cpu_per_1k
    if "A" in cpu and "B" in cpu:
        worst = max(cpu["A"], cpu["B"])
        ha_cpu = ha.closed.cpu_per_1k
        reference = (
            f" (HAProxy: {ha_cpu['A']:.3f} / {ha_cpu['B']:.3f} ms)"
            if "A" in ha_cpu and "B" in ha_cpu
            else ""
        )
        notes.append(
            f"- peermesh is CPU-bound: at its maximum agent A spent {cpu['A']:.2f} ms and B"
            f" {cpu['B']:.2f} ms of CPU per request{reference}. Even with a CPU each, two agents"
            f" at that cost top out near {1000 / worst:,.0f} req/s; {TARGET_MAX_RPS} req/s needs"
            f" ≤ {1000 / TARGET_MAX_RPS:.2f} ms per request per agent, less when the client and"
            " the app share the CPUs."
        )
    for rate, res in sorted(mesh.burst_loop.items()):
        paced, base = mesh.open_loop.get(rate), direct.burst_loop.get(rate)
        if res.skipped or paced is None or paced.skipped or base is None or base.skipped:
            continue
        base_paced = direct.open_loop[rate]
        notes.append(
            f"- Arrivals matter for a single-threaded proxy: at {rate} req/s peermesh adds"
            f" {paced.p50 - base_paced.p50:+.2f} ms p50 / {paced.p99 - base_paced.p99:+.2f} ms"
            f" p99 when requests come one at a time, and {res.p50 - base.p50:+.2f} /"
            f" {res.p99 - base.p99:+.2f} ms when they come {rate // 100} at a time every 10 ms:"
            " each burst waits behind its own first requests (a request costs the two agents"
            " about the CPU per request above, end to end)."
        )
    return ["", "### Reading the figures", "", *notes] if notes else []


def targets(mesh: Setup, ha: Setup, direct: Setup) -> list[str]:
    """The steering targets with peermesh's figures (HAProxy's alongside for reference)."""

    def added(
        setup: Setup, rate: int, p50_max: float, p99_max: float | None
    ) -> tuple[str, bool | None]:
        # h2load sends paced requests late (its timer), so the row judged is the lowest
        # asked rate at which this setup was really sent at least 90 % of the target rate.
        held = [
            r
            for r in sorted(setup.open_loop.values(), key=lambda r: r.rate)
            if r.rate >= rate and not r.skipped and r.achieved_rps >= 0.9 * rate
        ]
        if not held:
            return "not measured at that rate", None
        res = held[0]
        base = direct.open_loop.get(res.rate)
        if base is None or base.skipped:
            return "not measured", None
        p50, p99 = res.p50 - base.p50, res.p99 - base.p99
        met = p50 <= p50_max and (p99_max is None or p99 <= p99_max) and res.errors == 0
        shown = f"{p50:+.2f} ms" if p99_max is None else f"{p50:+.2f} / {p99:+.2f} ms"
        return f"{shown} (sent {res.achieved_rps:,.0f} req/s)", met

    def cpu(setup: Setup) -> tuple[str, bool | None]:
        per = setup.closed.cpu_per_1k
        if "A" not in per or "B" not in per:
            return "not measured", None
        return f"{per['A']:.3f} / {per['B']:.3f} ms", max(per["A"], per["B"]) <= TARGET_CPU_MS

    def idle(setup: Setup) -> tuple[str, bool | None]:
        if not setup.idle_rss:
            return "not measured", None
        worst = max(setup.idle_rss.values()) / MIB
        return f"{_rss_pair(setup.idle_rss)} MiB", worst <= TARGET_IDLE_RSS_MIB

    def verdict(met: bool | None) -> str:
        return {True: "**met**", False: "**not met**", None: NA}[met]

    def row(what: str, ours: tuple[str, bool | None], theirs: tuple[str, bool | None]) -> str:
        return f"| {what} | {ours[0]} | {verdict(ours[1])} | {theirs[0]} |"

    lines = ["| target | peermesh | met? | HAProxy reference |", "|---|---:|---|---:|"]
    for rate, p50_max, p99_max in TARGET_ADDED:
        what = f"added p50 ≤ {p50_max:g} ms" + (
            f" and p99 ≤ {p99_max:g} ms" if p99_max is not None else ""
        )
        lines.append(
            row(
                f"{what} at {rate} req/s really sent (paced) through two sidecars",
                added(mesh, rate, p50_max, p99_max),
                added(ha, rate, p50_max, p99_max),
            )
        )
    mesh_rps, ha_rps = mesh.closed.rps, ha.closed.rps
    lines.append(
        row(
            f"≥ {TARGET_MAX_RPS} req/s through one sidecar pair (closed loop)",
            (f"{mesh_rps:,.0f}", mesh_rps >= TARGET_MAX_RPS if mesh_rps else None),
            (f"{ha_rps:,.0f}", None),
        )
    )
    lines.append(
        row(
            f"CPU per request per sidecar at that maximum ≤ {TARGET_CPU_MS:g} ms (A / B)",
            cpu(mesh),
            cpu(ha),
        )
    )
    lines.append(
        row(f"idle RSS ≤ {TARGET_IDLE_RSS_MIB} MiB per sidecar (A / B)", idle(mesh), idle(ha))
    )
    return lines
