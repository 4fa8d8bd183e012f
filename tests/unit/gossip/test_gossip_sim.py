"""The real SWIM core for 200 nodes over a simulated network (virtual time, seeded)."""

from __future__ import annotations

import pytest

from gossip.profiles import LAN
from gossip.sim import SimConfig, main, run_simulation

N = 200


def test_all_nodes_join() -> None:
    report = run_simulation(SimConfig(nodes=N, duration=25, seed=3, late_joins=2))
    assert report.converged_at is not None, report.format()
    assert report.converged_at_end
    assert report.join_latency is not None and report.join_latency.count == N - 2
    # A join into a converged mesh reaches everyone quickly.
    assert report.late_join_reached_all is not None
    assert report.late_join_reached_all < 5.0
    assert report.false_positives == 0


def test_killed_node_is_declared_dead_everywhere() -> None:
    report = run_simulation(
        SimConfig(nodes=N, duration=45, seed=4, kill=1, kill_at=10, warm_start=True, late_joins=0)
    )
    (kill,) = report.kills
    assert report.killed_dead_everywhere, report.format()
    assert kill.first_suspect is not None and kill.first_dead is not None
    assert kill.all_dead is not None
    # Lifeguard never declares before the minimum suspicion timeout has run.
    assert kill.first_dead >= LAN.suspicion_min(N)
    assert report.false_positives == 0
    assert report.converged_at_end


def test_no_false_positives_at_five_percent_loss() -> None:
    report = run_simulation(SimConfig(nodes=N, duration=60, seed=5, loss=0.05))
    assert report.lost > 0
    assert report.false_positives == 0, report.false_positive_examples
    assert report.converged_at_end


def test_healed_partition_reconverges() -> None:
    report = run_simulation(
        SimConfig(
            nodes=N,
            duration=50,
            seed=6,
            partition=0.3,
            partition_at=8,
            partition_duration=20,
            warm_start=True,
            late_joins=0,
        )
    )
    assert report.partition_deaths > 0, "the partition should have buried the far side"
    assert report.reconverged_after_heal is not None, report.format()
    assert report.converged_at_end
    assert report.false_positives == 0, report.false_positive_examples


def test_runs_are_deterministic() -> None:
    cfg = SimConfig(nodes=40, duration=15, seed=9, loss=0.05, kill=1, late_joins=1)
    a, b = run_simulation(cfg), run_simulation(cfg)
    assert (a.datagrams, a.datagram_bytes, a.lost) == (b.datagrams, b.datagram_bytes, b.lost)
    assert a.kills == b.kills
    assert a.join_latency == b.join_latency


def test_encrypted_datagrams_work_the_same() -> None:
    report = run_simulation(SimConfig(nodes=30, duration=10, seed=2, encrypt=True, late_joins=0))
    assert report.converged_at_end
    assert report.codec_drops == 0


def test_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--nodes", "20", "--duration", "12", "--kill", "1", "--loss", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "failure detection" in out and "false positives" in out and "datagrams/s" in out
    with pytest.raises(SystemExit):
        main(["--loss", "1.5"])
