"""The signer's durable FROST nonce store: single use across restarts, fails closed."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from certs import frost
from certs.frost import MemoryNonceStore, NonceReuseError, SigningCommitments, SigningPackage
from peermesh.ca import nonces
from peermesh.ca.nonces import FileNonceStore


def test_file_nonce_store_refuses_reuse_after_reopening(tmp_path: Path) -> None:
    keys, public = frost.trusted_dealer_keygen(3, 2)
    path = tmp_path / "nonces.json"
    store = FileNonceStore(path)
    other = MemoryNonceStore()
    package = SigningPackage(b"first", (frost.commit(keys[1], store), frost.commit(keys[2], other)))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    # Pending nonces survive a restart.
    store = FileNonceStore(path)
    assert len(store) == 1
    share = frost.sign(keys[1], package, store)
    assert frost.verify_signature_share(share, package, public)

    # Simulated crash right after the share went out: the process dies, the file stays.
    del store
    reopened = FileNonceStore(path)
    assert len(reopened) == 0
    with pytest.raises(NonceReuseError, match="already used"):
        frost.sign(keys[1], SigningPackage(b"second", package.commitments), reopened)
    assert b"first" not in path.read_bytes()


def test_file_nonce_store_persists_use_before_the_share_exists(tmp_path: Path) -> None:
    keys, _ = frost.trusted_dealer_keygen(3, 2)
    path = tmp_path / "nonces.json"
    seen_on_disk: list[BaseException] = []

    class Probe(FileNonceStore):
        def consume(self, commitments: SigningCommitments) -> frost.SigningNonces:
            nonces = super().consume(commitments)
            # Before sign() computes anything, a fresh process must already refuse it.
            with pytest.raises(NonceReuseError) as err:
                FileNonceStore(path).consume(commitments)
            seen_on_disk.append(err.value)
            return nonces

    store = Probe(path)
    other = MemoryNonceStore()
    package = SigningPackage(b"m", (frost.commit(keys[1], store), frost.commit(keys[2], other)))
    frost.sign(keys[1], package, store)
    assert len(seen_on_disk) == 1


def test_file_nonce_store_fails_closed_when_the_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys, _ = frost.trusted_dealer_keygen(3, 2)
    store = FileNonceStore(tmp_path / "nonces.json")
    package = SigningPackage(
        b"m", (frost.commit(keys[1], store), frost.commit(keys[2], MemoryNonceStore()))
    )

    def broken_write(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(nonces, "atomic_write", broken_write)
    with pytest.raises(OSError, match="disk full"):
        frost.sign(keys[1], package, store)
    monkeypatch.undo()
    with pytest.raises(NonceReuseError):  # this process never hands that nonce out again
        frost.sign(keys[1], package, store)


def test_file_nonce_store_drops_nonces_round_two_never_used(tmp_path: Path) -> None:
    """Round one without round two must not grow the signer's nonce file forever."""
    keys, _ = frost.trusted_dealer_keygen(3, 2)
    path = tmp_path / "nonces.json"
    now = [1000.0]
    store = FileNonceStore(path, max_age=600, max_pending=3, clock=lambda: now[0])
    stale = frost.commit(keys[1], store)
    now[0] += 601
    fresh = [frost.commit(keys[1], store) for _ in range(4)]  # the 4th pushes out the oldest
    assert store.pending == 3 and store.expired == 2
    assert stale.nonce_id() not in path.read_text()
    assert fresh[0].nonce_id() not in path.read_text()
    other = MemoryNonceStore()
    with pytest.raises(frost.UnknownNonceError, match="dropped"):
        store.consume(stale)
    # The survivors still sign, also after a restart (their age is on disk).
    reopened = FileNonceStore(path, max_age=600, clock=lambda: now[0])
    package = SigningPackage(b"m", (fresh[3], frost.commit(keys[2], other)))
    assert frost.sign(keys[1], package, reopened) is not None
    now[0] += 601
    frost.commit(keys[1], reopened)  # the age written at add() counts across the restart
    assert reopened.pending == 1
