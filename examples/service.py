"""A small HTTP/1.1 example service (trio + h11) for the demo, the tests and benchmarks.

Routes:
  GET  /             JSON about this service; with ``--call SVC`` it first calls SVC
                     through its sidecar's outbound listener and nests the answer
  POST /echo         streams the request body back (with the request's trailers)
  POST /upload       reads the whole body, answers its size and SHA-256
  GET  /bytes/N      streams N bytes (chunked)
  GET  /status/N     answers with status N
  GET  /slow/MS      answers after MS milliseconds
  GET  /flaky/P      fails with 503 P percent of the time
  GET  /headers      JSON of the request headers
  GET  /static       1 KiB static body (the benchmark's upstream)

Run: ``python -m examples.service --name orders --port 8081 [--call payments --proxy HOST:PORT]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import signal
from dataclasses import dataclass

import h11
import trio

from peermesh.net.http.h1client import AppUnavailable, H1AppClient, UpstreamBroken
from peermesh.net.http.headers import RequestHead

STATIC_BODY = (b"peermesh!" * 114)[:1024]
CHUNK = 1 << 16


@dataclass(frozen=True)
class ServiceConfig:
    name: str
    port: int
    host: str = "127.0.0.1"
    call: str | None = None
    proxy: str | None = None
    version: str = "v1"
    delay_ms: int = 0
    fail_all: int = 0  # answer every request with this status (0: off)
    flaky_percent: float = 0.0  # GET / fails with 503 this often


class ExampleService:
    """Serves one HTTP/1.1 connection at a time per task; counts what it served."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.served = 0
        self.port = config.port
        self._proxy: H1AppClient | None = None
        if config.call and config.proxy:
            host, _, port = config.proxy.rpartition(":")
            self._proxy = H1AppClient(host, int(port))

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.config.port, host=self.config.host)
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._serve, listeners)

    async def _serve(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = await _next(conn, stream)
                if not isinstance(event, h11.Request):
                    return
                await self._handle(conn, stream, event)
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError, OSError):
            return
        finally:
            await trio.aclose_forcefully(stream)

    async def _handle(self, conn: h11.Connection, stream: trio.SocketStream, req: h11.Request):  # type: ignore[no-untyped-def]
        self.served += 1
        path = req.target.decode()
        if self.config.delay_ms:
            await trio.sleep(self.config.delay_ms / 1000)
        headers = {k.decode(): v.decode() for k, v in req.headers}
        if path == "/echo" and req.method == b"POST":
            await _send(
                conn,
                stream,
                h11.Response(
                    status_code=200, headers=[(b"content-type", b"application/octet-stream")]
                ),
            )
            trailers: list[tuple[bytes, bytes]] = []
            while True:
                event = await _next(conn, stream)
                if isinstance(event, h11.Data):
                    await _send(conn, stream, h11.Data(data=event.data))
                elif isinstance(event, h11.EndOfMessage):
                    trailers = list(event.headers)
                    break
                else:
                    return
            await _send(conn, stream, h11.EndOfMessage(headers=trailers))
            return
        body = bytearray()
        digest = hashlib.sha256()
        size = 0
        while True:
            event = await _next(conn, stream)
            if isinstance(event, h11.Data):
                size += len(event.data)
                digest.update(event.data)
                if path != "/upload" and len(body) < (1 << 20):
                    body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                return
        if path == "/upload":
            await _json(conn, stream, 200, {"size": size, "sha256": digest.hexdigest()})
        elif path.startswith("/bytes/"):
            total = int(path.split("/")[2])
            await _send(conn, stream, h11.Response(status_code=200, headers=[]))
            block = b"x" * CHUNK
            sent = 0
            while sent < total:
                piece = block[: min(CHUNK, total - sent)]
                await _send(conn, stream, h11.Data(data=piece))
                sent += len(piece)
            await _send(conn, stream, h11.EndOfMessage())
        elif path.startswith("/slow/"):
            await trio.sleep(int(path.split("/")[2]) / 1000)
            await _json(conn, stream, 200, {"service": self.config.name, "slept_ms": path[6:]})
        elif self.config.fail_all:
            await _json(conn, stream, self.config.fail_all, {"service": self.config.name})
        elif path.startswith("/flaky/"):
            failing = random.random() * 100 < float(path.split("/")[2])
            code = 503 if failing else 200
            await _json(conn, stream, code, {"version": self.config.version, "failed": failing})
        elif path.startswith("/status/"):
            await _json(conn, stream, int(path.split("/")[2]), {"service": self.config.name})
        elif path == "/headers":
            await _json(conn, stream, 200, {"headers": headers})
        elif path == "/static":
            await _send(
                conn,
                stream,
                h11.Response(
                    status_code=200,
                    headers=[
                        (b"content-type", b"text/plain"),
                        (b"content-length", str(len(STATIC_BODY)).encode()),
                    ],
                ),
            )
            await _send(conn, stream, h11.Data(data=STATIC_BODY))
            await _send(conn, stream, h11.EndOfMessage())
        else:
            answer: dict[str, object] = {
                "service": self.config.name,
                "version": self.config.version,
                "path": path,
                "request_id": headers.get("x-request-id"),
                "caller": headers.get("x-forwarded-client-cert", ""),
            }
            status = 200
            if self.config.flaky_percent and random.random() * 100 < self.config.flaky_percent:
                await _json(conn, stream, 503, {**answer, "failed": True})
                return
            if self._proxy is not None and self.config.call:
                status, nested = await self._call_downstream(headers)
                answer["downstream"] = nested
            await _json(conn, stream, status, answer)

    async def _call_downstream(self, headers: dict[str, str]) -> tuple[int, object]:
        assert self._proxy is not None and self.config.call
        extra: list[tuple[bytes, bytes]] = []
        if "x-request-id" in headers:
            extra.append((b"x-request-id", headers["x-request-id"].encode()))
        head = RequestHead(b"GET", b"http", self.config.call.encode(), b"/", tuple(extra))
        try:
            call = await self._proxy.start(head, has_body=False)
            status, _ = await call.receive_response()
            data = b""
            while chunk := await call.receive_data():
                data += chunk
        except (AppUnavailable, UpstreamBroken) as exc:
            return 502, {"error": str(exc)}
        try:
            return (200 if status < 400 else 502), json.loads(data)
        except ValueError:
            return 502, {"status": status, "body": data[:200].decode(errors="replace")}


async def _next(conn: h11.Connection, stream: trio.SocketStream) -> h11.Event:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(CHUNK)))
            continue
        if event is h11.PAUSED:
            return h11.ConnectionClosed()
        assert isinstance(event, h11.Event)
        return event


async def _send(conn: h11.Connection, stream: trio.SocketStream, event: h11.Event) -> None:
    data = conn.send(event)
    if data:
        await stream.send_all(data)


async def _json(
    conn: h11.Connection, stream: trio.SocketStream, status: int, payload: object
) -> None:
    body = json.dumps(payload).encode()
    await _send(
        conn,
        stream,
        h11.Response(
            status_code=status,
            headers=[
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        ),
    )
    await _send(conn, stream, h11.Data(data=body))
    await _send(conn, stream, h11.EndOfMessage())


async def _main(config: ServiceConfig) -> None:
    service = ExampleService(config)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(service.run)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                nursery.cancel_scope.cancel()
                return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--call", help="service to call through the sidecar on GET /")
    parser.add_argument("--proxy", help="the sidecar's outbound HOST:PORT")
    parser.add_argument("--version", dest="version", default="v1")
    parser.add_argument("--flaky", type=float, default=0.0, help="percent of GET / that fail")
    args = parser.parse_args()
    trio.run(
        _main,
        ServiceConfig(
            args.name,
            args.port,
            args.host,
            args.call,
            args.proxy,
            args.version,
            flaky_percent=args.flaky,
        ),
    )


if __name__ == "__main__":
    main()
