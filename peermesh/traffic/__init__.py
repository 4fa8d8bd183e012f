"""Traffic management decision cores (sans-IO).

Every class here takes ``now`` (seconds on trio's clock) and, where it needs chance, a
``random.Random``; none of them opens sockets, sleeps or touches trio. The proxy shells in
:mod:`peermesh.proxy` feed them events and act on the decisions they return:

- :mod:`.balancer` -- which endpoint gets the next request (p2c peak-EWMA by default).
- :mod:`.retry` -- whether an attempt's outcome may be retried, backoff, retry budget.
- :mod:`.outlier` -- passive health: eject endpoints after consecutive failures.
- :mod:`.limits` -- local rate limiting and per-destination concurrency limits.
- :mod:`.faults` -- fault injection decisions.
- :mod:`.deadlines` -- ``grpc-timeout`` and deadline headers.
"""
