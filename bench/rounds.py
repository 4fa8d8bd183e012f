"""Scheduler rounds, task steps and tasks spawned per lone request through two agents.

``python -m bench.rounds`` starts, in one trio run per HTTP/2 engine, two agents
(frontend → orders over mTLS HTTP/2, gossip off, dev CA) and installs a
``trio.abc.Instrument`` that counts scheduler rounds (``before_io_wait``: each one
closes a batch of runnable tasks and waits for I/O), task steps (``before_task_step``)
and tasks spawned (``task_spawned``). The app behind *orders* and the HTTP clients run
in plain threads outside trio, so every counted event is the agents' own work.

Requests go one at a time, with a pause between them so each runs alone, from an
HTTP/1.1 client and from an h2c (prior knowledge) client to *frontend*'s outbound
port. The counters are read when the request is sent and again when its response has
been read to the end; the difference is that request's cost.

The script also runs against older trees (``PYTHONPATH=<old tree> python
<this file> --no-write``): where the tree has no engine choice it measures the one
engine it has, ``h2``. Writes its table between the ``bench:rounds`` markers of
``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import trio

TRUST_DOMAIN = "bench.test"
BODY = b"x" * 64
CLIENTS = ("http/1.1", "h2c")
IDLE_SECONDS = 2.0


@dataclass(frozen=True)
class Counts:
    rounds: int
    steps: int
    spawned: int

    def __sub__(self, other: Counts) -> Counts:
        return Counts(
            self.rounds - other.rounds, self.steps - other.steps, self.spawned - other.spawned
        )


class Counter(trio.abc.Instrument):
    """Running totals of scheduler events; read from any thread as a ``Counts``."""

    def __init__(self) -> None:
        self.rounds = 0
        self.steps = 0
        self.spawned = 0

    def before_io_wait(self, timeout: float) -> None:
        self.rounds += 1

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.spawned += 1

    def snapshot(self) -> Counts:
        return Counts(self.rounds, self.steps, self.spawned)


class Tracer(Counter):
    """A ``Counter`` that also writes down, while ``recording``, what each round ran:
    every task step with where the task waits after it, every spawn, every round's end
    (``busy`` when a task was already runnable, so the round only polled for I/O)."""

    def __init__(self) -> None:
        super().__init__()
        self.recording = False
        self.lines: list[str] = []

    def before_io_wait(self, timeout: float) -> None:
        super().before_io_wait(timeout)
        if self.recording:
            self.lines.append(f"  -- round {'(busy)' if timeout == 0 else '(waits for I/O)'}")

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.recording:
            name = task.name.rsplit(".", 1)[-1]
            self.lines.append(f"     {name:<14} then waits in {_where(task)}")

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        super().task_spawned(task)
        if self.recording:
            self.lines.append(f"     spawned {task.name.rsplit('.', 1)[-1]}")


def _where(task: trio.lowlevel.Task) -> str:
    """The innermost two peermesh frames a suspended task waits in, and trio's trap."""
    frames: list[str] = []
    coro: object = task.coro
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
        if frame is None:
            break
        frames.append(f"{Path(frame.f_code.co_filename).name}:{frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
    ours = [f for f in frames if not f.startswith(("_", "trio"))]
    trap = frames[-1].split(":")[-1] if frames else "finished"
    return " > ".join(ours[-2:]) + f" [{trap}]"


class _App(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format: str, *args: object) -> None:
        pass


def engines() -> list[str]:
    """The HTTP/2 engines this tree can run: both when it has the choice, else ``h2``."""
    try:
        h2select = importlib.import_module("peermesh.net.http.h2select")
    except ImportError:
        return ["h2"]
    return ["nghttp2", "h2"] if h2select.nghttp2_available() else ["h2"]


def has_choice() -> bool:
    """Whether this tree lets the agent pick its HTTP/2 engine."""
    return importlib.util.find_spec("peermesh.net.http.h2select") is not None


def _idle(counter: Counter, seconds: float) -> Counts:
    """What the agents do with no request in flight, over ``seconds`` (in a thread)."""
    before = counter.snapshot()
    time.sleep(seconds)
    return counter.snapshot() - before


def _drive(
    url: str, counter: Counter, client: str, requests: int, warmup: int, pause: float
) -> list[Counts]:
    """Lone requests from one client (in a thread): the counter difference of each."""
    h2 = client == "h2c"
    out: list[Counts] = []
    with httpx.Client(http1=not h2, http2=h2, timeout=30) as http:
        for i in range(warmup + requests):
            time.sleep(pause)  # the agents settle: the next request runs alone
            before = counter.snapshot()
            tracer = counter if isinstance(counter, Tracer) and i >= warmup else None
            if tracer is not None:
                tracer.lines = []
                tracer.recording = True
            response = http.get(url, headers={"host": "orders"})
            after = counter.snapshot()
            if tracer is not None:
                tracer.recording = False
                print(f"{client} request {i - warmup + 1}: {after - before}", file=sys.stderr)
                print("\n".join(tracer.lines), file=sys.stderr)
            if response.status_code != 200 or response.content != BODY:
                raise RuntimeError(f"{client}: {response.status_code} {response.text[:200]}")
            if i >= warmup:
                out.append(after - before)
    return out


async def _measure(
    engine: str | None,
    work: Path,
    app_port: int,
    requests: int,
    warmup: int,
    pause: float,
    trace: bool = False,
) -> dict[str, list[Counts]]:
    from peermesh.agent import Agent
    from peermesh.ca.devca import init_dev_ca
    from peermesh.config import AgentConfig

    ca = init_dev_ca(work / "ca", TRUST_DOMAIN)
    for node, service in (("node-a", "frontend"), ("node-b", "orders")):
        ca.issue(node, service, work / node)

    def config(node: str, service: str, peers: tuple[str, ...] = ()) -> AgentConfig:
        extra = {"h2_engine": engine} if engine is not None else {}
        return AgentConfig.build(
            name=node,
            service=service,
            data_dir=work / node,
            trust_domain=TRUST_DOMAIN,
            outbound="127.0.0.1:0",
            inbound="127.0.0.1:0",
            admin="127.0.0.1:0",
            gossip="off",
            peers=peers,
            **extra,
        )

    counter = Tracer() if trace else Counter()
    results: dict[str, list[Counts]] = {}
    async with trio.open_nursery() as nursery:
        server = Agent(config("node-b", f"orders={app_port}"))
        await nursery.start(server.run)
        host, port = server.addresses["inbound"]
        client = Agent(config("node-a", "frontend=9", peers=(f"orders={host}:{port}",)))
        await nursery.start(client.run)
        oh, op = client.addresses["outbound"]
        url = f"http://{oh}:{op}/rounds"
        trio.lowlevel.add_instrument(counter)
        try:
            results["idle"] = [await trio.to_thread.run_sync(_idle, counter, IDLE_SECONDS)]
            for name in CLIENTS:
                results[name] = await trio.to_thread.run_sync(
                    _drive, url, counter, name, requests, warmup, pause
                )
        finally:
            trio.lowlevel.remove_instrument(counter)
        nursery.cancel_scope.cancel()
    return results


def measure(
    engine: str | None, requests: int, warmup: int, pause: float, trace: bool = False
) -> dict[str, list[Counts]]:
    """Per-request counts for each client on ``engine`` (``None``: the tree's only one);
    ``trace`` prints what ran in each round of every measured request."""
    app = ThreadingHTTPServer(("127.0.0.1", 0), _App)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return trio.run(
                _measure, engine, Path(tmp), app.server_address[1], requests, warmup, pause, trace
            )
    finally:
        app.shutdown()
        app.server_close()


def _commit() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10, cwd=Path.cwd(),
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return done.stdout.strip() or "?"


def _stat(values: list[int]) -> str:
    return f"{statistics.median(values):g} / {statistics.fmean(values):.1f}"


def rows(label: str, engine: str, results: dict[str, list[Counts]]) -> list[str]:
    """One markdown row per client: median / mean of rounds, task steps, tasks spawned."""
    pick: dict[str, Callable[[Counts], int]] = {
        "rounds": lambda c: c.rounds,
        "steps": lambda c: c.steps,
        "spawned": lambda c: c.spawned,
    }
    out = []
    for client, counts in results.items():
        if client == "idle":
            continue
        cells = " | ".join(_stat([get(c) for c in counts]) for get in pick.values())
        out.append(f"| {label} | {engine} | {client} | {cells} |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--pause", type=float, default=0.01, help="seconds between requests")
    parser.add_argument(
        "--before",
        action="append",
        default=[],
        metavar="LINE",
        help="a table row measured on an older tree (printed by its --no-write run)",
    )
    parser.add_argument(
        "--before-idle",
        action="append",
        default=[],
        metavar="TEXT",
        help="the idle figure measured on an older tree (printed by its --no-write run)",
    )
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--trace",
        type=int,
        default=0,
        metavar="N",
        help="print, for N requests per client and engine, what ran in each round (to"
        " stderr), and write nothing",
    )
    opts = parser.parse_args()
    if not __package__:
        # Run as a file (against another tree): bench/ itself is first on sys.path, and
        # its gossip.py would hide the gossip package the agents import.
        here = str(Path(__file__).resolve().parent)
        sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != here]
    if opts.trace:
        for engine in engines():
            print(f"== {engine}", file=sys.stderr)
            measure(engine if has_choice() else None, opts.trace, opts.warmup, opts.pause, True)
        return
    started = time.monotonic()
    commit = _commit()
    choice = has_choice()
    table: list[str] = []
    idle: list[str] = []
    for engine in engines():
        results = measure(engine if choice else None, opts.requests, opts.warmup, opts.pause)
        table += rows(f"`{commit}`", engine, results)
        quiet = results["idle"][0]
        idle.append(
            f"`{commit}` {engine}: {quiet.rounds / IDLE_SECONDS:.1f} rounds,"
            f" {quiet.steps / IDLE_SECONDS:.1f} task steps per second"
        )
        print(f"{engine}: done", file=sys.stderr, flush=True)
    wall = time.monotonic() - started
    for line in table + idle:
        print(line)
    body = "\n".join(
        [
            "## Scheduler rounds per lone request (`python -m bench.rounds`)",
            "",
            "Trio scheduler work of two in-process agents (frontend → orders over mTLS"
            " HTTP/2, gossip off, dev CA) for one request at a time (`GET`, 64-byte"
            f" answer) through frontend's outbound port: {opts.requests} requests per client"
            f" after {opts.warmup} warm-up, {opts.pause * 1000:g} ms apart so each runs"
            " alone. A `trio.abc.Instrument` counts *rounds* (`before_io_wait`: the"
            " scheduler ran a batch of tasks and waits for I/O), *task steps*"
            " (`before_task_step`) and *tasks spawned*; each request's figure is the"
            " difference between sending it and reading its response to the end. The app"
            " and the clients (httpx, HTTP/1.1 keep-alive and h2c prior knowledge) run in"
            " threads outside trio, so only the agents' work is counted. Cells are median /"
            " mean per request. *Before* rows come from an older tree, run with the same"
            " script from a worktree of that commit (`PYTHONPATH=<that tree> python"
            " bench/rounds.py --no-write` inside it) and passed back with"
            " `--before`/`--before-idle`; `--trace N` prints what ran in each round of N"
            " requests instead.",
            "",
            "What the rounds of one HTTP/1.1 request are (`--trace`): rounds that only poll"
            " because a task is already runnable, and rounds that wait for the next byte"
            " (the client, the app, the other agent: those stay). Before `EagerStream`"
            " (`peermesh/net/eager.py`), every socket write the kernel completed at once"
            " requeued its task, a round each: A's write of the request under TLS, B's write"
            " to the app, B's writes of the response head and end under TLS, A's three"
            " writes to the client (head, body, end), and B's writer queueing behind the"
            " handler's inline flush for the send lock. What remains is the yield after"
            " each read, which `EagerStream` keeps (skipping it cost about 8% of"
            " closed-loop throughput: its docstring says why): B's reads of the app's head"
            " and body, and `trio.SSLStream`'s own yield once per TLS read and write (its"
            " internal lock: A's write and read, B's read and its one or two writes); the"
            " first step of B's new handler task, which runs in the batch after the"
            " reader's; and the waits for I/O. An h2c client adds A's h2c reader and the"
            " first step of A's handler task.",
            "",
            "| tree | engine | client | rounds | task steps | tasks spawned |",
            "|---|---|---|---:|---:|---:|",
            *opts.before,
            *table,
            "",
            f"With no request in flight (background timers, over {IDLE_SECONDS:g} s): "
            + "; ".join(opts.before_idle + idle)
            + ".",
            "",
            f"Machine: {os.cpu_count()} CPUs, shared; {wall:.0f} s for this tree's runs.",
        ]
    )
    print(body)
    if not opts.no_write:
        from bench._common import update_marked_section

        update_marked_section("rounds", body)


if __name__ == "__main__":
    main()
