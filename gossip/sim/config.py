"""One simulated scenario's settings, and when each of its steps happens."""

from __future__ import annotations

from dataclasses import dataclass

from gossip.profiles import LAN, Profile


@dataclass(frozen=True)
class SimConfig:
    """One simulated scenario. Times are virtual seconds; None means "pick a default"."""

    nodes: int = 200
    duration: float = 60.0
    seed: int = 1
    loss: float = 0.0
    latency: tuple[float, float] = (0.001, 0.005)
    kill: int = 0
    kill_at: float | None = None
    partition: float = 0.0
    partition_at: float | None = None
    partition_duration: float | None = None
    join_window: float | None = None
    warm_start: bool = False
    update_at: float | None = None
    late_joins: int = 3
    late_join_at: float | None = None
    profile: Profile = LAN
    encrypt: bool = False
    check_interval: float = 0.1

    def resolved_join_window(self) -> float:
        """Nodes join one by one over this window (0 with a warm start)."""
        if self.warm_start:
            return 0.0
        if self.join_window is not None:
            return self.join_window
        return max(1.0, self.nodes / 100.0)

    def schedule(self) -> dict[str, float | None]:
        """When each scenario step happens (None: not in this run)."""
        w = self.resolved_join_window()
        d = self.duration

        def pick(explicit: float | None, default: float, enabled: bool = True) -> float | None:
            t = explicit if explicit is not None else default
            return t if enabled and t < d else None

        part_at = pick(self.partition_at, w + 0.4 * d, self.partition > 0)
        part_len = self.partition_duration if self.partition_duration is not None else 0.2 * d
        return {
            "update_at": pick(self.update_at, w + 0.1 * d),
            "late_join_at": pick(self.late_join_at, w + 0.1 * d + 2.0, self.late_joins > 0),
            "kill_at": pick(self.kill_at, w + 0.2 * d, self.kill > 0),
            "partition_at": part_at,
            "heal_at": None if part_at is None else min(d, part_at + part_len),
        }
