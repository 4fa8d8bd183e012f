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
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.policy_agents import AgentsResult, fmt_ms, kib, percentile, real_agents, render_agents
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
            f"| {r.replicas} | {r.mode} | {r.edits}{reached} | {fmt_ms(r.all_p50)} | "
            f"{fmt_ms(r.all_p99)} | {fmt_ms(r.each_p50)} | {fmt_ms(r.each_p99)} | "
            f"{r.msgs_per_replica_s:.1f} msg/s, {kib(r.bytes_per_replica_s)}/s | "
            f"{kib(r.push_bytes_per_edit)} | {r.cpu_s:.1f} s |"
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
            f"| {g.objects:,} | {g.versions:,} | {kib(g.doc_bytes)}{over} | "
            f"{g.doc_bytes / g.objects:.0f} B | {g.state_vector_bytes} B | "
            f"{kib(g.edit_delta_bytes)} | {kib(g.in_sync_bytes)} | {g.full_apply_ms:.0f} ms | "
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
