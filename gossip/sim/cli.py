"""``python -m gossip.sim``: run one scenario from the command line and print its report."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from gossip.profiles import get_profile
from gossip.sim.config import SimConfig
from gossip.sim.runner import run_simulation


def _parse(argv: Sequence[str] | None) -> SimConfig:
    ap = argparse.ArgumentParser(
        prog="python -m gossip.sim",
        description="Run the real SWIM core for N nodes over a simulated network.",
    )
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--duration", type=float, default=60.0, help="virtual seconds")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--loss", type=float, default=0.0, help="per-datagram loss, 0..1")
    ap.add_argument("--kill", type=int, default=0, help="nodes to kill after joining")
    ap.add_argument("--kill-at", type=float, default=None)
    ap.add_argument("--partition", type=float, default=0.0, help="fraction of nodes cut off")
    ap.add_argument("--partition-at", type=float, default=None)
    ap.add_argument("--partition-duration", type=float, default=None)
    ap.add_argument("--join-window", type=float, default=None)
    ap.add_argument("--warm-start", action="store_true", help="start with converged membership")
    ap.add_argument("--update-at", type=float, default=None)
    ap.add_argument("--late-joins", type=int, default=3, help="nodes joining a converged mesh")
    ap.add_argument("--profile", default="lan", choices=["lan", "wan", "local"])
    ap.add_argument("--encrypt", action="store_true", help="seal datagrams with AES-256-GCM")
    ns = ap.parse_args(argv)
    if not 0 <= ns.loss < 1 or not 0 <= ns.partition < 1:
        ap.error("--loss and --partition are fractions in [0, 1)")
    # Every option's dest is the SimConfig field of the same name.
    settings = {name: value for name, value in vars(ns).items() if name != "profile"}
    return SimConfig(**settings, profile=get_profile(ns.profile))


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    cfg = _parse(argv)
    report = run_simulation(cfg)
    print(report.format())
    for t, obs, subj in report.false_positive_examples[:5]:
        print(f"  false positive: t={t:.2f}s {obs} declared {subj} dead")
    return 0
