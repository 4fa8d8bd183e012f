"""The replicated store: whole-object writes, conflicts, history, durability, bad input."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Array, Doc, Map

import peermesh.policy.journal as journal_module
from peermesh.policy.crdt import VERSIONS_ROOT, decode_state_vector
from peermesh.policy.errors import PolicyStoreCorrupt, UpdateRefused
from peermesh.policy.persistence import DiskPersistence
from peermesh.policy.records import VersionRecord, content_hash
from peermesh.policy.store import PolicyStore
from peermesh.policy.validate import PolicyError, canonical_json, parse_object

NOW = 1_700_000_000.0


def traffic(name: str = "reviews", subsets: tuple[str, ...] = ("v1", "v2")) -> dict[str, Any]:
    return {
        "kind": "TrafficPolicy",
        "name": name,
        "spec": {
            "host": name,
            "subsets": [{"name": s, "labels": {"version": s}} for s in subsets],
        },
    }


def canary(v1: int, name: str = "reviews") -> dict[str, Any]:
    return {
        "kind": "Route",
        "name": name,
        "spec": {
            "host": name,
            "http": [
                {
                    "route": [
                        {"destination": {"host": name, "subset": "v1"}, "weight": v1},
                        {"destination": {"host": name, "subset": "v2"}, "weight": 100 - v1},
                    ]
                }
            ],
        },
    }


def plain(name: str, host: str | None = None) -> dict[str, Any]:
    host = host or name
    return {
        "kind": "Route",
        "name": name,
        "spec": {"host": host, "http": [{"route": [{"destination": {"host": host}}]}]},
    }


def sync(a: PolicyStore, b: PolicyStore) -> None:
    b.apply_update(a.diff_since(b.state_vector()), source=a.node)
    a.apply_update(b.diff_since(a.state_vector()), source=b.node)


def weights(s: PolicyStore, name: str = "reviews") -> list[int]:
    obj = s.get("Route", name)
    assert obj is not None and obj.kind == "Route"
    return [d.weight for d in obj.spec.http[0].route]  # type: ignore[union-attr]


# ---------------------------------------------------------------------------- writes


def test_objects_are_written_whole_and_arrive_in_one_transaction() -> None:
    a, b = PolicyStore(node="a"), PolicyStore(node="b")
    seen: list[frozenset[str]] = []
    b.subscribe(seen.append)
    report = a.apply([traffic(), canary(90)], now=NOW)
    assert report.changed == ("Route/reviews", "TrafficPolicy/reviews")
    records = a.records()
    assert len(records) == 2  # one CRDT entry (one JSON string) per object version
    assert all(key.startswith(("Route/reviews|", "TrafficPolicy/reviews|")) for key in records)
    result = b.apply_update(report.update, source="a")
    assert seen == [frozenset({"Route/reviews", "TrafficPolicy/reviews"})]
    assert result.changed == {"Route/reviews", "TrafficPolicy/reviews"}
    assert b.digest() == a.digest() and weights(b) == [90, 10]


def test_a_truncated_update_is_refused_not_half_applied() -> None:
    a, b = PolicyStore(node="a"), PolicyStore(node="b")
    update = a.apply([traffic(), canary(90)], now=NOW).update
    for cut in (1, len(update) // 3, len(update) // 2, len(update) - 1):
        with pytest.raises(UpdateRefused):
            b.apply_update(update[:cut], source="a")
        assert b.records() == {} and b.version == 0
    b.apply_update(update, source="a")  # the scratch copy was rebuilt: the real thing applies
    assert b.digest() == a.digest()


def test_everything_is_validated_before_anything_is_written() -> None:
    s = PolicyStore(node="a")
    bad = canary(95)
    bad["spec"]["http"][0]["route"][1]["weight"] = 10
    with pytest.raises(PolicyError) as info:
        s.apply([traffic(), plain("ok"), bad], now=NOW)
    assert info.value.path == "spec.http[0].route"
    assert s.records() == {} and s.version == 0
    with pytest.raises(PolicyError) as missing:
        s.apply([canary(90)], now=NOW)
    assert missing.value.reason == (
        "subset 'v1' is unknown: no TrafficPolicy defines subsets for host 'reviews'"
    )
    assert s.records() == {}


def test_unchanged_objects_are_not_rewritten() -> None:
    s = PolicyStore(node="a")
    s.apply([traffic()], now=NOW)
    report = s.apply([traffic()], now=NOW + 1)
    assert report.unchanged == ("TrafficPolicy/reviews",)
    assert report.edits == () and report.update == b"" and len(s.records()) == 1


def test_cross_object_checks_only_refuse_new_problems() -> None:
    a, b = PolicyStore(node="a"), PolicyStore(node="b")
    a.apply([traffic(), canary(90)], now=NOW)
    sync(a, b)
    with pytest.raises(PolicyError) as info:
        a.delete(["TrafficPolicy/reviews"], now=NOW)
    assert info.value.kind == "Route" and "subset 'v1' is unknown" in info.value.reason
    # Concurrently: a drops subset v2, b shifts all traffic to v2. Both are locally valid.
    only_v1 = plain("reviews")
    only_v1["spec"]["http"][0]["route"][0]["destination"]["subset"] = "v1"
    a.apply([traffic(subsets=("v1",)), only_v1], now=NOW)
    b.apply([canary(0)], now=NOW)
    sync(a, b)
    assert a.digest() == b.digest()
    assert any("subset 'v2'" in w for w in a.compiled().warnings)
    # The inconsistency came from replication; it must not block an unrelated edit.
    report = a.apply([plain("ratings")], now=NOW)
    assert report.changed == ("Route/ratings",)


def test_warnings_for_unknown_services_are_reported_but_allowed() -> None:
    s = PolicyStore(node="a")
    report = s.apply([plain("ghost")], now=NOW, known_services={"reviews"})
    assert [(w.code, w.path) for w in report.warnings] == [
        ("unknown-service", "spec.host"),
        ("unknown-service", "spec.http[0].route[0].destination.host"),
    ]
    assert str(report.warnings[0]) == "Route/ghost: spec.host: no agent fronts service 'ghost'"
    assert s.get("Route", "ghost") is not None


# ---------------------------------------------------------------------------- conflicts


def test_concurrent_conflicting_edits_converge_and_the_loser_is_in_history() -> None:
    a, b = PolicyStore(node="node-a"), PolicyStore(node="node-b")
    a.apply([traffic(), canary(90)], now=NOW)
    sync(a, b)
    edit_a = a.apply([canary(50)], now=NOW + 10).edits[0][1]
    edit_b = b.apply([canary(0)], now=NOW + 11).edits[0][1]
    sync(a, b)
    assert a.digest() == b.digest() and weights(a) == weights(b)
    # Same Lamport counter: the larger node name wins, on both replicas.
    assert weights(a) == [0, 100]
    for s in (a, b):
        history = s.history("Route", "reviews")
        assert [(h.edit_id, h.won) for h in history[:2]] == [(edit_b, True), (edit_a, False)]
        assert history[1].node == "node-a" and history[1].time == NOW + 10
        assert history[1].object is not None
        assert history[2].won is False and len(history) == 3
    # An edit made after seeing the others wins, whatever the node name.
    a.apply([canary(70)], now=NOW + 20)
    sync(a, b)
    assert weights(a) == weights(b) == [70, 30]


def test_deletes_are_tombstones_and_recreation_wins() -> None:
    a, b = PolicyStore(node="a"), PolicyStore(node="b")
    a.apply([plain("r")], now=NOW)
    sync(a, b)
    a.delete([("Route", "r")], now=NOW + 1)
    b.apply([plain("r", host="other")], now=NOW + 1)  # concurrent edit vs delete
    sync(a, b)
    assert a.digest() == b.digest()
    assert (a.get("Route", "r") is None) == (b.get("Route", "r") is None)
    winner = a.history("Route", "r")[0]
    assert winner.node == "b" and not winner.deleted  # same Lamport, "b" > "a"
    b.delete(["Route/r"], now=NOW + 2)
    sync(a, b)
    assert a.get("Route", "r") is None and "Route/r" not in a
    assert a.history("Route", "r")[0].deleted
    a.apply([plain("r")], now=NOW + 3)
    sync(a, b)
    assert b.get("Route", "r") is not None
    with pytest.raises(PolicyError) as info:
        a.delete(["Route/nope"], now=NOW)
    assert info.value.reason == "does not exist (or is already deleted)"


def test_history_is_bounded_and_pruning_converges() -> None:
    a = PolicyStore(node="a", history_limit=4)
    b = PolicyStore(node="b", history_limit=4)
    a.apply([traffic()], now=NOW)
    sync(a, b)
    for i in range(12):
        writer = a if i % 3 else b
        writer.apply([canary(i * 5)], now=NOW + i)
        if i % 2:
            sync(a, b)
    sync(a, b)
    sync(a, b)
    assert a.records() == b.records()
    for s in (a, b):
        history = s.history("Route", "reviews")
        assert len(history) <= 4 + 1  # a concurrent version may wait for the next local write
        assert history[0].won and weights(s) == [55, 45]
    a.apply([canary(60)], now=NOW + 99)
    sync(a, b)
    assert len(a.history("Route", "reviews")) == 4 == len(b.history("Route", "reviews"))
    assert a.records() == b.records()


def test_remote_updates_never_echo() -> None:
    a, b = PolicyStore(node="a"), PolicyStore(node="b")
    update = a.apply([plain("r")], now=NOW).update
    assert b.apply_update(update, source="a").new
    again = b.apply_update(update, source="a")
    assert not again.new and again.changed == frozenset()
    back = a.apply_update(b.diff_since(a.state_vector()), source="b")
    assert not back.new and a.version == 1


def test_lamport_clock_advances_past_observed_versions() -> None:
    a, b = PolicyStore(node="z"), PolicyStore(node="a")
    for i in range(5):
        a.apply([plain("r", host=f"h{i}")], now=NOW)
    sync(a, b)
    edit = b.apply([plain("r", host="mine")], now=NOW).edits[0][1]
    assert edit.startswith("6:a:")
    sync(a, b)
    obj = a.get("Route", "r")
    assert obj is not None and obj.spec.host == "mine"  # type: ignore[union-attr]


# ---------------------------------------------------------------------------- durability


def test_acknowledged_edits_survive_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "policy" / "store.bin"
    s = PolicyStore(DiskPersistence(path), node="a")
    s.apply([traffic(), canary(90)], now=NOW)
    s.apply([canary(80)], now=NOW + 1)
    s.delete(["Route/reviews"], now=NOW + 2)
    peer = PolicyStore(node="b")
    peer.apply([plain("from-peer")], now=NOW)
    s.apply_update(peer.diff_since(s.state_vector()), source="b")
    # "Crash": nothing is closed or flushed; a new process reads the file.
    restarted = PolicyStore(DiskPersistence(path), node="a")
    assert restarted.digest() == s.digest()
    assert restarted.records() == s.records()
    assert restarted.get("Route", "reviews") is None
    assert restarted.get("Route", "from-peer") is not None
    assert len(restarted.history("Route", "reviews")) == 3
    # The Lamport clock is recovered, so new edits still win over old ones.
    restarted.apply([canary(10)], now=NOW + 3)
    assert weights(restarted) == [10, 90]
    assert restarted.history("Route", "reviews")[0].lamport == 4


def test_an_edit_whose_write_fails_is_not_acknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "store.bin"
    s = PolicyStore(DiskPersistence(path), node="a")
    s.apply([plain("kept")], now=NOW)

    def disk_full(*_: object, **__: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(journal_module.os, "write", disk_full)
    with pytest.raises(OSError):
        s.apply([plain("lost")], now=NOW)
    monkeypatch.undo()
    restarted = PolicyStore(DiskPersistence(path), node="a")
    assert restarted.get("Route", "kept") is not None
    assert restarted.get("Route", "lost") is None


def test_a_corrupt_snapshot_refuses_to_start_with_advice(tmp_path: Path) -> None:
    path = tmp_path / "store.bin"
    first = PolicyStore(DiskPersistence(path), node="a")
    first.apply([plain("r")], now=NOW)
    first.compact()
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(PolicyStoreCorrupt, match=r"fails its checksum .* move .* aside"):
        PolicyStore(DiskPersistence(path), node="a")
    path.write_bytes(b"garbage")
    with pytest.raises(PolicyStoreCorrupt, match="not a peermesh policy snapshot"):
        PolicyStore(DiskPersistence(path), node="a")


# ---------------------------------------------------------------------------- bad input


def forged_update(victim: PolicyStore, write: Any) -> bytes:
    """An update made by a peer that writes raw entries into a copy of the victim's Doc."""
    evil = Doc()
    evil.apply_update(victim.full_update())
    write(evil)
    return evil.get_update(victim.state_vector())


def forged_record(doc: dict[str, Any], lamport: int = 99) -> tuple[str, str]:
    """A well-formed record (canonical body, matching hash and key) for any document."""
    try:
        body = canonical_json(parse_object(doc))
    except PolicyError:
        body = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    record = VersionRecord(
        doc["kind"], doc["name"], "evil", lamport, NOW, content_hash(body), False, body
    )
    return record.map_key, record.encode()


def loaded_store() -> PolicyStore:
    s = PolicyStore(node="victim")
    s.apply([traffic(), canary(90), plain("ratings")], now=NOW)
    return s


def assert_refused_and_intact(s: PolicyStore, update: bytes, reason: str) -> UpdateRefused:
    before = (s.records(), s.digest(), s.version)
    with pytest.raises(UpdateRefused) as info:
        s.apply_update(update, source="evil")
    assert reason in info.value.reason, info.value.reason
    assert (s.records(), s.digest(), s.version) == before
    # The store still accepts a good update afterwards.
    good = PolicyStore(node="good")
    good.apply([plain("later")], now=NOW)
    s.apply_update(good.diff_since(s.state_vector()), source="good")
    assert s.get("Route", "later") is not None
    return info.value


_VICTIM = loaded_store()
_VICTIM_STATE = (_VICTIM.records(), _VICTIM.digest())


@given(st.binary(min_size=0, max_size=300))
@settings(max_examples=120, deadline=None)
def test_random_bytes_from_a_peer_are_refused(blob: bytes) -> None:
    try:
        _VICTIM.apply_update(blob, source="evil")
    except UpdateRefused as refused:
        assert refused.source == "evil" and "refused" in str(refused)
    # Whatever the bytes, nothing stored is lost or changed.
    assert (_VICTIM.records(), _VICTIM.digest()) == _VICTIM_STATE
    assert _VICTIM.get("Route", "reviews") is not None


def test_an_invalid_object_in_an_update_is_refused() -> None:
    s = loaded_store()
    bad = copy.deepcopy(canary(90))
    bad["spec"]["http"][0]["route"][0]["weight"] = 95
    key, value = forged_record(bad)
    update = forged_update(s, lambda d: d.get(VERSIONS_ROOT, type=Map).__setitem__(key, value))
    refused = assert_refused_and_intact(s, update, "invalid object in entry")
    assert refused.error is not None
    assert refused.error.path == "spec.http[0].route"
    assert refused.to_dict()["policy_errors"][0]["reason"].startswith("weights add up to 105")


def test_a_ten_megabyte_object_is_refused_locally_and_from_peers() -> None:
    s = loaded_store()
    huge = plain("huge")
    huge["spec"]["http"][0]["headers"] = {"request": {"set": {"x-pad": "a" * 10_000_000}}}
    with pytest.raises(PolicyError) as info:
        s.apply([huge], now=NOW)
    assert info.value.reason.startswith("object too large")
    key, value = forged_record(huge)
    update = forged_update(s, lambda d: d.get(VERSIONS_ROOT, type=Map).__setitem__(key, value))
    assert len(update) > 10_000_000
    assert_refused_and_intact(s, update, "more than the")


def test_forged_hashes_keys_roots_and_types_are_refused() -> None:
    s = loaded_store()
    key, value = forged_record(plain("r"))
    tampered = value.replace('"host":"r"', '"host":"x"')
    assert_refused_and_intact(
        s,
        forged_update(s, lambda d: d.get(VERSIONS_ROOT, type=Map).__setitem__(key, tampered)),
        "content does not match its hash",
    )
    assert_refused_and_intact(
        s,
        forged_update(
            s, lambda d: d.get(VERSIONS_ROOT, type=Map).__setitem__("Route/x|1:a:b", value)
        ),
        "stored under the wrong key",
    )
    assert_refused_and_intact(
        s,
        forged_update(
            s, lambda d: d.get(VERSIONS_ROOT, type=Map).__setitem__(key, Map({"a": "b"}))
        ),
        "holds a Map",
    )
    assert_refused_and_intact(
        s,
        forged_update(s, lambda d: d.get("other", type=Array).append("x")),
        "unknown document roots ['other']",
    )
    assert_refused_and_intact(
        s,
        forged_update(s, lambda d: d.get(VERSIONS_ROOT, type=Map).__setitem__(key, "{not json")),
        "is not valid JSON",
    )
    assert_refused_and_intact(
        s,
        forged_update(s, lambda d: d.get(VERSIONS_ROOT, type=Map).__setitem__(key, "[" * 100_000)),
        "nested too deeply",
    )
    assert s.refused_updates == 6 and s.last_refusal is not None


def test_a_prune_arriving_before_newer_versions_keeps_the_winner(tmp_path: Path) -> None:
    # Every delta carries the sender's whole delete set, so C can learn that v1 was pruned
    # before it has the versions that justified pruning it.
    a = PolicyStore(node="a", history_limit=2)
    b = PolicyStore(node="b", history_limit=2)
    c = PolicyStore(DiskPersistence(tmp_path / "c.bin"), node="c", history_limit=2)
    a.apply([traffic(), canary(90)], now=NOW)
    for peer in (b, c):
        peer.apply_update(a.full_update(), source="a")
    b.apply([canary(80)], now=NOW + 1)
    b.apply([canary(70)], now=NOW + 2)  # prunes the 90/10 version
    unrelated = b.apply([plain("ratings")], now=NOW + 3).update
    result = c.apply_update(unrelated, source="b")
    assert result.pruned_versions == 1 and "Route/reviews" not in result.changed
    assert weights(c) == [90, 10]  # not lost, not reverted: the pruned winner stays in effect
    assert c.shadowed_winners == 1
    assert [h.won for h in c.history("Route", "reviews")] == [True]
    restarted = PolicyStore(DiskPersistence(tmp_path / "c.bin"), node="c", history_limit=2)
    assert weights(restarted) == [90, 10] and restarted.digest() == c.digest()
    for replica in (c, restarted):
        replica.apply_update(b.diff_since(replica.state_vector()), source="b")
        assert weights(replica) == [70, 30] and replica.digest() == b.digest()
        assert replica.records() == b.records()


def test_a_peer_deleting_a_winning_version_cannot_remove_it() -> None:
    s = loaded_store()
    s.apply([canary(50)], now=NOW + 1)
    winner = s.winner("Route", "reviews")
    assert winner is not None
    update = forged_update(s, lambda d: d.get(VERSIONS_ROOT, type=Map).pop(winner.map_key))
    result = s.apply_update(update, source="evil")  # deletions are accepted as pruning ...
    assert result.pruned_versions == 1 and result.changed == frozenset()
    assert weights(s) == [50, 50]  # ... but the winner stays until something newer arrives
    assert s.shadowed_winners == 1
    s.apply([canary(40)], now=NOW + 2)
    assert weights(s) == [40, 60] and s.history("Route", "reviews")[0].won


# ---------------------------------------------------------------------------- API details


def test_subscribers_run_after_commit_and_must_not_write() -> None:
    s = PolicyStore(node="a")
    calls: list[tuple[frozenset[str], int]] = []
    errors: list[Exception] = []

    def watcher(changed: frozenset[str]) -> None:
        calls.append((changed, s.version))
        try:
            s.apply([plain("nested")], now=NOW)
        except RuntimeError as exc:
            errors.append(exc)

    def broken(_: frozenset[str]) -> None:
        raise ValueError("subscriber bug")

    s.subscribe(broken)
    unsubscribe = s.subscribe(watcher)
    s.apply([plain("r")], now=NOW)
    assert calls == [(frozenset({"Route/r"}), 1)]
    assert "must not write" in str(errors[0]) and s.get("Route", "nested") is None
    unsubscribe()
    s.apply([plain("q")], now=NOW)
    assert len(calls) == 1


def test_sync_primitives_status_and_close() -> None:
    a = PolicyStore(node="a", client_id=42)
    a.apply([plain("r")], now=NOW)
    assert decode_state_vector(a.state_vector()) == {42: 1}
    assert len(a.diff_since(a.state_vector())) < 8
    with pytest.raises(ValueError, match="state vector"):
        a.diff_since(b"\xff\xff\xff")
    status = a.status()
    assert (status.objects, status.versions, status.version) == (1, 1, 1)
    assert status.digest == a.digest() and status.state_vector == {42: 1}
    compiled = a.compiled()
    assert compiled is a.compiled()  # cached per version
    a.close()
    with pytest.raises(RuntimeError, match="closed"):
        a.apply([plain("x")], now=NOW)


def test_edits_are_journaled_and_compacted_into_a_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "store.bin"
    s = PolicyStore(DiskPersistence(path), node="a")
    s.compact_after_bytes = 2000
    for i in range(30):
        s.apply([plain(f"r{i}")], now=NOW)
    log_path = tmp_path / "store.bin.log"
    assert path.exists(), "compaction wrote a snapshot"
    assert log_path.stat().st_size < 2000 + 1000
    assert (log_path.stat().st_mode & 0o777) == 0o600
    restarted = PolicyStore(DiskPersistence(path), node="a")
    assert {o.name for o in restarted.objects("Route")} == {f"r{i}" for i in range(30)}
    assert restarted.digest() == s.digest()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip"])
def test_a_corrupt_log_tail_is_reported_and_cut_without_losing_earlier_edits(
    tmp_path: Path, damage: str
) -> None:
    path = tmp_path / "store.bin"
    s = PolicyStore(DiskPersistence(path), node="a")
    for i in range(5):
        s.apply([plain(f"r{i}")], now=NOW)
    log_path = tmp_path / "store.bin.log"
    data = bytearray(log_path.read_bytes())
    if damage == "truncate":
        data = data[:-7]  # the last record is torn
    elif damage == "garbage":
        data += b"\x00\x00\x10\x00garbage"
    else:
        data[-3] ^= 0xFF  # a flipped bit in the last record
    log_path.write_bytes(bytes(data))
    restarted = PolicyStore(DiskPersistence(path), node="a")
    report = restarted.journal_report
    assert report is not None and report.corrupt_tail
    kept = {o.name for o in restarted.objects("Route")}
    expected = {f"r{i}" for i in range(5 if damage == "garbage" else 4)}
    assert kept == expected
    # The tail was cut: a new edit appends cleanly and survives another restart.
    restarted.apply([plain("after")], now=NOW)
    again = PolicyStore(DiskPersistence(path), node="a")
    assert again.journal_report is not None and again.journal_report.corrupt_tail is None
    assert {o.name for o in again.objects("Route")} == expected | {"after"}


def test_a_forged_huge_lamport_counter_is_refused(tmp_path: Path) -> None:
    """A peer that pushes a record with a near-overflow counter cannot wedge replication."""
    honest = PolicyStore(DiskPersistence(tmp_path / "a.bin"), node="a")
    honest.apply([plain("r")], now=NOW)
    forger = PolicyStore(node="evil")
    forger.apply_update(honest.full_update(), source="a")
    forger._index.lamport = 2**53 - 10  # as if a forged record had been accepted there
    report = forger.apply([plain("r", "other")], now=NOW)
    with pytest.raises(UpdateRefused, match="implausibly far ahead"):
        honest.apply_update(report.update, source="evil")
    honest.apply([plain("still-editable")], now=NOW)
    assert honest.get("Route", "still-editable") is not None
