"""What the CA keeps on disk, under ``<data-dir>/ca/``.

| file | mode | holds |
| --- | --- | --- |
| ``identity.key`` | 0600 | this node's long-term Ed25519 key (signs its DKG messages) |
| ``committee.msgpack`` | 0600 | signers (names, ids, identity keys, addresses), commitments, root |
| ``share.msgpack`` | 0600 | this signer's share of the root key (signers only) |
| ``nonces.json`` | 0600 | FROST nonces, marked used before a share leaves (signers only) |
| ``tokens.msgpack`` | 0600 | join tokens, hashed (signers only) |
| ``gossip.key`` | 0600 | the mesh gossip keyring received when joining |

Every write is atomic (temp file, fsync, rename, fsync dir): a crash leaves the old or
the new file, never half of one.  No file holds the whole root key: it never exists.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgpack
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from certs.frost import FrostError, PublicKeyPackage, SigningKeyShare
from peermesh.ca.errors import CaStateError
from peermesh.ca.nonces import FileNonceStore
from peermesh.ca.settings import CA_DIR, GOSSIP_KEY_FILE
from peermesh.core.codec import WireMessage, wire
from peermesh.core.durable import SECRET_MODE, atomic_write
from peermesh.core.wire import WireError

__all__ = ["CaState", "CaStateError", "Committee", "CommitteeMember"]

IDENTITY_FILE = "identity.key"
COMMITTEE_FILE = "committee.msgpack"
SHARE_FILE = "share.msgpack"
NONCE_FILE = "nonces.json"
TOKENS_FILE = "tokens.msgpack"

_MAX_NAME = 253
_MAX_DER = 64 << 10
_MAX_MEMBERS = 1024


def _refuse(what: str) -> Callable[[WireError], CaStateError]:
    return lambda exc: CaStateError(f"{what} is malformed: {exc}")


def _present(value: bytes, where: str) -> bytes | None:
    """An empty root or endorsement is none: the committee has not got one yet."""
    return value or None


class CommitteeMember(
    WireMessage, what="committee member", refuse=_refuse("committee member entry")
):
    """One signer: who it is, which share index it holds, where to reach it."""

    node: str = wire(max_len=_MAX_NAME)
    identifier: int = wire(key="id", minimum=1)
    identity_key: bytes = wire(max_len=64)  # raw Ed25519 public key (signs its DKG messages)
    service: str = wire(max_len=_MAX_NAME)
    address: tuple[str, int] = wire(item_len=_MAX_NAME)  # last known inbound (mTLS) address
    bootstrap: tuple[str, int] | None = wire(default=None, item_len=_MAX_NAME)  # its listener


class Committee(WireMessage, what="committee", refuse=_refuse("committee state")):
    """The public state every agent keeps: who signs, with what threshold, under which root."""

    epoch: int = wire(minimum=0)
    trust_domain: str = wire(max_len=_MAX_NAME)
    public: PublicKeyPackage
    members: tuple[CommitteeMember, ...] = wire(max_len=_MAX_MEMBERS)
    root_der: bytes | None = wire(key="root", default=None, max_len=_MAX_DER, check=_present)
    #: The committee's own threshold signature (under the group key) over
    #: :meth:`statement`: t holders of the new shares confirm a refresh completed.
    endorsement: bytes | None = wire(default=None, max_len=_MAX_DER, check=_present)

    def check_decoded(self) -> None:
        for m in self.members:
            if m.identifier not in self.public.verification_shares:
                raise CaStateError(f"committee member {m.node} has no verification share")

    def statement(self) -> bytes:
        """What an endorsement signs: this committee without its endorsement."""
        body = {**self.to_wire(), "endorsement": None}
        return b"peermesh committee v1\0" + hashlib.sha256(_pack(body)).digest()

    @property
    def threshold(self) -> int:
        return self.public.threshold

    @property
    def root(self) -> x509.Certificate:
        if self.root_der is None:
            raise CaStateError("the committee has no root certificate yet (bootstrap unfinished)")
        return x509.load_der_x509_certificate(self.root_der)

    def member(self, node: str) -> CommitteeMember | None:
        return next((m for m in self.members if m.node == node), None)

    def by_id(self, identifier: int) -> CommitteeMember | None:
        return next((m for m in self.members if m.identifier == identifier), None)

    def names(self) -> list[str]:
        return sorted(m.node for m in self.members)

    def with_member(self, member: CommitteeMember) -> Committee:
        others = tuple(m for m in self.members if m.node != member.node)
        return replace(self, members=tuple(sorted((*others, member), key=lambda m: m.node)))


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _unpack(path: Path) -> Any:
    try:
        return msgpack.unpackb(path.read_bytes(), raw=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise CaStateError(f"{path} is corrupt ({exc}); restore it from backup") from None


class CaState:
    """The agent's CA files; every accessor reads or writes one file atomically."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = Path(data_dir) / CA_DIR
        self._identity: Ed25519PrivateKey | None = None
        self._nonces: FileNonceStore | None = None

    def _ensure_dir(self) -> None:
        """Create ``ca/`` (0700) on the first write only: agents without a CA get no dir."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    # identity ---------------------------------------------------------------------------
    @property
    def identity_key(self) -> Ed25519PrivateKey:
        """This node's long-term identity key, created on first use (0600)."""
        if self._identity is None:
            path = self.dir / IDENTITY_FILE
            if path.exists():
                key = serialization.load_pem_private_key(path.read_bytes(), None)
                if not isinstance(key, Ed25519PrivateKey):
                    raise CaStateError(f"{path} is not an Ed25519 key; move it away to recreate")
                self._identity = key
            else:
                key = Ed25519PrivateKey.generate()
                pem = key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
                self._ensure_dir()
                atomic_write(path, pem, SECRET_MODE)
                self._identity = key
        return self._identity

    @property
    def identity_public(self) -> bytes:
        return self.identity_key.public_key().public_bytes_raw()

    # committee ----------------------------------------------------------------------------
    def load_committee(self) -> Committee | None:
        path = self.dir / COMMITTEE_FILE
        if not path.exists():
            return None
        return Committee.from_wire(_unpack(path))

    def save_committee(self, committee: Committee) -> None:
        self._ensure_dir()
        # Public values, but it maps the signers' addresses: as private as the rest of ca/.
        atomic_write(self.dir / COMMITTEE_FILE, _pack(committee.to_wire()), SECRET_MODE)

    # share --------------------------------------------------------------------------------
    def load_share(self) -> tuple[int, SigningKeyShare] | None:
        """(epoch, share) of this signer, or None for a non-signer."""
        path = self.dir / SHARE_FILE
        if not path.exists():
            return None
        data = _unpack(path)
        try:
            return int(data["epoch"]), SigningKeyShare.from_wire(data["share"])
        except (KeyError, TypeError, ValueError, FrostError) as exc:
            raise CaStateError(f"{path} is malformed: {exc}") from None

    def save_share(self, epoch: int, share: SigningKeyShare) -> None:
        self._ensure_dir()
        atomic_write(
            self.dir / SHARE_FILE, _pack({"epoch": epoch, "share": share.to_wire()}), SECRET_MODE
        )

    def drop_share(self) -> None:
        """Forget our share (we left the committee at a refresh): it is useless now anyway."""
        (self.dir / SHARE_FILE).unlink(missing_ok=True)

    @property
    def nonces(self) -> FileNonceStore:
        if self._nonces is None:
            self._ensure_dir()
            # Used ids are kept only for a clearer "already used" error (a consumed nonce
            # is gone from the store either way); a short list keeps each fsync'd rewrite small.
            self._nonces = FileNonceStore(self.dir / NONCE_FILE, remember_used=256)
        return self._nonces

    # tokens -------------------------------------------------------------------------------
    def load_tokens(self) -> dict[str, Any]:
        path = self.dir / TOKENS_FILE
        if not path.exists():
            return {}
        data = _unpack(path)
        return dict(data) if isinstance(data, dict) else {}

    def save_tokens(self, tokens: Mapping[str, Any]) -> None:
        self._ensure_dir()
        atomic_write(self.dir / TOKENS_FILE, _pack(dict(tokens)), SECRET_MODE)

    # gossip keys --------------------------------------------------------------------------
    @property
    def gossip_key_path(self) -> Path:
        return self.dir / GOSSIP_KEY_FILE
