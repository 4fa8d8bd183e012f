"""Timing profiles for SWIM/Lifeguard, starting from memberlist's tested defaults.

memberlist's LAN/WAN/local settings have run in large production fleets, so we
start there rather than invent numbers; every value can be overridden with
:meth:`Profile.replace`. Two settings are peermesh additions (memberlist leaves
them to Serf): ``reconnect_interval``, how often a node pings one member it
believes dead so that the two sides of a healed partition find each other again,
and ``dead_reap_time``, how long a dead member is remembered for that purpose.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from gossip.errors import GossipConfigError

PUSH_PULL_SCALE_THRESHOLD = 32


@dataclass(frozen=True, slots=True)
class Profile:
    """Every timing and fan-out knob of the protocol (seconds, counts)."""

    name: str
    probe_interval: float = 1.0
    probe_timeout: float = 0.5
    indirect_checks: int = 3
    suspicion_mult: int = 4
    suspicion_max_timeout_mult: int = 6
    retransmit_mult: int = 4
    gossip_interval: float = 0.2
    gossip_nodes: int = 3
    gossip_to_the_dead_time: float = 30.0
    push_pull_interval: float = 30.0
    awareness_max_multiplier: int = 8
    reconnect_interval: float = 10.0
    dead_reap_time: float = 3600.0
    udp_buffer_size: int = 1400

    def __post_init__(self) -> None:
        problems = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name != "name" and (not isinstance(value, int | float) or value <= 0):
                problems.append(f"{f.name} must be positive (got {value!r})")
        if not problems and self.probe_timeout >= self.probe_interval:
            problems.append(
                "probe_timeout must be shorter than probe_interval, "
                "or indirect probes have no time to run"
            )
        if not problems and self.suspicion_max_timeout_mult < 1:
            problems.append("suspicion_max_timeout_mult must be at least 1")
        if not problems and self.udp_buffer_size < 512:
            problems.append("udp_buffer_size below 512 bytes cannot carry a member's metadata")
        if problems:
            raise GossipConfigError(f"invalid gossip profile {self.name!r}: " + "; ".join(problems))

    def replace(self, **changes: Any) -> Profile:
        """A copy with some values overridden, validated like the original."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise GossipConfigError(
                f"unknown gossip profile settings: {', '.join(sorted(unknown))}"
            )
        return dataclasses.replace(self, **changes)

    # Derived quantities, kept here so the state machine and the docs agree.

    def retransmit_limit(self, n: int) -> int:
        """How many times each broadcast is sent: mult·ceil(log10(n+1))."""
        return self.retransmit_mult * max(1, math.ceil(math.log10(n + 1)))

    def suspicion_min(self, n: int) -> float:
        """Shortest suspicion timeout: mult·max(1, log10(n))·probe_interval."""
        return self.suspicion_mult * max(1.0, math.log10(max(1, n))) * self.probe_interval

    def suspicion_max(self, n: int) -> float:
        """Longest suspicion timeout (no confirmations yet): max_mult·min."""
        return self.suspicion_max_timeout_mult * self.suspicion_min(n)

    def push_pull_period(self, n: int) -> float:
        """Push-pull gets rarer as the cluster grows, so its total cost stays bounded."""
        if n <= PUSH_PULL_SCALE_THRESHOLD:
            return self.push_pull_interval
        mult = math.ceil(math.log2(n) - math.log2(PUSH_PULL_SCALE_THRESHOLD)) + 1
        return mult * self.push_pull_interval


LAN = Profile(name="lan")
"""memberlist DefaultLANConfig."""

WAN = LAN.replace(
    name="wan",
    suspicion_mult=6,
    push_pull_interval=60.0,
    probe_timeout=3.0,
    probe_interval=5.0,
    gossip_nodes=4,
    gossip_interval=0.5,
    gossip_to_the_dead_time=60.0,
    reconnect_interval=30.0,
)
"""memberlist DefaultWANConfig."""

LOCAL = LAN.replace(
    name="local",
    indirect_checks=1,
    retransmit_mult=2,
    suspicion_mult=3,
    push_pull_interval=15.0,
    probe_timeout=0.2,
    probe_interval=1.0,
    gossip_interval=0.1,
    gossip_to_the_dead_time=15.0,
    reconnect_interval=5.0,
)
"""memberlist DefaultLocalConfig."""

PROFILES: dict[str, Profile] = {"lan": LAN, "wan": WAN, "local": LOCAL}


def get_profile(name: str, **overrides: Any) -> Profile:
    """A named profile (``lan``, ``wan``, ``local``) with optional overrides."""
    try:
        base = PROFILES[name]
    except KeyError:
        raise GossipConfigError(
            f"unknown gossip profile {name!r}; choose one of {', '.join(PROFILES)}"
        ) from None
    return base.replace(**overrides) if overrides else base
