"""Policy propagation between real agent processes on loopback (gossip, mTLS, admin API).

Used by ``python -m bench.policy``; wall clock, so the figures depend on the machine.
"""

import math
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

from bench._common import REPO, ProcessGroup, busy_fraction, cpu_model, free_port
from peermesh.ca.devca import init_dev_ca
from peermesh.net.admin_guard import ADMIN_HEADERS

START = "<!-- bench:policy:start -->"
END = "<!-- bench:policy:end -->"
DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
NOW = 1_700_000_000.0
SAMPLES = 20  # one-object edits timed per size (median reported)
DISK_SAMPLES = 5


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: a reported p99 is an observed value)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def kib(size: float) -> str:
    return f"{size / 1024:,.1f} KiB" if size >= 1024 else f"{size:.0f} B"


AGENT_TRUST_DOMAIN = "bench.local"
AGENT_SERVICE = "web"  # every bench agent fronts it, so routes raise no warnings
IDLE_SAMPLE_S = 3.0


@dataclass(frozen=True)
class AgentsResult:
    """Propagation between real agent processes; times in seconds from sending the PUT."""

    agents: int
    edits: int
    reached: int  # edits every agent returned before the per-edit timeout
    poll_interval: float
    ack: tuple[float, ...]  # PUT round trip on the origin (validate, journal fsync, reply)
    to_all: tuple[float, ...]  # per edit: the last agent (origin included) that returned it
    to_first: tuple[float, ...]  # per edit: the first agent other than the origin
    per_agent: tuple[float, ...]  # per (edit, agent other than the origin)
    warmup_to_all: tuple[float, ...]
    startup_s: float  # processes started until every agent answered /readyz
    membership_s: float  # then until every agent saw all others alive
    measure_s: float  # wall time of the measured edits
    lifetime_s: float  # processes started until the replication counters were read
    agents_cpu_s: float  # CPU the agents used during the measured edits (polls included)
    idle_cpu_s: float  # CPU the agents used per second while nothing was asked of them
    poller_cpu_s: float  # CPU this process used meanwhile (PUTs and polling)
    pushes: int
    pushes_failed: int
    syncs: int
    sent_bytes: int
    converged: bool  # every agent reports the same policy digest at the end
    busy_before: float  # share of the machine's CPU other processes kept busy before


def _bench_route(name: str, serial: int) -> dict[str, Any]:
    return {
        "kind": "Route",
        "name": name,
        "spec": {
            "host": AGENT_SERVICE,
            "http": [
                {
                    "route": [{"destination": {"host": AGENT_SERVICE}}],
                    "timeout": f"{1000 + serial}ms",
                }
            ],
        },
    }


@dataclass(frozen=True)
class _AgentPorts:
    outbound: int
    inbound: int
    admin: int
    gossip: int
    app: int


def _agent_command(
    node: str, ports: _AgentPorts, data_dir: Path, key: Path, seed: int | None
) -> list[str]:
    """The agent command line of tests/integration/test_membership.py (loopback gossip, no mDNS)."""
    # fmt: off
    args = [
        sys.executable, "-m", "peermesh", "agent", "--name", node,
        "--service", f"{AGENT_SERVICE}={ports.app}", "--data-dir", str(data_dir),
        "--trust-domain", AGENT_TRUST_DOMAIN,
        "--outbound", f"127.0.0.1:{ports.outbound}",
        "--inbound", f"127.0.0.1:{ports.inbound}",
        "--admin", f"127.0.0.1:{ports.admin}",
        "--gossip", f"127.0.0.1:{ports.gossip}",
        "--gossip-key-file", str(key), "--gossip-profile", "local", "--no-mdns",
        "--advertise", "127.0.0.1", "--log-level", "warning",
    ]
    # fmt: on
    if seed is not None:
        args += ["--join", f"127.0.0.1:{seed}"]
    return args


class _Poller:
    """A minimal keep-alive HTTP/1.1 GET client for one agent's admin port.

    Polling ten agents every few milliseconds with a full HTTP client costs the benchmark
    process most of a CPU on a small machine, which would slow the agents it measures;
    this costs about a sixth of that. Only the status code is returned.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.stream: trio.SocketStream | None = None

    async def get(self, path: str) -> int | None:
        try:
            if self.stream is None:
                self.stream = await trio.open_tcp_stream("127.0.0.1", self.port)
            await self.stream.send_all(f"GET {path} HTTP/1.1\r\nhost: admin\r\n\r\n".encode())
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await self.stream.receive_some(65536)
                if not chunk:
                    raise OSError("connection closed")
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            status = int(lines[0].split()[1])
            length = next(
                (int(v) for n, _, v in (x.partition(b":") for x in lines[1:])
                 if n.strip().lower() == b"content-length"),
                0,
            )  # fmt: skip
            while len(body) < length:
                chunk = await self.stream.receive_some(65536)
                if not chunk:
                    raise OSError("connection closed")
                body += chunk
            return status
        except (OSError, ValueError, IndexError, trio.BrokenResourceError):
            await self.aclose()
            return None

    async def aclose(self) -> None:
        if self.stream is not None:
            await self.stream.aclose()
            self.stream = None


class _Mesh:
    """Admin-API clients for the running agents, and the checks that they are healthy."""

    def __init__(self, group: ProcessGroup, names: Sequence[str], admin_ports: Sequence[int]):
        self.group = group
        self.names = list(names)
        self.clients = [
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", timeout=10.0, headers=ADMIN_HEADERS
            )
            for port in admin_ports
        ]
        self.pollers = [_Poller(port) for port in admin_ports]

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()
        for poller in self.pollers:
            await poller.aclose()

    def cpu_seconds(self) -> float:
        """User+system CPU seconds used so far by every agent process (from /proc)."""
        total = 0.0
        for name in self.names:
            try:
                fields = Path(f"/proc/{self.group.procs[name].pid}/stat").read_text()
            except OSError:
                continue
            after_comm = fields.rsplit(")", 1)[1].split()
            total += (int(after_comm[11]) + int(after_comm[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def check_alive(self) -> None:
        for name in self.names:
            proc = self.group.procs[name]
            if proc.poll() is not None:
                raise RuntimeError(
                    f"agent {name} exited with {proc.returncode}:\n{self.group.log_tail(name)}"
                )

    async def get(self, k: int, path: str) -> httpx.Response | None:
        try:
            return await self.clients[k].get(path)
        except httpx.HTTPError:
            return None

    async def wait_for(self, what: str, check: Any, timeout: float) -> float:
        """Poll the async ``check()`` until true; seconds waited, or TimeoutError."""
        start = time.perf_counter()
        while not await check():
            self.check_alive()
            if time.perf_counter() - start > timeout:
                raise TimeoutError(f"{what}: not after {timeout:.0f} s")
            await trio.sleep(0.1)
        return time.perf_counter() - start

    async def all_ready(self) -> bool:
        replies = [await self.get(k, "/readyz") for k in range(len(self.clients))]
        return all(r is not None and r.status_code == 200 for r in replies)

    async def membership_converged(self) -> bool:
        everyone = set(self.names)
        for k in range(len(self.clients)):
            reply = await self.get(k, "/v1/members")
            if reply is None or reply.status_code != 200:
                return False
            members = reply.json().get("members", [])
            if {m["name"] for m in members if m["state"] == "alive"} != everyone:
                return False
        return True

    async def edit(
        self, origin: int, doc: dict[str, Any], poll: float, timeout: float
    ) -> tuple[float, dict[int, float]]:
        """PUT ``doc`` on ``origin`` while every agent polls for it; (ack, agent -> seen)."""
        path = f"/v1/policy/Route/{doc['name']}"
        seen: dict[int, float] = {}
        ack = math.nan
        start = time.perf_counter()

        async def watch(k: int) -> None:
            while time.perf_counter() - start < timeout:
                if await self.pollers[k].get(path) == 200:
                    seen[k] = time.perf_counter() - start
                    return
                await trio.sleep(poll)

        async def put() -> None:
            nonlocal ack
            reply = await self.clients[origin].put("/v1/policy", json={"objects": [doc]})
            if reply.status_code != 200:
                raise RuntimeError(f"PUT on {self.names[origin]} answered {reply.text}")
            ack = time.perf_counter() - start

        async with trio.open_nursery() as nursery:
            nursery.start_soon(put)
            for k in range(len(self.clients)):
                nursery.start_soon(watch, k)
        return ack, seen

    async def replication_totals(self) -> tuple[dict[str, int], bool]:
        totals = {"pushes_sent": 0, "pushes_failed": 0, "syncs": 0, "bytes_sent": 0}
        digests: set[str] = set()
        for k in range(len(self.clients)):
            reply = await self.get(k, "/v1/policy/status")
            if reply is None or reply.status_code != 200:
                return totals, False
            status = reply.json()
            digests.add(status["here"]["digest"])
            for key in totals:
                totals[key] += int(status["replication"][key])
        return totals, len(digests) == 1


async def _drive_agents(
    group: ProcessGroup,
    names: Sequence[str],
    ports: Sequence[_AgentPorts],
    edits: int,
    poll: float,
    seed: int,
    started: float,
    busy_before: float,
) -> AgentsResult:
    mesh = _Mesh(group, names, [p.admin for p in ports])
    rng = random.Random(seed)
    timeout = 15.0
    try:
        await mesh.wait_for("agents ready", mesh.all_ready, timeout=90)
        startup = time.perf_counter() - started
        membership = await mesh.wait_for(
            "membership converged", mesh.membership_converged, timeout=90
        )
        # One uncounted edit per agent first: it opens the mTLS connections pushes ride.
        warmup: list[float] = []
        for k in range(len(names)):
            _, seen = await mesh.edit(k, _bench_route(f"warmup-{k}", k), poll, timeout)
            if len(seen) == len(names):
                warmup.append(max(seen.values()))
            await trio.sleep(rng.uniform(0.1, 0.4))
        acks: list[float] = []
        to_all: list[float] = []
        to_first: list[float] = []
        per_agent: list[float] = []
        idle_cpu0 = mesh.cpu_seconds()
        await trio.sleep(IDLE_SAMPLE_S)
        idle_cpu = (mesh.cpu_seconds() - idle_cpu0) / IDLE_SAMPLE_S
        measure_start = time.perf_counter()
        agents_cpu0, poller_cpu0 = mesh.cpu_seconds(), time.process_time()
        for i in range(edits):
            origin = rng.randrange(len(names))
            ack, seen = await mesh.edit(origin, _bench_route(f"bench-{i:04d}", i), poll, timeout)
            mesh.check_alive()
            acks.append(ack)
            others = [t for k, t in seen.items() if k != origin]
            per_agent.extend(others)
            if others:
                to_first.append(min(others))
            if len(seen) == len(names):
                to_all.append(max(seen.values()))
            # Start the next edit at a random phase of the anti-entropy timers.
            await trio.sleep(rng.uniform(0.1, 0.4))
        measure = time.perf_counter() - measure_start
        agents_cpu = mesh.cpu_seconds() - agents_cpu0
        poller_cpu = time.process_time() - poller_cpu0
        totals, converged = await mesh.replication_totals()
        lifetime = time.perf_counter() - started
    finally:
        await mesh.aclose()
    return AgentsResult(
        agents=len(names),
        edits=edits,
        reached=len(to_all),
        poll_interval=poll,
        ack=tuple(acks),
        to_all=tuple(to_all),
        to_first=tuple(to_first),
        per_agent=tuple(per_agent),
        warmup_to_all=tuple(warmup),
        startup_s=startup,
        membership_s=membership,
        measure_s=measure,
        lifetime_s=lifetime,
        agents_cpu_s=agents_cpu,
        idle_cpu_s=idle_cpu,
        poller_cpu_s=poller_cpu,
        pushes=totals["pushes_sent"],
        pushes_failed=totals["pushes_failed"],
        syncs=totals["syncs"],
        sent_bytes=totals["bytes_sent"],
        converged=converged,
        busy_before=busy_before,
    )


def real_agents(count: int, edits: int, poll: float, seed: int) -> AgentsResult:
    """Start ``count`` agents on loopback, measure ``edits`` propagations, stop them all."""
    busy_before = busy_fraction(1.0)
    with tempfile.TemporaryDirectory(prefix="bench-policy-") as tmp:
        work = Path(tmp)
        ca = init_dev_ca(work / "ca", AGENT_TRUST_DOMAIN)
        key = work / "gossip.key"
        subprocess.run(
            [sys.executable, "-m", "peermesh", "keygen", "gossip", "--out", str(key)],
            check=True,
            capture_output=True,
            cwd=REPO,
        )
        names = [f"node-{k + 1}" for k in range(count)]
        ports = [_AgentPorts(*(free_port() for _ in range(5))) for _ in names]
        env = {
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        }
        for name in names:
            ca.issue(name, AGENT_SERVICE, work / name)
        with ProcessGroup(work) as group:
            started = time.perf_counter()
            for k, name in enumerate(names):
                seed_port = ports[k - 1].inbound if k else None  # join the previous agent
                command = _agent_command(name, ports[k], work / name, key, seed_port)
                group.start(name, command, env=env)
            print(f"  started {count} agents, measuring {edits} edits ...", file=sys.stderr)
            return trio.run(
                _drive_agents, group, names, ports, edits, poll, seed, started, busy_before
            )


def render_agents(r: AgentsResult) -> list[str]:
    """The real-agent subsection: method, one table row, target, conditions."""
    poll_ms = r.poll_interval * 1000
    p99_all = percentile(r.to_all, 99)
    met = r.reached == r.edits and p99_all <= 1.0
    per_agent_s = r.agents * r.lifetime_s
    reached = "" if r.reached == r.edits else f" ({r.reached} reached all)"
    lines = [
        "### Real agents on loopback",
        "",
        f"{r.agents} agent processes (`python -m peermesh agent`, the production code path) on "
        "this machine: gossip on 127.0.0.1 (`--gossip-profile local --no-mdns`, one shared "
        "gossip key, each agent `--join`s the previous one), dev-CA mTLS identities, policy "
        "replication with its defaults (an edit is pushed to 3 random peers, a peer that "
        "learns something forwards it once to 3 more, and every agent runs anti-entropy with "
        "one random peer every 0.5 to 1.5 s). Each edit creates a new Route on a random agent "
        "through its admin API (`PUT /v1/policy`, answered after the journal fsync). Meanwhile "
        f"every agent is polled with `GET /v1/policy/Route/NAME` every {poll_ms:.0f} ms and "
        "counts as reached when the first 200 comes back: times run from sending the PUT and "
        f"are upper bounds with about {poll_ms:.0f} ms resolution. Edits run one at a time, "
        "100 to 400 ms apart, after one uncounted warm-up edit per agent (it opens the mTLS "
        f"connections pushes use). With {r.edits} edits the p99 is the slowest edit.",
        "",
        "| agents | edits | ack p50 / p99 | p50 to all | p99 to all | p50 to first peer | "
        "p99 to first peer | p50 per agent | p99 per agent | replication per agent |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {r.agents} | {r.edits}{reached} | {fmt_ms(percentile(r.ack, 50))} / "
        f"{fmt_ms(percentile(r.ack, 99))} | {fmt_ms(percentile(r.to_all, 50))} | "
        f"{fmt_ms(p99_all)} | {fmt_ms(percentile(r.to_first, 50))} | "
        f"{fmt_ms(percentile(r.to_first, 99))} | {fmt_ms(percentile(r.per_agent, 50))} | "
        f"{fmt_ms(percentile(r.per_agent, 99))} | {r.pushes / per_agent_s:.1f} pushes/s, "
        f"{r.syncs / per_agent_s:.1f} syncs/s, {kib(r.sent_bytes / per_agent_s)}/s |",
        "",
        f"Steering target (p99 ≤ 1 s to every reachable node): **{'met' if met else 'not met'}**"
        f" (p99 to all {fmt_ms(p99_all)}).",
        "",
        f"* Startup: every agent answered `/readyz` {r.startup_s:.1f} s after the processes "
        f"were started; gossip membership had converged (all {r.agents} alive everywhere) "
        f"{r.membership_s:.1f} s later. The {len(r.warmup_to_all)} warm-up edits reached all "
        f"agents in p50 {fmt_ms(percentile(r.warmup_to_all, 50))}, max "
        f"{fmt_ms(max(r.warmup_to_all, default=math.nan))}.",
        f"* Replication counters over each agent's whole life ({r.lifetime_s:.0f} s): "
        f"{r.pushes} pushes ({r.pushes_failed} failed), {r.syncs} anti-entropy syncs, "
        f"{kib(r.sent_bytes)} of CRDT updates sent (payload only, without msgpack, HTTP/2 "
        "and TLS framing). At the end every agent reported "
        + ("the same policy digest." if r.converged else "**different** policy digests."),
        f"* CPU during the {r.measure_s:.0f} s of measured edits: the agents together "
        f"{r.agents_cpu_s:.1f} s ({r.agents_cpu_s / r.measure_s:.0%} of one CPU, answering "
        f"the polls included), the benchmark process {r.poller_cpu_s:.1f} s "
        f"({r.poller_cpu_s / r.measure_s:.0%}). Idle (gossip, anti-entropy, nothing asked) "
        f"the {r.agents} agents together used {r.idle_cpu_s:.0%} of one CPU.",
        f"* Machine: {os.cpu_count()} CPUs ({cpu_model()}); other processes kept "
        f"{r.busy_before:.0%} of them busy just before the run. The agents, the poller and "
        "anything else running share those CPUs, so the figures include queueing behind "
        f"{r.agents} single-threaded Python processes.",
        "",
    ]
    return lines
