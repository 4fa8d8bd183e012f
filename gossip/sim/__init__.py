"""Deterministic simulator: the real SWIM core for every node over a simulated network.

Every node is a real :class:`gossip.swim.Swim` with a real codec (msgpack, and
AES-GCM if asked), so message sizes and protocol behaviour are exactly what the
agent would do. Only the network is simulated: a priority queue of events in
virtual time, seeded randomness, per-datagram loss, 1-5 ms latency jitter,
partitions that cut a fraction of nodes off for a window, and kills.

    python -m gossip.sim --nodes 1000 --loss 0.05 --kill 10 --partition 0.3 --seed 7 --duration 120

Use :func:`run_simulation` from tests and benchmarks.

Modules: ``config`` (the scenario), ``network`` (the simulated network),
``observe`` (counting what nodes see), ``runner`` (the scenario steps and the
event loop), ``report`` (what was measured), ``cli`` (``python -m gossip.sim``).
"""

from gossip.sim.cli import main
from gossip.sim.config import SimConfig
from gossip.sim.network import node_addr, node_meta, node_name
from gossip.sim.report import Dist, KillRecord, SimReport
from gossip.sim.runner import Simulation, run_simulation

__all__ = [
    "Dist",
    "KillRecord",
    "SimConfig",
    "SimReport",
    "Simulation",
    "main",
    "node_addr",
    "node_meta",
    "node_name",
    "run_simulation",
]
