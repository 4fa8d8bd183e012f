"""TCP through the mesh against the same TCP direct, in one run.

``python -m bench.tcp`` starts a small raw-TCP app and two agents (frontend -> bench) on
loopback, then measures each figure twice, straight to the app and through both agents:

1. **Bulk throughput**: ``--mib`` MiB (default 256) sent one way, timed until the app
   acknowledges the last byte.
2. **Connection set-up**: ``--connections`` new connections (default 200), each timed
   from ``connect()`` until the app's first answer; p50 and p99.
3. **Ping-pong**: ``--round-trips`` (default 2000) 64-byte messages echoed one at a time
   over one connection; round trips per second.

How a connection crosses the mesh without root or capture: it opens with an HTTP/1.1
``Upgrade`` request to the client agent's outbound listener, which routes it like any
request and then carries the connection raw on an HTTP/2 CONNECT stream, the tunnel a
captured TCP connection takes; the far agent hands the request to the app, which answers
``101`` and then speaks raw bytes. Direct connections open with the same request to the
app, so both sides pay the same handshake. The figures go to the ``tcp`` section of
``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import os
import socket
import socketserver
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench._common import (
    ProcessGroup,
    cpu_model,
    free_port,
    http_ok,
    percentile,
    tcp_open,
    update_marked_section,
    wait_until,
)

TRUST_DOMAIN = "bench.mesh"
SERVICE = "bench"
CHUNK = 1 << 16
MESSAGE = b"x" * 64
SWITCHED = b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: bench\r\n\r\n"


def upgrade_request(mode: str) -> bytes:
    return (
        f"GET /{mode} HTTP/1.1\r\nHost: {SERVICE}\r\nConnection: upgrade\r\nUpgrade: bench\r\n\r\n"
    ).encode()


# -- the app: answers the upgrade, then sinks, echoes or hangs up ---------------------------


class _AppHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk or len(head) > 16384:
                return
            head += chunk
        request, _, rest = head.partition(b"\r\n\r\n")
        mode = request.split(b" ", 2)[1].lstrip(b"/")
        sock.sendall(SWITCHED)
        if mode == b"sink":  # count bytes until EOF, then say how many
            total = len(rest)
            while chunk := sock.recv(1 << 20):
                total += len(chunk)
            sock.sendall(struct.pack("!Q", total))
        elif mode == b"echo":
            if rest:
                sock.sendall(rest)
            while chunk := sock.recv(CHUNK):
                sock.sendall(chunk)


class _App(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve_app(port: int) -> None:
    with _App(("127.0.0.1", port), _AppHandler) as server:
        server.serve_forever()


# -- the client side -------------------------------------------------------------------------


def open_upgraded(address: tuple[str, int], mode: str) -> socket.socket:
    """A connection past the upgrade: the next bytes are the app's raw ones."""
    sock = socket.create_connection(address, timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(upgrade_request(mode))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed during the upgrade: {head!r}")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(f"upgrade refused: {head.splitlines()[0]!r}")
    return sock


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed early")
        data += chunk
    return data


def bulk(address: tuple[str, int], mib: int) -> float:
    """MiB/s for ``mib`` MiB one way, until the app acknowledges the last byte."""
    sock = open_upgraded(address, "sink")
    block = b"\0" * (1 << 20)
    started = time.perf_counter()
    for _ in range(mib):
        sock.sendall(block)
    sock.shutdown(socket.SHUT_WR)
    (total,) = struct.unpack("!Q", recv_exactly(sock, 8))
    seconds = time.perf_counter() - started
    sock.close()
    if total != mib << 20:
        raise ConnectionError(f"the app counted {total} bytes of {mib << 20}")
    return mib / seconds


def setup_latency(address: tuple[str, int], count: int) -> list[float]:
    """Seconds from connect() to the app's 101, per new connection (sorted)."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        sock = open_upgraded(address, "close")
        times.append(time.perf_counter() - started)
        sock.close()
    return sorted(times)


def ping_pong(address: tuple[str, int], round_trips: int) -> float:
    """Round trips per second of a 64-byte message on one connection."""
    sock = open_upgraded(address, "echo")
    for _ in range(50):  # warm the path
        sock.sendall(MESSAGE)
        recv_exactly(sock, len(MESSAGE))
    started = time.perf_counter()
    for _ in range(round_trips):
        sock.sendall(MESSAGE)
        recv_exactly(sock, len(MESSAGE))
    seconds = time.perf_counter() - started
    sock.close()
    return round_trips / seconds


# -- the mesh ---------------------------------------------------------------------------------


@dataclass
class Mesh:
    app: int
    outbound: int


def start_mesh(work: Path, group: ProcessGroup) -> Mesh:
    py = sys.executable
    subprocess.run(
        [py, "-m", "peermesh", "dev-ca", "init", "--dir", str(work / "ca"),
         "--trust-domain", TRUST_DOMAIN],
        check=True, capture_output=True,
    )  # fmt: skip
    app, outbound = free_port(), free_port()
    group.start("app", [py, "-m", "bench.tcp", "--app", str(app)])
    inbound = {"node-a": free_port(), "node-b": free_port()}
    admin = {"node-a": free_port(), "node-b": free_port()}
    for node, service, extra in (
        ("node-b", f"{SERVICE}={app}", []),
        ("node-a", "frontend=9", ["--peer", f"{SERVICE}=127.0.0.1:{inbound['node-b']}"]),
    ):
        subprocess.run(
            [py, "-m", "peermesh", "dev-ca", "issue", "--ca-dir", str(work / "ca"),
             "--node", node, "--service", service.split("=")[0], "--data-dir", str(work / node)],
            check=True, capture_output=True,
        )  # fmt: skip
        group.start(node, [
            py, "-m", "peermesh", "agent", "--name", node, "--service", service,
            "--data-dir", str(work / node), "--trust-domain", TRUST_DOMAIN,
            "--outbound", f"127.0.0.1:{outbound if node == 'node-a' else free_port()}",
            "--inbound", f"127.0.0.1:{inbound[node]}", "--admin", f"127.0.0.1:{admin[node]}",
            "--gossip", "off", "--log-level", "warning", *extra,
        ])  # fmt: skip
    wait_until(lambda: tcp_open(app), "the app")
    for node, port in admin.items():
        wait_until(lambda p=port: http_ok(f"http://127.0.0.1:{p}/readyz"), f"{node} ready")
    return Mesh(app=app, outbound=outbound)


def both(measure: Callable[[tuple[str, int]], float], mesh: Mesh) -> tuple[float, float]:
    """(direct, through the mesh) of one figure."""
    return measure(("127.0.0.1", mesh.app)), measure(("127.0.0.1", mesh.outbound))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.tcp", description=__doc__)
    parser.add_argument("--mib", type=int, default=256, help="bulk transfer size")
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--round-trips", type=int, default=2000)
    parser.add_argument("--no-write", action="store_true", help="do not update the docs")
    parser.add_argument("--app", type=int, help=argparse.SUPPRESS)  # the app process
    args = parser.parse_args()
    if args.app is not None:
        serve_app(args.app)
        return
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, ProcessGroup(Path(tmp)) as group:
        mesh = start_mesh(Path(tmp), group)
        bulk_direct, bulk_mesh = both(lambda a: bulk(a, args.mib), mesh)
        setup = {
            way: setup_latency(address, args.connections)
            for way, address in (
                ("direct", ("127.0.0.1", mesh.app)),
                ("mesh", ("127.0.0.1", mesh.outbound)),
            )
        }
        pong_direct, pong_mesh = both(lambda a: ping_pong(a, args.round_trips), mesh)

    def ms(values: list[float], q: float) -> str:
        return f"{percentile(values, q) * 1000:.2f}"

    body = f"""## TCP through the mesh

`python -m bench.tcp`: a raw-TCP app and two agents on loopback (frontend -> bench,
mTLS HTTP/2, one CONNECT stream per connection), each figure measured straight to the app
and through both agents in the same run. Connections open with an HTTP/1.1 `Upgrade` both
ways (the agents then carry them raw, as they carry captured TCP), so the handshake costs
the same on each side.

Machine: {cpu_model()}, {os.cpu_count()} CPUs, load average {load_before:.1f} before the run
(shared with other work); {time.monotonic() - started:.0f} s in all.

| figure | direct | through two agents |
|---|---:|---:|
| bulk, {args.mib} MiB one way | {bulk_direct:.0f} MiB/s | {bulk_mesh:.0f} MiB/s |
| connection set-up p50 ({args.connections} connections) | {ms(setup["direct"], 50)} ms \
| {ms(setup["mesh"], 50)} ms |
| connection set-up p99 | {ms(setup["direct"], 99)} ms | {ms(setup["mesh"], 99)} ms |
| ping-pong, 64 B, one connection | {pong_direct:.0f} round trips/s \
| {pong_mesh:.0f} round trips/s |
"""
    print(body)
    if not args.no_write:
        update_marked_section("tcp", body)


if __name__ == "__main__":
    main()
