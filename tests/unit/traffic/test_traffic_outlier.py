"""Outlier detection: ejection, readmission, growing ejection time, limits, panic mode."""

from __future__ import annotations

from peermesh.core.endpoint import Endpoint
from peermesh.policy.model import OutlierDetection
from peermesh.traffic.outlier import MAX_EJECTION_TIME, OutlierDetector


def eps(n: int) -> list[Endpoint]:
    return [Endpoint("svc", "10.0.0.1", 9000 + i) for i in range(n)]


def detector(n: int, **kw: object) -> tuple[OutlierDetector, list[Endpoint]]:
    config = OutlierDetection(**{"max_ejection_percent": 100, **kw})  # type: ignore[arg-type]
    d = OutlierDetector(config)
    e = eps(n)
    d.set_known([x.address for x in e])
    return d, e


def fail(d: OutlierDetector, address: str, now: float, times: int, **kw: bool) -> list[bool]:
    return [d.record(address, now, ok=False, **kw) for _ in range(times)]


def test_ejects_after_consecutive_5xx_and_readmits() -> None:
    d, e = detector(3, consecutive_5xx_errors=3, base_ejection_time=30.0)
    a = e[0].address
    assert fail(d, a, 0.0, 3) == [False, False, True]
    assert d.is_ejected(a, 0.0) and d.ejected(1.0) == [a]
    assert d.ejections_total == 1
    assert d.filter(e, 1.0) == e[1:]
    assert d.ejected_until(a, 1.0) == 30.0
    assert d.is_ejected(a, 29.9)
    assert not d.is_ejected(a, 30.0)
    assert d.filter(e, 30.0) == e
    # Readmitted with a clean counter.
    assert fail(d, a, 31.0, 2) == [False, False]


def test_success_resets_the_counter() -> None:
    d, e = detector(2, consecutive_5xx_errors=3)
    a = e[0].address
    for _ in range(10):
        fail(d, a, 0.0, 2)
        assert not d.record(a, 0.0, ok=True)
    assert not d.is_ejected(a, 0.0)


def test_ejection_time_grows_and_is_capped() -> None:
    d, e = detector(2, consecutive_5xx_errors=1, base_ejection_time=30.0, interval=10.0)
    a = e[0].address
    now = 0.0
    durations = []
    for _ in range(12):
        assert d.record(a, now, ok=False)
        until = d.ejected_until(a, now)
        assert until is not None
        durations.append(until - now)
        now = until  # fail again right at readmission
    assert durations[:4] == [30.0, 60.0, 90.0, 120.0]
    assert max(durations) == MAX_EJECTION_TIME


def test_multiplier_decays_while_healthy() -> None:
    d, e = detector(2, consecutive_5xx_errors=1, base_ejection_time=30.0, interval=10.0)
    a = e[0].address
    assert d.record(a, 0.0, ok=False)  # 30 s
    assert d.record(a, 30.0, ok=False)  # 60 s, until 90
    # Healthy for two intervals after readmission at 90: multiplier back to zero.
    assert d.record(a, 110.0, ok=False)
    assert d.ejected_until(a, 110.0) == 140.0


def test_max_ejection_percent() -> None:
    d, e = detector(10, consecutive_5xx_errors=1, max_ejection_percent=30)
    results = [d.record(x.address, 0.0, ok=False) for x in e]
    assert sum(results) == 3 and len(d.ejected(0.0)) == 3
    assert d.ejections_overflow == 7
    # Once one is readmitted, another failing endpoint can take its place.
    assert d.record(e[5].address, 31.0, ok=False)


def test_small_percent_still_ejects_one_but_never_the_last() -> None:
    d, e = detector(2, consecutive_5xx_errors=1, max_ejection_percent=10)
    assert d.max_ejected() == 1
    assert d.record(e[0].address, 0.0, ok=False)
    assert not d.record(e[1].address, 0.0, ok=False)
    single, one = detector(1, consecutive_5xx_errors=1)
    assert single.max_ejected() == 0
    assert not single.record(one[0].address, 0.0, ok=False)
    assert detector(3, max_ejection_percent=100)[0].max_ejected() == 2


def test_panic_mode_returns_everything() -> None:
    d, e = detector(4, consecutive_5xx_errors=1)
    for x in e[:3]:
        d.record(x.address, 0.0, ok=False)
    assert d.filter(e, 1.0) == [e[3]]
    # The caller's subset may contain only ejected endpoints: then all of them.
    assert d.filter(e[:3], 1.0) == e[:3]
    assert d.filter([], 1.0) == []


def test_gateway_errors() -> None:
    d, e = detector(3, consecutive_5xx_errors=0, consecutive_gateway_errors=2)
    a = e[0].address
    # A non-gateway 5xx breaks the run; 5xx detection itself is disabled (0).
    assert fail(d, a, 0.0, 1, gateway_error=True) == [False]
    assert fail(d, a, 0.0, 1) == [False]
    assert fail(d, a, 0.0, 2, gateway_error=True) == [False, True]
    d2, e2 = detector(3, consecutive_5xx_errors=5)
    assert fail(d2, e2[0].address, 0.0, 4, gateway_error=True) == [False] * 4


def test_late_failures_of_ejected_endpoint_do_not_extend() -> None:
    d, e = detector(3, consecutive_5xx_errors=2, base_ejection_time=10.0)
    a = e[0].address
    assert fail(d, a, 0.0, 2) == [False, True]
    assert fail(d, a, 5.0, 5) == [False] * 5
    assert d.ejected_until(a, 5.0) == 10.0 and d.ejections_total == 1


def test_set_known_forgets_removed_endpoints() -> None:
    d, e = detector(3, consecutive_5xx_errors=1)
    d.record(e[0].address, 0.0, ok=False)
    d.set_known([x.address for x in e[1:]])
    assert d.ejected(0.0) == []
    assert d.max_ejected() == 1


def test_filter_teaches_known_endpoints() -> None:
    d = OutlierDetector(OutlierDetection(consecutive_5xx_errors=1, max_ejection_percent=50))
    e = eps(4)
    assert d.max_ejected() == 0
    assert d.filter(e, 0.0) == e
    assert d.max_ejected() == 2
    assert d.record(e[0].address, 0.0, ok=False)
