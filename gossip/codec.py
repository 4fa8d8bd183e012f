"""Bytes on the wire: msgpack messages in authenticated, encrypted, replay-checked datagrams.

Datagram layout (every field is covered by the AES-GCM tag)::

    sealed:    0x01 | key id (4) | nonce (12) | AES-256-GCM(body) + tag (16)
    insecure:  0x02 | body
    body:      msgpack [sender, epoch, seq, [message, ...]]

The version byte and key id are the associated data, so a datagram cannot be
replayed under another version or re-labelled with another key. ``epoch``
grows across restarts of the sender and ``seq`` grows with every datagram, so a
receiver keeps a sliding window per sender and drops anything it has already
seen. Decoding never raises: a bad datagram is dropped and counted under a
:class:`DropReason`, because a packet from the network must never kill the task
serving everyone else.

Push-pull state (the periodic full-table exchange) is encoded here too but not
encrypted: the shell carries it over mutually authenticated TLS.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gossip.messages import (
    Ack,
    Address,
    Alive,
    Compound,
    Dead,
    IndirectPing,
    MemberState,
    Message,
    Nack,
    NodeMeta,
    Ping,
    PushPullEntry,
    PushPullState,
    Service,
    Suspect,
)

VERSION_SEALED = 0x01
VERSION_PLAIN = 0x02
STATE_VERSION = 0x01
KEY_SIZE = 32
KEY_ID_SIZE = 4
NONCE_SIZE = 12
TAG_SIZE = 16
SEALED_OVERHEAD = 1 + KEY_ID_SIZE + NONCE_SIZE + TAG_SIZE
PLAIN_OVERHEAD = 1
MAX_DATAGRAM = 1400
MAX_STATE_BYTES = 64 * 1024 * 1024
MAX_NAME = 255
_U32 = 1 << 32
_U64 = 1 << 64

# Message type tags on the wire (the first element of every message array).
TAG_PING, TAG_INDIRECT_PING, TAG_ACK, TAG_NACK, TAG_ALIVE, TAG_SUSPECT, TAG_DEAD = range(7)
_T_PING, _T_IPING, _T_ACK, _T_NACK = TAG_PING, TAG_INDIRECT_PING, TAG_ACK, TAG_NACK
_T_ALIVE, _T_SUSPECT, _T_DEAD = TAG_ALIVE, TAG_SUSPECT, TAG_DEAD
_STATE_TAG = "pp"


class DropReason(enum.Enum):
    """Why an incoming datagram (or push-pull body) was refused."""

    OVERSIZED = "oversized"
    TRUNCATED = "truncated"
    UNKNOWN_VERSION = "unknown_version"
    PLAINTEXT_REFUSED = "plaintext_refused"
    ENCRYPTED_REFUSED = "encrypted_refused"
    AUTH_FAILED = "auth_failed"
    RETIRED_KEY = "retired_key"
    MALFORMED = "malformed"
    REPLAYED = "replayed"
    REFLECTED = "reflected"

    @property
    def explanation(self) -> str:
        """What happened, why, and what an operator can do about it."""
        return _EXPLANATIONS[self]


_EXPLANATIONS = {
    DropReason.OVERSIZED: (
        "datagram larger than the gossip size limit; a peer with a bigger "
        "udp_buffer_size setting? use the same profile on every node"
    ),
    DropReason.TRUNCATED: "datagram shorter than its header; damaged in transit or not gossip",
    DropReason.UNKNOWN_VERSION: (
        "unknown wire version byte; the sender runs an incompatible peermesh or is not gossip"
    ),
    DropReason.PLAINTEXT_REFUSED: (
        "unencrypted datagram while this node requires the mesh gossip key; "
        "the sender runs with --insecure-gossip: give it the key file"
    ),
    DropReason.ENCRYPTED_REFUSED: (
        "encrypted datagram while this node runs with --insecure-gossip; "
        "give this node the mesh gossip key file"
    ),
    DropReason.AUTH_FAILED: (
        "no installed key authenticates the datagram; the sender uses a key this "
        "node does not have (install it with the keyring) or the packet was forged"
    ),
    DropReason.RETIRED_KEY: (
        "datagram sealed with a key removed from this keyring; the sender has not "
        "rotated yet: give it the new primary key"
    ),
    DropReason.MALFORMED: "authenticated but not a valid gossip message; a bug or a version skew",
    DropReason.REPLAYED: "datagram already seen from that sender (or too old); a replay",
    DropReason.REFLECTED: "datagram claims to come from this node itself; a reflection",
}


class KeyfileError(ValueError):
    """The gossip key file cannot be used; the message says which line and what to do."""


def generate_gossip_key() -> bytes:
    """A fresh random AES-256 key for the mesh (``peermesh keygen gossip``)."""
    return os.urandom(KEY_SIZE)


def key_id(key: bytes) -> bytes:
    """A short public fingerprint of a key, so a receiver tries the right key first
    and can tell a retired key from a forgery without keeping the retired secret."""
    return hashlib.sha256(b"peermesh gossip key id\x00" + key).digest()[:KEY_ID_SIZE]


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_SIZE:
        raise ValueError(
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
            raise ValueError("a keyring needs at least one key (the primary)")
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
            raise ValueError("cannot use a key that is not installed: add() it first")
        self._keys.remove(key)
        self._keys.insert(0, key)

    def remove(self, key: bytes) -> None:
        """Uninstall a key; datagrams sealed with it are dropped from now on."""
        key = _check_key(key)
        if key not in self._aead:
            return
        if key == self._keys[0]:
            raise ValueError("cannot remove the primary key: use() another key first")
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


# --- metadata ----------------------------------------------------------------------

_META_CACHE_MAX = 1 << 16
_meta_by_bytes: dict[bytes, NodeMeta] = {}
_bytes_by_meta: dict[NodeMeta, bytes] = {}


class _Bad(Exception):
    """Internal: the structure is not a valid gossip message."""


def encode_meta(meta: NodeMeta) -> bytes:
    """Metadata as an opaque msgpack blob (cached: metadata changes rarely, is sent often)."""
    cached = _bytes_by_meta.get(meta)
    if cached is not None:
        return cached
    blob: bytes = msgpack.packb(
        [
            list(meta.addresses),
            meta.gossip_port,
            meta.inbound_port,
            [[s.name, dict(s.labels)] for s in meta.services],
            meta.version,
        ]
    )
    if len(_bytes_by_meta) >= _META_CACHE_MAX:
        _bytes_by_meta.clear()
    _bytes_by_meta[meta] = blob
    return blob


def _str(x: Any) -> str:
    if type(x) is not str or len(x) > MAX_NAME:
        raise _Bad
    return x


def _uint(x: Any, bound: int = _U64) -> int:
    if type(x) is not int or not 0 <= x < bound:
        raise _Bad
    return x


def _port(x: Any) -> int:
    if type(x) is not int or not 0 <= x <= 65535:
        raise _Bad
    return x


def decode_meta(blob: bytes) -> NodeMeta:
    """Metadata from its blob; raises ValueError if it is not valid metadata."""
    cached = _meta_by_bytes.get(blob)
    if cached is not None:
        return cached
    try:
        raw = msgpack.unpackb(blob, raw=False)
        if type(raw) is not list or len(raw) != 5:
            raise _Bad
        addrs, gport, iport, svcs, version = raw
        if type(addrs) is not list or type(svcs) is not list:
            raise _Bad
        services = []
        for item in svcs:
            if type(item) is not list or len(item) != 2 or type(item[1]) is not dict:
                raise _Bad
            labels = tuple((_str(k), _str(v)) for k, v in item[1].items())
            services.append(Service(_str(item[0]), labels))
        meta = NodeMeta(
            tuple(_str(a) for a in addrs),
            _port(gport),
            _port(iport),
            tuple(services),
            _uint(version),
        )
    except _Bad:
        raise ValueError("invalid member metadata") from None
    except Exception as exc:
        raise ValueError(f"invalid member metadata: {exc}") from None
    if len(_meta_by_bytes) >= _META_CACHE_MAX:
        _meta_by_bytes.clear()
    _meta_by_bytes[blob] = meta
    return meta


# --- messages ----------------------------------------------------------------------

_pack = msgpack.packb


def pack_alive(node: str, incarnation: int, meta_blob: bytes) -> bytes:
    """Encoded :class:`Alive` from a metadata blob (see :func:`encode_meta`)."""
    return _pack([TAG_ALIVE, node, incarnation, meta_blob])


def pack_suspect(node: str, incarnation: int, sender: str) -> bytes:
    """Encoded :class:`Suspect`."""
    return _pack([TAG_SUSPECT, node, incarnation, sender])


def pack_dead(node: str, incarnation: int, sender: str) -> bytes:
    """Encoded :class:`Dead`."""
    return _pack([TAG_DEAD, node, incarnation, sender])


def pack_ping(seq: int, target: str | None, introduce: bool = False) -> bytes:
    """Encoded :class:`Ping`."""
    if introduce:
        return _pack([TAG_PING, seq, target, True])
    return _pack([TAG_PING, seq, target])


def pack_ack(seq: int) -> bytes:
    """Encoded :class:`Ack`."""
    return _pack([TAG_ACK, seq])


def pack_nack(seq: int) -> bytes:
    """Encoded :class:`Nack`."""
    return _pack([TAG_NACK, seq])


def pack_indirect_ping(seq: int, target: str, target_addr: Address, want_nack: bool) -> bytes:
    """Encoded :class:`IndirectPing`."""
    host, port = target_addr
    return _pack([TAG_INDIRECT_PING, seq, target, host, port, want_nack])


def encode_message(msg: Message) -> bytes:
    """One message as msgpack; several concatenated make a compound body."""
    if isinstance(msg, Alive):
        return pack_alive(msg.node, msg.incarnation, encode_meta(msg.meta))
    if isinstance(msg, Suspect):
        return pack_suspect(msg.node, msg.incarnation, msg.sender)
    if isinstance(msg, Dead):
        return pack_dead(msg.node, msg.incarnation, msg.sender)
    if isinstance(msg, Ping):
        return pack_ping(msg.seq, msg.target, msg.introduce)
    if isinstance(msg, Ack):
        return pack_ack(msg.seq)
    if isinstance(msg, Nack):
        return pack_nack(msg.seq)
    if isinstance(msg, IndirectPing):
        return pack_indirect_ping(msg.seq, msg.target, msg.target_addr, msg.want_nack)
    raise TypeError(f"not a gossip message: {msg!r}")


def _wire_ok(msgs: list[Any]) -> bool:
    """Check every message's shape and types (the hot path: no objects are built).

    Lengths need no check here: a datagram bounds them. msgpack integers are
    below 2**64 by construction, so only the sign needs checking.
    """
    for w in msgs:
        if type(w) is not list or not w:
            return False
        tag = w[0]
        n = len(w)
        if type(tag) is not int:
            return False
        if tag >= _T_ALIVE:
            if n != 4 or type(w[1]) is not str or type(w[2]) is not int or w[2] < 0:
                return False
            x = w[3]
            if tag == _T_ALIVE:
                if type(x) is not bytes:
                    return False
                if x not in _meta_by_bytes:
                    try:
                        decode_meta(x)
                    except ValueError:
                        return False
            elif tag > _T_DEAD or type(x) is not str:
                return False
        elif tag == _T_PING:
            if not 3 <= n <= 4 or type(w[1]) is not int or not 0 <= w[1] < _U32:
                return False
            if w[2] is not None and type(w[2]) is not str:
                return False
            if n == 4 and type(w[3]) is not bool:
                return False
        elif tag in (_T_ACK, _T_NACK):
            if n != 2 or type(w[1]) is not int or not 0 <= w[1] < _U32:
                return False
        elif tag == _T_IPING:
            if (
                n != 6
                or type(w[1]) is not int
                or not 0 <= w[1] < _U32
                or type(w[2]) is not str
                or type(w[3]) is not str
                or type(w[4]) is not int
                or not 0 <= w[4] <= 65535
                or type(w[5]) is not bool
            ):
                return False
        else:
            return False
    return True


def wire_to_message(w: list[Any]) -> Message:
    """A message object from its validated wire form (see :meth:`Codec.open`)."""
    tag = w[0]
    if tag == _T_ALIVE:
        return Alive(w[1], w[2], decode_meta(w[3]))
    if tag == _T_SUSPECT:
        return Suspect(w[1], w[2], w[3])
    if tag == _T_DEAD:
        return Dead(w[1], w[2], w[3])
    if tag == _T_PING:
        return Ping(w[1], w[2], len(w) == 4 and w[3])
    if tag == _T_ACK:
        return Ack(w[1])
    if tag == _T_NACK:
        return Nack(w[1])
    return IndirectPing(w[1], w[2], (w[3], w[4]), w[5])


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 0x10000:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


class _Window:
    """Anti-replay state for one sender: newest (epoch, seq) and a bitmap of recent seqs."""

    __slots__ = ("bitmap", "epoch", "top")

    def __init__(self, epoch: int, top: int) -> None:
        self.epoch = epoch
        self.top = top
        self.bitmap = 1


class Codec:
    """Turns message lists into datagrams and back for one node.

    ``keyring=None`` with ``insecure=True`` sends plaintext (local experiments and
    the simulator); otherwise every datagram is sealed with the keyring's primary.
    ``epoch`` must grow across restarts of this node (wall-clock milliseconds at
    start-up is a good choice): receivers use it to tell a restart from a replay.
    """

    def __init__(
        self,
        sender: str,
        *,
        keyring: Keyring | None = None,
        insecure: bool = False,
        epoch: int = 0,
        max_datagram: int = MAX_DATAGRAM,
        replay_window: int = 1024,
        max_senders: int = 1 << 16,
        nonce_source: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if keyring is None and not insecure:
            raise ValueError(
                "gossip needs the mesh key: pass a Keyring (from --gossip-key-file), "
                "or insecure=True (--insecure-gossip) for local experiments only"
            )
        if keyring is not None and insecure:
            raise ValueError("choose either a keyring or insecure mode, not both")
        if not isinstance(sender, str) or not 0 < len(sender) <= MAX_NAME:
            raise ValueError(f"a node name is 1 to {MAX_NAME} characters, got {sender!r}")
        self.sender = sender
        self.keyring = keyring
        self.insecure = insecure
        if type(epoch) is not int or not 0 <= epoch < _U64:
            raise ValueError("epoch must be an unsigned 64-bit integer")
        self.epoch = epoch
        self.max_datagram = max_datagram
        self.replay_window = replay_window
        self.max_senders = max_senders
        self._nonce = nonce_source
        self._seq = 0
        self._windows: dict[str, _Window] = {}
        self._prefix = b"\x94" + _pack(sender) + _pack(self.epoch)
        overhead = PLAIN_OVERHEAD if insecure else SEALED_OVERHEAD
        # prefix + seq (<= 9 bytes) + array header (<= 3 bytes)
        self.budget = max_datagram - overhead - len(self._prefix) - 9 - 3
        if self.budget < 64:
            raise ValueError("max_datagram is too small to carry gossip messages")
        self.drops: dict[DropReason, int] = dict.fromkeys(DropReason, 0)
        self.accepted = 0
        self.sent = 0

    # -- sending --------------------------------------------------------------------

    def seal(self, parts: Sequence[bytes]) -> bytes:
        """A datagram carrying already encoded messages (see :func:`encode_message`)."""
        self._seq += 1
        body = self._prefix + _pack(self._seq) + _array_header(len(parts)) + b"".join(parts)
        self.sent += 1
        if self.keyring is None:
            out = b"\x02" + body
        else:
            kid, aead = self.keyring._sealer()
            header = b"\x01" + kid
            nonce = self._nonce(NONCE_SIZE)
            out = header + nonce + aead.encrypt(nonce, body, header)
        if len(out) > self.max_datagram:
            raise ValueError(
                f"datagram of {len(out)} bytes exceeds the {self.max_datagram}-byte limit; "
                "pack fewer messages (see Codec.budget)"
            )
        return out

    def encode(self, messages: Iterable[Message]) -> bytes:
        """A datagram carrying ``messages``; raises ValueError if they do not fit."""
        return self.seal([encode_message(m) for m in messages])

    # -- receiving ------------------------------------------------------------------

    def _drop(self, reason: DropReason) -> DropReason:
        self.drops[reason] += 1
        return reason

    def decode(self, data: bytes) -> Compound | DropReason:
        """The messages in a datagram, or why it was dropped. Never raises."""
        opened = self.open(data)
        if isinstance(opened, DropReason):
            return opened
        sender, wire = opened
        return Compound(sender, tuple([wire_to_message(w) for w in wire]))

    def open(self, data: bytes) -> tuple[str, list[list[Any]]] | DropReason:
        """The sender and the validated wire form of each message, or why it was dropped.

        This is the state machine's fast path: every field has been type- and
        range-checked, but no message object is built. Never raises.
        """
        try:
            return self._open(data)
        except Exception:  # pragma: no cover - defence in depth
            return self._drop(DropReason.MALFORMED)

    def _open(self, data: bytes) -> tuple[str, list[list[Any]]] | DropReason:
        n = len(data)
        if n > self.max_datagram:
            return self._drop(DropReason.OVERSIZED)
        if n < 2:
            return self._drop(DropReason.TRUNCATED)
        version = data[0]
        if version == VERSION_SEALED:
            if self.keyring is None:
                return self._drop(DropReason.ENCRYPTED_REFUSED)
            if n < SEALED_OVERHEAD + 1:
                return self._drop(DropReason.TRUNCATED)
            header = bytes(data[: 1 + KEY_ID_SIZE])
            kid = header[1:]
            nonce = bytes(data[1 + KEY_ID_SIZE : 1 + KEY_ID_SIZE + NONCE_SIZE])
            sealed = bytes(data[1 + KEY_ID_SIZE + NONCE_SIZE :])
            body: bytes | None = None
            for aead in self.keyring._openers(kid):
                try:
                    body = aead.decrypt(nonce, sealed, header)
                    break
                except InvalidTag:
                    continue
            if body is None:
                if self.keyring.is_retired(kid):
                    return self._drop(DropReason.RETIRED_KEY)
                return self._drop(DropReason.AUTH_FAILED)
        elif version == VERSION_PLAIN:
            if self.keyring is not None:
                return self._drop(DropReason.PLAINTEXT_REFUSED)
            body = bytes(data[1:])
        else:
            return self._drop(DropReason.UNKNOWN_VERSION)
        try:
            env = msgpack.unpackb(body, raw=False)
        except Exception:
            return self._drop(DropReason.MALFORMED)
        if (
            type(env) is not list
            or len(env) != 4
            or type(env[0]) is not str
            or not 0 < len(env[0]) <= MAX_NAME
            or type(env[1]) is not int
            or not 0 <= env[1] < _U64
            or type(env[2]) is not int
            or not 0 <= env[2] < _U64
            or type(env[3]) is not list
            or not _wire_ok(env[3])
        ):
            return self._drop(DropReason.MALFORMED)
        sender: str = env[0]
        if sender == self.sender:
            return self._drop(DropReason.REFLECTED)
        # Without authentication anyone can forge fresh sequence numbers, so an
        # anti-replay window would only cost memory: insecure mode skips it.
        if self.keyring is not None and not self._fresh(sender, env[1], env[2]):
            return self._drop(DropReason.REPLAYED)
        self.accepted += 1
        return sender, env[3]

    def _fresh(self, sender: str, epoch: int, seq: int) -> bool:
        """Record (epoch, seq) for ``sender``; False if it was seen or is too old."""
        w = self._windows.get(sender)
        if w is None:
            if len(self._windows) >= self.max_senders:
                del self._windows[next(iter(self._windows))]
            self._windows[sender] = _Window(epoch, seq)
            return True
        if epoch != w.epoch:
            if epoch < w.epoch:
                return False
            w.epoch, w.top, w.bitmap = epoch, seq, 1
            return True
        if seq > w.top:
            shift = seq - w.top
            w.bitmap = ((w.bitmap << shift) | 1) & ((1 << self.replay_window) - 1)
            w.top = seq
            return True
        back = w.top - seq
        if back >= self.replay_window:
            return False
        bit = 1 << back
        if w.bitmap & bit:
            return False
        w.bitmap |= bit
        return True

    @property
    def dropped(self) -> int:
        """All datagrams dropped so far, whatever the reason."""
        return sum(self.drops.values())


# --- push-pull state -----------------------------------------------------------------


def encode_state_entry(
    node: str, incarnation: int, state: MemberState, meta: NodeMeta | bytes
) -> bytes:
    """One member of a push-pull state, encoded; see :func:`join_state`."""
    blob = meta if isinstance(meta, bytes) else encode_meta(meta)
    return _pack([node, incarnation, int(state), blob])


def join_state(sender: str, entries: Sequence[bytes]) -> bytes:
    """A push-pull body from encoded entries (lets the caller cache per-member bytes)."""
    return (
        bytes((STATE_VERSION,))
        + b"\x93"
        + _pack(_STATE_TAG)
        + _pack(sender)
        + _array_header(len(entries))
        + b"".join(entries)
    )


def encode_state(state: PushPullState) -> bytes:
    """A push-pull body for ``state``."""
    return join_state(
        state.sender,
        [encode_state_entry(e.node, e.incarnation, e.state, e.meta) for e in state.members],
    )


def open_state(
    data: bytes, max_size: int = MAX_STATE_BYTES
) -> tuple[str, list[tuple[str, int, MemberState, bytes]]] | DropReason:
    """A push-pull body as (sender, [(node, incarnation, state, meta blob)]). Never raises."""
    if len(data) > max_size:
        return DropReason.OVERSIZED
    if len(data) < 2:
        return DropReason.TRUNCATED
    if data[0] != STATE_VERSION:
        return DropReason.UNKNOWN_VERSION
    try:
        raw = msgpack.unpackb(bytes(data[1:]), raw=False)
        if type(raw) is not list or len(raw) != 3 or raw[0] != _STATE_TAG:
            raise _Bad
        sender = _str(raw[1])
        if not sender or type(raw[2]) is not list:
            raise _Bad
        entries = []
        cache = _meta_by_bytes
        states = _STATES
        for e in raw[2]:
            if type(e) is not list or len(e) != 4:
                raise _Bad
            node, inc, st, blob = e
            if (
                type(node) is not str
                or not 0 < len(node) <= MAX_NAME
                or type(inc) is not int
                or inc < 0
                or type(st) is not int
                or not 0 <= st < 4
                or type(blob) is not bytes
            ):
                raise _Bad
            if blob not in cache:
                decode_meta(blob)
            entries.append((node, inc, states[st], blob))
    except Exception:
        return DropReason.MALFORMED
    return sender, entries


_STATES = tuple(MemberState)


def decode_state(data: bytes, max_size: int = MAX_STATE_BYTES) -> PushPullState | DropReason:
    """A push-pull state, or why it cannot be used. Never raises."""
    opened = open_state(data, max_size)
    if isinstance(opened, DropReason):
        return opened
    sender, entries = opened
    return PushPullState(
        sender,
        tuple(PushPullEntry(n, i, st, decode_meta(b)) for n, i, st, b in entries),
    )
