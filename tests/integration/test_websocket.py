"""WebSocket through two agents: the app's Upgrade crosses the mesh and frames flow both ways."""

from __future__ import annotations

import httpx
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    RejectConnection,
    Request,
    TextMessage,
)

from peermesh.net.admin_guard import ADMIN_HEADERS
from tests.support.meshkit import two_agents

DENY_ADMIN_PATH = {
    "kind": "AuthorizationPolicy",
    "name": "orders-deny-admin",
    "spec": {
        "service": "orders",
        "action": "DENY",
        "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}],
    },
}


async def ws_echo_app(listener: trio.SocketListener) -> None:
    """A WebSocket server (wsproto) that echoes every message and reports the caller."""

    async def serve(stream: trio.SocketStream) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        async with stream:
            while True:
                data = await stream.receive_some(65536)
                ws.receive_data(data or None)
                for event in ws.events():
                    if isinstance(event, Request):
                        await stream.send_all(ws.send(AcceptConnection()))
                    elif isinstance(event, TextMessage | BytesMessage):
                        await stream.send_all(ws.send(type(event)(data=event.data)))
                    elif isinstance(event, CloseConnection):
                        if ws.state is not ConnectionState.CLOSED:  # not an abrupt close
                            await stream.send_all(ws.send(event.response()))
                        return
                if not data:
                    return

    await trio.serve_listeners(serve, [listener])


async def ws_client(address: tuple[str, int], path: str) -> tuple[trio.SocketStream, WSConnection]:
    stream = await trio.open_tcp_stream(*address)
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(ws.send(Request(host="orders", target=path)))
    return stream, ws


async def next_events(stream: trio.SocketStream, ws: WSConnection) -> list[object]:
    while True:
        events = list(ws.events())
        if events:
            return events
        data = await stream.receive_some(65536)
        ws.receive_data(data or None)
        if not data:
            return list(ws.events())


async def test_websocket_echo_through_two_agents(tmp_path):
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    async with trio.open_nursery() as apps:
        apps.start_soon(ws_echo_app, listener)
        async with two_agents(tmp_path, app_port=listener.socket.getsockname()[1]) as mesh:
            stream, ws = await ws_client(mesh.outbound, "/chat")
            [accepted] = await next_events(stream, ws)
            assert isinstance(accepted, AcceptConnection)
            for i in range(100):
                await stream.send_all(ws.send(TextMessage(data=f"hello {i}")))
                [echo] = await next_events(stream, ws)
                assert isinstance(echo, TextMessage) and echo.data == f"hello {i}"
            big = bytes(range(256)) * 4096  # 1 MiB in one frame: flow control both ways
            await stream.send_all(ws.send(BytesMessage(data=big)))
            got = b""
            while len(got) < len(big):
                for event in await next_events(stream, ws):
                    assert isinstance(event, BytesMessage)
                    got += event.data
            assert got == big
            await stream.send_all(ws.send(CloseConnection(code=1000)))
            [closed] = await next_events(stream, ws)
            assert isinstance(closed, CloseConnection)
            await stream.aclose()
        apps.cancel_scope.cancel()


async def test_upgrade_is_authorized_like_the_request_that_started_it(tmp_path):
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    async with trio.open_nursery() as apps:
        apps.start_soon(ws_echo_app, listener)
        async with two_agents(tmp_path, app_port=listener.socket.getsockname()[1]) as mesh:
            host, port = mesh.server.addresses["admin"]
            async with httpx.AsyncClient() as client:
                r = await client.put(
                    f"http://{host}:{port}/v1/policy",
                    json={"objects": [DENY_ADMIN_PATH]},
                    headers=ADMIN_HEADERS,
                )
                assert r.status_code == 200, r.text
            stream, ws = await ws_client(mesh.outbound, "/admin/socket")
            refused = (await next_events(stream, ws))[0]  # then the body, as RejectData
            assert isinstance(refused, RejectConnection) and refused.status_code == 403
            await stream.aclose()
            stream, ws = await ws_client(mesh.outbound, "/chat")  # other paths still upgrade
            [accepted] = await next_events(stream, ws)
            assert isinstance(accepted, AcceptConnection)
            await stream.aclose()
        apps.cancel_scope.cancel()
