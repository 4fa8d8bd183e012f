"""Reading a history in time: who was down or cut off, what each agent saw, the phases."""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from typing import Any

from chaos.history import History, Request, Sample, Window


def active_windows(windows: Sequence[Window], kind: str, t: float) -> list[Window]:
    return [w for w in windows if w.kind == kind and w.start <= t < (w.end or math.inf)]


def down_hosts(history: History, t: float) -> set[str]:
    """Hosts whose agent is killed, stopped or restarting (for a clock change) at ``t``."""
    return {
        h
        for k in ("kill", "stop", "restart")
        for w in active_windows(history.windows, k, t)
        for h in w.hosts
    }


def cut(history: History, t: float, a: str, b: str) -> bool:
    """Is the link a-b cut by a partition (or flaky cut) in force at ``t``?"""
    windows = history.windows
    for w in active_windows(windows, "partition", t) + active_windows(windows, "flaky", t):
        side = {h: i for i, g in enumerate(w.groups) for h in g}
        if a in side and b in side and side[a] != side[b]:
            return True
    return False


def classify(history: History, r: Request) -> str:
    """same-side | cross | source-down | no-endpoint."""
    down = down_hosts(history, r.t)
    if r.src in down:
        return "source-down"
    endpoints = [h for h, s in history.services.items() if s == r.svc]
    live = [h for h in endpoints if h not in down]
    if not live:
        return "no-endpoint"
    if any(h == r.src or not cut(history, r.t, r.src, h) for h in live):
        return "same-side"
    return "cross"


class Views:
    """Each host's membership view over time, from the samples taken during the run."""

    def __init__(self, history: History):
        self.by_host: dict[str, tuple[list[float], list[Sample]]] = {}
        for sample in sorted(history.samples, key=lambda x: x.t):
            times, samples = self.by_host.setdefault(sample.host, ([], []))
            times.append(sample.t)
            samples.append(sample)
        self.during_run = any(x.t < history.final_heal for x in history.samples)

    def at(self, host: str, t: float) -> Sample | None:
        times, samples = self.by_host.get(host, ([], []))
        i = bisect.bisect_right(times, t)
        return samples[i - 1] if i else None


def expected_alive(history: History, viewer: str, target: str, t: float) -> bool:
    """Should ``viewer`` see ``target`` alive at ``t`` given the faults in force?"""
    return target not in down_hosts(history, t) and (
        viewer == target or not cut(history, t, viewer, target)
    )


def view_matches(
    history: History, view: Sample | None, viewer: str, targets: Sequence[str], t: float
) -> bool:
    if view is None:
        return False
    for target in targets:
        node = history.hosts[target]
        if expected_alive(history, viewer, target, t):
            if node not in view.alive:
                return False
        elif node in view.alive or node in view.suspect:
            return False
    return True


def learning(history: History, views: Views, r: Request) -> bool:
    """Has the source's membership not yet caught up with the faults at ``r.t``?

    Without membership samples (made-up histories) a fixed ``detect_s`` grace after
    each fault edge stands in for the measured detection.
    """
    if not views.during_run:
        return in_grace(history, r.t)
    endpoints = [h for h, s in history.services.items() if s == r.svc]
    return not view_matches(history, views.at(r.src, r.t), r.src, endpoints, r.t)


def detection_times(history: History, views: Views) -> list[dict[str, Any]]:
    """For each fault edge: how long until every running host's view matched it."""
    edges = sorted(
        {(w.start, f"{w.label or w.kind} starts") for w in history.windows}
        | {(w.end, f"{w.label or w.kind} ends") for w in history.windows if w.end is not None}
    )
    times = [e for e, _ in edges] + [history.end]
    rows = []
    for i, (edge, name) in enumerate(edges):
        nxt = min((x for x in times[i + 1 :] if x > edge + 1e-6), default=history.end)
        worst: float | None = 0.0
        for host in history.hosts:
            if host in down_hosts(history, edge + 1e-3):
                continue
            hit = None
            for sample in views.by_host.get(host, ([], []))[1]:
                if edge <= sample.t < nxt and view_matches(
                    history, sample, host, list(history.hosts), sample.t
                ):
                    hit = sample.t - edge
                    break
            if hit is None:
                worst = None
                break
            worst = max(worst or 0.0, hit)
        measurable = worst is not None or nxt - edge >= history.limits.detect_s
        rows.append(
            {"edge": name, "at": edge - history.start, "seconds": worst, "measurable": measurable}
        )
    return rows


def in_grace(history: History, t: float) -> bool:
    """Within ``detect_s`` after a fault started or ended (membership still learning)."""
    g = history.limits.detect_s
    for w in history.windows:
        for edge in (w.start, w.end):
            if edge is not None and edge <= t < edge + g:
                return True
    return False


def phases(history: History) -> list[tuple[float, float, str]]:
    """Intervals between fault edges, each named by the faults in force."""
    edges = {history.start, history.end}
    for w in history.windows:
        edges.add(w.start)
        if w.end is not None:
            edges.add(w.end)
    points = sorted(e for e in edges if history.start <= e <= history.end)
    out = []
    for a, b in itertools.pairwise(points):
        if b - a < 1e-6:
            continue
        mid = (a + b) / 2
        names = sorted(
            {w.label or w.kind for w in history.windows if w.start <= mid < (w.end or math.inf)}
        )
        out.append((a, b, " + ".join(names) or "steady"))
    return out


def quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]
