"""Istio and Gateway API objects, as their docs write them, applied and checked on real traffic.

Each fixture under ``examples/istio`` and ``examples/gateway-api`` goes through the same
translation as ``peermesh policy apply -f`` and is then exercised through real agents; the
CLI itself is driven against an agent process at the end.
"""

from __future__ import annotations

import math
import subprocess
from collections import Counter
from pathlib import Path

import httpx
import trio

from peermesh.policy.loader import load_path
from peermesh.policy.translate.batch import translate_documents
from tests.support.meshkit import REPO, eventually, lone_agent, peermesh_cli, process, wait_http_ok
from tests.support.pki import TRUST_DOMAIN
from tests.support.traffickit import Backend, TrafficMesh, traffic_mesh, versions

ISTIO = REPO / "examples" / "istio"
GATEWAY_API = REPO / "examples" / "gateway-api"


async def apply_file(mesh: TrafficMesh, path: Path) -> None:
    batch = translate_documents(load_path(path), trust_domain=TRUST_DOMAIN)
    assert not batch.errors, [str(e) for e in batch.errors]
    await mesh.apply(*batch.objects)


def within(observed: int, n: int, p: float) -> bool:
    """``observed`` of ``n`` is within four standard deviations of a share ``p``."""
    return abs(observed / n - p) <= 4 * math.sqrt(p * (1 - p) / n)


async def test_request_routing_sends_one_user_to_v2(tmp_path):
    async with traffic_mesh(tmp_path, [Backend("v1"), Backend("v2")]) as mesh:
        await apply_file(mesh, ISTIO / "request-routing.yaml")
        assert await versions(mesh, 50, **{"end-user": "jason"}) == Counter({"v2": 50})
        assert await versions(mesh, 50) == Counter({"v1": 50})


async def test_weighted_canary_splits_90_10(tmp_path):
    async with traffic_mesh(tmp_path, [Backend("v1"), Backend("v2")]) as mesh:
        await apply_file(mesh, ISTIO / "weighted-canary.yaml")
        seen = await versions(mesh, 1000)
        assert within(seen["v2"], 1000, 0.1), seen


async def test_fault_injection_aborts_half_and_delays(tmp_path):
    async with (
        traffic_mesh(tmp_path, [Backend("v1")]) as mesh,
        httpx.AsyncClient(timeout=30) as c,
    ):
        await apply_file(mesh, ISTIO / "fault-injection.yaml")
        codes: Counter[int] = Counter()
        for _ in range(300):
            codes[(await c.get(mesh.url + "/abort", headers={"host": "reviews"})).status_code] += 1
        assert within(codes[500], 300, 0.5), codes
        started = trio.current_time()
        slow = await c.get(mesh.url + "/slow", headers={"host": "reviews"})
        assert slow.status_code == 200
        assert trio.current_time() - started >= 0.2  # the delay happened (a lower bound)


async def test_retries_and_timeouts_hide_a_flaky_upstream(tmp_path):
    async with (
        traffic_mesh(tmp_path, [Backend("v1")]) as mesh,
        httpx.AsyncClient(timeout=30) as c,
    ):
        await apply_file(mesh, ISTIO / "retries-timeouts.yaml")
        ok = 0
        attempts = 0
        for _ in range(200):
            r = await c.get(mesh.url + "/flaky/10", headers={"host": "reviews"})
            ok += r.status_code == 200
            attempts = max(attempts, int(r.headers["x-peermesh-attempts"]))
        assert ok / 200 >= 0.99
        assert 1 < attempts <= 4  # retried, never more than attempts + 1 tries
        timed_out = await c.get(mesh.url + "/slow/5000", headers={"host": "reviews"})
        assert timed_out.status_code == 504


async def test_mirroring_copies_every_request_to_v2(tmp_path):
    async with (
        traffic_mesh(tmp_path, [Backend("v1"), Backend("v2")]) as mesh,
        httpx.AsyncClient(timeout=30) as c,
    ):
        await apply_file(mesh, ISTIO / "mirroring.yaml")
        for _ in range(10):
            r = await c.get(mesh.url + "/", headers={"host": "reviews"})
            assert r.status_code == 200 and r.json()["version"] == "v1"
        await eventually(lambda: mesh.apps[1].served == 10)


async def test_circuit_breaking_answers_overflow_at_once(tmp_path):
    async with traffic_mesh(tmp_path, [Backend("v1")]) as mesh:
        await apply_file(mesh, ISTIO / "circuit-breaking.yaml")
        statuses: list[tuple[int, str | None]] = []
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=10), timeout=30) as c:

            async def one() -> None:
                r = await c.get(mesh.url + "/slow/1000", headers={"host": "reviews"})
                statuses.append((r.status_code, r.headers.get("x-peermesh-error")))

            async with trio.open_nursery() as nursery:
                for _ in range(6):
                    nursery.start_soon(one)
        assert (200, None) in statuses
        assert (503, "overflow") in statuses


async def test_outlier_detection_ejects_the_failing_endpoint(tmp_path):
    async with (
        traffic_mesh(tmp_path, [Backend("v1"), Backend("v2", fail_all=503)]) as mesh,
        httpx.AsyncClient(timeout=30) as c,
    ):
        await apply_file(mesh, ISTIO / "outlier-detection.yaml")
        statuses = [
            (await c.get(mesh.url + "/", headers={"host": "reviews"})).status_code
            for _ in range(20)
        ]
        assert statuses.count(503) == 3  # ejected after three consecutive failures
        assert statuses[-10:] == [200] * 10


async def test_authorization_deny_then_allow_by_service_account(tmp_path):
    async with (
        traffic_mesh(tmp_path, [Backend("v1")]) as mesh,
        httpx.AsyncClient(timeout=30) as c,
    ):

        async def status(path: str, method: str = "GET") -> int:
            r = await c.request(method, mesh.url + path, headers={"host": "reviews"})
            return r.status_code

        assert await status("/internal/x") == 200
        await apply_file(mesh, ISTIO / "authorization.yaml")
        # The caller is the frontend, whose service account the ALLOW policy names.
        server = mesh.servers[0]
        await eventually(lambda: len(server.policy.objects("AuthorizationPolicy")) == 2)
        assert await status("/internal/x") == 403  # DENY is checked first
        assert await status("/api") == 200  # ALLOW: GET from cluster.local/ns/default/sa/frontend
        assert await status("/api", "POST") == 403  # an ALLOW exists and this matches none


async def test_gateway_api_split_between_two_services(tmp_path):
    backends = [Backend("v1", service="reviews-v1"), Backend("v2", service="reviews-v2")]
    async with traffic_mesh(tmp_path, backends) as mesh:
        await apply_file(mesh, GATEWAY_API / "canary.yaml")
        seen = await versions(mesh, 1000)
        assert within(seen["v2"], 1000, 0.1), seen


async def test_gateway_api_header_and_path_prefix_match(tmp_path):
    backends = [Backend("v1", service="reviews-v1"), Backend("v2", service="reviews-v2")]
    async with traffic_mesh(tmp_path, backends) as mesh:
        await apply_file(mesh, GATEWAY_API / "header-match.yaml")
        assert await versions(mesh, 20, **{"x-beta": "yes"}) == Counter({"v2": 20})
        assert await versions(mesh, 20, path="/v2") == Counter({"v2": 20})
        assert await versions(mesh, 20, path="/v2/items") == Counter({"v2": 20})
        # PathPrefix matches whole segments: /v2beta is not under /v2.
        assert await versions(mesh, 20, path="/v2beta") == Counter({"v1": 20})


def test_cli_applies_istio_yaml_and_convert_lists_every_problem(tmp_path):
    cmd, agent_url = lone_agent(tmp_path)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return peermesh_cli("policy", *args)

    mixed = tmp_path / "mixed.yaml"
    mixed.write_text(
        (ISTIO / "weighted-canary.yaml").read_text()
        + "---\nkind: Route\nname: web\nspec:\n  host: web\n  http:\n"
        "  - route: [{destination: {host: web}}]\n"
    )
    with process(cmd):
        wait_http_ok(agent_url + "/readyz")
        applied = cli("apply", "-f", str(mixed), "--agent", agent_url)
        assert applied.returncode == 0, applied.stderr
        assert "Route/reviews.default configured" in applied.stdout
        assert "TrafficPolicy/reviews.default configured" in applied.stdout
        assert "Route/web configured" in applied.stdout
        # PeerAuthentication changes only the mTLS fields of the live MeshConfig.
        applied = cli("apply", "-f", str(ISTIO / "peer-authentication.yaml"), "--agent", agent_url)
        assert applied.returncode == 0, applied.stderr
        got = cli("get", "MeshConfig", "default", "-o", "json", "--agent", agent_url)
        assert '"legacy-billing": "PERMISSIVE"' in got.stdout
        principals = cli("get", "AuthorizationPolicy", "--agent", agent_url)
        assert principals.returncode == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\n"
        "spec:\n  hosts: [reviews]\n  gateways: [ingress]\n  http:\n"
        "  - corsPolicy: {allowOrigins: [{exact: x}]}\n"
        "    route: [{destination: {host: reviews}}]\n"
        "    retries: {attempts: 2, retryRemoteLocalities: true}\n"
    )
    converted = cli("convert", "-f", str(bad))
    assert converted.returncode == 1
    assert "3 problem(s)" in converted.stderr
    for path in ("spec.gateways", "spec.http[0].corsPolicy", "retries.retryRemoteLocalities"):
        assert path in converted.stderr
    assert "kind: Route" in converted.stdout
