"""The real SWIM core at 200 nodes over the deterministic simulated network (seeded)."""

from __future__ import annotations

from gossip.sim import SimConfig, run_simulation


def test_200_nodes_join_and_a_killed_node_is_dead_everywhere_with_no_false_positive():
    report = run_simulation(SimConfig(nodes=200, duration=45, seed=7, loss=0.05, kill=1))
    assert report.converged_at is not None, "every live node saw every join"
    assert report.killed_dead_everywhere
    assert report.kills and all(k.all_dead is not None for k in report.kills)
    assert report.false_positives == 0, report.false_positive_examples[:5]


def test_a_healed_partition_reconverges():
    report = run_simulation(
        SimConfig(
            nodes=200,
            duration=90,
            seed=3,
            partition=0.3,
            partition_at=15,
            partition_duration=10,
        )
    )
    assert report.heal_at is not None
    assert report.converged_at_end, "all live members see each other alive after the heal"
    assert report.reconverged_after_heal is not None
