"""Traffic management on real traffic through real agents."""

from __future__ import annotations

import math
from collections import Counter

import httpx
import trio

from tests.support.meshkit import eventually
from tests.support.traffickit import Backend, traffic_mesh, versions

SUBSETS = {
    "kind": "TrafficPolicy",
    "name": "reviews",
    "spec": {
        "host": "reviews",
        "subsets": [
            {"name": "v1", "labels": {"version": "v1"}},
            {"name": "v2", "labels": {"version": "v2"}},
        ],
    },
}


def canary(v1: int, v2: int) -> dict:
    return {
        "kind": "Route",
        "name": "reviews",
        "spec": {
            "host": "reviews",
            "http": [
                {
                    "name": "beta-testers",
                    "match": [{"headers": {"x-beta": {"exact": "yes"}}}],
                    "route": [{"destination": {"host": "reviews", "subset": "v2"}}],
                },
                {
                    "name": "deletes-to-v1",
                    "match": [{"method": {"exact": "DELETE"}, "uri": {"prefix": "/admin"}}],
                    "route": [{"destination": {"host": "reviews", "subset": "v1"}}],
                },
                {
                    "name": "canary",
                    "route": [
                        {"destination": {"host": "reviews", "subset": "v1"}, "weight": v1},
                        {"destination": {"host": "reviews", "subset": "v2"}, "weight": v2},
                    ],
                },
            ],
        },
    }


async def test_canary_split_header_and_method_matches(tmp_path):
    async with traffic_mesh(tmp_path, [Backend("v1"), Backend("v2")]) as mesh:
        await mesh.apply(SUBSETS, canary(90, 10))
        seen = await versions(mesh, 2000)
        share = seen["v2"] / 2000
        sigma = math.sqrt(0.1 * 0.9 / 2000)
        assert abs(share - 0.10) <= 3 * sigma, seen
        assert await versions(mesh, 50, **{"x-beta": "yes"}) == Counter({"v2": 50})
        async with httpx.AsyncClient() as c:
            for _ in range(20):
                r = await c.delete(mesh.url + "/admin/x", headers={"host": "reviews"})
                assert r.json()["version"] == "v1"
        await mesh.apply(canary(0, 100))  # a live shift, no reconnect
        assert await versions(mesh, 100) == Counter({"v2": 100})
        assert mesh.client.pool.dials == 2  # one connection per backend, kept throughout


RETRY_ROUTE = {
    "kind": "Route",
    "name": "reviews",
    "spec": {
        "host": "reviews",
        "http": [
            {
                "route": [{"destination": {"host": "reviews"}}],
                "retries": {"attempts": 4, "retryOn": "5xx"},
            }
        ],
    },
}


async def test_retries_hide_a_flaky_upstream_but_not_for_consumed_posts(tmp_path):
    async with traffic_mesh(tmp_path, [Backend("v1")]) as mesh, httpx.AsyncClient(timeout=30) as c:
        await mesh.apply(RETRY_ROUTE)
        ok = 0
        for _ in range(300):
            r = await c.get(mesh.url + "/flaky/30", headers={"host": "reviews"})
            ok += r.status_code == 200
            assert int(r.headers["x-peermesh-attempts"]) >= 1
        assert ok / 300 >= 0.99
        # A POST whose body is larger than the replay buffer is never retried.
        served_before = mesh.apps[0].served
        big = b"x" * (256 << 10)
        failures = 0
        for _ in range(20):
            r = await c.post(mesh.url + "/flaky/50", content=big, headers={"host": "reviews"})
            failures += r.status_code == 503
            assert r.headers["x-peermesh-attempts"] == "1"
        assert mesh.apps[0].served - served_before == 20
        assert failures > 0
        # A small POST body is buffered, so it can be retried safely.
        r = await c.post(mesh.url + "/flaky/30", content=b"small", headers={"host": "reviews"})
        assert r.status_code == 200


async def test_retry_budget_caps_retries_against_a_dead_upstream(tmp_path):
    async with traffic_mesh(tmp_path, [Backend("v1", fail_all=503)]) as mesh:
        budget = {
            "kind": "TrafficPolicy",
            "name": "reviews",
            "spec": {
                "host": "reviews",
                "retryBudget": {"retryRatio": 0.2, "minRetriesPerSecond": 1, "ttl": "10s"},
            },
        }
        await mesh.apply(RETRY_ROUTE, budget)
        async with httpx.AsyncClient(timeout=30) as c:
            for _ in range(200):
                r = await c.get(mesh.url + "/", headers={"host": "reviews"})
                assert r.status_code == 503
        served = mesh.apps[0].served
        retries = served - 200
        # Without a budget 4 retries each would mean 800 extra; the budget allows ~20% + floor.
        assert retries <= 0.2 * 200 + 1 * 10 + 5, retries
        assert retries > 0


async def test_route_timeout_gives_504(tmp_path):
    async with traffic_mesh(tmp_path, [Backend("v1")]) as mesh:
        route = {
            "kind": "Route",
            "name": "reviews",
            "spec": {
                "host": "reviews",
                "http": [{"route": [{"destination": {"host": "reviews"}}], "timeout": "300ms"}],
            },
        }
        await mesh.apply(route)
        async with httpx.AsyncClient(timeout=30) as c:
            slow = await c.get(mesh.url + "/slow/5000", headers={"host": "reviews"})
            fast = await c.get(mesh.url + "/slow/10", headers={"host": "reviews"})
            grpc_deadline = await c.get(
                mesh.url + "/slow/5000", headers={"host": "reviews", "grpc-timeout": "100m"}
            )
        assert slow.status_code == 504 and slow.headers["x-peermesh-error"] == "timeout"
        assert fast.status_code == 200
        assert grpc_deadline.status_code == 504


async def test_outlier_detection_ejects_and_readmits(tmp_path):
    async with traffic_mesh(tmp_path, [Backend("v1"), Backend("v2", fail_all=503)]) as mesh:
        policy = {
            "kind": "TrafficPolicy",
            "name": "reviews",
            "spec": {
                "host": "reviews",
                "loadBalancer": {"simple": "ROUND_ROBIN"},
                "outlierDetection": {
                    "consecutive5xxErrors": 3,
                    "interval": "1s",
                    "baseEjectionTime": "1s",
                    "maxEjectionPercent": 50,
                },
            },
        }
        no_retry = {
            "kind": "Route",
            "name": "reviews",
            "spec": {
                "host": "reviews",
                "http": [
                    {"route": [{"destination": {"host": "reviews"}}], "retries": {"attempts": 0}}
                ],
            },
        }
        await mesh.apply(policy, no_retry)
        async with httpx.AsyncClient(timeout=30) as c:
            statuses = [
                (await c.get(mesh.url + "/", headers={"host": "reviews"})).status_code
                for _ in range(20)
            ]
            assert statuses.count(503) == 3  # ejected after three consecutive failures
            assert statuses[-10:] == [200] * 10
            assert mesh.client.metrics.ejections.labels("reviews")._value.get() == 1
            served_bad = mesh.apps[1].served
            await trio.sleep(1.2)  # the base ejection time (1 s) passes
            after = [
                (await c.get(mesh.url + "/", headers={"host": "reviews"})).status_code
                for _ in range(4)
            ]
        assert mesh.apps[1].served > served_bad  # readmitted and tried again
        assert 503 in after


async def test_overflow_answers_503_at_once(tmp_path):
    async with traffic_mesh(tmp_path, [Backend("v1")]) as mesh:
        policy = {
            "kind": "TrafficPolicy",
            "name": "reviews",
            "spec": {"host": "reviews", "connectionPool": {"http": {"http2MaxRequests": 2}}},
        }
        await mesh.apply(policy)
        statuses: list[tuple[int, str | None]] = []
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=10), timeout=30) as c:

            async def one() -> None:
                r = await c.get(mesh.url + "/slow/1000", headers={"host": "reviews"})
                statuses.append((r.status_code, r.headers.get("x-peermesh-error")))

            async with trio.open_nursery() as nursery:
                for _ in range(6):
                    nursery.start_soon(one)
        assert statuses.count((200, None)) == 2
        assert statuses.count((503, "overflow")) == 4


async def test_p2c_ewma_avoids_a_20x_slower_endpoint(tmp_path):
    # The fast one answers in ~10 ms end to end, the slow one in ~200 ms (20x).
    async with traffic_mesh(tmp_path, [Backend("fast", 0), Backend("slow", 200)]) as mesh:
        seen = await versions(mesh, 300)
        # Round robin would give 50%; p2c-EWMA sends most traffic to the fast endpoint.
        assert seen["fast"] >= 0.75 * 300, seen


async def test_fault_injection_abort_and_delay(tmp_path):
    async with traffic_mesh(tmp_path, [Backend("v1")]) as mesh:
        route = {
            "kind": "Route",
            "name": "reviews",
            "spec": {
                "host": "reviews",
                "http": [
                    {
                        "name": "chaos",
                        "match": [{"uri": {"prefix": "/abort"}}],
                        "route": [{"destination": {"host": "reviews"}}],
                        "fault": {"abort": {"httpStatus": 500, "percentage": {"value": 50}}},
                    },
                    {
                        "name": "slowdown",
                        "match": [{"uri": {"prefix": "/delay"}}],
                        "route": [{"destination": {"host": "reviews"}}],
                        "fault": {"delay": {"fixedDelay": "200ms", "percentage": {"value": 100}}},
                    },
                ],
            },
        }
        await mesh.apply(route)
        async with httpx.AsyncClient(timeout=30) as c:
            codes: Counter[int] = Counter()
            for _ in range(400):
                r = await c.get(mesh.url + "/abort", headers={"host": "reviews"})
                codes[r.status_code] += 1
            started = trio.current_time()
            delayed = await c.get(mesh.url + "/delay", headers={"host": "reviews"})
            elapsed = trio.current_time() - started
        sigma = math.sqrt(0.25 / 400)
        assert abs(codes[500] / 400 - 0.5) <= 4 * sigma, codes
        assert delayed.status_code == 200
        assert elapsed >= 0.2  # the injected delay happened (a lower bound, not a speed test)


async def test_mirror_delivers_copies_and_a_hanging_mirror_never_slows_the_original(tmp_path):
    backends = [Backend("v1"), Backend("v2", delay_ms=60_000)]
    async with traffic_mesh(tmp_path, backends) as mesh:
        route = {
            "kind": "Route",
            "name": "reviews",
            "spec": {
                "host": "reviews",
                "http": [
                    {
                        "route": [{"destination": {"host": "reviews", "subset": "v1"}}],
                        "mirror": {"host": "reviews", "subset": "v2"},
                        "mirrorPercentage": {"value": 100},
                    }
                ],
            },
        }
        await mesh.apply(SUBSETS, route)
        async with httpx.AsyncClient(timeout=30) as c:
            for _ in range(10):
                r = await c.get(mesh.url + "/", headers={"host": "reviews"})
                assert r.status_code == 200 and r.json()["version"] == "v1"
        # Every copy reached the hanging mirror, and none of them held the originals up.
        await eventually(lambda: mesh.apps[1].served == 10)
        assert mesh.apps[0].served == 10
