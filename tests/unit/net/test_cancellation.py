"""Resets cross the mesh both ways; certificates rotate under open connections."""

from __future__ import annotations

import h2.errors
import httpx
import pytest
import trio

from peermesh.net.http.h2session import H2Session, H2Stream, StreamReset
from tests.support.meshkit import eventually, two_agents
from tests.support.pki import mesh_ca


async def _h2c_client(address: tuple[str, int], nursery: trio.Nursery) -> H2Session:
    tcp = await trio.open_tcp_stream(*address)
    session = H2Session(tcp, client_side=True)
    nursery.start_soon(session.run)
    return session


def _get(path: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":authority", b"orders"),
        (b":path", path),
    ]


async def test_client_reset_cancels_the_upstream_request(tmp_path):
    async with two_agents(tmp_path) as mesh, trio.open_nursery() as nursery:
        client = await _h2c_client(mesh.outbound, nursery)
        stream = await client.open_stream(_get(b"/slow/30000"), end_stream=True)
        await eventually(lambda: mesh.server.inbound_tracker.streams == 1)
        stream.reset(h2.errors.ErrorCodes.CANCEL)
        # The reset travels client -> agent A -> agent B, which abandons the app call.
        await eventually(lambda: mesh.server.inbound_tracker.streams == 0)
        await eventually(lambda: mesh.server.metrics.tally[("inbound", "orders", 499)] == 1)
        await eventually(lambda: mesh.client.metrics.tally[("outbound", "orders", 499)] == 1)
        nursery.cancel_scope.cancel()


async def test_upstream_reset_reaches_the_client(tmp_path):
    """An h2c app that resets mid-response: the client's stream is reset too."""
    app_listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    app_port = app_listeners[0].socket.getsockname()[1]

    async def app_stream(stream: H2Stream) -> None:
        await stream.send_headers([(b":status", b"200")])
        await stream.send_data(b"partial")
        stream.reset(h2.errors.ErrorCodes.INTERNAL_ERROR)

    async def serve_app(conn: trio.SocketStream) -> None:
        await H2Session(conn, client_side=False, handler=app_stream).run()

    async with trio.open_nursery() as outer:
        outer.start_soon(trio.serve_listeners, serve_app, app_listeners)
        async with (
            two_agents(tmp_path, app_port=app_port, proto="h2c") as mesh,
            trio.open_nursery() as nursery,
        ):
            client = await _h2c_client(mesh.outbound, nursery)
            stream = await client.open_stream(_get(b"/"), end_stream=True)
            headers = await stream.receive_headers()
            assert (b":status", b"200") in headers
            with pytest.raises(StreamReset):
                while await stream.receive_data():
                    pass
            nursery.cancel_scope.cancel()
        outer.cancel_scope.cancel()


async def test_certificate_rotation_keeps_open_connections(tmp_path):
    async with two_agents(tmp_path) as mesh, httpx.AsyncClient() as client:
        url = mesh.outbound_url + "/"
        assert (await client.get(url, headers={"host": "orders"})).status_code == 200
        old_serial = mesh.server.tls.certificate.serial_number
        mesh_ca(tmp_path).issue("node-b", "orders", mesh.dirs["node-b"])
        mesh.server.tls.reload()
        assert mesh.server.tls.certificate.serial_number != old_serial
        # The pooled connection made with the old certificate keeps working.
        assert (await client.get(url, headers={"host": "orders"})).status_code == 200
        assert mesh.client.pool.dials == 1
        # A new connection presents the new certificate.
        import ssl

        from cryptography import x509

        from tests.support.pki import raw_client_context

        tcp = await trio.open_tcp_stream(*mesh.inbound)
        tls = trio.SSLStream(tcp, raw_client_context(mesh.dirs["node-a"]), server_hostname="x")
        await tls.do_handshake()
        der = tls.getpeercert(binary_form=True)
        assert x509.load_der_x509_certificate(der).serial_number != old_serial
        await trio.aclose_forcefully(tls)
        assert isinstance(ssl.OPENSSL_VERSION, str)
