"""Request and control-plane metrics on both sides of a hop."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from peermesh.net.admin_guard import ADMIN_HEADERS
from tests.integration.test_authz import ORDERS_DENY_ADMIN
from tests.integration.test_traffic_proxy import RETRY_ROUTE, SUBSETS, Backend, canary, traffic_mesh
from tests.support.meshkit import eventually, two_agents
from tests.support.obskit import scrape, value

OK, MISSING, UPLOADS = 6, 2, 1


async def test_both_sides_count_every_request_with_labels(tmp_path):
    async with two_agents(tmp_path) as mesh, httpx.AsyncClient() as c:
        host = {"host": "orders"}
        for _ in range(OK):
            r = await c.get(mesh.outbound_url + "/bytes/1000", headers=host)
            assert r.status_code == 200 and len(r.content) == 1000
        for _ in range(MISSING):
            assert (await c.get(mesh.outbound_url + "/status/404", headers=host)).status_code == 404
        r = await c.post(mesh.outbound_url + "/upload", content=b"u" * 500, headers=host)
        assert r.status_code == 200
        total = OK + MISSING + UPLOADS

        server = await _settled(mesh.server, "inbound", total)
        client = await scrape(mesh.client)
        for side, samples in (("outbound", client), ("inbound", server)):
            labels = {
                "direction": side,
                "source_service": "frontend",
                "destination_service": "orders",
            }
            name = "peermesh_requests_total"
            assert value(samples, name, **labels, response_code="200") == OK + UPLOADS
            assert value(samples, name, **labels, response_code="404") == MISSING
            assert value(samples, name, **labels, grpc_status="") == total
            assert value(samples, name, direction=side) == total
            count = "peermesh_request_duration_seconds_count"
            assert value(samples, count, direction=side, destination_service="orders") == total
            assert value(samples, "peermesh_request_bytes_total", **labels) == 500
            assert value(samples, "peermesh_response_bytes_total", **labels) >= OK * 1000
            # Paths never become labels.
            assert not any(
                "/bytes" in v for rows in samples.values() for labels_, _ in rows
                for v in labels_.values()
            )  # fmt: skip
        # Control-plane collectors read live state.
        assert value(client, "peermesh_certificate_expiry_seconds") > 3600
        assert value(client, "peermesh_policy_objects") == 0
        assert "peermesh_policy_version" in client
        inbound = "{}:{}".format(*mesh.inbound)
        assert value(client, "peermesh_peer_connections", peer=inbound) == 1
        assert value(client, "peermesh_access_log_dropped_total") == 0


async def test_denials_are_counted_by_policy_on_both_sides(tmp_path):
    async with two_agents(tmp_path) as mesh, httpx.AsyncClient() as c:
        ah, ap = mesh.client.addresses["admin"]
        r = await c.put(
            f"http://{ah}:{ap}/v1/policy",
            json={"objects": [ORDERS_DENY_ADMIN]},
            headers=ADMIN_HEADERS,
        )
        assert r.status_code == 200
        await eventually(lambda: mesh.server.policy.get("AuthorizationPolicy", "orders-deny-admin"))
        for _ in range(3):
            r = await c.get(mesh.outbound_url + "/admin/x", headers={"host": "orders"})
            assert r.status_code == 403
        server = await _settled(mesh.server, "inbound", 3)
        client = await scrape(mesh.client)
        denied = {"policy": "orders-deny-admin", "action": "DENY"}
        assert value(server, "peermesh_authz_denials_total", **denied) == 3
        for side, samples in (("inbound", server), ("outbound", client)):
            name = "peermesh_requests_total"
            assert value(samples, name, direction=side, response_code="403") == 3


async def test_retries_and_overflows_are_counted(tmp_path):
    async with traffic_mesh(tmp_path, [Backend("v1")]) as mesh, httpx.AsyncClient(timeout=30) as c:
        await mesh.apply(RETRY_ROUTE)
        extra = 0
        for _ in range(40):
            r = await c.get(mesh.url + "/flaky/40", headers={"host": "reviews"})
            extra += int(r.headers["x-peermesh-attempts"]) - 1
        samples = await scrape(mesh.client)
        assert extra > 0
        assert value(samples, "peermesh_retries_total", destination_service="reviews") == extra
        assert value(samples, "peermesh_requests_total", direction="outbound") == 40

    async with traffic_mesh(tmp_path / "overflow", [Backend("v1")]) as mesh:
        policy = {
            "kind": "TrafficPolicy",
            "name": "reviews",
            "spec": {"host": "reviews", "connectionPool": {"http": {"http2MaxRequests": 2}}},
        }
        await mesh.apply(policy)
        codes: list[int] = []
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=10), timeout=30) as c:

            async def one() -> None:
                codes.append(
                    (await c.get(mesh.url + "/slow/1000", headers={"host": "reviews"})).status_code
                )

            async with trio.open_nursery() as nursery:
                for _ in range(6):
                    nursery.start_soon(one)
        samples = await scrape(mesh.client)
        assert codes.count(503) == 4
        errors = "peermesh_sidecar_errors_total"
        assert value(samples, errors, direction="outbound", error="overflow") == 4
        name = "peermesh_requests_total"
        assert value(samples, name, direction="outbound", response_code="503") == 4
        assert value(samples, name, direction="outbound", response_code="200") == 2


async def test_the_routed_subset_is_a_label_on_the_caller_side(tmp_path):
    async with traffic_mesh(tmp_path, [Backend("v1"), Backend("v2")]) as mesh:
        await mesh.apply(SUBSETS, canary(0, 100))
        async with httpx.AsyncClient() as c:
            for _ in range(10):
                r = await c.get(mesh.url + "/", headers={"host": "reviews"})
                assert r.json()["version"] == "v2"
        samples = await scrape(mesh.client)
        name = "peermesh_requests_total"
        assert value(samples, name, direction="outbound", destination_subset="v2") == 10
        assert value(samples, name, direction="outbound", destination_subset="v1") == 0
        count = "peermesh_request_duration_seconds_count"
        assert value(samples, count, direction="outbound", destination_subset="v2") == 10


async def _settled(agent, direction: str, n: int):  # type: ignore[no-untyped-def]
    """Scrape once the agent has recorded ``n`` requests (it records after replying)."""
    await eventually(
        lambda: sum(c for (d, _s, _c), c in agent.metrics.tally.items() if d == direction) >= n
    )
    return await scrape(agent)


DOCS = Path(__file__).resolve().parents[2] / "docs"


async def test_every_documented_metric_is_exposed(tmp_path):
    text = (DOCS / "observability.md").read_text() + (DOCS / "grafana-peermesh.json").read_text()
    documented = {
        re.sub(r"_(total|bucket|count|sum)$", "", name)
        for name in re.findall(r"\bpeermesh_[a-z_]+", text)
    }
    async with two_agents(tmp_path) as mesh, httpx.AsyncClient() as c:
        host, port = mesh.client.addresses["admin"]
        exposition = (await c.get(f"http://{host}:{port}/metrics")).text
    exposed = {family.name for family in text_string_to_metric_families(exposition)}
    assert documented - exposed == set()


async def test_grpc_status_is_a_bounded_label_on_both_sides(tmp_path):
    import grpc

    from tests.integration.test_grpc import SERVICE, start_grpc_server

    server, port = start_grpc_server()
    try:
        async with two_agents(tmp_path, app_port=port, proto="h2c") as mesh:
            host, out_port = mesh.outbound

            def calls() -> None:
                options = [("grpc.default_authority", "orders"), ("grpc.enable_http_proxy", 0)]
                with grpc.insecure_channel(f"{host}:{out_port}", options=options) as channel:
                    unary = channel.unary_unary(f"/{SERVICE}/Unary")
                    for _ in range(3):
                        assert unary(b"hi", timeout=10) == b"echo:hi"
                    for _ in range(2):
                        try:
                            unary(b"deny", timeout=10)
                        except grpc.RpcError as exc:
                            assert exc.code() == grpc.StatusCode.PERMISSION_DENIED
                        else:
                            raise AssertionError("the call should have been denied")

            await trio.to_thread.run_sync(calls)
            server_samples = await _settled(mesh.server, "inbound", 5)
            client_samples = await scrape(mesh.client)
            for side, samples in (("outbound", client_samples), ("inbound", server_samples)):
                name = "peermesh_requests_total"
                ok = value(samples, name, direction=side, response_code="200", grpc_status="0")
                denied = value(samples, name, direction=side, grpc_status="7")
                assert (ok, denied) == (3, 2), side
    finally:
        server.stop(None)


async def test_refused_graph_queries_and_taps_move_the_refusal_counter(tmp_path):
    name = "peermesh_admin_refusals_total"
    async with two_agents(tmp_path) as mesh, httpx.AsyncClient() as c:
        before = await scrape(mesh.server)
        assert value(before, name, route="/v1/mesh/graph") == 0
        assert value(before, name, route="tap/subscribe", reason="tap-forbidden") == 0
        host, port = mesh.server.addresses["admin"]
        base = f"http://{host}:{port}"
        r = await c.get(base + "/v1/mesh/graph?width=x")
        assert r.status_code == 400 and r.json()["code"] == "invalid-graph-query"
        r = await c.post(base + "/v1/mesh/graph", headers={"X-Peermesh-Request": "1"})
        assert r.status_code == 405
        # The client is neither an admin nor listed in tapIdentities: its peer refuses.
        host, port = mesh.client.addresses["admin"]
        tapped = (await c.get(f"http://{host}:{port}/v1/mesh/tap?service=orders")).json()
        assert any("may not tap" in e["error"] for e in tapped["errors"]), tapped
        after = await scrape(mesh.server)
        graph = {"route": "/v1/mesh/graph"}
        assert value(after, name, **graph, reason="invalid-graph-query") == 1
        assert value(after, name, **graph, reason="method-not-allowed") == 1
        assert value(after, name, route="tap/subscribe", reason="tap-forbidden") == 1
        assert mesh.server.mesh_view.graph_refusals == 2
        assert mesh.server.mesh_view.tap_refusals == 1
