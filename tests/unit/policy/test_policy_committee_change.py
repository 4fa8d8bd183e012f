"""The ``CommitteeChange`` kind: a bounded, validated record that nothing compiles."""

from __future__ import annotations

from typing import Any

import pytest

from peermesh.policy.compiled import compile_policy
from peermesh.policy.model import CommitteeChange, CommitteeChangeKind
from peermesh.policy.store import PolicyStore
from peermesh.policy.validate import check_object, parse_object


def _record(name: str = "epoch-3", **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "change": "Refresh",
        "epoch": 3,
        "threshold": 2,
        "members": ["node-4", "node-1"],
        "removed": ["node-3"],
    }
    return {"kind": "CommitteeChange", "name": name, "spec": {**base, **spec}}


def test_a_record_round_trips_with_its_members_sorted() -> None:
    obj = parse_object(_record())
    assert isinstance(obj, CommitteeChange) and obj.key == "CommitteeChange/epoch-3"
    assert obj.spec.change is CommitteeChangeKind.REFRESH
    assert obj.spec.members == ("node-1", "node-4") and obj.spec.removed == ("node-3",)
    assert parse_object(obj.to_dict()) == obj


@pytest.mark.parametrize(
    ("doc", "path", "reason"),
    [
        (_record("epoch-2"), "name", "is named 'epoch-3'"),
        (_record(change="Revoke"), "spec.change", "is not one of Refresh, Enroll"),
        (_record(epoch=0, name="epoch-0"), "spec.epoch", "out of range"),
        (_record(threshold=3), "spec.threshold", "more than the 2 members"),
        (_record(members=[]), "spec.members", "at least 1"),
        (_record(members=["node-1", "node-1"]), "spec.members[1]", "listed twice"),
        (_record(members=["bad name"]), "spec.members[0]", "not a valid node name"),
        (_record(added=["node-9"]), "spec.added", "not among the members"),
        (_record(removed=["node-1"]), "spec.removed", "still among the members"),
        (_record(members=[f"n{i}" for i in range(300)], threshold=2), "spec.members", "limit"),
        (_record(command="drop node-1"), "spec.command", "unknown field"),
    ],
)
def test_bad_records_are_refused_with_the_field(doc: Any, path: str, reason: str) -> None:
    obj, errors = check_object(doc)
    assert obj is None
    assert any(e.path == path and reason in e.reason for e in errors), [
        (e.path, e.reason) for e in errors
    ]


def test_a_record_compiles_to_nothing_and_keeps_its_history() -> None:
    assert compile_policy([parse_object(_record())]) == compile_policy([])
    with PolicyStore(node="node-1") as store:
        store.apply([_record()], now=1000.0)
        [entry] = store.history("CommitteeChange", "epoch-3")
        assert entry.node == "node-1" and entry.time == 1000.0 and entry.won
