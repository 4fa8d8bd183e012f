"""What a simulated run measured, and its human-readable summary."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gossip.sim.config import SimConfig


@dataclass(frozen=True)
class Dist:
    """A small latency distribution summary (seconds)."""

    count: int
    p50: float
    p99: float
    max: float

    @staticmethod
    def of(values: Sequence[float]) -> Dist | None:
        """Summary of ``values``, or None if there are none."""
        if not values:
            return None
        v = sorted(values)

        def q(p: float) -> float:
            return v[min(len(v) - 1, max(0, math.ceil(p * len(v)) - 1))]

        return Dist(len(v), q(0.5), q(0.99), v[-1])

    def __str__(self) -> str:
        return f"p50 {self.p50:.2f}s  p99 {self.p99:.2f}s  max {self.max:.2f}s  (n={self.count})"


@dataclass
class KillRecord:
    """How the mesh noticed one killed node (times relative to the kill)."""

    node: str
    killed_at: float
    first_suspect: float | None = None
    first_dead: float | None = None
    all_suspect: float | None = None
    all_dead: float | None = None


@dataclass
class SimReport:
    """What a run measured. Latencies are virtual seconds."""

    config: SimConfig
    wall_seconds: float = 0.0
    simulated_seconds: float = 0.0
    join_window: float = 0.0
    converged_at: float | None = None
    join_latency: Dist | None = None
    late_join_latency: Dist | None = None
    late_join_reached_all: float | None = None
    update_latency: Dist | None = None
    update_reached_all: float | None = None
    kills: list[KillRecord] = field(default_factory=list)
    false_positives: int = 0
    false_positive_examples: list[tuple[float, str, str]] = field(default_factory=list)
    partition_deaths: int = 0
    stale_after_heal: int = 0
    partition_at: float | None = None
    heal_at: float | None = None
    reconverged_after_heal: float | None = None
    converged_at_end: bool = False
    killed_dead_everywhere: bool = True
    datagrams: int = 0
    datagram_bytes: int = 0
    lost: int = 0
    cut: int = 0
    push_pulls: int = 0
    push_pull_bytes: int = 0
    msgs_per_member_sec: float = 0.0
    bytes_per_member_sec: float = 0.0
    steady_msgs_per_member_sec: float = 0.0
    steady_bytes_per_member_sec: float = 0.0
    max_awareness: int = 0
    codec_drops: int = 0

    def _dist(self, pick: Callable[[KillRecord], float | None]) -> Dist | None:
        return Dist.of([v for v in (pick(k) for k in self.kills) if v is not None])

    @property
    def first_suspect(self) -> Dist | None:
        """Kill to first suspicion anywhere."""
        return self._dist(lambda k: k.first_suspect)

    @property
    def first_detection(self) -> Dist | None:
        """Kill to first dead declaration anywhere."""
        return self._dist(lambda k: k.first_dead)

    @property
    def all_suspect(self) -> Dist | None:
        """Kill to every live member suspecting or having buried it."""
        return self._dist(lambda k: k.all_suspect)

    @property
    def full_dissemination(self) -> Dist | None:
        """Kill to every live member having it dead."""
        return self._dist(lambda k: k.all_dead)

    def format(self) -> str:
        """A human-readable summary."""
        c = self.config
        lines = [
            f"gossip simulation: {c.nodes} nodes, profile {c.profile.name}, loss {c.loss:.0%}, "
            f"kill {c.kill}, partition {c.partition:.0%}, seed {c.seed}, "
            f"{self.simulated_seconds:.0f} virtual s in {self.wall_seconds:.1f} wall s",
        ]

        def opt(v: object, unit: str = "s") -> str:
            if v is None:
                return "n/a"
            if isinstance(v, float):
                return f"{v:.2f}{unit}"
            return str(v)

        if c.warm_start:
            lines.append("  join: warm start (membership pre-converged at t=0)")
        else:
            lines.append(
                f"  join: {c.nodes} nodes over {self.join_window:.1f}s; every live node sees "
                f"every join at t={opt(self.converged_at)}"
            )
        lines.append(f"  join latency (node start -> seen by all live): {opt(self.join_latency)}")
        lines.append(
            f"  late join into the converged mesh reaches members: {opt(self.late_join_latency)}"
            f"; all: {opt(self.late_join_reached_all)}"
        )
        lines.append(
            f"  metadata update reaches members: {opt(self.update_latency)}; "
            f"all: {opt(self.update_reached_all)}"
        )
        if self.kills:
            lines.append(f"  failure detection, {len(self.kills)} killed:")
            lines.append(f"    first suspicion        {opt(self.first_suspect)}")
            lines.append(f"    first declared dead    {opt(self.first_detection)}")
            lines.append(f"    suspected by all       {opt(self.all_suspect)}")
            lines.append(f"    dead at all (full)     {opt(self.full_dissemination)}")
            lines.append(f"    dead everywhere by end {self.killed_dead_everywhere}")
        lines.append(
            f"  false positives (healthy, reachable node declared dead): {self.false_positives}"
        )
        if self.partition_at is not None:
            lines.append(
                f"  partition {c.partition:.0%} at t={self.partition_at:.0f}s healed at "
                f"t={opt(self.heal_at)}: {self.partition_deaths} cross-partition deaths, "
                f"{self.stale_after_heal} more from suspicions left over after the heal; "
                f"reconverged {opt(self.reconverged_after_heal)} after heal"
            )
        lines.append(f"  all live members see each other alive at end: {self.converged_at_end}")
        lines.append(
            f"  load per member: {self.msgs_per_member_sec:.1f} datagrams/s, "
            f"{self.bytes_per_member_sec / 1024:.2f} KiB/s (steady "
            f"{self.steady_msgs_per_member_sec:.1f}/s, "
            f"{self.steady_bytes_per_member_sec / 1024:.2f} KiB/s); "
            f"push-pull {self.push_pulls} exchanges, {self.push_pull_bytes / 1e6:.1f} MB"
        )
        lines.append(
            f"  network: {self.datagrams} datagrams, {self.lost} lost, {self.cut} cut by "
            f"partition; max awareness score {self.max_awareness}; codec drops {self.codec_drops}"
        )
        return "\n".join(lines)
