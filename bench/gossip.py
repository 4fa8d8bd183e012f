"""Membership at scale, from the deterministic gossip simulator (the real SWIM core).

``python -m bench.gossip`` runs one seeded scenario per mesh size and loss rate: nodes
join over a window (or start pre-converged, for the largest size), one node changes
its metadata, a few nodes join the converged mesh, a few are killed. It reports
join and update dissemination, failure detection (first suspicion, dead everywhere)
p50/p99, false positives and the per-member load, prints a table and rewrites the
``gossip`` section of ``docs/benchmarks.md`` (nothing else in that file changes).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bench._common import cpu_model, update_marked_section
from gossip.profiles import LAN
from gossip.sim import Dist, SimConfig, SimReport, run_simulation

TITLE = "## Membership (gossip simulator)"
# Steering targets from the issue (memberlist / Serf orders of magnitude).
TARGET_DEAD_ALL = 5.0  # failure detected by all members at 1000 nodes, lan profile
TARGET_CHANGE_ALL = 2.2  # a change reaches 99.99% of 1000 nodes


@dataclass(frozen=True)
class Row:
    """One scenario and what it measured."""

    config: SimConfig
    report: SimReport
    cpu: float


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _pair(d: Dist | None) -> str:
    return "-" if d is None else f"{d.p50:.2f} / {d.p99:.2f} s"


def scenario(nodes: int, loss: float, seed: int, kill: int, big: int) -> SimConfig:
    """The scenario for one row: sizes of ``big`` and more start pre-converged, shorter."""
    warm = nodes >= big
    return SimConfig(
        nodes=nodes,
        duration=40.0 if warm else 60.0,
        seed=seed,
        loss=loss,
        kill=kill,
        late_joins=3,
        warm_start=warm,
    )


def run(sizes: Sequence[int], losses: Sequence[float], seed: int, kill: int, big: int) -> list[Row]:
    """Run every scenario, printing a line as each finishes."""
    rows = []
    for nodes in sizes:
        for loss in losses:
            cfg = scenario(nodes, loss, seed, kill, big)
            cpu = time.process_time()
            report = run_simulation(cfg)
            cpu = time.process_time() - cpu
            print(
                f"{nodes:>5} nodes, loss {loss:>4.0%}: {report.wall_seconds:6.0f} s wall,"
                f" {cpu:6.0f} s CPU; dead everywhere {_pair(report.full_dissemination)};"
                f" false positives {report.false_positives}",
                flush=True,
            )
            rows.append(Row(cfg, report, cpu))
    return rows


def render(rows: Sequence[Row], seed: int, kill: int, big: int) -> str:
    """The markdown section for docs/benchmarks.md."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    wall = sum(r.report.wall_seconds for r in rows)
    lines = [
        TITLE,
        "",
        f"Measured {when} by `python -m bench.gossip` ({wall:.0f} s wall in all) on "
        f"{os.cpu_count()} CPUs ({cpu_model()}), "
        f"Python {platform.python_version()}. Every node runs the real `gossip.swim.Swim` "
        "core with the real msgpack codec (unencrypted: AES-GCM does not change sizes "
        "beyond a fixed 33 bytes per datagram) over a simulated network: seeded "
        f"(seed {seed}), virtual time, 1-5 ms latency per datagram, independent loss per "
        f"datagram, `lan` profile. Scenario: nodes join one after another over "
        f"max(1 s, N/100 s) through a random earlier node; at 10% of the run one node "
        f"changes its metadata and three more nodes join the converged mesh (2 s apart); "
        f"at 20% {kill} nodes are killed. Meshes of {big} nodes and more start "
        "pre-converged (every node merges the same full state at t=0) and run 40 s instead "
        "of 60 s: a mass join of that size costs the simulator N² rumours.",
        "",
        "### Dissemination and failure detection",
        "",
        "| nodes | loss | run | mass join: all see all | join into converged mesh "
        "p50 / p99 | ... all members | update p50 / p99 | ... all members "
        "| first suspicion p50 / p99 | first dead p50 / p99 | dead everywhere p50 / p99 |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        c, r = row.config, row.report
        start = "pre-converged" if c.warm_start else "joins"
        lines.append(
            f"| {c.nodes} | {c.loss:.0%} | {c.duration:.0f} s, {start} "
            f"| {'-' if c.warm_start else _s(r.converged_at)} "
            f"| {_pair(r.late_join_latency)} | {_s(r.late_join_reached_all)} "
            f"| {_pair(r.update_latency)} | {_s(r.update_reached_all)} "
            f"| {_pair(r.first_suspect)} | {_pair(r.first_detection)} "
            f"| {_pair(r.full_dissemination)} |"
        )
    lines += [
        "",
        "### False positives and load",
        "",
        "| nodes | loss | false positives | killed nodes dead everywhere at the end | "
        "datagrams / member / s (steady) | bytes / member / s (steady) | datagrams / member "
        "/ s (whole run) | push-pull exchanges | simulator wall / CPU |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        c, r = row.config, row.report
        lines.append(
            f"| {c.nodes} | {c.loss:.0%} | {r.false_positives} "
            f"| {'yes' if r.killed_dead_everywhere else 'no'} "
            f"| {r.steady_msgs_per_member_sec:.1f} | {r.steady_bytes_per_member_sec:.0f} "
            f"| {r.msgs_per_member_sec:.1f} | {r.push_pulls} "
            f"| {r.wall_seconds:.0f} s / {row.cpu:.0f} s |"
        )
    lines += ["", *verdicts(rows), "", *notes()]
    return "\n".join(lines) + "\n"


def verdicts(rows: Sequence[Row]) -> list[str]:
    """The steering targets, met or not, from the 1000-node rows."""
    out = ["Steering targets (1000 nodes unless said otherwise):", ""]
    thousand = [r for r in rows if r.config.nodes == 1000]
    if thousand:
        dead = [r.report.full_dissemination for r in thousand]
        worst_dead = max((d.p99 for d in dead if d is not None), default=None)
        susp = [r.report.all_suspect for r in thousand]
        worst_susp = max((d.p99 for d in susp if d is not None), default=None)
        met = worst_dead is not None and worst_dead <= TARGET_DEAD_ALL
        out.append(
            f"* Failure detected by all ≤ {TARGET_DEAD_ALL:.0f} s: "
            f"{'met' if met else '**not met**'}"
            f" for *dead* everywhere (p99 {_s(worst_dead)}); *suspected* by all at p99 "
            f"{_s(worst_susp)}. Lifeguard cannot declare a member dead before its minimum "
            f"suspicion timeout, {LAN.suspicion_min(1000):.0f} s at 1000 nodes with the lan "
            "profile (4 x log10(N) x 1 s), so only suspicion (which already takes the member "
            "out of the balancer's first choice) can meet this target with memberlist's "
            "defaults."
        )
        changes = [r.report.update_reached_all for r in thousand] + [
            r.report.late_join_reached_all for r in thousand
        ]
        worst = max((c for c in changes if c is not None), default=None)
        out.append(
            f"* A change reaches 99.99% of 1000 nodes ≤ {TARGET_CHANGE_ALL} s: "
            f"{'met' if worst is not None and worst <= TARGET_CHANGE_ALL else '**not met**'} "
            f"(slowest update or join to *all* members: {_s(worst)})."
        )
    ten = [r for r in rows if abs(r.config.loss - 0.10) < 1e-9]
    if ten:
        fps = sum(r.report.false_positives for r in ten)
        out.append(
            f"* Zero false positives at 10% loss: {'met' if fps == 0 else '**not met**'} "
            f"({fps} across {', '.join(str(r.config.nodes) for r in ten)} nodes)."
        )
    steady = {
        r.config.nodes: r.report.steady_msgs_per_member_sec for r in rows if not r.config.loss
    }
    if steady:
        flat = ", ".join(f"{n}: {v:.1f}" for n, v in sorted(steady.items()))
        out.append(f"* Per-member load flat as N grows (steady datagrams/s at 0% loss): {flat}.")
    return out


def notes() -> list[str]:
    """How to read the columns."""
    return [
        "How to read it: *mass join* is the first moment every live node sees every other "
        "one alive after all initial joins (a burst of N/100 joins per second backs up the "
        "rumour queues, so it measures the burst, not one join); *join into converged mesh* "
        "and *update* are, for each member, the time from the change until it learned it; "
        "*... all members* is the time until the last live member did. Failure detection "
        "is timed from the kill. A false positive is a live, reachable node declared dead "
        "by anyone. *Steady* load is the median, over the seconds of the run's last "
        "third, of datagrams sent per live member (a member sends one probe and answers "
        "about one per second; gossip rounds only send when there is news); push-pull "
        "exchanges are not datagrams (they ride HTTP/2) and are counted apart.",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(prog="python -m bench.gossip", description=__doc__)
    ap.add_argument("--sizes", default="100,1000,5000", help="comma-separated mesh sizes")
    ap.add_argument("--loss", default="0,0.05,0.10", help="comma-separated loss rates")
    ap.add_argument(
        "--big-loss",
        default="0.05",
        help="loss rates for sizes of --big and more (each run takes minutes)",
    )
    ap.add_argument("--big", type=int, default=5000, help="from this size: pre-converged start")
    ap.add_argument("--kill", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--no-write", action="store_true", help="print only")
    ns = ap.parse_args(argv)
    sizes = [int(x) for x in ns.sizes.split(",") if x]
    losses = [float(x) for x in ns.loss.split(",") if x]
    big_losses = [float(x) for x in ns.big_loss.split(",") if x]
    rows: list[Row] = []
    for n in sizes:
        rows += run([n], big_losses if n >= ns.big else losses, ns.seed, ns.kill, ns.big)
    text = render(rows, ns.seed, ns.kill, ns.big)
    print()
    print(text)
    if not ns.no_write:
        update_marked_section("gossip", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
