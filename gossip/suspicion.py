"""Lifeguard suspicion timers: long when one node accuses, short when many agree.

A lone accuser may be the sick one, so its suspicion starts at the maximum
timeout. Each *independent* confirmation (a suspect message from another node)
shrinks the timeout logarithmically towards the minimum; after ``k`` of them it
reaches the minimum. This gives a suspected member ample time to refute when
the accusation is doubtful, and fast declaration when the evidence is broad.
"""

from __future__ import annotations

import math
from dataclasses import InitVar, dataclass, field


def suspicion_timeout(
    confirmations: int, expected: int, min_timeout: float, max_timeout: float
) -> float:
    """Total suspicion timeout after ``confirmations`` of ``expected`` independent ones.

    timeout = max - (max - min)·log(n+1)/log(k+1), never below ``min``; with
    ``expected < 1`` nobody is expected to confirm, so the minimum applies at once.
    """
    if expected < 1:
        return min_timeout
    frac = math.log(confirmations + 1) / math.log(expected + 1)
    return max(min_timeout, max_timeout - frac * (max_timeout - min_timeout))


@dataclass(slots=True, eq=False, kw_only=True)
class Suspicion:
    """One open suspicion about one member at one incarnation."""

    accuser: InitVar[str]
    incarnation: int
    expected: int
    min_timeout: float
    max_timeout: float
    start: float
    confirmations: int = field(default=0, init=False)
    _seen: set[str] = field(init=False)
    deadline: float = field(init=False)

    def __post_init__(self, accuser: str) -> None:
        self._seen = {accuser}
        self.deadline = self.start + suspicion_timeout(
            0, self.expected, self.min_timeout, self.max_timeout
        )

    def confirm(self, accuser: str) -> bool:
        """Count an accusation; True if it was new and independent (deadline moved)."""
        if self.confirmations >= self.expected or accuser in self._seen:
            return False
        self._seen.add(accuser)
        self.confirmations += 1
        self.deadline = self.start + suspicion_timeout(
            self.confirmations, self.expected, self.min_timeout, self.max_timeout
        )
        return True

    def remaining(self, now: float) -> float:
        """Seconds left before the member is declared dead (may be negative)."""
        return self.deadline - now
