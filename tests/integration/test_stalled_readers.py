"""Stalled readers on the shared peer connection must not freeze the other streams on it.

Every app behind agent A shares one pooled A→B HTTP/2 connection. Here 16 clients
never read the response bodies they asked for and 16 uploads go to an app that never
reads request bodies, each pinning its stream's window on that connection, while a
victim makes 200 requests with bodies both ways through the same two agents.
"""

from __future__ import annotations

import h11
import httpx
import trio

from peermesh.net.http.h2session import CONNECTION_WINDOW, STREAM_WINDOW
from tests.support.memory import rss_bytes
from tests.support.meshkit import two_agents

STALLED = 16
VICTIM_REQUESTS = 200
VICTIM_BODY = 64 << 10
BIG = 64 << 20  # what a stalled download asks for, and a stalled upload announces
CHUNK = 64 << 10


class StallingApp:
    """``/big`` streams BIG bytes, ``/stall-up`` never reads its body, ``/echo`` echoes."""

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._serve, listeners)

    async def _serve(self, stream: trio.SocketStream) -> None:
        try:
            await self._answer(stream)
        except (trio.BrokenResourceError, h11.ProtocolError):
            pass  # the agent gave up on a stalled exchange

    async def _answer(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            request = await self._next(conn, stream)
            if not isinstance(request, h11.Request):
                return
            if request.target == b"/stall-up":
                await trio.sleep_forever()
            body = bytearray()
            while isinstance(event := await self._next(conn, stream), h11.Data):
                body += event.data
            if request.target == b"/big":
                await self._send(conn, stream, h11.Response(status_code=200, headers=[]))
                for _ in range(BIG // CHUNK):
                    await self._send(conn, stream, h11.Data(data=b"b" * CHUNK))
            else:
                length = str(len(body)).encode()
                response = h11.Response(status_code=200, headers=[(b"content-length", length)])
                await self._send(conn, stream, response)
                await self._send(conn, stream, h11.Data(data=bytes(body)))
            await self._send(conn, stream, h11.EndOfMessage())
            conn.start_next_cycle()

    @staticmethod
    async def _next(conn: h11.Connection, stream: trio.SocketStream) -> h11.Event | None:
        while (event := conn.next_event()) is h11.NEED_DATA:
            data = await stream.receive_some(CHUNK)
            conn.receive_data(bytes(data))
        return event if isinstance(event, h11.Event) else None

    @staticmethod
    async def _send(conn: h11.Connection, stream: trio.SocketStream, event: h11.Event) -> None:
        data = conn.send(event)
        if data:
            await stream.send_all(data)


async def stalled_download(address: tuple[str, int]) -> None:
    stream = await trio.open_tcp_stream(*address)
    await stream.send_all(b"GET /big HTTP/1.1\r\nHost: orders\r\n\r\n")
    await trio.sleep_forever()  # never reads the answer


async def stalled_upload(address: tuple[str, int]) -> None:
    stream = await trio.open_tcp_stream(*address)
    head = b"POST /stall-up HTTP/1.1\r\nHost: orders\r\nContent-Length: %d\r\n\r\n" % BIG
    await stream.send_all(head)
    for _ in range(BIG // CHUNK):  # blocks for good once every buffer on the way is full
        await stream.send_all(b"u" * CHUNK)


async def test_stalled_readers_do_not_starve_the_shared_peer_connection(tmp_path):
    async with trio.open_nursery() as outer:
        port = await outer.start(StallingApp().run)
        async with (
            two_agents(tmp_path, app_port=port) as mesh,
            httpx.AsyncClient(timeout=30) as client,
        ):
            url = mesh.outbound_url + "/echo"
            first = await client.post(url, headers={"host": "orders"}, content=b"x")
            assert first.status_code == 200  # the A→B connection is up
            (session,) = mesh.client.pool.sessions()
            before = rss_bytes()
            async with trio.open_nursery() as stalls:
                for _ in range(STALLED):
                    stalls.start_soon(stalled_download, mesh.outbound)
                    stalls.start_soon(stalled_upload, mesh.outbound)
                # Until the downloads hold more than the whole connection window on A's
                # side (nearly a stream window each; the rest sits in socket buffers).
                pinned = CONNECTION_WINDOW + 4 * STREAM_WINDOW
                for _ in range(600):
                    if session._unread >= pinned:
                        break
                    await trio.sleep(0.05)
                assert session._unread >= pinned
                assert session.open_streams >= 2 * STALLED

                body = bytes(range(256)) * (VICTIM_BODY // 256)
                answers = []
                for _ in range(VICTIM_REQUESTS):
                    response = await client.post(url, headers={"host": "orders"}, content=body)
                    answers.append((response.status_code, response.content == body))
                assert answers == [(200, True)] * VICTIM_REQUESTS
                assert mesh.client.pool.sessions() == [session]  # all on the one connection
                growth = rss_bytes() - before
                stalls.cancel_scope.cancel()
        outer.cancel_scope.cancel()
    # 32 stalled streams hold at most a stream window each on either agent.
    assert growth < 128 << 20, f"RSS grew {growth >> 20} MiB"
