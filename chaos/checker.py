"""The checker: a recorded history in, PASS/FAIL per invariant out. Pure (no I/O).

A history holds every request outcome (from the load generators), every policy edit
and whether an agent acknowledged it, every certificate-authority attempt, the fault
windows, digest samples taken after the final heal, the policy every agent holds at
the end, and what happened after each ``kill``. Each invariant is a function of the
history alone, so it can be tested with made-up histories that must FAIL.
"""

from __future__ import annotations

from collections.abc import Sequence

from chaos.clock_invariant import check_clock_skew
from chaos.history import History, Verdict
from chaos.invariants import (
    check_availability,
    check_convergence,
    check_failure_handling,
    check_no_lost_writes,
    check_security,
)

CHECKS = (
    check_no_lost_writes,
    check_convergence,
    check_availability,
    check_failure_handling,
    check_security,
    check_clock_skew,
)


def check(history: History) -> list[Verdict]:
    return [c(history) for c in CHECKS]


def summary_text(name: str, history: History, verdicts: Sequence[Verdict]) -> str:
    ok = sum(r.status == 200 for r in history.requests)
    lines = [
        f"chaos scenario {name}: {history.end - history.start:.0f} s, "
        f"{len(history.hosts)} hosts, {len(history.requests)} requests ({ok} ok), "
        f"{sum(e.acked for e in history.edits)} acknowledged edits, "
        f"{len(history.windows)} fault windows",
    ]
    for v in verdicts:
        lines.append(f"  {'PASS' if v.passed else 'FAIL'}  {v.name:24} {v.summary}")
    avail = next((v for v in verdicts if v.name == "availability"), None)
    if avail and avail.details.get("phases"):
        lines.append("  phases (same-side success, outside the detection window):")
        for p in avail.details["phases"]:
            rate = "—" if p["success_rate"] is None else f"{p['success_rate']:.1%}"
            lines.append(
                f"    {p['start']:6.1f}-{p['end']:6.1f} s  {p['phase'][:38]:38} "
                f"{p['same_side_ok']:5}/{p['same_side']:<5} {rate:>6}"
                + (f"  cross {p['cross_fail_fast']}/{p['cross']} fast 503" if p["cross"] else "")
            )
    overall = all(v.passed for v in verdicts)
    lines.append(f"  overall: {'PASS' if overall else 'FAIL'}")
    return "\n".join(lines)
