"""Data-plane benchmark: direct vs peermesh (each HTTP/2 engine) vs HAProxy, one nginx upstream.

``python -m bench.dataplane`` (or ``make bench``) starts, on 127.0.0.1 only:

* one nginx serving a 1 KiB file (HTTP/1.1 port for the proxies, h2c port for "direct");
* **peermesh**, twice: agent A (outbound, h2c from the load generator) → mTLS HTTP/2 →
  agent B (inbound) → nginx over HTTP/1.1, one pair on the nghttp2 engine and one pair on
  the h2 engine (``--h2-engine``);
* **HAProxy reference**: HAProxy A (h2c from the load generator) → TLS 1.3 mTLS, ALPN h2 →
  HAProxy B → nginx over HTTP/1.1, with the same dev-CA Ed25519 certificates.

It measures, per setup: latency at fixed request rates (open loop, h2load), the
closed-loop maximum request rate, CPU seconds per 1000 requests and RSS of every
sidecar; prints a report and writes it between the ``bench:dataplane`` markers of
``docs/benchmarks.md``. Every process is stopped and the temp dir removed at the end,
also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import math
import os
import platform
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import psutil

from bench._common import (
    BENCHMARKS_DOC,
    REPO,
    ProcessGroup,
    busy_fraction,
    command_version,
    cpu_clock,
    cpu_model,
    free_port,
    http_ok,
    memory_total,
    own_cpu_seconds,
    percentile,
    tcp_open,
    update_marked_section,
    wait_until,
)

SECTION = "dataplane"
TRUST_DOMAIN = "bench.local"
AUTHORITY = "orders"  # the destination service, sent as :authority; nginx insists on it
PATH = "/1k"
PAYLOAD = 1024
MAX_STREAMS = 1000  # h2load -m in open loop: far above what is ever in flight
MIB = 1 << 20
NA = "-"  # table cell without a value

# Steering targets from the issue (reported, never asserted).
TARGET_RATE = 1000
TARGET_ADDED_P50_MS = 1.0
TARGET_ADDED_P99_MS = 5.0
TARGET_MAX_RPS = 2000
TARGET_IDLE_RSS_MIB = 60

SETUP_LABELS = {
    "direct": "direct (h2c → nginx)",
    "peermesh": "peermesh, nghttp2 engine (2 agents, mTLS h2)",
    "peermesh-h2": "peermesh, h2 engine (2 agents, mTLS h2)",
    "haproxy": "HAProxy (2 proxies, mTLS h2)",
}


class BenchError(RuntimeError):
    """Something in the set-up failed; the message says what."""


# --- results -------------------------------------------------------------------------


@dataclass
class RunStats:
    """What one h2load run printed, plus the per-sidecar CPU it cost."""

    requests: int = 0
    succeeded: int = 0
    failed: int = 0
    non_2xx: int = 0
    data_bytes: int = 0
    rps: float = 0.0
    cpu_per_1k: dict[str, float] = field(default_factory=dict)


@dataclass
class OpenLoop:
    """Latency at one fixed request rate."""

    rate: int
    skipped: str = ""
    count: int = 0
    errors: int = 0
    achieved_rps: float = 0.0
    slip_p99_ms: float = math.nan
    p50: float = math.nan
    p90: float = math.nan
    p99: float = math.nan
    pmax: float = math.nan
    cpu_per_1k: dict[str, float] = field(default_factory=dict)


@dataclass
class ClosedLoop:
    """Best closed-loop throughput over the concurrency settings tried."""

    rps: float = 0.0
    clients: int = 0
    streams: int = 0
    errors: int = 0
    tried: list[str] = field(default_factory=list)
    cpu_per_1k: dict[str, float] = field(default_factory=dict)


@dataclass
class Setup:
    """One way of reaching the upstream, and everything measured about it."""

    name: str
    port: int
    sidecars: dict[str, psutil.Process] = field(default_factory=dict)
    proc_names: dict[str, str] = field(default_factory=dict)  # role -> ProcessGroup name
    idle_rss: dict[str, int] = field(default_factory=dict)
    peak_rss: dict[str, int] = field(default_factory=dict)
    open_loop: dict[int, OpenLoop] = field(default_factory=dict)
    closed: ClosedLoop = field(default_factory=ClosedLoop)
    failure: str = ""

    @property
    def label(self) -> str:
        return SETUP_LABELS[self.name]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"


@dataclass
class Options:
    """Command-line settings."""

    seconds: float
    rates: list[int]
    closed: list[tuple[int, int]]
    closed_seconds: float
    generator: str
    write: bool
    output: Path
    wait_idle: float


# --- tools and versions ----------------------------------------------------------------


def find_tool(name: str) -> str | None:
    """``name`` on PATH, or in /usr/sbin (nginx and haproxy live there on Debian)."""
    found = shutil.which(name)
    if found:
        return found
    candidate = Path("/usr/sbin") / name
    return str(candidate) if candidate.exists() else None


def required_tools() -> dict[str, str]:
    """Paths of h2load, nginx and haproxy; exits with an install hint when any is missing."""
    tools = {name: find_tool(name) for name in ("h2load", "nginx", "haproxy")}
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        packages = {"h2load": "nghttp2-client", "nginx": "nginx-light", "haproxy": "haproxy"}
        print(
            f"bench.dataplane: missing {', '.join(missing)}; it needs h2load, nginx and haproxy.\n"
            f"  Debian/Ubuntu: sudo apt-get install -y {' '.join(packages[m] for m in missing)}",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return {name: path for name, path in tools.items() if path is not None}


def versions(tools: dict[str, str]) -> dict[str, str]:
    """Versions of everything on the request path."""

    def dist(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "?"

    return {
        "Python": platform.python_version(),
        "trio": dist("trio"),
        "h2": dist("h2"),
        "OpenSSL (Python)": ssl.OPENSSL_VERSION.removeprefix("OpenSSL ").split(" ")[0],
        "OpenSSL (system)": command_version(["openssl", "version"]),
        "nginx": command_version([tools["nginx"], "-v"]),
        "HAProxy": command_version([tools["haproxy"], "-v"], r"\d+\.\d+\.\d+[^\s]*"),
        "h2load": command_version([tools["h2load"], "--version"]),
        "peermesh": peermesh_revision(),
    }


def peermesh_revision() -> str:
    """The commit the agents ran from (read-only git), marked when peermesh/ differs from it."""
    git = shutil.which("git")
    if git is None:
        return "?"
    try:
        head = subprocess.run(
            [git, "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        dirty = subprocess.run(
            [git, "-C", str(REPO), "diff-index", "--quiet", "HEAD", "--", "peermesh"],
            capture_output=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    if head.returncode != 0:
        return "?"
    return head.stdout.strip() + (" + uncommitted changes" if dirty.returncode == 1 else "")


# --- set-up: certificates, configs, processes ----------------------------------------


# One agent pair per engine: (client-side node, server-side node).
NODES = (("node-a", "frontend"), ("node-b", "orders"), ("node-c", "frontend"), ("node-d", "orders"))
ENGINE_PAIRS = (
    ("peermesh", "nghttp2", "node-a", "node-b"),
    ("peermesh-h2", "h2", "node-c", "node-d"),
)


def make_certificates(work: Path) -> dict[str, Path]:
    """A dev CA and identities for each agent pair (frontend → orders), via the CLI."""
    python = [sys.executable, "-m", "peermesh", "dev-ca"]
    ca = work / "ca"
    run = [
        [*python, "init", "--dir", str(ca), "--trust-domain", TRUST_DOMAIN],
        *(
            [*python, "issue", "--ca-dir", str(ca), "--node", node, "--service", svc,
             "--data-dir", str(work / node)]
            for node, svc in NODES
        ),
    ]  # fmt: skip
    for args in run:
        done = subprocess.run(args, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise BenchError(f"{' '.join(args[2:5])} failed:\n{done.stderr.strip()}")
    dirs = {node: work / node for node, _ in NODES}
    for node, data in dirs.items():
        # HAProxy's `crt` wants certificate and key in one PEM file.
        combined = work / f"{node}-haproxy.pem"
        combined.write_bytes((data / "cert.pem").read_bytes() + (data / "key.pem").read_bytes())
        combined.chmod(0o600)
    return dirs


def nginx_config(work: Path, h1_port: int, h2_port: int) -> Path:
    """nginx, one worker, serving ``/1k`` on an HTTP/1.1 port and an h2c port."""
    root = work / "nginx"
    (root / "www").mkdir(parents=True)
    (root / "www" / PATH.lstrip("/")).write_bytes(os.urandom(PAYLOAD))
    temp = {k: root / k for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    conf = root / "nginx.conf"
    conf.write_text(
        f"""daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {temp["client_body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    default_type application/octet-stream;
    keepalive_requests 10000000;
    keepalive_timeout 600s;
    http2_max_concurrent_streams {MAX_STREAMS};
    server {{
        listen 127.0.0.1:{h1_port};
        listen 127.0.0.1:{h2_port} http2;
        root {root}/www;
        # The authority must arrive as "{AUTHORITY}" through every setup.
        location / {{ if ($host != "{AUTHORITY}") {{ return 421; }} }}
    }}
}}
"""
    )
    return conf


HAPROXY_COMMON = f"""global
    nbthread 1
    maxconn 4096
    tune.h2.max-concurrent-streams {MAX_STREAMS}
defaults
    mode http
    timeout connect 5s
    timeout client 600s
    timeout server 600s
    http-reuse always
"""


def haproxy_configs(
    work: Path, front_port: int, inner_port: int, nginx_port: int
) -> tuple[Path, Path]:
    """HAProxy A (h2c in, mTLS h2 out) and HAProxy B (mTLS h2 in, HTTP/1.1 to nginx)."""
    bundle = work / "node-a" / "bundle.pem"
    tls = f"ca-file {bundle} verify required alpn h2 ssl-min-ver TLSv1.3"
    front = work / "haproxy-a.cfg"
    front.write_text(
        HAPROXY_COMMON
        + f"""frontend from_client
    bind 127.0.0.1:{front_port}
    default_backend to_peer
backend to_peer
    server b 127.0.0.1:{inner_port} ssl crt {work / "node-a-haproxy.pem"} {tls}
"""
    )
    inner = work / "haproxy-b.cfg"
    inner.write_text(
        HAPROXY_COMMON
        + f"""frontend from_peer
    bind 127.0.0.1:{inner_port} ssl crt {work / "node-b-haproxy.pem"} {tls}
    default_backend app
backend app
    server nginx 127.0.0.1:{nginx_port}
"""
    )
    return front, inner


def data_plane_only_flags() -> list[str]:
    """Flags that keep an agent to the data plane on loopback: no gossip, no mDNS.

    Asked from ``peermesh agent --help`` so the benchmark works before and after those
    options exist.
    """
    done = subprocess.run(
        [sys.executable, "-m", "peermesh", "agent", "--help"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    flags: list[str] = []
    if "--gossip " in done.stdout:
        flags += ["--gossip", "off"]
    if "--no-mdns" in done.stdout:
        flags.append("--no-mdns")
    return flags


def agent_args(
    name: str, service: str, data_dir: Path, ports: dict[str, int], *extra: str
) -> list[str]:
    """Command line of one peermesh agent on loopback."""
    return [
        sys.executable, "-m", "peermesh", "agent",
        "--name", name, "--service", service, "--data-dir", str(data_dir),
        "--trust-domain", TRUST_DOMAIN,
        "--outbound", f"127.0.0.1:{ports['outbound']}",
        "--inbound", f"127.0.0.1:{ports['inbound']}",
        "--admin", f"127.0.0.1:{ports['admin']}",
        "--drain-timeout", "2", "--log-level", "warning",
        *extra,
    ]  # fmt: skip


def wait_started(
    group: ProcessGroup, name: str, ready: object, what: str, timeout: float = 30.0
) -> None:
    """Wait for ``ready()``; a clear error with the log tail if the process dies first."""
    assert callable(ready)
    proc = group.procs[name]

    def check() -> bool:
        if proc.poll() is not None:
            raise BenchError(f"{name} exited with {proc.returncode}:\n{group.log_tail(name)}")
        return bool(ready())

    try:
        wait_until(check, what, timeout)
    except TimeoutError as exc:
        raise BenchError(f"{exc}\n{group.log_tail(name)}") from None


def start_everything(
    group: ProcessGroup, work: Path, tools: dict[str, str]
) -> tuple[dict[str, Setup], psutil.Process]:
    """nginx, two agents and two HAProxy; returns the setups and the nginx process."""
    dirs = make_certificates(work)
    h1_port, h2_port = free_port(), free_port()
    conf = nginx_config(work, h1_port, h2_port)
    nginx = group.start(
        "nginx",
        [tools["nginx"], "-p", str(conf.parent), "-c", str(conf), "-e", str(conf.parent / "e.log")],
    )
    wait_started(group, "nginx", lambda: tcp_open(h1_port) and tcp_open(h2_port), "nginx")

    quiet = data_plane_only_flags()
    outbound_ports: dict[str, int] = {}
    for setup_name, engine, client_node, server_node in ENGINE_PAIRS:
        b_ports = {"outbound": free_port(), "inbound": free_port(), "admin": free_port()}
        a_ports = {"outbound": free_port(), "inbound": free_port(), "admin": free_port()}
        outbound_ports[setup_name] = a_ports["outbound"]
        engine_flag = ("--h2-engine", engine)
        b_name, a_name = f"agent-{server_node[-1]}", f"agent-{client_node[-1]}"
        group.start(
            b_name,
            agent_args(
                server_node, f"orders={h1_port},proto=h1", dirs[server_node], b_ports,
                *quiet, *engine_flag,
            ),
        )  # fmt: skip
        group.start(
            a_name,
            agent_args(
                client_node, "frontend=9", dirs[client_node], a_ports,
                "--peer", f"orders=127.0.0.1:{b_ports['inbound']}", *quiet, *engine_flag,
            ),
        )  # fmt: skip
        for name, ports in ((b_name, b_ports), (a_name, a_ports)):
            url = f"http://127.0.0.1:{ports['admin']}/readyz"
            wait_started(group, name, lambda url=url: http_ok(url), f"{name} /readyz")

    front_port, inner_port = free_port(), free_port()
    front_cfg, inner_cfg = haproxy_configs(work, front_port, inner_port, h1_port)
    for cfg in (front_cfg, inner_cfg):
        check = subprocess.run(
            [tools["haproxy"], "-c", "-q", "-f", str(cfg)], capture_output=True, text=True
        )
        if check.returncode != 0:
            raise BenchError(f"HAProxy rejects {cfg.name}:\n{check.stdout}{check.stderr}")
    group.start("haproxy-b", [tools["haproxy"], "-db", "-f", str(inner_cfg)])
    group.start("haproxy-a", [tools["haproxy"], "-db", "-f", str(front_cfg)])
    wait_started(group, "haproxy-b", lambda: tcp_open(inner_port), "HAProxy B")
    wait_started(group, "haproxy-a", lambda: tcp_open(front_port), "HAProxy A")

    def proc(name: str) -> psutil.Process:
        return psutil.Process(group.procs[name].pid)

    setups = {
        "direct": Setup("direct", h2_port),
        **{
            setup_name: Setup(
                setup_name,
                outbound_ports[setup_name],
                sidecars={"A": proc(f"agent-{a[-1]}"), "B": proc(f"agent-{b[-1]}")},
                proc_names={"A": f"agent-{a[-1]}", "B": f"agent-{b[-1]}"},
            )
            for setup_name, _engine, a, b in ENGINE_PAIRS
        },
        "haproxy": Setup(
            "haproxy",
            front_port,
            sidecars={"A": proc("haproxy-a"), "B": proc("haproxy-b")},
            proc_names={"A": "haproxy-a", "B": "haproxy-b"},
        ),
    }
    return setups, psutil.Process(nginx.pid)


# --- measuring ---------------------------------------------------------------------------


class RssSampler:
    """Samples the RSS of every sidecar every 20 ms in a thread; keeps the peaks."""

    def __init__(self, setups: Sequence[Setup], interval: float = 0.02) -> None:
        self.setups = setups
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for setup in self.setups:
                for role, proc in setup.sidecars.items():
                    with contextlib.suppress(psutil.Error):
                        rss = int(proc.memory_info().rss)
                        setup.peak_rss[role] = max(setup.peak_rss.get(role, 0), rss)
            self._stop.wait(self.interval)


def cpu_seconds(setup: Setup) -> dict[str, float]:
    """User+system CPU seconds used so far by each sidecar."""
    out: dict[str, float] = {}
    for role, proc in setup.sidecars.items():
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            out[role] = float(times.user + times.system)
    return out


def check_alive(group: ProcessGroup, setup: Setup) -> None:
    """Raise BenchError if nginx or one of the setup's sidecars has exited."""
    for role, name in [*setup.proc_names.items(), ("upstream", "nginx")]:
        proc = group.procs[name]
        if proc.poll() is not None:
            raise BenchError(
                f"{name} ({setup.name}, {role}) exited with {proc.returncode}; "
                f"last log lines:\n{group.log_tail(name)}"
            )


_FINISHED = re.compile(r"finished in [\d.]+\w*, ([\d.]+) req/s")
_REQUESTS = re.compile(
    r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout"
)
_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
_TRAFFIC = re.compile(r"traffic: .*?\((\d+)\) data")


def h2load(
    h2load_path: str, args: Sequence[str], setup: Setup, group: ProcessGroup, timeout: float
) -> RunStats:
    """Run h2load against ``setup`` and parse its summary; CPU per sidecar is measured around it."""
    check_alive(group, setup)
    cmd = [h2load_path, "-t", "1", "-H", f":authority: {AUTHORITY}", *args, setup.url]
    before = cpu_seconds(setup)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"h2load did not finish within {timeout:.0f} s: {' '.join(cmd)}") from None
    after = cpu_seconds(setup)
    out = done.stdout
    if done.returncode != 0 or not _REQUESTS.search(out):
        raise BenchError(f"h2load failed ({done.returncode}): {' '.join(cmd)}\n{out}{done.stderr}")
    stats = RunStats()
    if m := _FINISHED.search(out):
        stats.rps = float(m.group(1))
    if m := _REQUESTS.search(out):
        stats.requests, stats.succeeded = int(m.group(1)), int(m.group(2))
        stats.failed = int(m.group(3))
    if m := _STATUS.search(out):
        stats.non_2xx = sum(int(x) for x in m.groups()[1:])
    if m := _TRAFFIC.search(out):
        stats.data_bytes = int(m.group(1))
    ok = stats.succeeded - stats.non_2xx
    for role, used in after.items():
        if role in before and ok > 0:
            stats.cpu_per_1k[role] = (used - before[role]) / ok * 1000
    check_alive(group, setup)
    return stats


def preflight(h2load_path: str, setup: Setup, group: ProcessGroup, n: int = 300) -> float:
    """Warm up and prove the path works: all 200, 1 KiB each. Returns a rough req/s."""
    started = time.monotonic()
    stats = h2load(h2load_path, ["-n", str(n), "-c", "4", "-m", "8"], setup, group, timeout=120)
    elapsed = time.monotonic() - started
    if stats.succeeded != n or stats.non_2xx or stats.data_bytes != n * PAYLOAD:
        raise BenchError(
            f"{setup.name}: preflight expected {n} x 200 with {PAYLOAD} bytes each, got "
            f"{stats.succeeded} succeeded, {stats.non_2xx} non-2xx, {stats.data_bytes} bytes"
        )
    return n / max(elapsed, 1e-3)


def closed_loop(
    h2load_path: str, setup: Setup, group: ProcessGroup, opts: Options, estimate: float
) -> None:
    """Maximum req/s over the configured (clients x streams) settings; keeps the best.

    Runs a fixed request count (sized from ``estimate`` to last about ``closed_seconds``)
    rather than ``-D``, so no run ends with streams cancelled in flight.
    """
    best = setup.closed
    for clients, streams in opts.closed:
        n = int(min(500_000, max(500, estimate * opts.closed_seconds, clients * streams * 4)))
        stats = h2load(
            h2load_path,
            ["-n", str(n), "-c", str(clients), "-m", str(streams)],
            setup,
            group,
            timeout=max(120.0, n / max(estimate, 1.0) * 5),
        )
        errors = stats.requests - (stats.succeeded - stats.non_2xx)
        failed = f" ({errors} failed)" if errors else ""
        best.tried.append(f"{clients}x{streams}: {stats.rps:,.0f}{failed}")
        if stats.rps > best.rps:
            best.rps, best.clients, best.streams = stats.rps, clients, streams
            best.errors, best.cpu_per_1k = errors, stats.cpu_per_1k
        estimate = max(estimate, stats.rps)
        print(
            f"  {setup.name:9s} closed {clients:3d}x{streams:<3d} {stats.rps:10,.0f} req/s",
            flush=True,
        )


def timing_script(path: Path, url: str, rate: int, count: int) -> None:
    """One line per request: send offset in ms, tab, URI (h2load --timing-script-file)."""
    step = 1000.0 / rate
    path.write_text("".join(f"{i * step:.3f}\t{url}\n" for i in range(count)))


def open_loop(
    h2load_path: str, setup: Setup, group: ProcessGroup, opts: Options, rate: int, work: Path
) -> OpenLoop:
    """Per-request latency at a fixed rate (one h2c connection, up to 1000 streams in flight)."""
    result = OpenLoop(rate)
    count = max(10, int(rate * opts.seconds))
    log = work / f"{setup.name}-{rate}.log"
    if opts.generator == "timing-script":
        script = work / f"{setup.name}-{rate}.script"
        timing_script(script, setup.url, rate, count)
        generator = ["--timing-script-file", str(script)]
    else:
        generator = ["--rps", str(rate), "-n", str(count)]
    stats = h2load(
        h2load_path,
        ["-c", "1", "-m", str(MAX_STREAMS), "--log-file", str(log), *generator],
        setup,
        group,
        timeout=opts.seconds * 4 + 60,
    )
    rows: list[tuple[int, int, int]] = []
    for line in log.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 3:
            rows.append((int(parts[0]), int(parts[1]), int(parts[2])))
    rows.sort()
    good = sorted(d / 1000 for _, status, d in rows if status == 200)
    result.count = len(rows)
    result.errors = count - len(good)
    result.cpu_per_1k = stats.cpu_per_1k
    if len(rows) >= 2:
        t0 = rows[0][0]
        span = (rows[-1][0] - t0) / 1e6
        result.achieved_rps = (len(rows) - 1) / span if span > 0 else math.nan
        step = 1000.0 / rate
        slips = sorted((start - t0) / 1000 - i * step for i, (start, _, _) in enumerate(rows))
        result.slip_p99_ms = percentile(slips, 99)
    result.p50, result.p90 = percentile(good, 50), percentile(good, 90)
    result.p99, result.pmax = percentile(good, 99), (good[-1] if good else math.nan)
    return result


def measure_idle_rss(setups: Iterable[Setup]) -> None:
    """RSS of each sidecar after start, before any request."""
    for setup in setups:
        for role, proc in setup.sidecars.items():
            with contextlib.suppress(psutil.Error):
                setup.idle_rss[role] = int(proc.memory_info().rss)


def run_benchmark(opts: Options, tools: dict[str, str], work: Path) -> dict[str, Setup]:
    """Start everything, measure every setup, stop everything."""
    with ProcessGroup(work) as group:
        setups, _nginx = start_everything(group, work, tools)
        time.sleep(1.0)
        measure_idle_rss(setups.values())
        ordered = list(setups.values())
        with RssSampler(ordered):
            print("closed loop (maximum req/s):", flush=True)
            for setup in ordered:
                try:
                    estimate = preflight(tools["h2load"], setup, group)
                    closed_loop(tools["h2load"], setup, group, opts, estimate)
                except BenchError as exc:
                    setup.failure = str(exc)
                    print(f"  {setup.name}: {exc}", file=sys.stderr)
            print(
                f"open loop ({opts.seconds:g} s per rate, generator: {opts.generator}):", flush=True
            )
            for rate in opts.rates:
                for setup in ordered:
                    if setup.failure:
                        setup.open_loop[rate] = OpenLoop(rate, skipped="failed (see below)")
                        continue
                    capacity = setup.closed.rps
                    if capacity and rate > 0.9 * capacity:
                        setup.open_loop[rate] = OpenLoop(
                            rate, skipped=f"over capacity (max {capacity:,.0f} req/s)"
                        )
                        print(
                            f"  {setup.name:11s} {rate:5d} rps  skipped: over capacity", flush=True
                        )
                        continue
                    try:
                        res = open_loop(tools["h2load"], setup, group, opts, rate, work)
                    except BenchError as exc:
                        setup.failure = str(exc)
                        setup.open_loop[rate] = OpenLoop(rate, skipped="failed (see below)")
                        print(f"  {setup.name}: {exc}", file=sys.stderr)
                        continue
                    setup.open_loop[rate] = res
                    print(
                        f"  {setup.name:11s} {rate:5d} rps  p50 {res.p50:7.3f}  p99 {res.p99:8.3f}"
                        f"  max {res.pmax:8.3f} ms  errors {res.errors}",
                        flush=True,
                    )
    return setups


# --- report ------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return NA if math.isnan(value) else f"{value:.2f}"


def _added(value: float, base: float) -> str:
    if math.isnan(value) or math.isnan(base):
        return NA
    return f"{value - base:+.2f}"


def _mib(value: int | None) -> str:
    return NA if not value else f"{value / MIB:.1f}"


def _pair(values: dict[str, float], fmt: str = "{:.2f}") -> str:
    if not values:
        return NA
    return " / ".join(fmt.format(values[r]) if r in values else NA for r in ("A", "B"))


def _rss_pair(values: dict[str, int]) -> str:
    if not values:
        return NA
    return " / ".join(_mib(values.get(r)) for r in ("A", "B"))


def render(
    setups: dict[str, Setup],
    opts: Options,
    facts: dict[str, str],
    vers: dict[str, str],
    elapsed: float,
) -> str:
    """The markdown section for docs/benchmarks.md (also printed)."""
    direct, mesh, ha = setups["direct"], setups["peermesh"], setups["haproxy"]
    lines = [
        "## Data plane: direct vs peermesh (nghttp2 and h2 engines) vs HAProxy",
        "",
        f"Measured {facts['date']} by `python -m bench.dataplane {facts['args']}`"
        f" (the run took {elapsed:.0f} s).",
        "",
        f"- **Machine:** {facts['nproc']} CPUs ({facts['cpu']}), {facts['memory']} RAM,"
        f" Linux {facts['kernel']}. Other processes kept {facts['background']} of the CPUs"
        f" busy just before the run and used {facts['others']} of all CPU time during it.",
        "- **Versions:** " + ", ".join(f"{k} {v}" for k, v in vers.items()) + ".",
        "",
        "### Method",
        "",
        f"- Upstream: one nginx worker serving a {PAYLOAD}-byte file (`GET {PATH}`) over"
        " HTTP/1.1 to the proxies and over h2c to the direct client; it answers 421 unless the"
        f" authority is `{AUTHORITY}`, so every 200 proves the authority arrived intact.",
        "- Client: h2load, one thread, HTTP/2 prior knowledge (h2c) to the first hop,"
        f" `:authority: {AUTHORITY}` (the destination service for peermesh).",
        "- **peermesh:** two agent pairs, one per HTTP/2 engine (`--h2-engine nghttp2`, `h2`),"
        " every HTTP/2 leg of a pair on that engine. Agent A's outbound listener ← h2c; A → B"
        " one pooled TLS 1.3 mTLS HTTP/2 connection (dev-CA Ed25519 certificates);"
        " B → nginx HTTP/1.1 keep-alive. Agents run"
        " with `--gossip off --no-mdns` (static `--peer`: the data plane alone) and log level"
        " warning.",
        "- **HAProxy reference:** HAProxy A (`bind` h2c) → `server ... ssl crt ca-file verify"
        " required alpn h2` (TLS 1.3, same Ed25519 certificates, cert+key in one PEM) → HAProxy B"
        " (`bind ... ssl crt ca-file verify required alpn h2`) → nginx HTTP/1.1. `nbthread 1`"
        " (the agents are single-threaded too), `http-reuse always`. nginx cannot proxy to an"
        " HTTP/2 upstream, so it cannot be the two-proxy reference; HAProxy can.",
        f"- Open loop at {', '.join(str(r) for r in opts.rates)} req/s: one h2c connection, up to"
        f" {MAX_STREAMS} streams in flight, requests sent at a fixed rate for {opts.seconds:g} s"
        " per rate"
        + (
            " with `h2load --rps R -n N` (its timer catches up by wall clock);"
            " `--log-file` gives every request's latency (send to last byte). `--generator"
            " timing-script` uses `--timing-script-file` instead, but h2load re-arms that timer"
            " relative to the previous send, so on a busy 2-CPU machine it drifts well below"
            " the asked rate; `achieved` shows the rate really sent."
            if opts.generator == "rps"
            else " with `h2load --timing-script-file` (one line per request: offset in ms);"
            " `--log-file` gives every request's latency (send to last byte)."
        ),
        "  *Added* = the setup's percentile minus direct's at the same rate. *slip p99* is how"
        " late h2load sent (load-generator jitter; large values mean the rate was not held).",
        "  Rates above 90 % of a setup's closed-loop maximum are skipped as over capacity: the"
        " queue would only grow for the whole run.",
        "- Closed loop: h2load `-n N -c C -m M` for each CxM in "
        + ", ".join(f"{c}x{m}" for c, m in opts.closed)
        + f", N sized to about {opts.closed_seconds:g} s; the best is reported.",
        "- CPU: user+system seconds of each sidecar process (psutil) around each h2load run,"
        " per 1000 successful requests. RSS: after start and before any request (idle), and"
        " the peak sampled every 20 ms during the whole run. A / B = first / second sidecar.",
        "- The setups run one at a time on the same machine as the load generator and nginx;"
        " all share 2 CPUs, so absolute figures are lower than on dedicated hosts.",
        "",
        "### Latency at fixed rates (ms)",
        "",
        "| rate | setup | p50 | p90 | p99 | max | added p50 | added p90 | added p99 |"
        " added max | achieved req/s | slip p99 | errors |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rate in opts.rates:
        base = direct.open_loop.get(rate, OpenLoop(rate))
        for setup in setups.values():
            res = setup.open_loop.get(rate, OpenLoop(rate, skipped="not run"))
            if res.skipped:
                lines.append(f"| {rate} | {setup.label} | {res.skipped} |" + " |" * 10)
                continue
            added = (
                [NA] * 4
                if setup is direct
                else [
                    _added(res.p50, base.p50),
                    _added(res.p90, base.p90),
                    _added(res.p99, base.p99),
                    _added(res.pmax, base.pmax),
                ]
            )
            lines.append(
                f"| {rate} | {setup.label} | {_ms(res.p50)} | {_ms(res.p90)} | {_ms(res.p99)} |"
                f" {_ms(res.pmax)} | {' | '.join(added)} | {res.achieved_rps:,.0f} |"
                f" {_ms(res.slip_p99_ms)} | {res.errors} |"
            )
    lines += [
        "",
        "### Throughput, CPU and memory",
        "",
        "| setup | closed-loop max req/s (CxM) | CPU s / 1000 req at max (A / B) |"
        " CPU s / 1000 req, open loop at the highest rate run (A / B) | idle RSS MiB (A / B) |"
        " peak RSS MiB (A / B) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for setup in setups.values():
        ran = [r for r in setup.open_loop.values() if not r.skipped and r.cpu_per_1k]
        top = max(ran, key=lambda r: r.rate, default=None)
        cpu_at_rate = f"{_pair(top.cpu_per_1k, '{:.3f}')} @ {top.rate} rps" if top else NA
        closed = setup.closed
        best = f"{closed.rps:,.0f} ({closed.clients}x{closed.streams})" if closed.rps else NA
        lines.append(
            f"| {setup.label} | {best} | {_pair(closed.cpu_per_1k, '{:.3f}')} | {cpu_at_rate} |"
            f" {_rss_pair(setup.idle_rss)} | {_rss_pair(setup.peak_rss)} |"
        )
    lines += ratios(setups, ha)
    lines += ["", "All closed-loop settings tried (req/s):", ""]
    for setup in setups.values():
        lines.append(f"- {setup.label}: {'; '.join(setup.closed.tried) or NA}")
    failures = [s for s in setups.values() if s.failure]
    if failures:
        lines += ["", "### Failures", ""]
        for setup in failures:
            lines += [f"- **{setup.label}:**", "", "```", setup.failure.strip(), "```"]
    lines += ["", "### Steering targets (issue #2; reported, not asserted)", ""]
    lines += targets(mesh, ha, direct)
    lines += reading_notes(mesh, ha, direct)
    return "\n".join(lines) + "\n"


def ratios(setups: dict[str, Setup], ha: Setup) -> list[str]:
    """Each peermesh pair against HAProxy in the same run (throughput and CPU per request)."""
    lines = [
        "",
        "Ratios to HAProxy in the same run (peermesh ÷ HAProxy; throughput: higher is better,"
        " CPU: lower is better):",
        "",
        "| setup | closed-loop req/s | CPU per request at max (A / B) |",
        "|---|---:|---:|",
    ]
    for name, setup in setups.items():
        if not name.startswith("peermesh"):
            continue
        rps = (
            f"{setup.closed.rps / ha.closed.rps:.2f}" if setup.closed.rps and ha.closed.rps else NA
        )
        cpu = " / ".join(
            f"{setup.closed.cpu_per_1k[r] / ha.closed.cpu_per_1k[r]:.1f}x"
            if setup.closed.cpu_per_1k.get(r) and ha.closed.cpu_per_1k.get(r)
            else NA
            for r in ("A", "B")
        )
        lines.append(f"| {setup.label} | {rps} | {cpu} |")
    return lines


def reading_notes(mesh: Setup, ha: Setup, direct: Setup) -> list[str]:
    """A few sentences derived from the figures, to read the tables right."""
    notes = []
    low = min(direct.open_loop.values(), key=lambda r: r.rate, default=None)
    if low is not None and not low.skipped and low.p99 > 4 * low.p50:
        notes.append(
            f"- Tails include scheduling noise of the shared machine: even direct has p99"
            f" {low.p99:.2f} ms against p50 {low.p50:.2f} ms at {low.rate} req/s. Compare"
            " p50/p90 for the cost of the hops."
        )
    cpu = mesh.closed.cpu_per_1k
    if "A" in cpu and "B" in cpu:
        worst = max(cpu["A"], cpu["B"])
        ha_cpu = ha.closed.cpu_per_1k
        reference = (
            f" (HAProxy: {ha_cpu['A']:.3f} / {ha_cpu['B']:.3f} ms)"
            if "A" in ha_cpu and "B" in ha_cpu
            else ""
        )
        notes.append(
            f"- peermesh is CPU-bound: at its maximum agent A spent {cpu['A']:.2f} ms and B"
            f" {cpu['B']:.2f} ms of CPU per request{reference}. Even with a CPU each, two agents"
            f" at that cost top out near {1000 / worst:,.0f} req/s; {TARGET_MAX_RPS} req/s needs"
            f" ≤ {1000 / TARGET_MAX_RPS:.2f} ms per request per agent, less when the client and"
            " the app share the CPUs."
        )
    return ["", "### Reading the figures", "", *notes] if notes else []


def targets(mesh: Setup, ha: Setup, direct: Setup) -> list[str]:
    """The issue's targets with peermesh's figures (HAProxy's alongside for reference)."""

    def added(setup: Setup) -> tuple[str, bool | None]:
        res, base = setup.open_loop.get(TARGET_RATE), direct.open_loop.get(TARGET_RATE)
        if res is None or base is None or base.skipped:
            return "not measured", None
        if res.skipped:
            return res.skipped, False
        p50, p99 = res.p50 - base.p50, res.p99 - base.p99
        met = p50 <= TARGET_ADDED_P50_MS and p99 <= TARGET_ADDED_P99_MS and res.errors == 0
        return f"+{p50:.2f} / +{p99:.2f} ms", met

    def idle(setup: Setup) -> tuple[str, bool | None]:
        if not setup.idle_rss:
            return "not measured", None
        worst = max(setup.idle_rss.values()) / MIB
        return f"{_rss_pair(setup.idle_rss)} MiB", worst <= TARGET_IDLE_RSS_MIB

    def verdict(met: bool | None) -> str:
        return {True: "**met**", False: "**not met**", None: NA}[met]

    mesh_added, ha_added = added(mesh), added(ha)
    mesh_idle, ha_idle = idle(mesh), idle(ha)
    mesh_rps, ha_rps = mesh.closed.rps, ha.closed.rps
    return [
        "| target | peermesh | met? | HAProxy reference |",
        "|---|---:|---|---:|",
        f"| added p50 ≤ {TARGET_ADDED_P50_MS:g} ms and p99 ≤ {TARGET_ADDED_P99_MS:g} ms at"
        f" {TARGET_RATE} rps through two sidecars | {mesh_added[0]} | {verdict(mesh_added[1])} |"
        f" {ha_added[0]} |",
        f"| ≥ {TARGET_MAX_RPS} req/s through one sidecar pair (closed loop) | {mesh_rps:,.0f} |"
        f" {verdict(mesh_rps >= TARGET_MAX_RPS if mesh_rps else None)} | {ha_rps:,.0f} |",
        f"| idle RSS ≤ {TARGET_IDLE_RSS_MIB} MiB per agent (A / B) | {mesh_idle[0]} |"
        f" {verdict(mesh_idle[1])} | {ha_idle[0]} |",
    ]


# --- entry point -------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Options:
    """Command-line options; ``--quick`` shortens everything for a smoke run."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.dataplane",
        description="Data-plane benchmark: direct vs two peermesh agents vs two HAProxy.",
    )
    parser.add_argument("--seconds", type=float, help="open-loop seconds per rate (default 15)")
    parser.add_argument(
        "--rates",
        default="100,500,1000",
        help="open-loop rates in req/s, comma-separated (default 100,500,1000)",
    )
    parser.add_argument(
        "--closed",
        help="closed-loop settings CLIENTSxSTREAMS, comma-separated (default 1x16,8x8)",
    )
    parser.add_argument(
        "--closed-seconds", type=float, help="approximate seconds per closed-loop run (default 6)"
    )
    parser.add_argument(
        "--generator",
        choices=("rps", "timing-script"),
        default="rps",
        help="how h2load paces the open loop (default rps; see docs/benchmarks.md)",
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="first wait up to SECONDS for other processes to leave the CPUs mostly idle",
    )
    parser.add_argument("--quick", action="store_true", help="short smoke run (~2 minutes)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave the doc alone")
    parser.add_argument("--output", type=Path, default=BENCHMARKS_DOC, help="markdown file")
    ns = parser.parse_args(argv)
    seconds = ns.seconds if ns.seconds is not None else (4.0 if ns.quick else 15.0)
    closed_seconds = ns.closed_seconds or (2.0 if ns.quick else 6.0)
    closed_text = ns.closed or ("8x8" if ns.quick else "1x16,8x8")
    try:
        rates = [int(r) for r in ns.rates.split(",") if r.strip()]
        closed = [
            (int(c), int(m))
            for c, m in (item.lower().split("x") for item in closed_text.split(",") if item)
        ]
    except ValueError:
        parser.error("--rates wants integers like 500,1000; --closed wants CxM like 16x8")
    if not rates or min(rates) <= 0 or not closed or seconds <= 0:
        parser.error("rates, closed-loop settings and seconds must be positive")
    return Options(
        seconds=seconds,
        rates=rates,
        closed=closed,
        closed_seconds=closed_seconds,
        generator=ns.generator,
        write=not ns.no_write,
        output=ns.output,
        wait_idle=max(0.0, ns.wait_idle),
    )


def wait_for_idle(timeout: float, threshold: float = 0.25) -> float:
    """Busy share of the CPUs (other processes), after waiting up to ``timeout`` s for calm."""
    deadline = time.monotonic() + timeout
    busy = busy_fraction(2.0)
    while busy > threshold and time.monotonic() < deadline:
        print(f"waiting for the machine to calm down ({busy:.0%} busy)", flush=True)
        busy = busy_fraction(5.0)
    return busy


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM (and SIGINT, even if inherited as ignored) into KeyboardInterrupt."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    # A shell that starts us in the background sets SIGINT to "ignore"; Ctrl-C should work.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 on success, 1 on a failed set-up, 130 on Ctrl-C."""
    opts = parse_args(argv)
    tools = required_tools()
    background = wait_for_idle(opts.wait_idle)
    started = time.monotonic()
    machine0, own0 = cpu_clock(), own_cpu_seconds()
    facts = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "args": " ".join(sys.argv[1:] if argv is None else argv) or "(defaults)",
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model(),
        "memory": memory_total(),
        "kernel": platform.release(),
        "background": "unknown" if math.isnan(background) else f"{background:.0%}",
    }
    vers = versions(tools)
    if not math.isnan(background) and background > 0.25:
        print(
            f"warning: {background:.0%} of the CPUs are busy with other work; figures will be"
            " noisy and lower than on an idle machine",
            file=sys.stderr,
        )
    try:
        with sigterm_as_interrupt(), tempfile.TemporaryDirectory(prefix="peermesh-bench-") as tmp:
            setups = run_benchmark(opts, tools, Path(tmp))
    except KeyboardInterrupt:
        print("\ninterrupted: every process stopped, temp dir removed", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"bench.dataplane: {exc}", file=sys.stderr)
        return 1
    (busy0, total0), (busy1, total1) = machine0, cpu_clock()
    others = (busy1 - busy0) - (own_cpu_seconds() - own0)
    facts["others"] = f"{max(0.0, others) / max(total1 - total0, 1e-9):.0%}"
    report = render(setups, opts, facts, vers, time.monotonic() - started)
    print()
    print(report)
    if opts.write:
        update_marked_section(SECTION, report, opts.output)
        print(f"wrote the {SECTION} section of {opts.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
