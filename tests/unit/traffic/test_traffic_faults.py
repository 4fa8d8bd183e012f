"""Fault injection decisions."""

from __future__ import annotations

import math
import random

from peermesh.policy.model import Fault, FaultAbort, FaultDelay
from peermesh.traffic.faults import NO_FAULT, FaultAction, decide

N = 4000


def within_4_sigma(hits: int, p: float, n: int = N) -> bool:
    return abs(hits - p * n) <= 4 * math.sqrt(n * p * (1 - p))


def test_no_fault() -> None:
    rng = random.Random(0)
    assert decide(None, rng) == NO_FAULT
    assert decide(Fault(), rng) == NO_FAULT
    assert not NO_FAULT.injected


def test_half_abort() -> None:
    rng = random.Random(1)
    fault = Fault(abort=FaultAbort(http_status=503, percentage=50.0))
    actions = [decide(fault, rng) for _ in range(N)]
    hits = sum(a.abort_status == 503 for a in actions)
    assert within_4_sigma(hits, 0.5), hits
    assert all(a.delay is None for a in actions)


def test_delay_and_abort_are_independent() -> None:
    rng = random.Random(2)
    fault = Fault(
        delay=FaultDelay(fixed_delay=0.2, percentage=30.0),
        abort=FaultAbort(http_status=500, percentage=50.0),
    )
    actions = [decide(fault, rng) for _ in range(N)]
    delayed = sum(a.delay == 0.2 for a in actions)
    aborted = sum(a.abort_status == 500 for a in actions)
    both = sum(a.delay is not None and a.abort_status is not None for a in actions)
    assert within_4_sigma(delayed, 0.3)
    assert within_4_sigma(aborted, 0.5)
    assert within_4_sigma(both, 0.15)
    assert all(a.delay in (None, 0.2) for a in actions)


def test_edges_of_percentages() -> None:
    rng = random.Random(3)
    always = Fault(delay=FaultDelay(1.5), abort=FaultAbort(418))
    assert all(decide(always, rng) == FaultAction(1.5, 418) for _ in range(200))
    never = Fault(delay=FaultDelay(1.5, percentage=0.0), abort=FaultAbort(418, percentage=0.0))
    assert all(decide(never, rng) == NO_FAULT for _ in range(200))
    tiny = Fault(abort=FaultAbort(503, percentage=0.1))
    hits = sum(decide(tiny, rng).abort_status == 503 for _ in range(100_000))
    assert within_4_sigma(hits, 0.001, 100_000)
