"""Outlier detection (passive health checking), Envoy/Istio style.

The proxy reports every attempt's result with :meth:`OutlierDetector.record`; after
``consecutive_5xx_errors`` failures in a row (any 5xx, reset or connect failure) -- or
``consecutive_gateway_errors`` gateway errors in a row (502/503/504, connect failure),
when configured -- the endpoint is ejected for::

    min(base_ejection_time x (times ejected before + 1), max(MAX_EJECTION_TIME, base))

and readmitted automatically when that time is up (no timer: :meth:`is_ejected` and
:meth:`filter` compare with ``now``). Each ``interval`` an endpoint spends admitted and
not ejected again takes one step off its ejection multiplier (Envoy's rule), so a host
that recovered is not punished forever for old failures.

``max_ejection_percent`` caps ejections at ``floor(known x percent / 100)`` endpoints,
except that one endpoint may always be ejected when there are at least two (Envoy
ejects at least one host whatever the percentage; we additionally keep at least one
endpoint admitted, so a single-endpoint service is never ejected). :meth:`filter` never
returns an empty list for a non-empty input: if every endpoint is ejected it returns all
of them (panic mode), because sending to a suspect endpoint beats failing for sure.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from peermesh.core.endpoint import Endpoint
from peermesh.policy.model import OutlierDetection

__all__ = ["MAX_EJECTION_TIME", "OutlierDetector"]

#: Longest ejection, seconds (Envoy's ``max_ejection_time`` default), unless the base
#: ejection time itself is longer.
MAX_EJECTION_TIME = 300.0


@dataclass
class _Host:
    consecutive_5xx: int = 0
    consecutive_gateway: int = 0
    ejected_until: float | None = None
    #: Ejection multiplier: times ejected, minus one per healthy interval since.
    times_ejected: int = 0
    #: When the multiplier was last stepped down (or the host readmitted).
    decay_stamp: float = 0.0


class OutlierDetector:
    """Per-destination passive health state; one instance per (service, subset) pool."""

    def __init__(self, config: OutlierDetection) -> None:
        self.config = config
        self._hosts: dict[str, _Host] = {}
        self._known: set[str] = set()
        #: Ejections performed since creation.
        self.ejections_total = 0
        #: Ejections that were due but refused by ``max_ejection_percent``.
        self.ejections_overflow = 0

    # -- membership

    def set_known(self, addresses: Collection[str]) -> None:
        """The endpoints of this destination now; state of endpoints gone is dropped."""
        self._known = set(addresses)
        for address in [a for a in self._hosts if a not in self._known]:
            del self._hosts[address]

    def _host(self, address: str) -> _Host:
        host = self._hosts.get(address)
        if host is None:
            host = self._hosts[address] = _Host()
            self._known.add(address)
        return host

    # -- queries

    def max_ejected(self) -> int:
        """How many endpoints may be ejected at once (see the module docstring)."""
        known = len(self._known)
        if known < 2:
            return 0
        limit = math.floor(known * self.config.max_ejection_percent / 100)
        return min(max(limit, 1), known - 1)

    def ejection_time(self, times_ejected_before: int) -> float:
        base = self.config.base_ejection_time
        return min(base * (times_ejected_before + 1), max(MAX_EJECTION_TIME, base))

    def _refresh(self, host: _Host, now: float) -> None:
        """Readmit if the ejection is over; step the multiplier down per healthy interval."""
        if host.ejected_until is not None:
            if now < host.ejected_until:
                return
            host.decay_stamp = host.ejected_until
            host.ejected_until = None
            host.consecutive_5xx = 0
            host.consecutive_gateway = 0
        interval = self.config.interval
        if host.times_ejected > 0 and interval > 0 and now >= host.decay_stamp + interval:
            steps = int((now - host.decay_stamp) // interval)
            host.times_ejected = max(0, host.times_ejected - steps)
            host.decay_stamp += steps * interval

    def is_ejected(self, address: str, now: float) -> bool:
        host = self._hosts.get(address)
        if host is None:
            return False
        self._refresh(host, now)
        return host.ejected_until is not None

    def ejected(self, now: float) -> list[str]:
        """Addresses ejected at ``now``, sorted."""
        return sorted(a for a in list(self._hosts) if self.is_ejected(a, now))

    def ejected_until(self, address: str, now: float) -> float | None:
        """When ``address`` will be readmitted, or None if it is not ejected."""
        if not self.is_ejected(address, now):
            return None
        return self._hosts[address].ejected_until

    def filter(self, endpoints: Sequence[Endpoint], now: float) -> list[Endpoint]:
        """``endpoints`` without the ejected ones; all of them if none would remain (panic).

        The endpoints passed are added to the known set (which ``max_ejection_percent``
        counts), so a shell that never calls :meth:`set_known` still gets a sensible cap.
        """
        self._known.update(e.address for e in endpoints)
        admitted = [e for e in endpoints if not self.is_ejected(e.address, now)]
        return admitted if admitted else list(endpoints)

    # -- events

    def record(self, address: str, now: float, *, ok: bool, gateway_error: bool = False) -> bool:
        """Report one attempt's result; True if this report ejected ``address``.

        ``ok`` is False for a 5xx, a reset or a connect failure (what Envoy counts as
        "5xx"); ``gateway_error`` additionally marks 502/503/504 and connect failures.
        Reports for an endpoint that is currently ejected (late answers of requests sent
        before the ejection) do not extend or repeat the ejection.
        """
        host = self._host(address)
        self._refresh(host, now)
        if ok:
            host.consecutive_5xx = 0
            host.consecutive_gateway = 0
            return False
        if host.ejected_until is not None:
            return False
        host.consecutive_5xx += 1
        host.consecutive_gateway = host.consecutive_gateway + 1 if gateway_error else 0
        if not self._tripped(host):
            return False
        if len(self.ejected(now)) >= self.max_ejected():
            self.ejections_overflow += 1
            return False
        host.ejected_until = now + self.ejection_time(host.times_ejected)
        host.times_ejected += 1
        host.consecutive_5xx = 0
        host.consecutive_gateway = 0
        self.ejections_total += 1
        return True

    def _tripped(self, host: _Host) -> bool:
        threshold = self.config.consecutive_5xx_errors
        if threshold > 0 and host.consecutive_5xx >= threshold:
            return True
        gateway = self.config.consecutive_gateway_errors
        return gateway is not None and gateway > 0 and host.consecutive_gateway >= gateway
