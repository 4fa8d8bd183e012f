"""Policy replication benchmark: propagation time, document size and sync cost.

``python -m bench.policy`` prints tables and replaces its own section of
``docs/benchmarks.md``. Propagation is measured twice: with real :class:`PolicyStore`
replicas in one process over :mod:`peermesh.policy.sim` (virtual time, seeded; 100 and
1000 replicas), and with real agent processes on loopback (10 by default: gossip, mTLS,
the admin API; wall clock). Sizes and CPU times are measured on real stores. Every agent
process is stopped at the end, also on errors and Ctrl-C. Not a test: nothing here
asserts on speed.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
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
from certs.devca import init_dev_ca
from peermesh.core.durable import atomic_write
from peermesh.net.rpc.router import MAX_BODY as CONTROL_MAX_BODY
from peermesh.policy.compiled import compile_policy
from peermesh.policy.persistence import DiskPersistence
from peermesh.policy.records import clear_decode_cache
from peermesh.policy.sim import GossipConfig, LinkModel, SimMesh
from peermesh.policy.store import COMPACT_AFTER_BYTES, PolicyStore

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


# ---------------------------------------------------------------------------- workloads


def realistic(i: int) -> dict[str, Any]:
    """A mix like a real mesh: 70% Routes, 20% TrafficPolicies, 10% AuthorizationPolicies."""
    host = f"svc-{i:05d}"
    if i % 10 < 7:
        return {
            "kind": "Route",
            "name": host,
            "spec": {
                "host": host,
                "http": [
                    {
                        "name": "api",
                        "match": [
                            {"uri": {"prefix": "/api/"}, "headers": {"x-tenant": {"exact": "a"}}}
                        ],
                        "route": [{"destination": {"host": host}}],
                        "timeout": "2s",
                        "retries": {"attempts": 3, "perTryTimeout": "500ms", "retryOn": "5xx"},
                    },
                    {"name": "rest", "route": [{"destination": {"host": host}}], "timeout": "5s"},
                ],
            },
        }
    if i % 10 < 9:
        return {
            "kind": "TrafficPolicy",
            "name": host,
            "spec": {
                "host": host,
                "loadBalancer": {"simple": "P2C_EWMA"},
                "outlierDetection": {"consecutive5xxErrors": 5, "baseEjectionTime": "30s"},
                "connectionPool": {"tcp": {"maxConnections": 100}},
                "subsets": [
                    {"name": "v1", "labels": {"version": "v1"}},
                    {"name": "v2", "labels": {"version": "v2"}},
                ],
            },
        }
    return {
        "kind": "AuthorizationPolicy",
        "name": f"{host}-allow",
        "spec": {
            "service": host,
            "action": "ALLOW",
            "rules": [
                {
                    "from": [{"source": {"principals": [f"spiffe://mesh.local/svc/client-{i}"]}}],
                    "to": [{"operation": {"methods": ["GET", "POST"], "paths": ["/api/*"]}}],
                }
            ],
        },
    }


# ---------------------------------------------------------------------------- propagation


@dataclass(frozen=True)
class PropagationResult:
    replicas: int
    mode: str
    edits: int
    all_p50: float
    all_p99: float
    each_p50: float
    each_p99: float
    reached: int
    bytes_per_replica_s: float
    msgs_per_replica_s: float
    push_bytes_per_edit: float
    cpu_s: float


def propagation(
    replicas: int, edits: int, gossip: GossipConfig, mode: str, seed: int, link: LinkModel
) -> PropagationResult:
    started = time.process_time()
    mesh = SimMesh(replicas, seed=seed, link=link, gossip=gossip)
    rng = random.Random(seed)
    try:
        mesh.run_for(1.0)  # let anti-entropy timers spread out
        t0, bytes0, msgs0 = mesh.now, mesh.stats.bytes, mesh.stats.messages
        ids: list[tuple[str, int]] = []  # (edit id, origin replica)
        for i in range(edits):
            origin = rng.randrange(replicas)
            report = mesh.edit(origin, [realistic(i)])
            ids.append((report.edits[0][1], origin))
            mesh.run_for(0.1)
        mesh.run_until_everywhere([edit_id for edit_id, _ in ids], timeout=30.0)
        duration = mesh.now - t0
        to_all: list[float] = []
        each: list[float] = []
        reached = 0
        for edit_id, origin in ids:
            times = mesh.propagation(edit_id)
            if len(times) == replicas:
                reached += 1
                to_all.append(max(times.values()))
            each.extend(t for replica, t in times.items() if replica != origin)
        push = mesh.stats.by_kind.get("push", [0, 0])[1]
        return PropagationResult(
            replicas=replicas,
            mode=mode,
            edits=edits,
            all_p50=percentile(to_all, 50),
            all_p99=percentile(to_all, 99),
            each_p50=percentile(each, 50),
            each_p99=percentile(each, 99),
            reached=reached,
            bytes_per_replica_s=(mesh.stats.bytes - bytes0) / replicas / duration,
            msgs_per_replica_s=(mesh.stats.messages - msgs0) / replicas / duration,
            push_bytes_per_edit=push / edits,
            cpu_s=time.process_time() - started,
        )
    finally:
        mesh.close()


# ---------------------------------------------------------------------------- real agents

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
    """The agent command line of tests/test_membership.py (gossip on loopback, no mDNS)."""
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
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10.0)
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


# ---------------------------------------------------------------------------- growth


@dataclass(frozen=True)
class GrowthResult:
    objects: int
    versions: int
    doc_bytes: int
    state_vector_bytes: int
    edit_delta_bytes: int
    in_sync_bytes: int
    full_apply_ms: float
    edit_ms: float
    edit_disk_ms: float
    remote_edit_ms: float
    compile_ms: float
    recompile_ms: float


def _ms(start: float) -> float:
    """Wall milliseconds since ``start`` (``time.perf_counter``): for work that waits (fsync)."""
    return (time.perf_counter() - start) * 1000


def _cpu_ms(start: float) -> float:
    """CPU milliseconds since ``start`` (``time.process_time``): robust on a shared machine."""
    return (time.process_time() - start) * 1000


def growth(sizes: Sequence[int], batch: int = 500) -> list[GrowthResult]:
    results: list[GrowthResult] = []
    store = PolicyStore(node="bench")
    peer = PolicyStore(node="peer")
    count = 0
    with tempfile.TemporaryDirectory() as tmp:
        for target in sizes:
            while count < target:
                upto = min(target, count + batch)
                report = store.apply([realistic(i) for i in range(count, upto)], now=NOW)
                peer.apply_update(report.update, source="bench")
                count = upto
            # Give every tenth object a second version, as a history would.
            edited = [realistic(i) for i in range(0, count, 10)]
            for doc in edited:
                if doc["kind"] == "Route":
                    doc["spec"]["http"][1]["timeout"] = "6s"
                elif doc["kind"] == "TrafficPolicy":
                    doc["spec"]["connectionPool"]["tcp"]["maxConnections"] = 200
            report = store.apply(edited, now=NOW + 1)
            peer.apply_update(report.update, source="bench")
            full = store.full_update()
            fresh = PolicyStore(node="fresh")
            clear_decode_cache()  # a joining agent has validated none of these records
            start = time.process_time()
            fresh.apply_update(full, source="bench")
            full_apply = _cpu_ms(start)
            fresh.close()
            edit_times: list[float] = []
            remote_times: list[float] = []
            delta = b""
            for k in range(SAMPLES):
                one = realistic((10 * k + 1) % count)  # an existing Route (i % 10 == 1)
                one["spec"]["http"][0]["timeout"] = f"{count * 100 + k + 7}ms"  # never a repeat
                start = time.process_time()
                delta = store.apply([one], now=NOW + 2).update
                edit_times.append(_cpu_ms(start))
                start = time.process_time()
                peer.apply_update(delta, source="bench")
                remote_times.append(_cpu_ms(start))
            state = peer.state_vector()
            in_sync = len(state) + len(store.diff_since(state))
            disk = PolicyStore(DiskPersistence(Path(tmp) / f"store-{count}.bin"), node="disk")
            disk.apply_update(store.full_update(), source="bench")
            disk_times: list[float] = []
            for k in range(DISK_SAMPLES):
                one = realistic((10 * k + 1) % count)
                one["spec"]["http"][0]["timeout"] = f"{90000 + count + k}ms"
                start = time.perf_counter()
                disk.apply([one], now=NOW + 3)
                disk_times.append(_ms(start))
            disk.close()
            objects = store.objects()
            start = time.process_time()
            compile_policy(objects)
            compile_ms = _cpu_ms(start)
            store.compiled()  # warm: the table the proxy holds
            one = realistic(1)
            one["spec"]["http"][0]["timeout"] = f"{count + 3}s"
            peer.apply_update(store.apply([one], now=NOW + 4).update, source="bench")
            start = time.process_time()
            store.compiled()
            recompile_ms = _cpu_ms(start)
            status = store.status()
            results.append(
                GrowthResult(
                    objects=status.objects,
                    versions=status.versions,
                    doc_bytes=len(store.full_update()),
                    state_vector_bytes=len(store.state_vector()),
                    edit_delta_bytes=len(delta),
                    in_sync_bytes=in_sync,
                    full_apply_ms=full_apply,
                    edit_ms=statistics.median(edit_times),
                    edit_disk_ms=statistics.median(disk_times),
                    remote_edit_ms=statistics.median(remote_times),
                    compile_ms=compile_ms,
                    recompile_ms=recompile_ms,
                )
            )
            print(f"  measured {count} objects", file=sys.stderr)
    store.close()
    peer.close()
    return results


# ---------------------------------------------------------------------------- output


def _fmt_s(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _kib(size: float) -> str:
    return f"{size / 1024:,.1f} KiB" if size >= 1024 else f"{size:.0f} B"


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
        f"| {r.agents} | {r.edits}{reached} | {_fmt_s(percentile(r.ack, 50))} / "
        f"{_fmt_s(percentile(r.ack, 99))} | {_fmt_s(percentile(r.to_all, 50))} | "
        f"{_fmt_s(p99_all)} | {_fmt_s(percentile(r.to_first, 50))} | "
        f"{_fmt_s(percentile(r.to_first, 99))} | {_fmt_s(percentile(r.per_agent, 50))} | "
        f"{_fmt_s(percentile(r.per_agent, 99))} | {r.pushes / per_agent_s:.1f} pushes/s, "
        f"{r.syncs / per_agent_s:.1f} syncs/s, {_kib(r.sent_bytes / per_agent_s)}/s |",
        "",
        f"Steering target (p99 ≤ 1 s to every reachable node): **{'met' if met else 'not met'}**"
        f" (p99 to all {_fmt_s(p99_all)}).",
        "",
        f"* Startup: every agent answered `/readyz` {r.startup_s:.1f} s after the processes "
        f"were started; gossip membership had converged (all {r.agents} alive everywhere) "
        f"{r.membership_s:.1f} s later. The {len(r.warmup_to_all)} warm-up edits reached all "
        f"agents in p50 {_fmt_s(percentile(r.warmup_to_all, 50))}, max "
        f"{_fmt_s(max(r.warmup_to_all, default=math.nan))}.",
        f"* Replication counters over each agent's whole life ({r.lifetime_s:.0f} s): "
        f"{r.pushes} pushes ({r.pushes_failed} failed), {r.syncs} anti-entropy syncs, "
        f"{_kib(r.sent_bytes)} of CRDT updates sent (payload only, without msgpack, HTTP/2 "
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


def render(
    prop: list[PropagationResult],
    grow: list[GrowthResult],
    link: LinkModel,
    gossip: GossipConfig,
    seed: int,
    agents: AgentsResult | None = None,
) -> str:
    lines = [
        "## Policy replication (`python -m bench.policy`)",
        "",
        f"In-process replicas (real `PolicyStore`s, one pycrdt Doc each) over the simulated "
        f"network of `peermesh.policy.sim`, virtual time, seed {seed}. Each link gets a base "
        f"latency uniform in [{link.min_latency * 1000:.0f}, {link.max_latency * 1000:.0f}] ms, "
        f"every message ±{link.jitter:.0%} jitter and {link.loss:.0%} loss. "
        "Each edit is a new realistic object (Route, TrafficPolicy or AuthorizationPolicy) "
        "written on a random replica; edits start every 100 ms.",
        "",
        f"* **push + anti-entropy** (the default): the origin pushes the edit's delta to "
        f"{gossip.push_fanout} random peers at once; a replica that learns something from a "
        f"push forwards it to {gossip.forward_fanout} more (once per delta). Every "
        f"{gossip.interval * 1000:.0f} ms each replica also runs anti-entropy with "
        f"{gossip.peers_per_round} random peer (state vector → missing diff, both ways); "
        "agents use the same fanouts and an interval of 1 s jittered to 0.5 to 1.5 s.",
        "* **anti-entropy only**: no pushes, just the periodic exchange above.",
        "",
        "Propagation is virtual time from the edit until a replica has applied it; "
        "CPU (validation, merge) is not charged to virtual time and is reported apart "
        "(`remote edit` below). Steering target: p99 ≤ 1 s to every reachable node.",
        "",
        "| replicas | gossip | edits | p50 to all | p99 to all | p50 per replica | "
        "p99 per replica | traffic per replica | push bytes per edit | bench CPU |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in prop:
        reached = "" if r.reached == r.edits else f" ({r.reached} reached all)"
        lines.append(
            f"| {r.replicas} | {r.mode} | {r.edits}{reached} | {_fmt_s(r.all_p50)} | "
            f"{_fmt_s(r.all_p99)} | {_fmt_s(r.each_p50)} | {_fmt_s(r.each_p99)} | "
            f"{r.msgs_per_replica_s:.1f} msg/s, {_kib(r.bytes_per_replica_s)}/s | "
            f"{_kib(r.push_bytes_per_edit)} | {r.cpu_s:.1f} s |"
        )
    lines.append("")
    if agents is not None:
        lines += render_agents(agents)
    lines += [
        "### Document size and sync cost as policy grows",
        "",
        "One store filled with the same mix, every tenth object edited once more (so history "
        "holds a second version). *doc* is the whole pycrdt update (what a new replica "
        "downloads and what the snapshot file holds; *full sync apply* is a new replica "
        "validating and merging all of it); *in-sync exchange* is state vector + "
        "the empty diff two converged replicas trade each anti-entropy round; *edit* is a "
        "local one-object edit (validation, cross-checks, CRDT write), in memory and on disk "
        "(the edit's update appended to the journal and fsynced before acknowledging); "
        "*remote edit* is applying that edit's delta on a peer (scratch-copy validation + "
        "merge); *compile* builds the routing/authorization tables from scratch, "
        "*recompile* after one edit (compiled "
        "matchers of unchanged objects are reused). Times are process CPU time (medians of "
        f"{SAMPLES} edits), except *edit (disk)*: wall clock, median of {DISK_SAMPLES}, "
        f"including the fsyncs. The machine ({os.cpu_count()} CPUs) was shared with other "
        "workloads, so wall-clock figures are pessimistic.",
        "",
        "| objects | versions | doc | per object | state vector | one-edit delta | "
        "in-sync exchange | full sync apply | edit (memory) | edit (disk) | remote edit | "
        "compile | recompile |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for g in grow:
        over = " ⚠" if g.doc_bytes > CONTROL_MAX_BODY else ""
        lines.append(
            f"| {g.objects:,} | {g.versions:,} | {_kib(g.doc_bytes)}{over} | "
            f"{g.doc_bytes / g.objects:.0f} B | {g.state_vector_bytes} B | "
            f"{_kib(g.edit_delta_bytes)} | {_kib(g.in_sync_bytes)} | {g.full_apply_ms:.0f} ms | "
            f"{g.edit_ms:.1f} ms | {g.edit_disk_ms:.1f} ms | {g.remote_edit_ms:.2f} ms | "
            f"{g.compile_ms:.0f} ms | {g.recompile_ms:.0f} ms |"
        )
    lines += [
        "",
        "Notes: durability appends each acknowledged edit's update to the journal and "
        "fsyncs it, so *edit (disk)* barely depends on the document size; the journal is "
        f"folded into the snapshot (atomic rename) once it passes "
        f"{COMPACT_AFTER_BYTES >> 20} MiB. The in-sync exchange includes the delete set "
        "(pruned history), which Yjs always sends.",
        "",
        f"⚠ marks a document larger than the control-RPC body limit "
        f"({CONTROL_MAX_BODY >> 20} MiB, `peermesh.net.rpc.router.MAX_BODY`). Anti-entropy "
        "sends everything a peer lacks as one reply (and pushes as one body), so an agent "
        "that lacks more than that (a new agent, or one that missed that much) cannot catch "
        "up from its peers; the simulation above does not model this limit.",
    ]
    return "\n".join(lines) + "\n"


def write_section(section: str, path: Path = DOC) -> None:
    """Replace our marked section of ``docs/benchmarks.md`` (append it if absent)."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    block = f"{START}\n{section}{END}\n"
    if START in text and END in text and text.index(START) < text.index(END):
        before = text[: text.index(START)]
        after = text[text.index(END) + len(END) :].lstrip("\n")
        text = before + block + ("\n" + after if after else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    atomic_write(path, text.encode("utf-8"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--replicas", default="100,1000", help="comma-separated mesh sizes")
    parser.add_argument("--edits", type=int, default=60, help="edits per propagation run")
    parser.add_argument("--sizes", default="100,1000,10000", help="policy sizes to measure")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-ae-only", action="store_true", help="skip anti-entropy-only runs")
    parser.add_argument(
        "--ae-interval",
        type=float,
        default=1.0,
        help="simulated anti-entropy interval, s (agents: 1 s, jittered 0.5-1.5 s)",
    )
    parser.add_argument(
        "--agents", type=int, default=10, help="real agent processes on loopback (0: skip)"
    )
    parser.add_argument("--agent-edits", type=int, default=50, help="edits timed on the agents")
    parser.add_argument("--poll-ms", type=float, default=20.0, help="agent polling interval")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)

    link = LinkModel()
    default = GossipConfig(interval=args.ae_interval)
    ae_only = GossipConfig(interval=args.ae_interval, push_fanout=0, forward=False)
    prop: list[PropagationResult] = []
    for size in (int(s) for s in args.replicas.split(",") if s):
        modes = [("push + anti-entropy", default)]
        if not args.no_ae_only:
            modes.append(("anti-entropy only", ae_only))
        for mode, gossip in modes:
            print(f"  propagating over {size} replicas ({mode}) ...", file=sys.stderr)
            prop.append(propagation(size, args.edits, gossip, mode, args.seed, link))
    agents: AgentsResult | None = None
    if args.agents > 0:
        agents = real_agents(args.agents, args.agent_edits, args.poll_ms / 1000, args.seed)
    grow = growth([int(s) for s in args.sizes.split(",") if s])
    section = render(prop, grow, link, default, args.seed, agents)
    print(section)
    if not args.no_write:
        write_section(section)
        print(f"wrote {DOC}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
