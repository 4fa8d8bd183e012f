"""Retry decisions: may this attempt's outcome be retried, may the request be replayed,
how long to back off, and is there budget left.

The proxy's loop, per request::

    budget.record_request(now)                      # once per original request
    for attempt in range(1, retries.attempts + 2):  # first try + ``attempts`` retries
        outcome = ...send to balancer.pick(..., exclude={previous address})...
        if (attempt > retries.attempts
                or not retryable(outcome, retry_on_for(retries))
                or not is_replayable(method, body_buffered=...)
                or not budget.try_withdraw(now)):
            answer with this outcome
        sleep(backoff(attempt, rng))

Conditions follow Envoy/Istio ``retryOn`` names (see :func:`retryable`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection
from dataclasses import dataclass

from peermesh.policy.model import Retries
from peermesh.policy.model import RetryBudget as RetryBudgetConfig

__all__ = [
    "DEFAULT_RETRIABLE_STATUS_CODES",
    "DEFAULT_RETRY_ON",
    "GRPC_STATUS",
    "IDEMPOTENT_METHODS",
    "Outcome",
    "RetryBudget",
    "backoff",
    "is_replayable",
    "retry_on_for",
    "retryable",
]

#: gRPC status codes by their ``retryOn`` name (grpc/grpc doc/statuscodes.md).
GRPC_STATUS: dict[str, int] = {
    "cancelled": 1,
    "deadline-exceeded": 4,
    "resource-exhausted": 8,
    "internal": 13,
    "unavailable": 14,
}

#: Istio's default ``retryOn`` when a route has retries without ``retryOn``:
#: ``connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes`` where the
#: retriable status codes are ``503``. Everything in it is either an attempt that never
#: reached the application or an explicit "try elsewhere" answer, so it is safe.
DEFAULT_RETRY_ON: tuple[str, ...] = (
    "connect-failure",
    "refused-stream",
    "unavailable",
    "cancelled",
    "retriable-status-codes",
)
DEFAULT_RETRIABLE_STATUS_CODES: frozenset[int] = frozenset({503})

#: RFC 9110 §9.2.2 idempotent methods.
IDEMPOTENT_METHODS: frozenset[bytes] = frozenset(
    {b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"}
)


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended, as far as retry decisions care.

    ``status``: the HTTP status received (None if no response head arrived).
    ``reset``: the stream or connection was reset / closed before a complete response.
    ``connect_failure``: no connection could be made (refused, TLS failure, connect timeout).
    ``grpc_status``: ``grpc-status`` from trailers (or a trailers-only response), if any.
    ``timed_out``: the per-try timeout fired before a response head.
    ``refused_stream``: the peer reset the stream with ``REFUSED_STREAM`` (RFC 9113 §8.7:
    it was not processed, so it is always safe to retry).
    """

    status: int | None = None
    reset: bool = False
    connect_failure: bool = False
    grpc_status: int | None = None
    timed_out: bool = False
    refused_stream: bool = False

    @property
    def no_response(self) -> bool:
        """The attempt produced no response head at all."""
        return self.reset or self.connect_failure or self.timed_out or self.refused_stream


def retry_on_for(retries: Retries | None) -> tuple[str, ...]:
    """The ``retryOn`` conditions in force: the route's, or :data:`DEFAULT_RETRY_ON`."""
    if retries is None or not retries.retry_on:
        return DEFAULT_RETRY_ON
    return retries.retry_on


def retryable(
    outcome: Outcome,
    retry_on: Collection[str],
    *,
    retriable_status_codes: Collection[int] = DEFAULT_RETRIABLE_STATUS_CODES,
) -> bool:
    """Whether ``outcome`` matches any of the ``retry_on`` conditions (Envoy semantics).

    - ``5xx``: status >= 500, or no response at all (reset, connect failure, refused
      stream, per-try timeout) -- Envoy counts those as 5xx since the proxy answers 50x.
    - ``gateway-error``: status 502/503/504, or no response at all (the proxy would answer
      502/503/504 for it).
    - ``reset``: reset, connect failure, refused stream or per-try timeout (Envoy: "does
      not respond at all: disconnect/reset/read timeout").
    - ``connect-failure``: the connection could not be established.
    - ``retriable-4xx``: status 409 (Conflict).
    - ``refused-stream``: the stream was refused (REFUSED_STREAM).
    - ``retriable-status-codes`` (Istio default) or a bare number like ``"503"``: status
      in ``retriable_status_codes`` / equal to that number.
    - gRPC names ``cancelled``, ``deadline-exceeded``, ``internal``, ``resource-exhausted``,
      ``unavailable``: ``grpc_status`` equals that code.

    Unknown names are ignored (validation rejects them before they get here).
    """
    for condition in retry_on:
        name = condition.strip().lower()
        check = _CONDITIONS.get(name)
        if check is not None:
            if check(outcome, retriable_status_codes):
                return True
        elif name in GRPC_STATUS:
            if outcome.grpc_status is not None and outcome.grpc_status == GRPC_STATUS[name]:
                return True
        elif name.isdigit() and outcome.status == int(name):
            return True
    return False


def _is_5xx(outcome: Outcome, codes: Collection[int]) -> bool:
    return (outcome.status is not None and outcome.status >= 500) or outcome.no_response


def _is_gateway_error(outcome: Outcome, codes: Collection[int]) -> bool:
    return outcome.status in (502, 503, 504) or outcome.no_response


_CONDITIONS: dict[str, Callable[[Outcome, Collection[int]], bool]] = {
    "5xx": _is_5xx,
    "gateway-error": _is_gateway_error,
    "reset": lambda o, _: o.no_response,
    "connect-failure": lambda o, _: o.connect_failure,
    "retriable-4xx": lambda o, _: o.status == 409,
    "refused-stream": lambda o, _: o.refused_stream,
    "retriable-status-codes": lambda o, codes: o.status is not None and o.status in codes,
}


def is_replayable(method: bytes, *, body_buffered: bool) -> bool:
    """Whether the request may be sent again.

    True for idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE, TRACE), and for any
    method while its whole body is still held in the proxy's replay buffer (under the
    size limit). A non-idempotent request (POST, PATCH, ...) whose body was streamed on
    and consumed is never replayable.

    ``body_buffered`` is about *safety and possibility together* for bodies: the shell
    must still hold the bytes to resend them, so for an idempotent request that carried a
    body it should only retry when it still has that body (``body_buffered``); bodiless
    requests (the usual GET/HEAD/DELETE) need no buffer.
    """
    return body_buffered or method.upper() in IDEMPOTENT_METHODS


def backoff(attempt: int, rng: random.Random, base: float = 0.025, cap: float = 0.25) -> float:
    """Seconds to wait before retry number ``attempt`` (1 for the first retry).

    "Full jitter" (AWS architecture blog): uniform in ``[0, min(cap, base x 2^(attempt-1))]``,
    which spreads retries of many clients apart better than fixed or equal-jitter backoff.
    Envoy's defaults (25 ms base, 10x base cap) are ours too.
    """
    exponent = min(max(attempt - 1, 0), 32)
    return rng.uniform(0.0, min(cap, base * (2.0**exponent)))


class RetryBudget:
    """Linkerd/Finagle retry budget: retries in the last ``ttl`` seconds may not exceed
    ``ratio x requests in the last ttl + min_retries_per_second x ttl``.

    Call :meth:`record_request` once per *original* request (not per retry) and
    :meth:`try_withdraw` before each retry; a denied retry is answered with the
    attempt's own outcome. When nothing fails the budget is never drawn on; when
    everything fails the retry volume is capped at ``ratio`` of the traffic plus the
    floor, so a failing service is never hit by a retry storm.

    The window is a ring of ``buckets`` time buckets, so both calls are O(1) amortised;
    the window is therefore between ``ttl - ttl/buckets`` and ``ttl`` long.
    """

    def __init__(
        self,
        ratio: float = 0.2,
        min_retries_per_second: float = 10,
        ttl: float = 10.0,
        *,
        buckets: int = 10,
    ) -> None:
        if ttl <= 0 or buckets <= 0:
            raise ValueError("ttl and buckets must be positive")
        if ratio < 0 or min_retries_per_second < 0:
            raise ValueError("ratio and min_retries_per_second must not be negative")
        self.ratio = ratio
        self.min_retries_per_second = min_retries_per_second
        self.ttl = ttl
        self._width = ttl / buckets
        self._n = buckets
        self._requests = [0] * buckets
        self._retries = [0] * buckets
        self._epoch: int | None = None  # index of the newest bucket
        self._total_requests = 0
        self._total_retries = 0
        #: Retries granted / denied since creation.
        self.retries = 0
        self.denied = 0

    @classmethod
    def from_config(cls, config: RetryBudgetConfig | None) -> RetryBudget:
        """From a TrafficPolicy's ``retryBudget`` (defaults when None)."""
        if config is None:
            return cls()
        return cls(config.retry_ratio, config.min_retries_per_second, config.ttl)

    def _advance(self, now: float) -> int:
        epoch = int(now // self._width)
        if self._epoch is None:
            self._epoch = epoch
        elif epoch > self._epoch:
            steps = min(epoch - self._epoch, self._n)
            for k in range(1, steps + 1):
                slot = (self._epoch + k) % self._n
                self._total_requests -= self._requests[slot]
                self._total_retries -= self._retries[slot]
                self._requests[slot] = 0
                self._retries[slot] = 0
            self._epoch = epoch
        # A clock that steps backwards counts into the newest bucket.
        return self._epoch % self._n

    def record_request(self, now: float) -> None:
        slot = self._advance(now)
        self._requests[slot] += 1
        self._total_requests += 1

    def allowance(self, now: float) -> float:
        """Retries the window still allows (may be fractional; negative when overdrawn)."""
        self._advance(now)
        limit = self.ratio * self._total_requests + self.min_retries_per_second * self.ttl
        return limit - self._total_retries

    def try_withdraw(self, now: float) -> bool:
        """Take one retry from the budget; False (and counted in ``denied``) if none left."""
        if self.allowance(now) < 1:
            self.denied += 1
            return False
        slot = self._advance(now)
        self._retries[slot] += 1
        self._total_retries += 1
        self.retries += 1
        return True
