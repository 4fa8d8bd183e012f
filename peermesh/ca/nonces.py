"""The signer's FROST nonces on disk: durable, single use, marked used before a share leaves.

:mod:`certs.frost` keeps nonces in whatever :class:`certs.frost.NonceStore` it is handed;
this is the one the agent hands it, at ``<data>/ca/nonces.json``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from certs.ed25519_group import Scalar
from certs.frost import (
    NonceError,
    NonceReuseError,
    SigningCommitments,
    SigningNonces,
    UnknownNonceError,
    check_identifier,
)
from peermesh.core.durable import SECRET_MODE, atomic_write

__all__ = ["FileNonceStore"]


class FileNonceStore:
    """A durable :class:`certs.frost.NonceStore` in one file (mode 0600).

    Every change rewrites the file with :func:`peermesh.core.durable.atomic_write` (write, fsync,
    rename, fsync dir).  :meth:`consume` records the nonce as used and drops its secret
    *before* returning it, so no crash can bring back a nonce whose share may already be
    out.  A failed write leaves the nonce unusable in memory too (fail closed).  One
    process per file; the last ``remember_used`` used ids are kept for a clear
    "already used" error.

    Round one can be asked for and round two never come (a coordinator that crashed or
    picked other signers), so each :meth:`add` also drops nonces older than ``max_age``
    seconds and the oldest beyond ``max_pending``: forgetting an unused nonce is always
    safe (its commitment just cannot be used any more), and it keeps the file, which is
    rewritten on every change, small.
    """

    _VERSION: Final[int] = 1

    def __init__(
        self,
        path: Path | str,
        *,
        remember_used: int = 4096,
        max_age: float = 600.0,
        max_pending: int = 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._path = Path(path)
        self._remember = remember_used
        self._max_age = max_age
        self._max_pending = max_pending
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[str, SigningNonces] = {}  # insertion order = age order
        self._added: dict[str, float] = {}
        self._used: list[str] = []
        self.expired = 0  # unused nonces dropped by age or count
        if self._path.exists():
            self._load()

    @property
    def pending(self) -> int:
        """Nonces issued in round one and not used yet."""
        return len(self._pending)

    def _expire(self, now: float) -> None:
        """Make room for one more: drop nonces past ``max_age``, then the oldest over the cap."""
        horizon = now - self._max_age
        stale = [nid for nid, at in self._added.items() if at < horizon]
        gone = set(stale)
        excess = len(self._pending) - len(stale) - (self._max_pending - 1)
        if excess > 0:
            stale += [nid for nid in self._pending if nid not in gone][:excess]
        for nid in stale:
            del self._pending[nid]
            del self._added[nid]
        self.expired += len(stale)

    def _load(self) -> None:
        try:
            state = json.loads(self._path.read_bytes())
            if state.get("version") != self._VERSION:
                raise ValueError(f"unsupported version {state.get('version')!r}")
            for nid, entry in state["pending"].items():
                nonces = SigningNonces(
                    identifier=check_identifier(int(entry["id"])),
                    hiding=Scalar.from_bytes(bytes.fromhex(entry["hiding"])),
                    binding=Scalar.from_bytes(bytes.fromhex(entry["binding"])),
                )
                if nonces.commitments.nonce_id() != nid:
                    raise ValueError("nonce id does not match its nonces")
                self._pending[nid] = nonces
                self._added[nid] = float(entry.get("added", self._clock()))
            self._used = [str(x) for x in state["used"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise NonceError(f"nonce store {self._path} is corrupt: {exc}") from exc

    def _save(self) -> None:
        state = {
            "version": self._VERSION,
            "pending": {
                nid: {
                    "id": n.identifier,
                    "hiding": n.hiding.to_bytes().hex(),
                    "binding": n.binding.to_bytes().hex(),
                    "added": self._added[nid],
                }
                for nid, n in self._pending.items()
            },
            "used": self._used[-self._remember :],
        }
        atomic_write(self._path, json.dumps(state).encode(), mode=SECRET_MODE)

    def add(self, nonces: SigningNonces) -> None:
        """Persist fresh nonces before their commitments are published."""
        nid = nonces.commitments.nonce_id()
        with self._lock:
            if nid in self._pending or nid in self._used:
                raise NonceReuseError(f"nonce {nid[:16]} was already issued")
            now = self._clock()
            self._expire(now)
            self._pending[nid] = nonces
            self._added[nid] = now
            try:
                self._save()
            except BaseException:
                del self._pending[nid]
                del self._added[nid]
                raise

    def consume(self, commitments: SigningCommitments) -> SigningNonces:
        """Durably mark the nonce used, then hand it out."""
        nid = commitments.nonce_id()
        with self._lock:
            if nid in self._used:
                raise NonceReuseError(f"nonce {nid[:16]} was already used")
            nonces = self._pending.pop(nid, None)
            if nonces is None:
                raise UnknownNonceError(
                    f"no stored nonce for commitments {nid[:16]} (never issued here, or unused"
                    f" for over {self._max_age:.0f} s and dropped)"
                )
            del self._added[nid]
            self._used.append(nid)
            del self._used[: -self._remember]
            self._save()  # if this raises, the nonce stays gone from memory: fail closed
            return nonces

    def __len__(self) -> int:
        return len(self._pending)
