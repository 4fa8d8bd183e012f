"""Policy RPC messages decode with checks, errors carry status and code, storage is a seam."""

from __future__ import annotations

import re
from typing import Any

import pytest

from peermesh.core.errors import PeermeshError
from peermesh.core.wire import WireError
from peermesh.policy.errors import (
    AuthorshipError,
    NoIdentity,
    NotAdmin,
    PolicyError,
    PolicyStoreCorrupt,
    UpdateRefused,
)
from peermesh.policy.loader import PolicyLoadError
from peermesh.policy.messages import (
    EditReply,
    EditRequest,
    PushReply,
    PushRequest,
    StatusReply,
    SyncReply,
    SyncRequest,
)
from peermesh.policy.storage import ReplayReport, Snapshot
from peermesh.policy.store import PolicyStore

NOW = 1_700_000_000.0


def route(name: str) -> dict[str, Any]:
    return {
        "kind": "Route",
        "name": name,
        "spec": {"host": name, "http": [{"route": [{"destination": {"host": name}}]}]},
    }


@pytest.mark.parametrize(
    "message",
    [
        PushRequest(b"\x00\x01", sender="node-a"),
        PushRequest(b"\x00\x01"),
        PushReply(version=3, digest="ab" * 32),
        SyncRequest(b"\x01\x02"),
        SyncReply(update=b"\x00\x00", sv=b"\x01"),
        SyncReply(update=b"\x00\x00"),
        StatusReply(3, "ab" * 32, "cd" * 8, 2, ("spiffe://mesh.test/svc/web",)),
        EditRequest((route("r"),)),
        EditReply(1, ("Route/r",), (), (("Route/r", "1:a:0123"),), (), "admin API"),
    ],
)
def test_messages_round_trip(message: Any) -> None:
    assert type(message).from_wire(message.to_wire()) == message


def test_a_bare_update_is_a_push_from_nobody() -> None:
    assert PushRequest.from_wire(b"\x00\x00") == PushRequest(b"\x00\x00", None)


@pytest.mark.parametrize(
    ("kind", "raw", "message"),
    [
        (PushRequest, "text", "policy/push body must carry a CRDT update (bytes)"),
        (PushRequest, {"update": "text"}, "policy/push body must carry a CRDT update (bytes)"),
        (PushRequest, {"update": b"", "from": 7}, "policy/push.from: expected text"),
        (SyncRequest, {"sv": "x"}, "policy/sync body must be {'sv': <state vector bytes>}"),
        (EditRequest, {"objects": {}}, "policy/edit body must be {'objects': [...]}"),
        (StatusReply, {"version": 1}, "field 'digest' is missing"),
        (SyncReply, {"update": 3}, "policy/sync reply.update: expected bytes"),
    ],
)
def test_malformed_bodies_are_refused_naming_the_problem(
    kind: Any, raw: object, message: str
) -> None:
    with pytest.raises(WireError, match=re.escape(message)) as e:
        kind.from_wire(raw)
    assert e.value.status == 400


def test_policy_errors_are_peermesh_errors_with_status_and_code() -> None:
    cases: list[tuple[PeermeshError, int, str]] = [
        (PolicyError("bad", kind="Route", name="r", path="spec"), 400, "invalid-policy"),
        (PolicyLoadError("broken", file="a.yaml", line=3), 400, "invalid-policy-file"),
        (UpdateRefused("node-b", "garbage"), 400, "update-refused"),
        (PolicyStoreCorrupt("damaged"), 500, "policy-store-corrupt"),
        (AuthorshipError("forged"), 400, "unauthentic-record"),
        (NoIdentity("no identity yet"), 503, "no-identity"),
        (NotAdmin("spiffe://mesh.test/svc/web", ["spiffe://mesh.test/svc/ops"]), 403, "not-admin"),
    ]
    for error, status, code in cases:
        assert isinstance(error, PeermeshError)
        assert (error.status, error.code) == (status, code), error
    shaped = PolicyError("bad", kind="Route", name="r", path="spec.http", hint="fix it")
    assert (shaped.kind, shaped.name, shaped.path, shaped.reason, shaped.hint) == (
        "Route",
        "r",
        "spec.http",
        "bad",
        "fix it",
    )
    assert str(shaped) == "Route/r: spec.http: bad (hint: fix it)"
    assert shaped.to_dict()["error"] == "invalid_policy"


class MemoryPersistence:
    """Storage that keeps its bytes in memory: the store cannot tell it from a disk."""

    snapshot_name = "memory snapshot"
    log_name = "memory log"

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None
        self.log: list[bytes] = []
        self.closed = False

    @property
    def log_size(self) -> int:
        return sum(len(r) for r in self.log)

    def load_snapshot(self) -> Snapshot | None:
        return self.snapshot

    def replay_log(self) -> tuple[list[bytes], ReplayReport]:
        return list(self.log), ReplayReport(len(self.log), self.log_size, None)

    def append(self, update: bytes) -> None:
        self.log.append(update)

    def save_snapshot(self, snapshot: Snapshot) -> None:
        self.snapshot, self.log = snapshot, []

    def close(self) -> None:
        self.closed = True


def test_the_store_persists_through_the_storage_it_is_given() -> None:
    storage = MemoryPersistence()
    store = PolicyStore(storage, node="a")
    store.apply([route("one")], now=NOW)
    assert len(storage.log) == 1  # appended before the edit was acknowledged
    store.compact()
    assert storage.snapshot is not None and storage.log == []
    store.apply([route("two")], now=NOW + 1)
    store.close()
    assert storage.closed
    restarted = PolicyStore(storage, node="a")
    assert {o.name for o in restarted.objects("Route")} == {"one", "two"}
    assert restarted.digest() == store.digest()
    assert restarted.journal_report == ReplayReport(1, storage.log_size, None)
