"""The clock-skew invariant: every other agent's `peermesh check` names a skewed node rightly."""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from typing import Any

from chaos.history import ClockCheck, History, Verdict
from chaos.timeline import Views, active_windows, down_hosts, expected_alive

SKEW_NOTICE_S = 2.0  # `peermesh check` names a peer whose clock is off by more (meshview)
SKEW_MARGIN_S = 1.0  # offsets within SKEW_NOTICE_S ± this may be named or not
SKEW_VALUE_TOLERANCE_S = 2.0  # a named skew must be this close to the true difference


def clock_offset(history: History, host: str, t: float) -> float:
    """Seconds ``host``'s wall clock is ahead at ``t`` (0 outside clock-skew windows)."""
    for w in active_windows(history.windows, "clock-skew", t):
        if host in w.hosts:
            return w.offset
    return 0.0


def not_asked(history: History, views: Views | None, c: ClockCheck, node: str) -> bool:
    """Did the viewer's ``check`` not ask ``node``? It fans out to the members it sees
    alive only, so a peer its membership samples show not alive around the answer was
    not asked (and cannot be named)."""
    if node in c.unreachable:
        return True
    if views is None or not views.during_run:
        return False
    times, samples = views.by_host.get(c.host, ([], []))
    lo = bisect.bisect_left(times, c.t - 1.0)
    hi = bisect.bisect_right(times, c.t_end + 0.5)
    around = samples[max(0, lo - 1) : hi]
    return any(node not in x.alive for x in around)


def skew_pair_problem(
    history: History, c: ClockCheck, peer: str, views: Views | None = None
) -> str | None:
    """Is ``c``'s verdict on ``peer``'s clock wrong? (None: right, or not judgeable)

    A peer the viewer asked whose clock differs from the viewer's by more than the
    agent's threshold (+ a margin) must be named with about the right value; a peer
    whose clock agrees with the viewer's (- the margin) must not be named.
    """
    node = history.hosts[peer]
    if peer == c.host or peer in down_hosts(history, c.t) or not_asked(history, views, c, node):
        return None
    named = dict(c.skewed)
    mine = clock_offset(history, c.host, c.t)
    truth = clock_offset(history, peer, c.t) - mine
    if abs(truth) > SKEW_NOTICE_S + SKEW_MARGIN_S:
        if node not in named:
            return f"{c.host} did not name {node} ({truth:+.0f} s)"
        if abs(named[node] - truth) > SKEW_VALUE_TOLERANCE_S:
            return f"{c.host} named {node} {named[node]:+.1f} s, truth {truth:+.0f} s"
    elif abs(truth) < SKEW_NOTICE_S - SKEW_MARGIN_S and node in named:
        return f"{c.host} named {node} {named[node]:+.1f} s but their clocks agree" + (
            f" (both {mine:+g} s)" if mine else ""
        )
    return None


def skew_problems(history: History, c: ClockCheck, views: Views | None = None) -> list[str]:
    """Everything wrong with one answer of ``peermesh check`` given the true clocks."""
    found = (skew_pair_problem(history, c, peer, views) for peer in sorted(history.hosts))
    return [p for p in found if p is not None]


def check_clock_skew(history: History) -> Verdict:
    """The mesh notices skewed clocks (and stops naming them once they are restored).

    Each answer of ``/v1/mesh/check`` sent at least ``skew_detect_s`` after the last
    clock change (an agent restart) and answered before the next one is *settled* and
    must name exactly the skewed peers (``skew_problems``). There must be such evidence:
    every skew window has a settled answer naming the skewed node, and after the last
    restore every host gave a settled answer (all clean, by the rule above).
    """
    windows = [w for w in history.windows if w.kind == "clock-skew"]
    name = "clock skew noticed"
    if not windows:
        return Verdict(name, True, "no clock skew in this scenario (not exercised)", {})
    grace = history.limits.skew_detect_s
    edges = sorted({w.start for w in windows} | {w.end for w in windows if w.end is not None})

    def settled(c: ClockCheck) -> bool:
        before = [e for e in edges if e <= c.t]
        return (
            c.answered
            and (not before or c.t >= before[-1] + grace)
            and not any(c.t < e <= c.t_end for e in edges)
        )

    checks = sorted(history.clock_checks, key=lambda c: c.t)
    judged = [c for c in checks if settled(c)]
    views = Views(history)
    problems: list[str] = []
    for c in judged:
        problems += [f"{c.t - history.start:.1f} s: {p}" for p in skew_problems(history, c, views)]
    rows: list[dict[str, Any]] = []
    for w in windows:
        skewed = w.hosts[0]
        node = history.hosts[skewed]
        end = w.end if w.end is not None else history.end
        during = [c for c in checks if w.start <= c.t and c.t_end < end and c.answered]
        # per viewer: the first answer that named the skewed node (about right) ...
        first: dict[str, float | None] = {}
        for viewer in history.hosts:
            truth = w.offset - clock_offset(history, viewer, w.start)
            if viewer == skewed or abs(truth) <= SKEW_NOTICE_S + SKEW_MARGIN_S:
                continue
            hits = [
                c.t_end
                for c in during
                if c.host == viewer
                and node in dict(c.skewed)
                and skew_pair_problem(history, c, skewed, views) is None
            ]
            first[viewer] = min(hits) - w.start if hits else None
        # ... and, after the restore, the first that judged its clock right again
        cleared: dict[str, float | None] = {}
        if w.end is not None:
            after = [c for c in checks if c.t >= w.end and c.answered]
            for viewer in history.hosts:
                if viewer == skewed:
                    continue
                clean = [
                    c.t_end
                    for c in after
                    if c.host == viewer
                    and not not_asked(history, views, c, node)
                    and skew_pair_problem(history, c, skewed, views) is None
                ]
                cleared[viewer] = min(clean) - w.end if clean else None
        evidence = any(c.host != skewed and node in dict(c.skewed) for c in judged if c in during)
        if not evidence:
            problems.append(
                f"{w.label or node}: no settled answer of any peer named {node}"
                " (the skew went unnoticed, or nobody was asked)"
            )
        # Membership while skewed (settled): how often others did not see it alive.
        lost = [
            x
            for x in history.samples
            if w.start + grace <= x.t < end
            and x.host != skewed
            and x.t < history.final_heal
            and all(not (x.t - grace < e <= x.t) for e in edges)
            and expected_alive(history, x.host, skewed, x.t)
            and node not in x.alive
        ]
        asked = [c for c in judged if c in during and c.host != skewed]
        unasked = sum(not_asked(history, views, c, node) for c in asked)
        rows.append(
            {
                "window": w.label or f"clock {node}",
                "not_alive_samples": len(lost),
                "not_alive_viewers": sorted({x.host for x in lost}),
                "answers_not_asking_it": unasked,
                "node": node,
                "offset": w.offset,
                "start": w.start - history.start,
                "end": None if w.end is None else w.end - history.start,
                "noticed_after": first,
                "cleared_after": cleared,
                "answers": len(during),
            }
        )
    last_end = max((w.end if w.end is not None else math.inf) for w in windows)
    clean_hosts = {c.host for c in judged if c.t >= last_end}
    missing = sorted(set(history.hosts) - clean_hosts)
    if missing:
        problems.append(
            "no settled answer after the clocks were restored from "
            + ", ".join(missing)
            + " (no evidence the mesh stops naming restored clocks)"
        )
    passed = not problems

    def worst(values: Mapping[str, float | None]) -> str:
        if not values:
            return "—"
        if any(v is None for v in values.values()):
            return "never (" + ", ".join(k for k, v in sorted(values.items()) if v is None) + ")"
        return f"{max(v for v in values.values() if v is not None):.1f} s"

    summary = "; ".join(
        f"{r['node']} {r['offset']:+g} s: named by {len(r['noticed_after'])} peers within "
        f"{worst(r['noticed_after'])}"
        + (
            f" (but not alive in {r['not_alive_samples']} membership samples of "
            f"{', '.join(r['not_alive_viewers'])} while skewed, so {r['answers_not_asking_it']}"
            " answers could not ask it)"
            if r["not_alive_samples"]
            else ""
        )
        + (
            f", cleared within {worst(r['cleared_after'])} of the restore"
            if r["cleared_after"]
            else ""
        )
        for r in rows
    )
    summary += f"; {len(judged)} settled answers"
    if problems:
        summary += f"; {len(problems)} problems: " + "; ".join(problems[:4])
    return Verdict(
        name,
        passed,
        summary,
        {"windows": rows, "settled_answers": len(judged), "problems": problems[:50]},
    )
