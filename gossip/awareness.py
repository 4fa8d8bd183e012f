"""Lifeguard local health awareness.

A node that is itself slow or cut off (CPU starved, dropping packets) will miss
acks from perfectly healthy peers and accuse them. Lifeguard has each node keep
a score of its own health and stretch its probe timeouts while the score is
bad, so a sick node waits longer before blaming others. The score goes up when
expected nacks do not arrive or when the node has to refute a suspicion about
itself, and down with every successful probe.
"""

from __future__ import annotations

from gossip.errors import GossipConfigError


class Awareness:
    """A saturating health score in ``[0, max_multiplier - 1]``; 0 is healthy."""

    __slots__ = ("_max", "score")

    def __init__(self, max_multiplier: int) -> None:
        if max_multiplier < 1:
            raise GossipConfigError("awareness max multiplier must be at least 1")
        self._max = max_multiplier
        self.score = 0

    def apply_delta(self, delta: int) -> int:
        """Move the score by ``delta`` (clamped) and return the new score."""
        self.score = min(self._max - 1, max(0, self.score + delta))
        return self.score

    @property
    def multiplier(self) -> int:
        """The factor timeouts are currently stretched by (1 when healthy)."""
        return self.score + 1

    @property
    def healthy(self) -> bool:
        """True when the node sees no sign of its own trouble."""
        return self.score == 0

    def scale(self, timeout: float) -> float:
        """``timeout`` stretched by the current multiplier."""
        return timeout * (self.score + 1)
