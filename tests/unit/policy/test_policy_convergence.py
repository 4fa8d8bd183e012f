"""Convergence: random edits, deletes, delivery order, duplication and loss, then full sync.

The stateful test drives several real stores through a hand-held network (hypothesis picks
which message is delivered, duplicated or lost); after a full sync every replica must hold
the same document, the same digest and the same compiled routing table, and each object's
winner must be the highest-ranked edit ever acknowledged for it. The simulated-mesh tests
check the same across partitions.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from peermesh.policy.crdt import decode_state_vector
from peermesh.policy.errors import UpdateRefused
from peermesh.policy.sim import GossipConfig, LinkModel, SimMesh
from peermesh.policy.store import PolicyStore
from peermesh.policy.validate import PolicyError, parse_object

REPLICAS = 3
HISTORY = 2
NOW = 1_700_000_000.0


def _route(
    name: str, host: str, subset: str | None = None, timeout: str | None = None
) -> dict[str, Any]:
    dest: dict[str, Any] = {"host": host}
    if subset:
        dest["subset"] = subset
    rule: dict[str, Any] = {"route": [{"destination": dest}]}
    if timeout:
        rule["timeout"] = timeout
    return {"kind": "Route", "name": name, "spec": {"host": host, "http": [rule]}}


def _traffic(subsets: tuple[str, ...]) -> dict[str, Any]:
    return {
        "kind": "TrafficPolicy",
        "name": "svc",
        "spec": {
            "host": "svc",
            "subsets": [{"name": s, "labels": {"version": s}} for s in subsets],
        },
    }


DOCS: list[dict[str, Any]] = [
    _route("r1", "svc"),
    _route("r1", "svc", timeout="1s"),
    _route("r1", "svc", subset="v1"),
    _route("r1", "svc", subset="v2"),
    _route("r2", "other"),
    _route("r2", "other", timeout="2s"),
    _traffic(("v1", "v2")),
    _traffic(("v1",)),
    _traffic(("v2",)),
    {
        "kind": "AuthorizationPolicy",
        "name": "az",
        "spec": {
            "service": "svc",
            "action": "DENY",
            "rules": [{"to": [{"operation": {"methods": ["POST"]}}]}],
        },
    },
    {
        "kind": "AuthorizationPolicy",
        "name": "az",
        "spec": {"service": "svc", "action": "ALLOW", "rules": [{}]},
    },
    {"kind": "MeshConfig", "name": "default", "spec": {"defaultInboundPolicy": "DENY"}},
    {"kind": "MeshConfig", "name": "default", "spec": {"mtls": {"mode": "PERMISSIVE"}}},
]
KEYS = sorted({f"{d['kind']}/{d['name']}" for d in DOCS})


def full_sync(stores: list[PolicyStore]) -> None:
    """Every replica sends every other what it lacks, twice over: no message is lost."""
    for _ in range(2):
        for a in stores:
            for b in stores:
                if a is not b:
                    b.apply_update(a.diff_since(b.state_vector()), source=a.node)


def assert_identical(stores: list[PolicyStore]) -> None:
    first = stores[0]
    for other in stores[1:]:
        assert other.records() == first.records()
        assert decode_state_vector(other.state_vector()) == decode_state_vector(
            first.state_vector()
        )
        assert other.digest() == first.digest()
        assert other.objects() == first.objects()
        assert other.compiled() == first.compiled()
        assert other.compiled().describe() == first.compiled().describe()
    assert all(store.status().shadowed == 0 for store in stores)


class PolicyReplication(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.stores = [
            PolicyStore(node=f"node-{i}", history_limit=HISTORY, client_id=i + 1)
            for i in range(REPLICAS)
        ]
        self.inflight: list[tuple[int, int, bytes]] = []  # (source, destination, update)
        self.clock = 0.0
        self.acknowledged: dict[
            str, list[tuple[int, str, str]]
        ] = {}  # key -> (lamport, node, edit)

    def _record(self, replica: int, edits: tuple[tuple[str, str], ...], update: bytes) -> None:
        for key, edit_id in edits:
            lamport, node, _ = edit_id.split(":")
            self.acknowledged.setdefault(key, []).append((int(lamport), node, edit_id))
        for other in range(REPLICAS):
            if other != replica and update:
                self.inflight.append((replica, other, update))

    @rule(replica=st.integers(0, REPLICAS - 1), doc=st.sampled_from(DOCS))
    def edit(self, replica: int, doc: dict[str, Any]) -> None:
        self.clock += 1
        try:
            report = self.stores[replica].apply([doc], now=NOW + self.clock)
        except PolicyError:
            return  # locally refused (e.g. a subset this replica does not know): fine
        self._record(replica, report.edits, report.update)

    @rule(replica=st.integers(0, REPLICAS - 1), key=st.sampled_from(KEYS))
    def delete(self, replica: int, key: str) -> None:
        store = self.stores[replica]
        if key not in store:
            return
        self.clock += 1
        try:
            report = store.delete([key], now=NOW + self.clock)
        except PolicyError:
            return  # e.g. a TrafficPolicy still referenced by a Route here
        self._record(replica, report.edits, report.update)

    @precondition(lambda self: bool(self.inflight))
    @rule(data=st.data(), duplicate=st.booleans())
    def deliver(self, data: st.DataObject, duplicate: bool) -> None:
        index = data.draw(st.integers(0, len(self.inflight) - 1), label="message")
        source, destination, update = self.inflight[index]
        if not duplicate:
            del self.inflight[index]
        try:
            self.stores[destination].apply_update(update, source=f"node-{source}")
        except UpdateRefused as exc:  # never expected from honest peers
            raise AssertionError(f"honest update refused: {exc}") from exc

    @precondition(lambda self: bool(self.inflight))
    @rule(data=st.data())
    def lose(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.inflight) - 1), label="message")
        del self.inflight[index]

    @rule(a=st.integers(0, REPLICAS - 1), b=st.integers(0, REPLICAS - 1))
    def anti_entropy(self, a: int, b: int) -> None:
        if a != b:
            src, dst = self.stores[a], self.stores[b]
            dst.apply_update(src.diff_since(dst.state_vector()), source=src.node)

    @invariant()
    def each_replica_is_self_consistent(self) -> None:
        for store in self.stores:
            for key in KEYS:
                kind, name = key.split("/")
                history = store.history(kind, name)
                obj = store.get(kind, name)
                if not history:
                    assert obj is None
                    continue
                winner = history[0]
                assert winner.won and not any(h.won for h in history[1:])
                assert (obj is None) == winner.deleted
                if obj is not None:
                    assert obj == winner.object == parse_object(obj.to_dict())
            store.compiled()  # never raises, whatever mix of objects replication produced

    @rule()
    def sync_everything_and_compare(self) -> None:
        self.inflight.clear()
        full_sync(self.stores)
        assert_identical(self.stores)
        for key, edits in self.acknowledged.items():
            kind, name = key.split("/")
            ranked = sorted(edits, reverse=True)
            history = self.stores[0].history(kind, name)
            # The winner is the highest-ranked edit ever acknowledged, everywhere ...
            assert history[0].edit_id == ranked[0][2]
            # ... and the top of the history (never pruned) holds every such edit.
            kept = {h.edit_id for h in history}
            assert {e for _, _, e in ranked[:HISTORY]} <= kept
            event("history pruned" if len(kept) < len(edits) else "history complete")

    def teardown(self) -> None:
        self.sync_everything_and_compare()
        for store in self.stores:
            store.close()


PolicyReplication.TestCase.settings = settings(
    max_examples=35,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPolicyReplication = PolicyReplication.TestCase


# ---------------------------------------------------------------------------- simulated mesh


def test_partitioned_mesh_keeps_both_sides_edits_and_converges_on_heal() -> None:
    mesh = SimMesh(5, seed=7, link=LinkModel(loss=0.05))
    try:
        mesh.edit(0, [_route("shared", "svc")])
        mesh.run_for(2.0)
        assert mesh.converged()
        mesh.partition({0, 1, 2}, {3, 4})
        left = mesh.edit(0, [_route("shared", "left")])
        right = mesh.edit(4, [_route("shared", "right")])
        only_left = mesh.edit(1, [_route("left-only", "l")])
        only_right = mesh.edit(3, [_route("right-only", "r")])
        mesh.run_for(3.0)
        assert not mesh.converged()
        assert mesh.replicas[2].get("Route", "left-only") is not None
        assert mesh.replicas[2].get("Route", "right-only") is None
        mesh.heal()
        assert mesh.run_until_converged(timeout=5.0)
        winner_ids = {r.winner("Route", "shared").edit_id for r in mesh.replicas}  # type: ignore[union-attr]
        assert len(winner_ids) == 1
        for store in mesh.replicas:
            history = {h.edit_id for h in store.history("Route", "shared")}
            assert {left.edits[0][1], right.edits[0][1]} <= history
            assert store.get("Route", "left-only") is not None
            assert store.get("Route", "right-only") is not None
        assert only_left.edits and only_right.edits
        assert len({r.compiled().describe().__repr__() for r in mesh.replicas}) == 1
    finally:
        mesh.close()


def test_simulation_is_deterministic_and_reaches_everyone_despite_loss() -> None:
    def run() -> dict[int, float]:
        mesh = SimMesh(30, seed=3, link=LinkModel(loss=0.2), gossip=GossipConfig(push_fanout=2))
        try:
            report = mesh.edit(5, [_route("r", "svc")])
            edit_id = report.edits[0][1]
            assert mesh.run_until_everywhere([edit_id], timeout=10.0)
            assert mesh.converged()
            return mesh.propagation(edit_id)
        finally:
            mesh.close()

    first = run()
    assert len(first) == 30 and first[5] == 0.0
    assert run() == first


def test_anti_entropy_alone_repairs_what_pushes_never_sent() -> None:
    mesh = SimMesh(12, seed=11, gossip=GossipConfig(push_fanout=0, forward=False))
    try:
        report = mesh.edit(0, [_route("r", "svc")])
        assert mesh.run_until_everywhere([report.edits[0][1]], timeout=10.0)
        assert mesh.stats.by_kind.get("push") is None
        assert mesh.converged()
    finally:
        mesh.close()
