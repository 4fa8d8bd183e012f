"""Fault injection decisions (Istio ``HTTPFaultInjection``).

Delay and abort are drawn independently, as in Istio/Envoy: with 50% delay and 50%
abort, a quarter of requests are delayed *and* then aborted. The shell sleeps for
``delay`` first, then answers ``abort_status`` without contacting any endpoint.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from peermesh.policy.model import Fault

__all__ = ["NO_FAULT", "FaultAction", "decide"]


@dataclass(frozen=True)
class FaultAction:
    """What to inject into one request: a delay in seconds and/or an abort status."""

    delay: float | None = None
    abort_status: int | None = None

    @property
    def injected(self) -> bool:
        return self.delay is not None or self.abort_status is not None


NO_FAULT = FaultAction()


def _hit(percentage: float, rng: random.Random) -> bool:
    """True with ``percentage`` (0-100) percent probability; 0 never, 100 always."""
    if percentage <= 0:
        return False
    if percentage >= 100:
        return True
    return rng.random() * 100.0 < percentage


def decide(fault: Fault | None, rng: random.Random) -> FaultAction:
    """Draw the faults for one request. No random numbers are drawn for absent faults."""
    if fault is None:
        return NO_FAULT
    delay = None
    abort = None
    if fault.delay is not None and _hit(fault.delay.percentage, rng):
        delay = fault.delay.fixed_delay
    if fault.abort is not None and _hit(fault.abort.percentage, rng):
        abort = fault.abort.http_status
    if delay is None and abort is None:
        return NO_FAULT
    return FaultAction(delay=delay, abort_status=abort)
