"""The chaos checker must be able to FAIL: made-up histories, pure, no lab needed."""

from __future__ import annotations

import json
from dataclasses import replace

from chaos.checker import (
    CaAttempt,
    Edit,
    History,
    Kill,
    Limits,
    Request,
    Sample,
    Window,
    check,
    summary_text,
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
    assert len(result) == 5


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
