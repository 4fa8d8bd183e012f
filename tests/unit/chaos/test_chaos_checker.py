"""The chaos checker must be able to FAIL: made-up histories, pure, no lab needed."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from chaos.checker import check, summary_text
from chaos.clock_invariant import clock_offset
from chaos.history import (
    CaAttempt,
    ClockCheck,
    Edit,
    History,
    Kill,
    Limits,
    Request,
    Sample,
    Window,
)
from chaos.report import write

HOSTS = {"h1": "node-1", "h2": "node-2", "h3": "node-3"}
SERVICES = {"h1": "web", "h2": "orders", "h3": "orders"}
T0 = 1_000_000.0
EVERYONE = tuple(sorted(HOSTS.values()))


def good_history(*, with_kill: bool = True) -> History:
    """3 hosts; partition h1,h2|h3 from 10 to 40 s; heal; kill h3 at 50, restart at 70."""
    partition = Window(
        "partition", T0 + 10, T0 + 40, groups=(("h1", "h2"), ("h3",)), label="partition"
    )
    kill = Window("kill", T0 + 50, T0 + 70, hosts=("h3",), label="kill h3")
    requests = []
    for i in range(0, 900):
        t = T0 + i * 0.1
        requests.append(Request(t, 0.01, 200, "h1", "orders"))  # always same side (h2)
        if 10 <= t - T0 < 40:
            # cross: h3 -> web (only on h1); the first 20 s membership is still learning
            slow = t - T0 < 30
            requests.append(
                Request(t, 9.0 if slow else 0.002, 0 if slow else 503, "h3", "web", "x")
            )
        elif not (with_kill and 50 <= t - T0 < 70):
            requests.append(Request(t, 0.01, 200, "h3", "web"))
    samples = []
    for i in range(0, 900, 5):
        t = T0 + i * 0.1
        for host in HOSTS:
            alive, suspect = EVERYONE, ()
            if 10 <= t - T0 < 40:
                side = ("node-1", "node-2") if host != "h3" else ("node-3",)
                learning_minority = host == "h3" and t - T0 < 30
                alive = side
                suspect = ("node-1", "node-2") if learning_minority else ()
            if with_kill and 50 <= t - T0 < 70:
                if host == "h3":
                    continue  # dead agents answer nothing
                alive = ("node-1", "node-2")
            samples.append(Sample(t, host, "m-same", "p-same", alive, suspect))
    return History(
        start=T0,
        end=T0 + 90,
        final_heal=T0 + 80,
        hosts=dict(HOSTS),
        services=dict(SERVICES),
        requests=requests,
        edits=[
            Edit(T0 + 5, "h1", "before", True),
            Edit(T0 + 15, "h1", "left", True),
            Edit(T0 + 15, "h3", "right", True),
        ],
        ca=[
            CaAttempt(T0 + 16, "h1", True, "pmjt1....", 2, 2, 2),
            CaAttempt(T0 + 16, "h3", False, "1 of 2 required signers reachable: node-3", 1, 1, 2),
        ],
        windows=[partition, kill] if with_kill else [partition],
        samples=samples,
        final_policy={h: ["before", "left", "right"] for h in HOSTS},
        kills=[Kill("h3", "node-3", T0 + 50, T0 + 52, T0 + 70)] if with_kill else [],
        limits=Limits(convergence_s=30, detect_s=25),
    )


def verdicts(history: History) -> dict[str, bool]:
    return {v.name: v.passed for v in check(history)}


def test_a_good_history_passes_every_invariant():
    result = verdicts(good_history())
    assert result == dict.fromkeys(result, True)
    assert len(result) == 6


def test_a_lost_write_fails():
    h = good_history()
    h.final_policy["h2"] = ["before", "left"]  # 'right' was acknowledged on h3
    result = verdicts(h)
    assert result["no lost writes"] is False
    text = summary_text("lost", h, check(h))
    assert "FAIL  no lost writes" in text and "'h2': ['right']" in text


def test_an_unreachable_agent_at_the_end_is_a_lost_write_not_a_pass():
    h = good_history()
    h.final_policy["h3"] = None
    assert verdicts(h)["no lost writes"] is False


def test_unacknowledged_edits_may_be_missing():
    h = good_history()
    h.edits.append(Edit(T0 + 20, "h3", "never-acked", False))
    assert verdicts(h)["no lost writes"] is True


def test_never_converging_fails():
    h = good_history()
    h.samples = [
        replace(s, policy_digest="p-other") if s.host == "h3" and s.t >= h.final_heal else s
        for s in h.samples
    ]
    assert verdicts(h)["convergence"] is False


def test_membership_that_never_recovers_fails_convergence():
    h = good_history()
    h.samples = [
        replace(s, alive=("node-1", "node-2")) if s.t >= h.final_heal else s for s in h.samples
    ]
    assert verdicts(h)["convergence"] is False


def test_converging_too_late_after_a_partition_heal_fails():
    h = good_history(with_kill=False)
    assert verdicts(h)["convergence"] is True
    # After the heal at 40 s the minority keeps a different policy until 75 s (> 30 s).
    h.samples = [
        replace(s, policy_digest="p-other") if s.host == "h3" and 40 <= s.t - T0 < 75 else s
        for s in h.samples
    ]
    assert verdicts(h)["convergence"] is False


def test_same_side_failures_fail_availability():
    h = good_history()
    h.requests = [
        replace(r, status=503) if r.src == "h1" and 32 <= r.t - T0 < 36 else r for r in h.requests
    ]
    assert verdicts(h)["availability"] is False


def test_cross_partition_requests_that_hang_fail_availability():
    h = good_history()
    h.requests = [
        replace(r, status=0, lat=10.0) if r.src == "h3" and 30 <= r.t - T0 < 40 else r
        for r in h.requests
    ]
    result = check(h)
    assert {v.name: v.passed for v in result}["availability"] is False


def test_membership_that_never_notices_a_partition_fails():
    h = good_history()
    # h3 keeps node-1/node-2 suspect for the whole partition: detection never happens.
    h.samples = [
        replace(s, alive=("node-3",), suspect=("node-1", "node-2"))
        if s.host == "h3" and 10 <= s.t - T0 < 40
        else s
        for s in h.samples
    ]
    assert verdicts(h)["availability"] is False


def test_no_traffic_is_no_evidence():
    h = good_history()
    h.requests = []
    assert verdicts(h)["availability"] is False


def test_a_dead_endpoint_still_listed_fails_failure_handling():
    h = good_history()
    h.kills = [Kill("h3", "node-3", T0 + 50, None, T0 + 70)]
    assert verdicts(h)["failure handling"] is False


def test_failed_retries_after_a_kill_fail_failure_handling():
    h = good_history()
    h.requests = [
        replace(r, status=502) if r.src == "h1" and 50 <= r.t - T0 < 51 else r for r in h.requests
    ]
    assert verdicts(h)["failure handling"] is False


def test_issuing_without_t_signers_fails_security():
    h = good_history()
    h.ca = [CaAttempt(T0 + 16, "h3", True, "pmjt1....", 1, 1, 2)]
    assert verdicts(h)["security under faults"] is False


def test_majority_that_cannot_issue_fails_security():
    h = good_history()
    h.ca = [CaAttempt(T0 + 16, "h1", False, "timeout", 2, 2, 2)]
    assert verdicts(h)["security under faults"] is False


def test_a_refusal_without_the_quorum_message_fails_security():
    h = good_history()
    h.ca = [CaAttempt(T0 + 16, "h3", False, "internal error", 1, 1, 2)]
    assert verdicts(h)["security under faults"] is False


def test_the_report_round_trips_and_plots(tmp_path):
    h = good_history()
    json_path, png_path, text = write(tmp_path, "good", h, check(h))
    data = json.loads(json_path.read_text())
    assert data["passed"] is True
    again = History.from_json(data["history"])
    assert {v.name: v.passed for v in check(again)} == verdicts(h)
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "overall: PASS" in text


def test_state_vectors_that_differ_fail_unless_only_reported():
    h = good_history()
    h.samples = [
        replace(s, policy_digest="p-same/" + ("sv-b" if s.host == "h3" else "sv-a"))
        if s.t >= h.final_heal
        else s
        for s in h.samples
    ]
    strict = check(h)
    assert {v.name: v.passed for v in strict}["convergence"] is False
    h.limits.state_vector_must_agree = False
    relaxed = {v.name: v for v in check(h)}["convergence"]
    assert relaxed.passed is True
    assert "DIFFER" in relaxed.summary and relaxed.details["state_vectors_agree"] is False


# --- clock skew: the mesh must notice it (and stop noticing once restored) -------------


def truthful_answer(h: History, viewer: str, t: float) -> ClockCheck:
    """What a correct `peermesh check` on ``viewer`` names at ``t``."""
    mine = clock_offset(h, viewer, t)
    named = tuple(
        (node, clock_offset(h, peer, t) - mine)
        for peer, node in sorted(h.hosts.items())
        if peer != viewer and abs(clock_offset(h, peer, t) - mine) > 2
    )
    return ClockCheck(t, t + 0.05, viewer, True, named)


def skew_history() -> History:
    """good_history without the kill; node-2 +30 s from 45 to 70 s, node-3 -30 s from
    46 to 71 s; every agent answers `check` every 2 s, truthfully."""
    h = good_history(with_kill=False)
    h.windows += [
        Window("clock-skew", T0 + 45, T0 + 70, hosts=("h2",), label="clock h2 +30s", offset=30),
        Window("clock-skew", T0 + 46, T0 + 71, hosts=("h3",), label="clock h3 -30s", offset=-30),
    ]
    h.limits.skew_detect_s = 10
    h.clock_checks = [
        truthful_answer(h, host, T0 + i) for i in range(0, 90, 2) for host in sorted(HOSTS)
    ]
    return h


def edit_answers(h: History, since: float, until: float, host: str | None, **changes) -> None:
    h.clock_checks = [
        replace(c, **changes)
        if since <= c.t - T0 < until and (host is None or c.host == host)
        else c
        for c in h.clock_checks
    ]


def skew_verdict(h: History):
    return {v.name: v for v in check(h)}["clock skew noticed"]


def test_skew_that_the_mesh_notices_and_forgets_passes():
    h = skew_history()
    result = verdicts(h)
    assert result == dict.fromkeys(result, True), [v.summary for v in check(h)]
    v = skew_verdict(h)
    rows = {r["node"]: r for r in v.details["windows"]}
    # node-2 (+30) is named by node-1 (+30) and node-3 (+60): every other host noticed
    assert set(rows["node-2"]["noticed_after"]) == {"h1", "h3"}
    assert all(x is not None for x in rows["node-2"]["noticed_after"].values())
    assert all(x is not None for x in rows["node-3"]["cleared_after"].values())
    assert "node-2 +30 s: named by 2 peers" in v.summary


def test_a_skew_that_goes_unnoticed_fails():
    h = skew_history()
    edit_answers(h, 0, 90, None, skewed=())  # `check` never names anyone
    v = skew_verdict(h)
    assert v.passed is False
    assert "did not name node-2 (+30 s)" in v.summary
    assert "no settled answer of any peer named node-2" in " ".join(v.details["problems"])


def test_a_skew_noticed_by_only_some_peers_fails():
    h = skew_history()
    edit_answers(h, 56, 70, "h1", skewed=())  # node-1 misses both skews
    v = skew_verdict(h)
    assert v.passed is False and "h1 did not name node-2" in v.summary


def test_a_restored_clock_that_is_still_named_fails():
    h = skew_history()
    edit_answers(h, 71, 90, "h1", skewed=(("node-2", 30.0),))  # stale after the restore
    v = skew_verdict(h)
    assert v.passed is False
    assert "h1 named node-2 +30.0 s but their clocks agree" in v.summary


def test_naming_a_peer_whose_clock_is_fine_fails():
    h = skew_history()
    edit_answers(h, 0, 40, "h3", skewed=(("node-1", 4.0),))  # before any skew
    assert skew_verdict(h).passed is False


def test_naming_a_skewed_peer_with_the_wrong_offset_fails():
    h = skew_history()
    edit_answers(h, 56, 70, "h1", skewed=(("node-2", 3.0), ("node-3", -30.0)))
    v = skew_verdict(h)
    assert v.passed is False and "h1 named node-2 +3.0 s, truth +30 s" in v.summary


def test_no_answers_from_check_are_no_evidence():
    h = skew_history()
    h.clock_checks = []
    v = skew_verdict(h)
    assert v.passed is False and "no settled answer" in v.summary
    h = skew_history()
    h.clock_checks = [c for c in h.clock_checks if c.t < T0 + 71]  # nothing after restore
    v = skew_verdict(h)
    assert v.passed is False and "after the clocks were restored" in v.summary


def test_restarts_and_unreachable_peers_are_not_held_against_the_mesh():
    h = skew_history()
    # Right after each clock change (an agent restart) answers may be anything ...
    edit_answers(h, 45, 54, None, skewed=(("node-1", 99.0),))
    # ... and a peer that did not answer the fan-out cannot be named.
    edit_answers(h, 60, 62, "h1", skewed=(("node-3", -30.0),), unreachable=("node-2",))
    assert skew_verdict(h).passed is True
    edit_answers(h, 60, 62, "h1", unreachable=())  # but a reachable one must be
    assert skew_verdict(h).passed is False


def test_a_peer_the_viewer_does_not_see_alive_was_not_asked_and_is_reported():
    h = skew_history()
    # node-3's membership loses node-2 (suspect) from 60 to 64 s: its `check` fans out to
    # alive members only, so it cannot name node-2 then; that is reported, not failed.
    edit_answers(h, 60, 64, "h3", skewed=(("node-1", 30.0),))
    h.samples = [
        replace(x, alive=("node-1", "node-3"), suspect=("node-2",))
        if x.host == "h3" and 60 <= x.t - T0 < 64
        else x
        for x in h.samples
    ]
    v = skew_verdict(h)
    assert v.passed is True, v.summary
    row = next(r for r in v.details["windows"] if r["node"] == "node-2")
    assert row["not_alive_samples"] > 0 and row["not_alive_viewers"] == ["h3"]
    assert "not alive in" in v.summary
    # while node-3 does see it alive, the same silence fails
    h.samples = [replace(x, alive=EVERYONE, suspect=()) for x in h.samples]
    assert skew_verdict(h).passed is False


def test_a_scenario_without_clock_skew_does_not_exercise_it():
    v = skew_verdict(good_history())
    assert v.passed is True and "not exercised" in v.summary


def test_a_skew_report_round_trips(tmp_path):
    h = skew_history()
    json_path, png_path, _ = write(tmp_path, "skew", h, check(h))
    again = History.from_json(json.loads(json_path.read_text())["history"])
    assert again.clock_checks == h.clock_checks
    assert [w.offset for w in again.windows if w.kind == "clock-skew"] == [30, -30]
    assert {v.name: v.passed for v in check(again)} == verdicts(h)
    assert png_path.stat().st_size > 1000


def test_a_source_restarting_for_a_clock_change_is_down_not_failing():
    h = skew_history()
    # h1's own sidecar refuses connections while its agent restarts (52-55 s) ...
    h.requests = [
        replace(r, status=0, lat=0.0, error="ConnectionRefusedError")
        if r.src == "h1" and 52 <= r.t - T0 < 55
        else r
        for r in h.requests
    ]
    assert verdicts(h)["availability"] is False
    # ... which the runner records as a restart window: the source is down, not failing.
    h.windows.append(Window("restart", T0 + 52, T0 + 55, hosts=("h1",), label="restart h1"))
    assert verdicts(h)["availability"] is True


def test_time_from_partition_to_first_fast_503_is_reported():
    # In good_history the cross requests hang for the first 20 s, then fail fast.
    availability = {v.name: v for v in check(good_history())}["availability"]
    (first,) = availability.details["partition_to_first_fast_503"]
    assert first["fault"] == "partition"
    assert first["seconds"] == pytest.approx(20.002, abs=0.01)
    assert "partition to first fast 503: partition 20.0 s" in availability.summary
