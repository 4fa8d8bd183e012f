"""When to renew (sans-IO): at half the certificate's lifetime, jittered.

Jitter spreads a mesh bootstrapped at one instant over a window, so the committee
does not get every renewal in the same second. The agent sleeps the returned delay
with ``trio.sleep`` (so ``MockClock`` drives it in tests) and retries a failed
renewal after :func:`retry_delay`, well before expiry.
"""

from __future__ import annotations

import datetime as dt
import random

JITTER = 0.05  # ± this fraction of the lifetime around the half-way point


def renewal_delay(
    not_before: dt.datetime,
    not_after: dt.datetime,
    now: dt.datetime,
    rng: random.Random,
) -> float:
    """Seconds from ``now`` until the renewal of a certificate valid in [not_before, not_after]."""
    lifetime = (not_after - not_before).total_seconds()
    fraction = 0.5 + rng.uniform(-JITTER, JITTER)
    due = not_before + dt.timedelta(seconds=lifetime * fraction)
    return max(0.0, (due - now).total_seconds())


def retry_delay(not_after: dt.datetime, now: dt.datetime, failures: int) -> float:
    """After a failed renewal: back off 5 s doubling to 5 min, at most a tenth of what is left."""
    left = max(0.0, (not_after - now).total_seconds())
    backoff = min(300.0, 5.0 * 2 ** min(failures, 10))
    return max(1.0, min(backoff, left / 10 if left else 1.0))
