"""CPU cost of telemetry per request: two agents with observability off vs fully on.

``python -m bench.telemetry`` starts, for each setup, one child process holding an
example app and two agents (frontend → orders, mTLS HTTP/2 between them) in one trio
loop, sends the same sequential HTTP/1.1 keep-alive load through the frontend's
outbound port from this process, and reads the child's CPU time (user + system) around
the load. The load generator's own CPU is not counted; the example app's is, in every
setup alike.

Setups:

* **off** — request records disabled (the Prometheus request counters and duration
  histogram still run, as they always do);
* **metrics** — request records on: byte counters, grpc/subset labels, golden window,
  trace context propagation and the sampling decision (no span export, no access log);
* **logs** — as *metrics* plus a JSON access log to a file on both agents;
* **full** — as *logs* plus a span per hop exported with OTLP/HTTP to a receiver in
  this process (it discards bodies), every request sampled (``--trace-sampling 1``,
  the default);
* **full-1%** — as *full* with ``--trace-sampling 0.01`` (Istio's default rate).

Writes its table between the ``bench:telemetry`` markers of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO

import httpx

from bench._common import cpu_clock, cpu_model, own_cpu_seconds, update_marked_section

# setup -> (request records on, access log, trace sampling or None for no OTLP endpoint)
SETUPS: dict[str, tuple[bool, bool, float | None]] = {
    "off": (False, False, None),
    "metrics": (True, False, None),
    "logs": (True, True, None),
    "full": (True, True, 1.0),
    "full-1%": (True, True, 0.01),
}


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


async def _serve(mode: str, work: Path, otlp: str | None) -> None:
    import trio

    from examples.service import ExampleService, ServiceConfig
    from peermesh.agent import Agent
    from peermesh.ca.devca import init_dev_ca
    from peermesh.config import AgentConfig

    ca = init_dev_ca(work / "ca", "bench.test")
    for node, service in (("node-a", "frontend"), ("node-b", "orders")):
        ca.issue(node, service, work / node)

    records, logs, sampling = SETUPS[mode]

    def config(node: str, service: str, peers: tuple[str, ...] = ()) -> AgentConfig:
        return AgentConfig.build(
            name=node,
            service=service,
            data_dir=work / node,
            trust_domain="bench.test",
            outbound="127.0.0.1:0",
            inbound="127.0.0.1:0",
            admin="127.0.0.1:0",
            gossip="off",
            peers=peers,
            access_log=str(work / f"{node}.log") if logs else None,
            otlp_endpoint=otlp if sampling is not None else None,
            trace_sampling=sampling if sampling is not None else 1.0,
        )

    async with trio.open_nursery() as nursery:
        app_port = await nursery.start(ExampleService(ServiceConfig(name="orders", port=0)).run)
        server = Agent(config("node-b", f"orders={app_port}"))
        server.observability.enabled = records
        await nursery.start(server.run)
        host, port = server.addresses["inbound"]
        client = Agent(config("node-a", "frontend=9", peers=(f"orders={host}:{port}",)))
        client.observability.enabled = records
        await nursery.start(client.run)
        oh, op = client.addresses["outbound"]
        print(f"READY http://{oh}:{op}", flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)  # until the parent closes our stdin
        for agent in (client, server):
            await agent.observability.tracer.flush()
        nursery.cancel_scope.cancel()


class _Discard(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def measure(mode: str, requests: int, otlp: str) -> float:
    """CPU microseconds per request of the child holding app + two agents."""
    with tempfile.TemporaryDirectory() as tmp:
        child = subprocess.Popen(
            [sys.executable, "-m", "bench.telemetry", "--serve", mode, "--work", tmp,
             "--otlp", otlp],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            assert child.stdout is not None and child.stdin is not None
            line = child.stdout.readline()
            if not line.startswith("READY "):
                raise RuntimeError(f"{mode}: child did not start: {line!r}")
            url = line.split()[1] + "/headers"
            with httpx.Client(timeout=30) as client:
                for _ in range(200):  # warm-up: connections, caches
                    client.get(url, headers={"host": "orders"})
                before = _proc_cpu(child.pid)
                for _ in range(requests):
                    r = client.get(url, headers={"host": "orders"})
                    if r.status_code != 200:
                        raise RuntimeError(f"{mode}: {r.status_code} {r.text}")
                used = _proc_cpu(child.pid) - before
            child.stdin.close()
            child.wait(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    return used / requests * 1e6


def micro(mode: str, hops: int, otlp: str) -> float:
    """CPU microseconds per hop of ``Observability.begin`` + ``end`` alone, in this process.

    Includes the request counter and histogram every setup pays, the access-log line
    encoding and the span export (encoding and POST) done by their background workers.
    """
    import trio

    from peermesh.net.http.headers import RequestHead
    from peermesh.observability.hub import Observability
    from peermesh.observability.metrics import AgentMetrics

    records, logs, sampling = SETUPS[mode]
    head = RequestHead(
        b"GET", b"http", b"orders", b"/headers",
        ((b"host", b"orders"), (b"accept", b"*/*"), (b"user-agent", b"bench")),
    )  # fmt: skip

    async def run(sink: IO[bytes]) -> float:
        metrics = AgentMetrics()
        obs = Observability(
            service="frontend", node="node-a", trust_domain="bench.test", metrics=metrics,
            access_log=sink if logs else None, access_log_capacity=hops + 1,
            otlp_endpoint=otlp if sampling is not None else None,
            trace_sampling=sampling if sampling is not None else 1.0,
        )  # fmt: skip
        async with trio.open_nursery() as nursery:
            await nursery.start(obs.run)
            started = time.process_time()
            for i in range(hops):
                if records:
                    record, _ = obs.begin("outbound", head, source="frontend")
                    record.response_bytes = 1000
                    record.destination = "orders"
                metrics.record_request("outbound", "frontend", "orders", 200, 0.002)
                if records:
                    obs.end(record, 200, 0.002)
                if i % 128 == 127:  # let the access-log writer run, as the proxy would
                    await trio.sleep(0.001)
            await trio.sleep(FLUSH_GRACE)  # the access-log writer drains what is left
            await obs.tracer.flush()
            used = time.process_time() - started
            nursery.cancel_scope.cancel()
        await obs.aclose()
        return used / hops * 1e6

    with open(os.devnull, "wb") as sink:
        return trio.run(run, sink)


FLUSH_GRACE = 0.2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hops", type=int, default=4000, help="per-hop micro-measurement size")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--serve", choices=SETUPS, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--otlp", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.serve:
        import trio

        trio.run(_serve, opts.serve, Path(opts.work), opts.otlp)
        return
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Discard)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    otlp = f"http://127.0.0.1:{receiver.server_address[1]}"
    load = os.getloadavg()[0]
    busy0, _total = cpu_clock()
    own0 = own_cpu_seconds()
    started = time.monotonic()
    per_hop = {mode: min(micro(mode, opts.hops, otlp) for _ in range(3)) for mode in SETUPS}
    for mode, cost in per_hop.items():
        print(f"per hop  {mode:<8} {cost:8.1f} µs CPU", flush=True)
    results: dict[str, list[float]] = {mode: [] for mode in SETUPS}
    names = list(SETUPS)
    for round_ in range(opts.rounds):
        # Interleaved, so drifts in machine load hit every setup; the order rotates each
        # round, so no setup always runs first or right after another.
        shift = round_ % len(names)
        for mode in names[shift:] + names[:shift]:
            cost = measure(mode, opts.requests, otlp)
            results[mode].append(cost)
            print(f"round {round_ + 1} {mode:<8} {cost:8.1f} µs CPU/request", flush=True)
    receiver.shutdown()
    wall = time.monotonic() - started
    busy1, _total = cpu_clock()
    others = max(0.0, (busy1 - busy0) - (own_cpu_seconds() - own0)) / wall
    best = {mode: min(values) for mode, values in results.items()}
    median = {mode: statistics.median(values) for mode, values in results.items()}
    # Each round runs every setup back to back: the ratio to that round's *off* cancels
    # most of the drift in machine load; its median over rounds is the headline figure.
    ratios = {
        mode: [v / o for v, o in zip(values, results["off"], strict=True)]
        for mode, values in results.items()
    }
    paired = {mode: 100 * (statistics.median(r) - 1) for mode, r in ratios.items()}
    base = best["off"]
    rows = [
        f"| {mode} | {per_hop[mode]:.1f} µs | {median[mode]:.0f} µs | {paired[mode]:+.1f}% "
        f"| {best[mode]:.0f} µs | {100 * (best[mode] / base - 1):+.1f}% "
        f"| {min(results[mode]):.0f} to {max(results[mode]):.0f} µs |"
        for mode in SETUPS
    ]
    full, full_best = paired["full"], 100 * (best["full"] / base - 1)
    met = full <= 15
    body = "\n".join(
        [
            "## Telemetry cost (`python -m bench.telemetry`)",
            "",
            "CPU time (user + system) per request of one process holding the example app and"
            " two agents (frontend → orders over mTLS HTTP/2), sequential HTTP/1.1 keep-alive"
            f" requests (`GET /headers`) from the benchmark process; {opts.requests} requests"
            f" per run after 200 warm-up, {opts.rounds} rounds, each running every setup once"
            " (in a rotating order)"
            " (*vs off* is the median over rounds of the ratio to the same round's *off*). *off*:"
            " request records disabled (the Prometheus request counter and duration histogram"
            " still run); *metrics*: byte counters, grpc/subset labels, golden window,"
            " trace-context propagation and the sampling decision; *logs*: also a JSON access"
            " log on both agents; *full*: also a span per hop exported over OTLP/HTTP"
            " (batches of up to 512) to a loopback receiver, every request sampled (the"
            " default `--trace-sampling 1`); *full-1%*: the same at `--trace-sampling 0.01`.",
            "*Per hop* is an in-process measurement of one sidecar's telemetry alone"
            " (`Observability.begin` + `end` and the request metrics, best of 3 runs of"
            f" {opts.hops} hops, background log and export work included, no network): a"
            " request through the mesh makes two hops, one per agent.",
            "",
            "| setup | per hop | median CPU per request (app + 2 agents) | vs off | best"
            " | best vs best off | runs |",
            "|---|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
            f"Steering target (full telemetry, 100% sampled, ≤ 15% more CPU per request):"
            f" **{'met' if met else 'not met'}** ({full:+.1f}%; best against best:"
            f" {full_best:+.1f}%). The per-hop column predicts about"
            f" {200 * (per_hop['full'] - per_hop['off']) / base:+.0f}% for two hops over the"
            " best *off* request.",
            f"Machine: {cpu_model()}, {os.cpu_count()} CPUs, load average {load:.1f} before"
            f" the run; other processes used {others:.2f} of the {os.cpu_count()} CPUs on"
            " average during it (shared with other work: the spread between runs of the same"
            f" setup is larger than some of the differences); {wall:.0f} s in all.",
        ]
    )
    print(body)
    if not opts.no_write:
        update_marked_section("telemetry", body)


if __name__ == "__main__":
    main()
