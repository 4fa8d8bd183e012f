"""Retry decisions: retryOn conditions, replayability, backoff and the retry budget."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peermesh.policy.model import RETRY_ON_CONDITIONS, Retries
from peermesh.policy.model import RetryBudget as RetryBudgetConfig
from peermesh.traffic.retry import (
    DEFAULT_RETRY_ON,
    GRPC_STATUS,
    Outcome,
    RetryBudget,
    backoff,
    is_replayable,
    retry_on_for,
    retryable,
)

OK = Outcome(status=200)
RESET = Outcome(reset=True)
CONNECT = Outcome(connect_failure=True)
REFUSED = Outcome(refused_stream=True)
TIMEOUT = Outcome(timed_out=True)

CASES: dict[str, tuple[list[Outcome], list[Outcome]]] = {
    # condition: (retried, not retried)
    "5xx": (
        [Outcome(status=500), Outcome(status=503), Outcome(status=599), RESET, CONNECT, TIMEOUT],
        [OK, Outcome(status=404), Outcome(status=409), Outcome(status=200, grpc_status=14)],
    ),
    "gateway-error": (
        [Outcome(status=502), Outcome(status=503), Outcome(status=504), RESET, CONNECT],
        [OK, Outcome(status=500), Outcome(status=501), Outcome(status=409)],
    ),
    "reset": ([RESET, CONNECT, REFUSED, TIMEOUT], [OK, Outcome(status=503)]),
    "connect-failure": ([CONNECT], [RESET, REFUSED, Outcome(status=503), OK]),
    "retriable-4xx": ([Outcome(status=409)], [Outcome(status=400), Outcome(status=429), OK]),
    "refused-stream": ([REFUSED], [RESET, CONNECT, Outcome(status=503)]),
    "cancelled": ([Outcome(status=200, grpc_status=1)], [Outcome(status=200, grpc_status=14)]),
    "deadline-exceeded": ([Outcome(status=200, grpc_status=4)], [Outcome(grpc_status=0)]),
    "internal": ([Outcome(status=200, grpc_status=13)], [Outcome(status=500)]),
    "resource-exhausted": ([Outcome(status=200, grpc_status=8)], [Outcome(grpc_status=14)]),
    "unavailable": ([Outcome(status=200, grpc_status=14)], [Outcome(status=503), RESET]),
}


def test_every_model_condition_is_covered() -> None:
    assert set(CASES) == RETRY_ON_CONDITIONS
    assert set(GRPC_STATUS) <= RETRY_ON_CONDITIONS


@pytest.mark.parametrize("condition", sorted(CASES))
def test_retry_on_condition(condition: str) -> None:
    retried, kept = CASES[condition]
    for outcome in retried:
        assert retryable(outcome, [condition]), (condition, outcome)
    for outcome in kept:
        assert not retryable(outcome, [condition]), (condition, outcome)


def test_conditions_combine_and_default() -> None:
    assert retryable(Outcome(status=409), ["5xx", "retriable-4xx"])
    assert not retryable(Outcome(status=409), [])
    assert retry_on_for(None) == DEFAULT_RETRY_ON
    assert retry_on_for(Retries(attempts=2)) == DEFAULT_RETRY_ON
    assert retry_on_for(Retries(attempts=2, retry_on=("5xx",))) == ("5xx",)
    # Istio's default: connect failures, refused streams, gRPC unavailable/cancelled, 503.
    for outcome in (CONNECT, REFUSED, Outcome(grpc_status=14), Outcome(grpc_status=1)):
        assert retryable(outcome, DEFAULT_RETRY_ON)
    assert retryable(Outcome(status=503), DEFAULT_RETRY_ON)
    for outcome in (OK, Outcome(status=500), Outcome(status=502), RESET, TIMEOUT):
        assert not retryable(outcome, DEFAULT_RETRY_ON)
    assert retryable(Outcome(status=429), ["retriable-status-codes"], retriable_status_codes={429})
    assert retryable(Outcome(status=429), ["429"])
    assert not retryable(Outcome(status=503), ["bogus"])


def test_replayable() -> None:
    for method in (b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE", b"get"):
        assert is_replayable(method, body_buffered=False)
    for method in (b"POST", b"PATCH", b"CONNECT"):
        assert not is_replayable(method, body_buffered=False)
        assert is_replayable(method, body_buffered=True)


@given(attempt=st.integers(min_value=0, max_value=1000), seed=st.integers(0, 2**32))
def test_backoff_bounds(attempt: int, seed: int) -> None:
    delay = backoff(attempt, random.Random(seed))
    assert 0.0 <= delay <= min(0.25, 0.025 * 2 ** max(attempt - 1, 0))


def test_backoff_grows_and_jitters() -> None:
    rng = random.Random(1)
    first = [backoff(1, rng) for _ in range(1000)]
    third = [backoff(3, rng) for _ in range(1000)]
    assert max(first) <= 0.025 and max(third) <= 0.1
    assert sum(third) / 1000 > 2 * sum(first) / 1000
    assert len(set(first)) > 900  # jittered, not fixed
    assert max(backoff(50, rng, base=0.1, cap=2.0) for _ in range(100)) <= 2.0


def test_budget_caps_retries_under_total_failure() -> None:
    budget = RetryBudget(ratio=0.2, min_retries_per_second=10, ttl=10.0)
    rate, seconds = 200, 60  # 200 requests/s, every attempt fails, 3 retries each
    retries_at: list[float] = []
    for i in range(rate * seconds):
        now = i / rate
        budget.record_request(now)
        for _ in range(3):
            if not budget.try_withdraw(now):
                break
            retries_at.append(now)
    assert budget.retries == len(retries_at)
    assert budget.denied > 0
    # In every 10 s window, retries <= 20% of requests + 10/s x 10 s.
    for start in range(0, seconds - 10 + 1):
        in_window = sum(1 for t in retries_at if start <= t < start + 10)
        assert in_window <= 0.2 * rate * 10 + 10 * 10, (start, in_window)
    # And the budget is actually used: well above the bare ratio.
    assert budget.retries >= 0.2 * rate * seconds


def test_budget_unused_without_failures() -> None:
    budget = RetryBudget()
    for i in range(10_000):
        budget.record_request(i / 100)
    assert budget.retries == 0 and budget.denied == 0
    # The window is 9-10 s of bucketed history: 900-1000 requests at 100/s.
    assert budget.allowance(99.995) == pytest.approx(0.2 * 1000 + 100)
    assert 0.2 * 900 + 100 <= budget.allowance(100.0) <= 0.2 * 1000 + 100


def test_budget_floor_and_expiry() -> None:
    budget = RetryBudget(ratio=0.0, min_retries_per_second=1, ttl=10.0)
    granted = sum(budget.try_withdraw(0.0) for _ in range(50))
    assert granted == 10 and budget.denied == 40
    assert not budget.try_withdraw(9.0)
    assert budget.try_withdraw(10.5)  # the first bucket left the window
    # A huge clock jump clears everything at once.
    assert budget.allowance(1e9) == pytest.approx(10)


def test_budget_from_config() -> None:
    budget = RetryBudget.from_config(
        RetryBudgetConfig(retry_ratio=0.5, min_retries_per_second=2, ttl=5.0)
    )
    assert (budget.ratio, budget.min_retries_per_second, budget.ttl) == (0.5, 2, 5.0)
    assert RetryBudget.from_config(None).ratio == 0.2
