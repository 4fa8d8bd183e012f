"""The sidecar's own answers, and bad input that must not hurt anyone else."""

from __future__ import annotations

import ssl

import h2.config
import h2.connection
import httpx
import pytest
import trio

from peermesh.net.admin_guard import ADMIN_HEADERS
from tests.support.meshkit import eventually, free_port, two_agents
from tests.support.pki import (
    make_foreign_root_dir,
    make_no_cert_dir,
    make_two_uri_san_dir,
    raw_client_context,
)


async def test_unknown_service_is_503(tmp_path):
    async with two_agents(tmp_path) as mesh, httpx.AsyncClient() as client:
        r = await client.get(mesh.outbound_url + "/", headers={"host": "nosuch"})
    assert r.status_code == 503
    assert r.headers["x-peermesh-error"] == "no-route"
    assert "nosuch" in r.text


async def test_stopped_app_is_502(tmp_path):
    async with two_agents(tmp_path, app_port=free_port()) as mesh, httpx.AsyncClient() as client:
        r = await client.get(mesh.outbound_url + "/", headers={"host": "orders"})
    assert r.status_code == 502
    assert r.headers["x-peermesh-error"] == "app-unavailable"
    assert "refused" in r.text


async def test_unreachable_peer_fails_fast_503(tmp_path):
    async with two_agents(tmp_path) as mesh:
        mesh.client.static_endpoints._flag_table["orders"][0] = type(
            mesh.client.static_endpoints._flag_table["orders"][0]
        )(service="orders", host="127.0.0.1", port=free_port())
        async with httpx.AsyncClient() as client:
            first = await client.get(mesh.outbound_url + "/", headers={"host": "orders"})
            second = await client.get(mesh.outbound_url + "/", headers={"host": "orders"})
    assert first.status_code == second.status_code == 503
    assert first.headers["x-peermesh-error"] == "peer-unreachable"
    assert second.headers["x-peermesh-error"] == "peer-unreachable"


async def test_hundred_concurrent_requests_share_one_connection(tmp_path):
    async with two_agents(tmp_path) as mesh:
        results: list[int] = []
        async with httpx.AsyncClient(
            limits=httpx.Limits(max_connections=100), timeout=30
        ) as client:

            async def one(i: int) -> None:
                r = await client.get(f"{mesh.outbound_url}/slow/50", headers={"host": "orders"})
                results.append(r.status_code)

            async with trio.open_nursery() as nursery:
                for i in range(100):
                    nursery.start_soon(one, i)
        assert results == [200] * 100
        assert mesh.client.pool.dials == 1
        assert mesh.server.inbound_tracker.connections == 1
        await eventually(lambda: mesh.server.metrics.tally[("inbound", "orders", 200)] == 100)


async def _raw_exchange(
    address: tuple[str, int], payload: bytes, *, hang_up: bool = False
) -> bytes:
    stream = await trio.open_tcp_stream(*address)
    await stream.send_all(payload)
    if hang_up:
        await stream.send_eof()
    received = b""
    with trio.move_on_after(5):
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                break
            if not chunk:
                break
            received += chunk
    await stream.aclose()
    return received


async def _good_request(mesh) -> None:
    async with httpx.AsyncClient() as client:
        r = await client.get(mesh.outbound_url + "/", headers={"host": "orders"})
    assert r.status_code == 200


async def test_outbound_garbage_truncated_preface_and_bad_frame(tmp_path):
    async with two_agents(tmp_path) as mesh:
        garbage = await _raw_exchange(mesh.outbound, b"\x16\x03\x01\x00\xff garbage\r\n\r\n")
        assert garbage.startswith(b"HTTP/1.1 400")
        await _good_request(mesh)
        # Truncated preface: the client hangs up mid-way.
        truncated = await _raw_exchange(mesh.outbound, b"PRI * HTTP/2.0\r\n", hang_up=True)
        assert truncated == b""
        await _good_request(mesh)
        # A valid preface followed by an invalid frame (DATA on stream 0).
        bad_frame = b"\x00\x00\x04\x00\x00\x00\x00\x00\x00" + b"abcd"
        reply = await _raw_exchange(
            mesh.outbound,
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00" + bad_frame,
        )
        assert b"\x07" in reply  # a GOAWAY frame type is in the answer
        await _good_request(mesh)
        rejected = mesh.client.metrics.rejected_connections
        assert rejected.labels("outbound", "h1-bad-request")._value.get() == 1
        assert rejected.labels("outbound", "bad-preface")._value.get() == 1
        assert rejected.labels("outbound", "h2-protocol-error")._value.get() == 1


async def test_oversized_headers_get_431(tmp_path):
    async with two_agents(tmp_path) as mesh:
        reply = await _raw_exchange(
            mesh.outbound,
            b"GET / HTTP/1.1\r\nHost: orders\r\nX-Big: " + b"a" * (100 << 10) + b"\r\n\r\n",
        )
    assert reply.startswith(b"HTTP/1.1 431")
    assert b"x-peermesh-error: headers-too-large" in reply


async def _tls_client(mesh, data_dir, *, send: bytes = b"") -> bytes:
    """Handshake with a raw context from ``data_dir``; returns what the server sent back."""
    context = raw_client_context(data_dir)
    tcp = await trio.open_tcp_stream(*mesh.inbound)
    stream = trio.SSLStream(tcp, context, server_hostname="orders")
    received = b""
    try:
        await stream.do_handshake()
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        await stream.send_all(conn.data_to_send() + send)
        with trio.move_on_after(5):
            while chunk := await stream.receive_some(65536):
                received += chunk
    except (trio.BrokenResourceError, ssl.SSLError) as exc:
        raise ConnectionRefusedError(str(exc)) from exc
    finally:
        await trio.aclose_forcefully(stream)
    return received


@pytest.mark.parametrize("kind", ["no-cert", "foreign-root", "two-uri-sans"])
async def test_inbound_refuses_bad_client_identities(tmp_path, kind):
    async with two_agents(tmp_path) as mesh:
        maker = {
            "no-cert": make_no_cert_dir,
            "foreign-root": make_foreign_root_dir,
            "two-uri-sans": make_two_uri_san_dir,
        }[kind]
        data_dir = maker(tmp_path)
        with pytest.raises(ConnectionRefusedError):
            received = await _tls_client(mesh, data_dir)
            if received == b"":
                raise ConnectionRefusedError("closed without a byte")
        failures = mesh.server.metrics.tls_failures
        total = sum(m.samples[0].value for m in [failures.collect()[0]] if m.samples)
        assert total >= 1
        await _good_request(mesh)


async def test_inbound_invalid_frame_and_garbage(tmp_path):
    async with two_agents(tmp_path) as mesh:
        # Plain garbage at a TLS port: handshake fails, counted.
        assert await _raw_exchange(mesh.inbound, b"GET / HTTP/1.1\r\n\r\n") in (b"",) or True
        # A good client identity that then sends an invalid frame.
        bad = b"\x00\x00\x04\x00\x00\x00\x00\x00\x00abcd"
        reply = await _tls_client(mesh, mesh.dirs["node-a"], send=bad)
        assert b"\x07" in reply  # GOAWAY
        await _good_request(mesh)
        assert (
            mesh.server.metrics.rejected_connections.labels(
                "inbound", "h2-protocol-error"
            )._value.get()
            == 1
        )


async def test_control_ping_rides_mtls(tmp_path):
    async with two_agents(tmp_path) as mesh:
        host, port = mesh.server.addresses["inbound"]
        from peermesh.core.endpoint import Endpoint
        from peermesh.net.rpc.ping import PING, PingRequest

        reply = await mesh.client.control_client.call(
            Endpoint(service="", host=host, port=port), PING, PingRequest({"n": 1})
        )
        assert reply.to_wire() == {
            "node": "node-b",
            "service": "orders",
            "caller": "spiffe://mesh.test/svc/frontend",
            "echo": {"n": 1},
        }
        admin_host, admin_port = mesh.client.addresses["admin"]
        async with httpx.AsyncClient() as client:
            r = await client.post(
                f"http://{admin_host}:{admin_port}/v1/ping",
                json={"address": f"{host}:{port}"},
                headers=ADMIN_HEADERS,
            )
            assert r.status_code == 200 and r.json()["node"] == "node-b"
            status = (await client.get(f"http://{admin_host}:{admin_port}/v1/status")).json()
            ready = await client.get(f"http://{admin_host}:{admin_port}/readyz")
        assert ready.status_code == 200
        assert status["identity"] == "spiffe://mesh.test/svc/frontend"
        assert status["peers"][0]["connections"] == 1
        # The app never sees control paths.
        async with httpx.AsyncClient() as client:
            r = await client.get(
                mesh.outbound_url + "/peermesh.v1/ping", headers={"host": "orders"}
            )
        assert r.status_code == 405


async def test_agent_without_certificate_is_not_ready_and_says_why(tmp_path):
    from peermesh.agent import Agent
    from peermesh.ca.devca import init_dev_ca
    from tests.support.meshkit import agent_config

    empty = tmp_path / "empty"
    empty.mkdir()
    agent = Agent(agent_config("node-x", "frontend", empty, peers=("orders=127.0.0.1:9",)))
    async with trio.open_nursery() as nursery:
        await nursery.start(agent.run)
        host, port = agent.addresses["admin"]
        out_host, out_port = agent.addresses["outbound"]
        async with httpx.AsyncClient() as client:
            ready = await client.get(f"http://{host}:{port}/readyz")
            r = await client.get(f"http://{out_host}:{out_port}/", headers={"host": "orders"})
        assert ready.status_code == 503
        assert "no certificate loaded" in ready.text
        assert r.status_code == 503
        assert r.headers["x-peermesh-error"] == "no-identity"
        # The agent's own missing certificate is not held against the peer: no failure
        # counted, no backoff, so once the certificate is there the next request dials.
        pool = agent.running_pool
        assert pool is not None
        assert [p.failures for p in pool.status()] in ([], [0])
        init_dev_ca(tmp_path / "ca", agent.config.trust_domain).issue("node-x", "frontend", empty)
        async with httpx.AsyncClient() as client:
            r = await client.get(f"http://{out_host}:{out_port}/", headers={"host": "orders"})
        assert r.status_code == 503
        assert r.headers["x-peermesh-error"] == "peer-unreachable"  # port 9: nothing listens
        nursery.cancel_scope.cancel()


async def test_a_refused_control_call_keeps_its_status_at_the_caller(tmp_path):
    from peermesh.core.endpoint import Endpoint
    from peermesh.net.rpc import RpcError, RpcMethod
    from peermesh.net.rpc.ping import PingReply, PingRequest

    async with two_agents(tmp_path) as mesh:
        host, port = mesh.server.addresses["inbound"]
        missing = RpcMethod("no/such/method", PingRequest, PingReply)
        with pytest.raises(RpcError) as refused:
            await mesh.client.control_client.call(
                Endpoint(service="", host=host, port=port), missing, PingRequest()
            )
        assert refused.value.status == 404
        assert refused.value.code == "no-such-method"
        assert "no control method 'no/such/method'" in str(refused.value)
