"""The checker: a recorded history in, PASS/FAIL per invariant out. Pure (no I/O).

A history holds every request outcome (from the load generators), every policy edit
and whether an agent acknowledged it, every certificate-authority attempt, the fault
windows, digest samples taken after the final heal, the policy every agent holds at
the end, and what happened after each ``kill``. Each invariant is a function of the
history alone, so it can be tested with made-up histories that must FAIL.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

QUORUM_MESSAGE = "required signers reachable"
SKEW_NOTICE_S = 2.0  # `peermesh check` names a peer whose clock is off by more (meshview)
SKEW_MARGIN_S = 1.0  # offsets within SKEW_NOTICE_S ± this may be named or not
SKEW_VALUE_TOLERANCE_S = 2.0  # a named skew must be this close to the true difference


@dataclass(frozen=True)
class Request:
    t: float  # start, wall clock
    lat: float  # seconds
    status: int  # 0 = no reply
    src: str  # source host
    svc: str  # destination service
    error: str = ""


@dataclass(frozen=True)
class Edit:
    t: float
    host: str
    name: str
    acked: bool
    detail: str = ""


@dataclass(frozen=True)
class CaAttempt:
    t: float
    host: str
    ok: bool
    message: str
    reachable_min: int  # signers reachable from host (alive, same side) during the attempt
    reachable_max: int
    threshold: int


@dataclass(frozen=True)
class Window:
    """A fault in force from ``start`` to ``end`` (None: until the end of the run)."""

    kind: str  # partition | loss | flaky | delay | kill | stop | clock-skew | restart
    start: float
    end: float | None
    hosts: tuple[str, ...] = ()
    groups: tuple[tuple[str, ...], ...] = ()  # partition groups (cut links)
    label: str = ""
    offset: float = 0.0  # clock-skew: seconds the host's wall clock is ahead (< 0: behind)


@dataclass(frozen=True)
class Sample:
    t: float
    host: str
    members_digest: str | None
    policy_digest: str | None
    alive: tuple[str, ...]  # node names this host sees alive
    suspect: tuple[str, ...] = ()  # ... and suspect (still used when no alive one is left)


@dataclass(frozen=True)
class ClockCheck:
    """One agent's ``/v1/mesh/check`` answer: whom its "clock skew" check named."""

    t: float  # request sent (wall clock of the lab, never skewed)
    t_end: float  # reply received
    host: str  # the viewer
    answered: bool
    skewed: tuple[tuple[str, float], ...] = ()  # (node, seconds it is ahead of the viewer)
    unreachable: tuple[str, ...] = ()  # peer nodes that did not answer the viewer's fan-out
    detail: str = ""


@dataclass(frozen=True)
class Kill:
    host: str
    node: str
    t: float
    removed_at: float | None  # when no survivor listed the node alive any more
    restarted_at: float | None


@dataclass
class Limits:
    convergence_s: float = 60.0  # bound on digest agreement after the final heal
    detect_s: float = 12.0  # failure-detection grace after a fault starts
    availability_min: float = 0.95  # same-side success rate per phase
    fail_fast_s: float = 1.0  # a cross-partition failure must answer within this
    fail_fast_min: float = 0.99  # share of cross-partition requests that fail fast
    retry_min: float = 0.99  # success of idempotent requests after a kill
    # Policy digests are "DIGEST/STATE_VECTOR_DIGEST" after the final heal. The content
    # digest must always agree; the state-vector digest too unless this is False (then
    # a disagreement is reported, not failed: see docs/chaos.md, known findings).
    state_vector_must_agree: bool = True
    # After a clock is skewed or restored (the agent restarts), `peermesh check` on
    # every agent must name exactly the skewed peers within this many seconds.
    skew_detect_s: float = 15.0


@dataclass
class History:
    start: float
    end: float
    final_heal: float
    hosts: dict[str, str]  # host -> node
    services: dict[str, str]  # host -> service
    requests: list[Request] = field(default_factory=list)
    edits: list[Edit] = field(default_factory=list)
    ca: list[CaAttempt] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    final_policy: dict[str, list[str] | None] = field(default_factory=dict)
    kills: list[Kill] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    clock_checks: list[ClockCheck] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> History:
        d = dict(data)
        return cls(
            start=d["start"],
            end=d["end"],
            final_heal=d["final_heal"],
            hosts=dict(d["hosts"]),
            services=dict(d["services"]),
            requests=[Request(**r) for r in d.get("requests", [])],
            edits=[Edit(**e) for e in d.get("edits", [])],
            ca=[CaAttempt(**c) for c in d.get("ca", [])],
            windows=[
                Window(
                    **{
                        **w,
                        "hosts": tuple(w.get("hosts", ())),
                        "groups": tuple(tuple(g) for g in w.get("groups", ())),
                    }
                )
                for w in d.get("windows", [])
            ],
            samples=[Sample(**{**s, "alive": tuple(s["alive"])}) for s in d.get("samples", [])],
            final_policy=dict(d.get("final_policy", {})),
            kills=[Kill(**k) for k in d.get("kills", [])],
            limits=Limits(**d.get("limits", {})),
            clock_checks=[
                ClockCheck(
                    **{
                        **c,
                        "skewed": tuple((str(n), float(v)) for n, v in c.get("skewed", ())),
                        "unreachable": tuple(c.get("unreachable", ())),
                    }
                )
                for c in d.get("clock_checks", [])
            ],
        )


@dataclass
class Verdict:
    name: str
    passed: bool
    summary: str
    details: dict[str, Any] = field(default_factory=dict)


def _active(windows: Sequence[Window], kind: str, t: float) -> list[Window]:
    return [w for w in windows if w.kind == kind and w.start <= t < (w.end or math.inf)]


def down_hosts(history: History, t: float) -> set[str]:
    """Hosts whose agent is killed, stopped or restarting (for a clock change) at ``t``."""
    return {
        h
        for k in ("kill", "stop", "restart")
        for w in _active(history.windows, k, t)
        for h in w.hosts
    }


def cut(history: History, t: float, a: str, b: str) -> bool:
    """Is the link a-b cut by a partition (or flaky cut) in force at ``t``?"""
    for w in _active(history.windows, "partition", t) + _active(history.windows, "flaky", t):
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


def check_no_lost_writes(history: History) -> Verdict:
    acked = sorted({e.name for e in history.edits if e.acked})
    missing: dict[str, list[str]] = {}
    for host in history.hosts:
        names = history.final_policy.get(host)
        lost = acked if names is None else [n for n in acked if n not in names]
        if lost:
            missing[host] = lost
    passed = not missing and bool(history.hosts)
    unacked = sorted({e.name for e in history.edits if not e.acked})
    summary = (
        f"{len(acked)} acknowledged edits present on all {len(history.hosts)} hosts"
        if passed
        else f"lost writes: {missing}"
    )
    return Verdict(
        "no lost writes",
        passed,
        summary,
        {"acknowledged": acked, "not_acknowledged": unacked, "missing": missing},
    )


def _policy_key(history: History, digest: str | None) -> str | None:
    if digest is None or history.limits.state_vector_must_agree:
        return digest
    return digest.split("/")[0]


def _agreed(history: History, round_: Mapping[str, Sample]) -> bool:
    everyone = set(history.hosts.values())
    if set(round_) != set(history.hosts):
        return False
    members = {s.members_digest for s in round_.values()}
    policy = {_policy_key(history, s.policy_digest) for s in round_.values()}
    return (
        len(members) == 1
        and len(policy) == 1
        and None not in members
        and None not in policy
        and all(set(s.alive) == everyone for s in round_.values())
    )


def converged_after(history: History, start: float, until: float) -> float | None:
    """Seconds from ``start`` until all hosts agree and keep agreeing up to ``until``."""
    by_time: dict[float, dict[str, Sample]] = {}
    for s in history.samples:
        if start <= s.t <= until - 0.6:  # the round that saw the next fault is not counted
            by_time.setdefault(s.t, {})[s.host] = s
    converged_at: float | None = None
    for t, round_ in sorted(by_time.items()):
        if _agreed(history, round_):
            if converged_at is None:
                converged_at = t
        else:
            converged_at = None
    return None if converged_at is None else converged_at - start


def check_convergence(history: History) -> Verdict:
    bound = history.limits.convergence_s
    starts = sorted(w.start for w in history.windows)
    heals: list[dict[str, Any]] = []
    for w in history.windows:
        if w.kind in ("partition", "flaky", "loss") and w.end is not None:
            nxt = min((x for x in starts if x > w.end), default=history.final_heal)
            if w.end < history.final_heal:
                took_here = converged_after(history, w.end, nxt)
                heals.append(
                    {
                        "heal": w.label or w.kind,
                        "at": w.end - history.start,
                        "seconds": took_here,
                        # converging needs time: a fault that starts again sooner is no FAIL
                        "measurable": took_here is not None or nxt - w.end >= bound,
                    }
                )
    took = converged_after(history, history.final_heal, history.end)
    heals.append(
        {
            "heal": "final heal",
            "at": history.final_heal - history.start,
            "seconds": took,
            "measurable": True,
        }
    )
    slow = [
        h
        for h in heals
        if h["measurable"] and (h["seconds"] is None or float(h["seconds"]) > bound)
    ]
    passed = not slow
    final: dict[str, str | None] = {}
    for s in history.samples:
        if s.t >= history.final_heal:
            final[s.host] = s.policy_digest
    vectors = {h: d.split("/")[1] for h, d in final.items() if d and "/" in d}
    vectors_agree = len(set(vectors.values())) <= 1
    if took is None:
        last: dict[str, Sample] = {}
        for s in history.samples:
            if s.t >= history.final_heal:
                last[s.host] = s
        summary = "never converged after the final heal; last view: " + ", ".join(
            f"{h}: members {s.members_digest} policy {(s.policy_digest or '')[:12]} "
            f"alive {len(s.alive)}"
            for h, s in sorted(last.items())
        )
    else:
        summary = "membership and policy digests agree " + ", ".join(
            f"{_seconds(h['seconds'])} after {h['heal']}" for h in heals if h["measurable"]
        )
        summary += f" (bound {bound:g} s)"
    if not vectors_agree:
        summary += "; policy state-vector digests DIFFER: " + ", ".join(
            f"{h} {v}" for h, v in sorted(vectors.items())
        )
        if not history.limits.state_vector_must_agree:
            summary += " (reported, not failed: state_vector_must_agree is off)"
    return Verdict(
        "convergence",
        passed,
        summary,
        {
            "heals": heals,
            "seconds": took,
            "bound": bound,
            "state_vectors": vectors,
            "state_vectors_agree": vectors_agree,
        },
    )


def check_availability(history: History) -> Verdict:
    lim = history.limits
    rows: list[dict[str, Any]] = []
    passed = True
    cross_fail_lat: list[float] = []
    cross_total = cross_fast = 0
    grace_same = grace_same_ok = 0
    views = Views(history)
    learn_cross: list[Request] = []
    for a, b, name in phases(history):
        reqs = [r for r in history.requests if a <= r.t < b]
        same = [r for r in reqs if classify(history, r) == "same-side"]
        settled = [r for r in same if not learning(history, views, r)]
        grace = [r for r in same if learning(history, views, r)]
        grace_same += len(grace)
        grace_same_ok += sum(r.status == 200 for r in grace)
        ok = sum(r.status == 200 for r in settled)
        rate = ok / len(settled) if settled else None
        all_cross = [r for r in reqs if classify(history, r) == "cross"]
        cross = [r for r in all_cross if not learning(history, views, r)]
        learn_cross += [r for r in all_cross if learning(history, views, r)]
        fast = [r for r in cross if r.status == 503 and r.lat <= lim.fail_fast_s]
        cross_total += len(cross)
        cross_fast += len(fast)
        cross_fail_lat += [r.lat for r in cross if r.status != 200]
        phase_ok = rate is None or rate >= lim.availability_min
        passed &= phase_ok
        rows.append(
            {
                "phase": name,
                "start": a - history.start,
                "end": b - history.start,
                "same_side": len(settled),
                "same_side_ok": ok,
                "success_rate": rate,
                "cross": len(cross),
                "cross_fail_fast": len(fast),
                "pass": phase_ok,
            }
        )
    fast_share = cross_fast / cross_total if cross_total else None
    if fast_share is not None and fast_share < lim.fail_fast_min:
        passed = False
    if not any(r["same_side"] for r in rows):
        passed = False  # no evidence is no pass
    detection = detection_times(history, views) if views.during_run else []
    slow = [
        d
        for d in detection
        if d["measurable"] and (d["seconds"] is None or d["seconds"] > lim.detect_s)
    ]
    if slow:
        passed = False
    learn_lat = [r.lat for r in learn_cross]
    rates = [float(r["success_rate"]) for r in rows if r["success_rate"] is not None]
    worst = min(rates, default=None)
    summary = (
        f"same-side success ≥ {worst:.1%} in every phase"
        if worst is not None
        else "no same-side traffic"
    )
    if cross_total:
        summary += (
            f"; cross-partition: {cross_fast}/{cross_total} failed fast with 503 "
            f"(failure latency p50 {quantile(cross_fail_lat, 0.5) * 1000:.0f} ms, "
            f"p99 {quantile(cross_fail_lat, 0.99) * 1000:.0f} ms)"
        )
    if learn_cross:
        summary += (
            f"; {len(learn_cross)} cross requests sent before membership had noticed "
            f"(latency p50 {quantile(learn_lat, 0.5):.1f} s, max {max(learn_lat):.1f} s)"
        )
    if detection:
        measured = [d["seconds"] for d in detection if d["seconds"] is not None]
        summary += f"; views caught up with every fault within {max(measured, default=0):.1f} s"
    if slow:
        summary += f"; too slow (bound {lim.detect_s:g} s): " + ", ".join(
            f"{d['edge']} ({_seconds(d['seconds'])})" for d in slow
        )
    return Verdict(
        "availability",
        passed,
        summary,
        {
            "phases": rows,
            "cross_total": cross_total,
            "cross_fail_fast": cross_fast,
            "cross_failure_latency_p50": quantile(cross_fail_lat, 0.5),
            "cross_failure_latency_p99": quantile(cross_fail_lat, 0.99),
            "cross_failure_latency_max": max(cross_fail_lat, default=0.0),
            "detection": detection,
            "cross_before_detection": len(learn_cross),
            "cross_before_detection_latency_p50": quantile(learn_lat, 0.5),
            "cross_before_detection_latency_max": max(learn_lat, default=0.0),
            "detection_window_same_side": grace_same,
            "detection_window_same_side_ok": grace_same_ok,
        },
    )


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def check_failure_handling(history: History) -> Verdict:
    if not history.kills:
        return Verdict("failure handling", True, "no kill in this scenario (not exercised)", {})
    lim = history.limits
    rows: list[dict[str, Any]] = []
    passed = True
    for k in history.kills:
        removed = None if k.removed_at is None else k.removed_at - k.t
        end = k.restarted_at or history.end
        svc = history.services.get(k.host)
        reqs = [
            r
            for r in history.requests
            if k.t <= r.t < end and r.svc == svc and classify(history, r) == "same-side"
        ]
        ok = sum(r.status == 200 for r in reqs)
        rate = ok / len(reqs) if reqs else None
        row_ok = (
            removed is not None
            and removed <= lim.detect_s
            and (rate is None or rate >= lim.retry_min)
        )
        passed &= row_ok
        rows.append(
            {
                "host": k.host,
                "node": k.node,
                "removed_after_s": removed,
                "requests": len(reqs),
                "ok": ok,
                "success_rate": rate,
                "pass": row_ok,
            }
        )
    summary = "; ".join(
        f"{r['node']}: "
        + (
            f"gone everywhere after {r['removed_after_s']:.1f} s"
            if r["removed_after_s"] is not None
            else "still listed alive"
        )
        + (
            f", {r['ok']}/{r['requests']} requests to its service ok ({r['success_rate']:.1%})"
            if r["requests"]
            else ""
        )
        for r in rows
    )
    return Verdict("failure handling", passed, summary, {"kills": rows})


def check_security(history: History) -> Verdict:
    if not history.ca:
        return Verdict("security under faults", True, "no CA attempt (not exercised)", {})
    problems = []
    issued = refused = 0
    for c in history.ca:
        must_work = c.reachable_min >= c.threshold
        must_fail = c.reachable_max < c.threshold
        if c.ok:
            issued += 1
        else:
            refused += 1
        if must_fail and c.ok:
            problems.append(f"{c.host}: issued with {c.reachable_max} < t={c.threshold} signers")
        if must_work and not c.ok:
            problems.append(
                f"{c.host}: refused with {c.reachable_min} ≥ t={c.threshold}: {c.message}"
            )
        if must_fail and not c.ok and QUORUM_MESSAGE not in c.message:
            problems.append(f"{c.host}: refusal without the quorum message: {c.message!r}")
    passed = not problems
    summary = (
        f"{issued} issued with ≥ t signers, {refused} refused below t with the quorum message"
        if passed
        else "; ".join(problems)
    )
    return Verdict(
        "security under faults",
        passed,
        summary,
        {"attempts": [asdict(c) for c in history.ca], "problems": problems},
    )


def clock_offset(history: History, host: str, t: float) -> float:
    """Seconds ``host``'s wall clock is ahead at ``t`` (0 outside clock-skew windows)."""
    for w in _active(history.windows, "clock-skew", t):
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
