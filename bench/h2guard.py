"""CPU cost of the per-frame flood checks (``FrameScanner`` + ``FloodGuard``), per engine.

``python -m bench.h2guard`` drives one server engine of each kind (``h2``, ``nghttp2``)
in process, no sockets: a client engine of the same kind writes the traffic, the server
reads it in ``READ_SIZE`` slices exactly as ``H2Session._feed`` does, once with the
scanner and guard in front of the engine and once without, and answers every request
with a 204 head. Only the server side is timed. Two workloads:

* **requests**: small POSTs (HEADERS + one 64-byte DATA frame with END_STREAM);
* **bulk**: 16 KiB DATA frames on a few streams.

It reports ns per frame and per request with and without the checks (best of
``--repeat`` runs) and ns per frame of the scanner and guard alone, prints the table
and rewrites the ``h2guard`` section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bench._common import cpu_model, update_marked_section
from peermesh.net.http.h2engine import READ_SIZE, EngineName, Ev, H2Engine
from peermesh.net.http.h2limits import FloodGuard, FrameScanner
from peermesh.net.http.h2select import new_engine, nghttp2_available

TITLE = "## HTTP/2 flood checks (`python -m bench.h2guard`)"
REQUEST = [
    (b":method", b"POST"),
    (b":scheme", b"https"),
    (b":path", b"/x"),
    (b":authority", b"svc"),
]
ANSWER = [(b":status", b"204")]
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # read untimed, before the recorded bytes
BULK_STREAMS = 8
BULK_FRAME = 16 << 10


@dataclass(frozen=True)
class Result:
    engine: EngineName
    workload: str
    requests: int
    frames: int
    plain_ns: int  # server engine alone
    guarded_ns: int  # scanner + guard + server engine
    guard_only_ns: int  # scanner + guard alone, on the same bytes


def _pump(src: H2Engine, dst: H2Engine) -> None:
    data = src.data_to_send()
    if data:
        dst.receive(data)


class Run:
    """One client/server pair; the server's reading is timed, the client's writing is not."""

    def __init__(self, engine: EngineName, *, guarded: bool) -> None:
        self.client = new_engine(engine, client_side=True, max_concurrent_streams=1000)
        self.server = new_engine(engine, client_side=False, max_concurrent_streams=1000)
        self.guarded = guarded
        self.scanner = FrameScanner(server_side=True)
        self.guard = FloodGuard()
        self.elapsed = 0
        self.frames = 0
        self.recorded: list[bytes] = []
        for _ in range(3):  # prefaces, SETTINGS and their ACKs
            _pump(self.client, self.server)
            _pump(self.server, self.client)
        self.scanner.scan(b"")  # the preface was read untimed
        self.frames = 0

    def feed(self) -> None:
        """Everything the client queued, into the server, READ_SIZE at a time (timed)."""
        data = self.client.data_to_send()
        server, scanner, guard = self.server, self.scanner, self.guard
        for start in range(0, len(data), READ_SIZE):
            chunk = data[start : start + READ_SIZE]
            self.recorded.append(chunk)
            t0 = time.perf_counter_ns()
            if self.guarded:
                now = time.monotonic()
                for kind in scanner.scan(chunk):
                    guard.received(kind, now)
            for event in server.receive(chunk):
                tag = event[0]
                if tag == Ev.DATA and event[3]:
                    server.acknowledge_received_data(event[3], event[1])
                elif tag == Ev.END:
                    server.send_headers(event[1], ANSWER, end_stream=True)
            out = server.data_to_send()
            server.pop_events()
            if self.guarded:
                guard.flushed()
            self.elapsed += time.perf_counter_ns() - t0
            if out:
                self.client.receive(out)  # window updates, answers (untimed)
        self.client.pop_events()


def _count_frames(chunks: list[bytes]) -> tuple[int, int]:
    """Frames in the recorded bytes, and ns for scanner + guard alone over them."""
    scanner = FrameScanner(server_side=True)
    scanner.scan(PREFACE)
    guard = FloodGuard()
    frames = 0
    t0 = time.perf_counter_ns()
    for chunk in chunks:
        now = time.monotonic()
        for kind in scanner.scan(chunk):
            guard.received(kind, now)
            frames += 1
        guard.flushed()
    return frames, time.perf_counter_ns() - t0


def requests_workload(engine: EngineName, n: int, *, guarded: bool) -> Run:
    run = Run(engine, guarded=guarded)
    body = b"q" * 64
    for start in range(0, n, 50):  # batches of 50 in flight, as a busy peer connection has
        for _ in range(min(50, n - start)):
            sid = run.client.get_next_available_stream_id()
            run.client.send_headers(sid, REQUEST)
            run.client.send_data(sid, body, end_stream=True)
        run.feed()
    return run


def bulk_workload(engine: EngineName, megabytes: int, *, guarded: bool) -> Run:
    run = Run(engine, guarded=guarded)
    sids = []
    for _ in range(BULK_STREAMS):
        sid = run.client.get_next_available_stream_id()
        run.client.send_headers(sid, REQUEST)
        sids.append(sid)
    run.feed()
    chunk = b"b" * BULK_FRAME
    left = (megabytes << 20) // BULK_FRAME
    while left:
        sent = 0
        for sid in sids:
            while left and run.client.local_flow_control_window(sid) >= BULK_FRAME:
                run.client.send_data(sid, chunk)
                left -= 1
                sent += 1
        if not sent:
            raise RuntimeError("no window: the server did not acknowledge")
        run.feed()
    for sid in sids:
        run.client.end_stream(sid)
    run.feed()
    return run


def measure(engine: EngineName, workload: str, size: int, repeat: int) -> Result:
    make = requests_workload if workload == "requests" else bulk_workload
    plain = guarded = guard_only = 1 << 62
    frames = 0
    for _ in range(repeat):
        run = make(engine, size, guarded=False)
        plain = min(plain, run.elapsed)
        run = make(engine, size, guarded=True)
        guarded = min(guarded, run.elapsed)
        frames, alone = _count_frames(run.recorded)
        guard_only = min(guard_only, alone)
    requests = size if workload == "requests" else BULK_STREAMS
    return Result(engine, workload, requests, frames, plain, guarded, guard_only)


def table(results: Sequence[Result]) -> str:
    lines = [
        "| engine | workload | frames | ns/frame without | ns/frame with | "
        "scanner + guard alone | ns/request without | ns/request with | "
        "scanner + guard alone per request | overhead |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        per_request = (
            f"{r.plain_ns / r.requests:,.0f} | {r.guarded_ns / r.requests:,.0f} | "
            f"{r.guard_only_ns / r.requests:,.0f}"
            if r.workload == "requests"
            else "- | - | -"
        )
        lines.append(
            f"| {r.engine.value} | {r.workload} | {r.frames:,} | {r.plain_ns / r.frames:,.0f} | "
            f"{r.guarded_ns / r.frames:,.0f} | {r.guard_only_ns / r.frames:,.0f} ns/frame | "
            f"{per_request} | {100 * (r.guarded_ns - r.plain_ns) / r.plain_ns:+.1f} % |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.h2guard", description=__doc__)
    ap.add_argument("--requests", type=int, default=5000, help="requests per run")
    ap.add_argument("--megabytes", type=int, default=64, help="bulk bytes per run (MiB)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per figure (best kept)")
    ap.add_argument("--no-write", action="store_true", help="print only, leave the doc alone")
    args = ap.parse_args(argv)
    engines = [EngineName.H2] + ([EngineName.NGHTTP2] if nghttp2_available() else [])
    results = []
    for engine in engines:
        results.append(measure(engine, "requests", args.requests, args.repeat))
        results.append(measure(engine, "bulk", args.megabytes, args.repeat))
    text = table(results)
    print(text)
    body = (
        f"{TITLE}\n\n"
        "What the per-frame flood checks cost: the session shell reads every frame header "
        "with `h2limits.FrameScanner` and counts it in `FloodGuard` before the engine sees "
        "the bytes. In process, no sockets: a client engine writes the traffic, one server "
        f"engine reads it in {READ_SIZE >> 10} KiB slices as `H2Session._feed` does and "
        "answers each request with a 204 head; only the server side is timed, best of "
        f"{args.repeat} runs. *requests*: {args.requests} POSTs, each HEADERS + one 64-byte "
        f"DATA with END_STREAM (window updates and SETTINGS count as frames too); *bulk*: "
        f"{args.megabytes} MiB of DATA on {BULK_STREAMS} streams, written "
        f"{BULK_FRAME >> 10} KiB at a time (h2 sends {BULK_FRAME >> 10} KiB frames, nghttp2 "
        "fills the peer's 64 KiB maximum). *scanner + guard alone* runs the checks over the "
        "same recorded bytes: it is the direct figure. *overhead* is the difference of two "
        "timings that each move by several percent from run to run on a shared machine, "
        "so where it differs from the direct figure the noise is the larger of the two.\n\n"
        f"{text}\n\n"
        f"Machine: {cpu_model()}."
    )
    if not args.no_write:
        update_marked_section("h2guard", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
