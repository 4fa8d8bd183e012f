"""Whole-run invariants: no lost writes, convergence, availability, failures, security."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from chaos.history import History, Request, Sample, Verdict
from chaos.timeline import Views, classify, detection_times, learning, phases, quantile

QUORUM_MESSAGE = "required signers reachable"


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
    first_fast = partition_to_first_fast_503(history)
    if first_fast:
        summary += "; partition to first fast 503: " + ", ".join(
            f"{f['fault']} {_seconds(f['seconds'])}" for f in first_fast
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
            "partition_to_first_fast_503": first_fast,
            "detection_window_same_side": grace_same,
            "detection_window_same_side_ok": grace_same_ok,
        },
    )


def partition_to_first_fast_503(history: History) -> list[dict[str, Any]]:
    """Per partition: seconds from the cut to the first cross request answered with a fast 503.

    Counts requests sent before membership noticed too: that is where a dead connection
    must be detected by the data plane itself (PING deadline) rather than by gossip.
    """
    bound = history.limits.fail_fast_s
    out: list[dict[str, Any]] = []
    for w in history.windows:
        if w.kind != "partition":
            continue
        end = w.end if w.end is not None else history.final_heal
        answered = [
            r.t + r.lat
            for r in history.requests
            if w.start <= r.t < end
            and r.status == 503
            and r.lat <= bound
            and classify(history, r) == "cross"
        ]
        first = min(answered, default=None)
        out.append(
            {
                "fault": w.label or w.kind,
                "at": w.start - history.start,
                "seconds": None if first is None else first - w.start,
            }
        )
    return out


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
