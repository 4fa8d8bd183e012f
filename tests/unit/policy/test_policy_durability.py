"""The policy store on a failing or damaged disk: never ack what is not durable, never
drop acknowledged edits quietly, and a safe way out when the files are damaged."""

from __future__ import annotations

import datetime as dt
import errno
import struct
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import peermesh.policy.journal as journal_module
from peermesh.cli.policy import policy as policy_group
from peermesh.core.durable import StorageFailed, atomic_write
from peermesh.policy.journal import HEADER, Journal, JournalCorrupt
from peermesh.policy.persistence import DiskPersistence
from peermesh.policy.recovery import check, recover
from peermesh.policy.store import PolicyStore
from tests.support.disk import fill, small_tmpfs

NOW = 1_700_000_000.0


def plain(name: str) -> dict[str, Any]:
    return {
        "kind": "Route",
        "name": name,
        "spec": {"host": name, "http": [{"route": [{"destination": {"host": name}}]}]},
    }


def names(store: PolicyStore) -> set[str]:
    return {o.name for o in store.objects("Route")}


def store_with(path: Path, count: int) -> PolicyStore:
    store = PolicyStore(DiskPersistence(path), node="a")
    for i in range(count):
        store.apply([plain(f"r{i}")], now=NOW)
    return store


def record_offsets(log: Path) -> list[int]:
    data, offsets, offset = log.read_bytes(), [], 0
    while offset < len(data):
        offsets.append(offset)
        length, _ = HEADER.unpack_from(data, offset)
        offset += HEADER.size + length
    return offsets


# ------------------------------------------------------------------ failed writes


@pytest.mark.parametrize("failing", ["write", "fsync"])
def test_a_failed_append_is_cut_back_rolled_back_and_the_next_one_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    path = tmp_path / "policy.bin"
    store = store_with(path, 2)
    log = tmp_path / "policy.bin.log"
    good = log.stat().st_size
    before = (store.digest(), store.records())
    real_write = journal_module.os.write

    def half_then_eio(fd: int, data: Any) -> int:
        real_write(fd, bytes(data)[:10])  # a partial record reaches the file first
        raise OSError(errno.EIO, "Input/output error")

    def fsync_fails(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    if failing == "write":
        monkeypatch.setattr(journal_module.os, "write", half_then_eio)
    else:
        monkeypatch.setattr(journal_module.os, "fsync", fsync_fails)
    with pytest.raises(StorageFailed) as refused:
        store.apply([plain("lost")], now=NOW)
    monkeypatch.undo()
    assert refused.value.status == 507 and refused.value.code == "storage-failed"
    assert refused.value.errno == errno.EIO and str(log) in refused.value.message
    assert log.stat().st_size == good, "the failed record was cut back off the log"
    assert (store.digest(), store.records()) == before, "memory equals the disk again"
    assert store.get("Route", "lost") is None
    store.apply([plain("next")], now=NOW)
    restarted = PolicyStore(DiskPersistence(path), node="a")
    assert names(restarted) == {"r0", "r1", "next"}
    assert restarted.journal_report is not None and restarted.journal_report.corrupt_tail is None


def test_a_refused_peer_update_leaves_memory_and_disk_as_they_were(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = store_with(tmp_path / "policy.bin", 1)
    peer = PolicyStore(node="b")
    peer.apply([plain("from-peer")], now=NOW)
    update = peer.diff_since(store.state_vector())
    before = store.records()

    def disk_full(fd: int, data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal_module.os, "write", disk_full)
    with pytest.raises(StorageFailed, match="No space left") as refused:
        store.apply_update(update, source="b")
    monkeypatch.undo()
    assert refused.value.code == "insufficient-storage"
    assert store.records() == before
    store.apply_update(update, source="b")  # the peer's next sync offers it again
    assert names(PolicyStore(DiskPersistence(tmp_path / "policy.bin"), node="a")) == {
        "r0",
        "from-peer",
    }


def test_a_failed_compaction_keeps_the_edit_acknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "policy.bin"
    store = store_with(path, 1)
    store.compact_after_bytes = 1

    def disk_full(*_: object, **__: object) -> None:
        raise StorageFailed("writing policy.bin failed: No space left on device")

    monkeypatch.setattr("peermesh.policy.persistence.atomic_write", disk_full)
    store.apply([plain("in-log")], now=NOW)  # acknowledged: the log append succeeded
    monkeypatch.undo()
    assert names(PolicyStore(DiskPersistence(path), node="a")) == {"r0", "in-log"}


def test_atomic_write_refuses_with_507_and_keeps_the_old_file(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", "64k") as disk:
        target = disk / "state.json"
        atomic_write(target, b"old")
        fill(disk / "filler")
        with pytest.raises(StorageFailed) as refused:
            atomic_write(target, b"x" * 65536)
        assert refused.value.status == 507 and refused.value.code == "insufficient-storage"
        assert isinstance(refused.value, OSError) and refused.value.errno == errno.ENOSPC
        assert target.read_bytes() == b"old"
        assert sorted(p.name for p in disk.iterdir()) == ["filler", "state.json"]


def test_a_full_tmpfs_refuses_edits_and_the_log_stays_clean(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", "256k") as disk:
        path = disk / "policy.bin"
        store = PolicyStore(DiskPersistence(path), node="a")
        store.apply([plain("first")], now=NOW)
        filler = disk / "filler"
        fill(filler, leave=6000)
        acked, refused = [], 0
        for i in range(40):
            try:
                store.apply([plain(f"e{i}")], now=NOW)
                acked.append(f"e{i}")
            except StorageFailed as exc:
                assert exc.code == "insufficient-storage" and exc.status == 507
                refused += 1
        assert acked and refused, (acked, refused)
        assert names(store) == {"first", *acked}
        filler.unlink()
        store.apply([plain("after")], now=NOW)
        restarted = PolicyStore(DiskPersistence(path), node="a")
        assert names(restarted) == {"first", *acked, "after"}
        assert restarted.journal_report is not None
        assert restarted.journal_report.corrupt_tail is None
        store.close()
        restarted.close()


# ------------------------------------------------------------------ damage on load


def test_damage_before_the_final_record_refuses_to_start_with_file_offset_and_advice(
    tmp_path: Path,
) -> None:
    path = tmp_path / "policy.bin"
    store_with(path, 4).close()
    log = tmp_path / "policy.bin.log"
    offsets = record_offsets(log)
    pristine = log.read_bytes()
    # A flipped bit in the second record, with two good records after it.
    data = bytearray(pristine)
    data[offsets[1] + HEADER.size + 5] ^= 0x01
    log.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt) as corrupt:
        PolicyStore(DiskPersistence(path), node="a")
    text = str(corrupt.value)
    assert f"{log} is damaged at byte {offsets[1]}" in text and "checksum mismatch" in text
    assert "peermesh policy recover" in text
    assert log.read_bytes() == bytes(data), "nothing was cut: the later records are still there"
    # An impossible length in the middle, and as the header of the final record.
    for at in (offsets[2], offsets[3]):
        data = bytearray(pristine)
        struct.pack_into(">I", data, at, 0xFFFFFFFF)
        log.write_bytes(bytes(data))
        with pytest.raises(JournalCorrupt, match=f"byte {at} .impossible record length"):
            PolicyStore(DiskPersistence(path), node="a")
    # A zero length followed by records is impossible too (an append never writes one).
    data = bytearray(pristine)
    data[offsets[1] : offsets[1] + HEADER.size] = bytes(HEADER.size)
    log.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt, match="impossible record length 0"):
        PolicyStore(DiskPersistence(path), node="a")


@pytest.mark.parametrize("tear", ["header", "payload", "checksum", "zeros"])
def test_only_a_torn_final_record_is_repaired(tmp_path: Path, tear: str) -> None:
    path = tmp_path / "policy.bin"
    store_with(path, 3).close()
    log = tmp_path / "policy.bin.log"
    data = bytearray(log.read_bytes())
    last = record_offsets(log)[-1]
    kept = {"r0", "r1", "r2"}
    if tear == "header":
        data += b"\x00\x00\x01"  # a crash three bytes into the next append
    elif tear == "payload":
        del data[-9:]  # the last record lost its end
        kept = {"r0", "r1"}
    elif tear == "checksum":
        data[-1] ^= 0xFF  # its size landed, its last block did not
        kept = {"r0", "r1"}
    else:
        data += bytes(4096)  # space allocated for a write that never landed
    log.write_bytes(bytes(data))
    restarted = PolicyStore(DiskPersistence(path), node="a")
    report = restarted.journal_report
    assert report is not None and report.corrupt_tail
    assert names(restarted) == kept
    assert log.stat().st_size == (last if kept != {"r0", "r1", "r2"} else report.good_bytes)
    restarted.apply([plain("after")], now=NOW)
    restarted.close()
    assert names(PolicyStore(DiskPersistence(path), node="a")) == kept | {"after"}


def test_journal_check_reads_only(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    journal = Journal(log)
    journal.append(b"one")
    journal.append(b"two")
    journal.close()
    assert Journal.check(log) is None
    data = bytearray(log.read_bytes())
    data[HEADER.size] ^= 0xFF
    log.write_bytes(bytes(data))
    assert "checksum mismatch" in (Journal.check(log) or "")
    assert log.read_bytes() == bytes(data)


# ------------------------------------------------------------------ recover


def test_recover_moves_only_damaged_files_aside_and_keeps_them(tmp_path: Path) -> None:
    path = tmp_path / "policy.bin"
    store = store_with(path, 3)
    store.compact()
    store.apply([plain("in-log-1")], now=NOW)
    store.apply([plain("in-log-2")], now=NOW)
    store.close()
    log = tmp_path / "policy.bin.log"
    data = bytearray(log.read_bytes())
    data[HEADER.size + 2] ^= 0x01
    log.write_bytes(bytes(data))
    persistence = DiskPersistence(path)
    assert [d.path for d in check(persistence)] == [log]
    when = dt.datetime(2026, 12, 2, 14, 30, tzinfo=dt.UTC)
    result = recover(persistence, now=when)
    assert result.moved == ((log, tmp_path / "policy.bin.log.damaged-20261202T143000Z"),)
    assert (tmp_path / "policy.bin.log.damaged-20261202T143000Z").read_bytes() == bytes(data)
    # The snapshot was intact and stays: the store starts from it, peers give the rest.
    again = PolicyStore(DiskPersistence(path), node="a")
    assert names(again) == {"r0", "r1", "r2"}
    again.apply([plain("new")], now=NOW)
    again.close()
    # Nothing damaged: nothing moved, unless asked to move everything.
    assert recover(DiskPersistence(path), now=when).moved == ()
    moved = recover(DiskPersistence(path), now=when, everything=True).moved
    assert [src.name for src, _ in moved] == ["policy.bin", "policy.bin.log"]
    assert moved[1][1].name == "policy.bin.log.damaged-20261202T143000Z.1"
    assert not path.exists()


def test_the_recover_command_says_what_it_moved_and_what_comes_next(tmp_path: Path) -> None:
    store_with(tmp_path / "policy.bin", 3).close()
    log = tmp_path / "policy.bin.log"
    runner = CliRunner()
    intact = runner.invoke(policy_group, ["recover", "--data-dir", str(tmp_path)])
    assert intact.exit_code == 0 and "intact; nothing was moved" in intact.output
    data = bytearray(log.read_bytes())
    data[HEADER.size + 1] ^= 0x01
    log.write_bytes(bytes(data))
    done = runner.invoke(policy_group, ["recover", "--data-dir", str(tmp_path)])
    assert done.exit_code == 0, done.output
    assert f"damaged: {log}" in done.output and "checksum mismatch" in done.output
    assert "moved" in done.output and "rebuilds its policy from its peers" in done.output
    assert not log.exists()
    assert [p.name.split(".damaged-")[0] for p in tmp_path.glob("*.damaged-*")] == [
        "policy.bin.log"
    ]
    assert PolicyStore(DiskPersistence(tmp_path / "policy.bin"), node="a").objects() == []
