"""The mesh gossip keys: the keyring (seal with the primary, open with any) and its file."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gossip.errors import GossipConfigError, KeyfileError

KEY_SIZE = 32
KEY_ID_SIZE = 4


def generate_gossip_key() -> bytes:
    """A fresh random AES-256 key for the mesh (``peermesh keygen gossip``)."""
    return os.urandom(KEY_SIZE)


def key_id(key: bytes) -> bytes:
    """A short public fingerprint of a key, so a receiver tries the right key first
    and can tell a retired key from a forgery without keeping the retired secret."""
    return hashlib.sha256(b"peermesh gossip key id\x00" + key).digest()[:KEY_ID_SIZE]


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_SIZE:
        raise GossipConfigError(
            f"a gossip key must be {KEY_SIZE} random bytes (AES-256); "
            "make one with generate_gossip_key() or `peermesh keygen gossip`"
        )
    return bytes(key)


class Keyring:
    """The mesh keys: the primary seals, every installed key opens.

    Rotation without restart: ``add(new)`` everywhere, then ``use(new)``
    everywhere, then ``remove(old)``. A removed key's id is remembered (not the
    key) so datagrams still sealed with it are counted as ``RETIRED_KEY``.
    """

    MAX_RETIRED = 64

    def __init__(self, keys: Iterable[bytes]) -> None:
        ordered = [_check_key(k) for k in keys]
        if not ordered:
            raise GossipConfigError("a keyring needs at least one key (the primary)")
        self._keys: list[bytes] = []
        self._aead: dict[bytes, AESGCM] = {}
        self._ids: dict[bytes, bytes] = {}
        self._retired: dict[bytes, None] = {}
        for k in ordered:
            if k not in self._aead:
                self._install(k)

    def _install(self, key: bytes) -> None:
        self._keys.append(key)
        self._aead[key] = AESGCM(key)
        kid = key_id(key)
        self._ids[key] = kid
        self._retired.pop(kid, None)

    @property
    def primary(self) -> bytes:
        """The key that seals outgoing datagrams."""
        return self._keys[0]

    @property
    def keys(self) -> tuple[bytes, ...]:
        """Installed keys, primary first."""
        return tuple(self._keys)

    def add(self, key: bytes, *, primary: bool = False) -> None:
        """Install a key for opening datagrams; optionally make it the primary at once."""
        key = _check_key(key)
        if key not in self._aead:
            self._install(key)
        if primary:
            self.use(key)

    def use(self, key: bytes) -> None:
        """Make an installed key the primary (seal with it from now on)."""
        key = _check_key(key)
        if key not in self._aead:
            raise GossipConfigError("cannot use a key that is not installed: add() it first")
        self._keys.remove(key)
        self._keys.insert(0, key)

    def remove(self, key: bytes) -> None:
        """Uninstall a key; datagrams sealed with it are dropped from now on."""
        key = _check_key(key)
        if key not in self._aead:
            return
        if key == self._keys[0]:
            raise GossipConfigError("cannot remove the primary key: use() another key first")
        self._keys.remove(key)
        del self._aead[key]
        kid = self._ids.pop(key)
        if kid not in self._ids.values():
            self._retired[kid] = None
            while len(self._retired) > self.MAX_RETIRED:
                del self._retired[next(iter(self._retired))]

    def is_retired(self, kid: bytes) -> bool:
        """Whether a key id belongs to a key removed from this ring."""
        return kid in self._retired

    def _sealer(self) -> tuple[bytes, AESGCM]:
        k = self._keys[0]
        return self._ids[k], self._aead[k]

    def _openers(self, kid: bytes) -> list[AESGCM]:
        """Every installed key, those whose id matches first (ids can collide, keys cannot)."""
        first = [self._aead[k] for k in self._keys if self._ids[k] == kid]
        rest = [self._aead[k] for k in self._keys if self._ids[k] != kid]
        return first + rest


# --- keyfile -----------------------------------------------------------------------

_KEYFILE_HEADER = (
    "# peermesh gossip keyring: one base64 AES-256 key per line, the first is the primary.\n"
    "# Keep this file secret (mode 0600). Rotate: add a line, make it first everywhere,\n"
    "# then delete the old line everywhere.\n"
)


def format_keyfile(keys: Sequence[bytes]) -> str:
    """The text of a keyfile holding ``keys`` (primary first)."""
    lines = [base64.b64encode(_check_key(k)).decode("ascii") for k in keys]
    return _KEYFILE_HEADER + "".join(line + "\n" for line in lines)


def parse_keyfile(text: str) -> list[bytes]:
    """Keys from keyfile text; blank lines and ``#`` comments are ignored."""
    keys: list[bytes] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            key = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            raise KeyfileError(
                f"line {number} is not base64; each line must be one key made by "
                "`peermesh keygen gossip`"
            ) from None
        if len(key) != KEY_SIZE:
            raise KeyfileError(
                f"line {number} holds {len(key)} bytes, a gossip key is {KEY_SIZE}; "
                "regenerate it with `peermesh keygen gossip`"
            )
        keys.append(key)
    if not keys:
        raise KeyfileError(
            "the key file holds no key; create one with `peermesh keygen gossip`, "
            "or run with --insecure-gossip for a local experiment"
        )
    return keys


def load_keyring(path: str | os.PathLike[str]) -> Keyring:
    """Read a keyfile into a keyring."""
    try:
        text = Path(path).read_text(encoding="ascii")
    except UnicodeDecodeError:
        raise KeyfileError(f"{path} is not a text key file") from None
    try:
        return Keyring(parse_keyfile(text))
    except KeyfileError as exc:
        raise KeyfileError(f"{path}: {exc}") from None


def save_keyring(path: str | os.PathLike[str], keys: Keyring | Sequence[bytes]) -> None:
    """Write a keyfile atomically, readable by the owner only."""
    key_list = keys.keys if isinstance(keys, Keyring) else tuple(keys)
    data = format_keyfile(key_list).encode("ascii")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


__all__ = [
    "KEY_ID_SIZE",
    "KEY_SIZE",
    "Keyring",
    "format_keyfile",
    "generate_gossip_key",
    "key_id",
    "load_keyring",
    "parse_keyfile",
    "save_keyring",
]
