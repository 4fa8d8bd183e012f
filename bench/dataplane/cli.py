"""Entry point: options, waiting for an idle machine, running every setup, the report."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import math
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType

from bench._common import (
    BENCHMARKS_DOC,
    ProcessGroup,
    busy_fraction,
    cpu_clock,
    cpu_model,
    memory_total,
    own_cpu_seconds,
    update_marked_section,
)
from bench.dataplane.load import closed_loop, open_loop, preflight
from bench.dataplane.measure import RssSampler, measure_idle_rss
from bench.dataplane.model import SECTION, BenchError, OpenLoop, Options, Setup
from bench.dataplane.report import render
from bench.dataplane.setup import start_everything
from bench.dataplane.tools import required_tools, versions


def run_benchmark(opts: Options, tools: dict[str, str], work: Path) -> dict[str, Setup]:
    """Start everything, measure every setup, stop everything."""
    with ProcessGroup(work) as group:
        setups, _nginx = start_everything(group, work, tools)
        time.sleep(1.0)
        measure_idle_rss(setups.values())
        ordered = list(setups.values())
        with RssSampler(ordered):
            print("closed loop (maximum req/s):", flush=True)
            for setup in ordered:
                try:
                    estimate = preflight(tools["h2load"], setup, group)
                    closed_loop(tools["h2load"], setup, group, opts, estimate)
                except BenchError as exc:
                    setup.failure = str(exc)
                    print(f"  {setup.name}: {exc}", file=sys.stderr)
            print(f"open loop, paced ({opts.seconds:g} s per rate):", flush=True)
            run_rates(tools["h2load"], ordered, group, opts, work, paced=True)
            if opts.burst_rates:
                print(f"open loop, bursts ({opts.seconds:g} s per rate):", flush=True)
                run_rates(tools["h2load"], ordered, group, opts, work, paced=False)
    return setups


def run_rates(
    h2load_path: str,
    ordered: list[Setup],
    group: ProcessGroup,
    opts: Options,
    work: Path,
    *,
    paced: bool,
) -> None:
    """Open loop at each rate on each setup still standing, paced or in bursts."""
    for rate in opts.rates if paced else opts.burst_rates:
        for setup in ordered:
            results = setup.open_loop if paced else setup.burst_loop
            if setup.failure:
                results[rate] = OpenLoop(rate, skipped="failed (see below)")
                continue
            capacity = setup.closed.rps
            if capacity and rate > 0.9 * capacity:
                results[rate] = OpenLoop(rate, skipped=f"over capacity (max {capacity:,.0f} req/s)")
                print(f"  {setup.name:11s} {rate:5d} rps  skipped: over capacity", flush=True)
                continue
            try:
                res = open_loop(h2load_path, setup, group, opts, rate, work, paced=paced)
            except BenchError as exc:
                setup.failure = str(exc)
                results[rate] = OpenLoop(rate, skipped="failed (see below)")
                print(f"  {setup.name}: {exc}", file=sys.stderr)
                continue
            results[rate] = res
            print(
                f"  {setup.name:11s} {rate:5d} rps  p50 {res.p50:7.3f}  p99 {res.p99:8.3f}"
                f"  max {res.pmax:8.3f} ms  sent {res.achieved_rps:6.0f}/s  errors {res.errors}",
                flush=True,
            )


def parse_args(argv: Sequence[str] | None) -> Options:
    """Command-line options; ``--quick`` shortens everything for a smoke run."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.dataplane",
        description="Data-plane benchmark: direct vs two peermesh agents vs two HAProxy.",
    )
    parser.add_argument("--seconds", type=float, help="open-loop seconds per rate (default 15)")
    parser.add_argument(
        "--rates",
        default="100,500,1000,2000",
        help="open-loop rates in req/s, comma-separated (default 100,500,1000,2000)",
    )
    parser.add_argument(
        "--closed",
        help="closed-loop settings CLIENTSxSTREAMS, comma-separated (default 1x16,8x8)",
    )
    parser.add_argument(
        "--closed-seconds", type=float, help="approximate seconds per closed-loop run (default 6)"
    )
    parser.add_argument(
        "--burst-rates",
        default="1000",
        help="rates for the extra open loop with h2load --rps bursts, comma-separated"
        " (default 1000; empty to skip)",
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="first wait up to SECONDS for other processes to leave the CPUs mostly idle",
    )
    parser.add_argument("--quick", action="store_true", help="short smoke run (~2 minutes)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave the doc alone")
    parser.add_argument("--output", type=Path, default=BENCHMARKS_DOC, help="markdown file")
    ns = parser.parse_args(argv)
    seconds = ns.seconds if ns.seconds is not None else (4.0 if ns.quick else 15.0)
    closed_seconds = ns.closed_seconds or (2.0 if ns.quick else 6.0)
    closed_text = ns.closed or ("8x8" if ns.quick else "1x16,8x8")
    try:
        rates = [int(r) for r in ns.rates.split(",") if r.strip()]
        burst_rates = [int(r) for r in ns.burst_rates.split(",") if r.strip()]
        closed = [
            (int(c), int(m))
            for c, m in (item.lower().split("x") for item in closed_text.split(",") if item)
        ]
    except ValueError:
        parser.error("--rates wants integers like 500,1000; --closed wants CxM like 16x8")
    if not rates or min(rates + burst_rates) <= 0 or not closed or seconds <= 0:
        parser.error("rates, closed-loop settings and seconds must be positive")
    return Options(
        seconds=seconds,
        rates=rates,
        closed=closed,
        closed_seconds=closed_seconds,
        burst_rates=burst_rates,
        write=not ns.no_write,
        output=ns.output,
        wait_idle=max(0.0, ns.wait_idle),
    )


def wait_for_idle(timeout: float, threshold: float = 0.25) -> float:
    """Busy share of the CPUs (other processes), after waiting up to ``timeout`` s for calm."""
    deadline = time.monotonic() + timeout
    busy = busy_fraction(2.0)
    while busy > threshold and time.monotonic() < deadline:
        print(f"waiting for the machine to calm down ({busy:.0%} busy)", flush=True)
        busy = busy_fraction(5.0)
    return busy


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM (and SIGINT, even if inherited as ignored) into KeyboardInterrupt."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    # A shell that starts us in the background sets SIGINT to "ignore"; Ctrl-C should work.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 on success, 1 on a failed set-up, 130 on Ctrl-C."""
    opts = parse_args(argv)
    tools = required_tools()
    background = wait_for_idle(opts.wait_idle)
    started = time.monotonic()
    machine0, own0 = cpu_clock(), own_cpu_seconds()
    facts = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "args": " ".join(sys.argv[1:] if argv is None else argv) or "(defaults)",
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model(),
        "memory": memory_total(),
        "kernel": platform.release(),
        "background": "unknown" if math.isnan(background) else f"{background:.0%}",
    }
    vers = versions(tools)
    if not math.isnan(background) and background > 0.25:
        print(
            f"warning: {background:.0%} of the CPUs are busy with other work; figures will be"
            " noisy and lower than on an idle machine",
            file=sys.stderr,
        )
    try:
        with sigterm_as_interrupt(), tempfile.TemporaryDirectory(prefix="peermesh-bench-") as tmp:
            setups = run_benchmark(opts, tools, Path(tmp))
    except KeyboardInterrupt:
        print("\ninterrupted: every process stopped, temp dir removed", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"bench.dataplane: {exc}", file=sys.stderr)
        return 1
    (busy0, total0), (busy1, total1) = machine0, cpu_clock()
    others = (busy1 - busy0) - (own_cpu_seconds() - own0)
    facts["others"] = f"{max(0.0, others) / max(total1 - total0, 1e-9):.0%}"
    report = render(setups, opts, facts, vers, time.monotonic() - started)
    print()
    print(report)
    if opts.write:
        update_marked_section(SECTION, report, opts.output)
        print(f"wrote the {SECTION} section of {opts.output}")
    return 0
