"""Datagram framing and sealing: one node's :class:`Codec`, with per-sender replay windows.

Datagram layout (every field is covered by the AES-GCM tag)::

    sealed:    0x01 | key id (4) | nonce (12) | AES-256-GCM(body) + tag (16)
    insecure:  0x02 | body
    body:      msgpack [sender, epoch, seq, [message, ...]]

The version byte and key id are the associated data, so a datagram cannot be
replayed under another version or re-labelled with another key.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgpack
from cryptography.exceptions import InvalidTag

from gossip.codec.drops import DropReason
from gossip.codec.keyring import KEY_ID_SIZE, Keyring
from gossip.codec.meta import _U64, MAX_NAME
from gossip.codec.wire import _array_header, _pack, _wire_ok, encode_message, wire_to_message
from gossip.errors import GossipConfigError
from gossip.messages import Compound, Message

VERSION_SEALED = 0x01
VERSION_PLAIN = 0x02
NONCE_SIZE = 12
TAG_SIZE = 16
SEALED_OVERHEAD = 1 + KEY_ID_SIZE + NONCE_SIZE + TAG_SIZE
PLAIN_OVERHEAD = 1
MAX_DATAGRAM = 1400


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
            raise GossipConfigError(
                "gossip needs the mesh key: pass a Keyring (from --gossip-key-file), "
                "or insecure=True (--insecure-gossip) for local experiments only"
            )
        if keyring is not None and insecure:
            raise GossipConfigError("choose either a keyring or insecure mode, not both")
        if not isinstance(sender, str) or not 0 < len(sender) <= MAX_NAME:
            raise GossipConfigError(f"a node name is 1 to {MAX_NAME} characters, got {sender!r}")
        self.sender = sender
        self.keyring = keyring
        self.insecure = insecure
        if type(epoch) is not int or not 0 <= epoch < _U64:
            raise GossipConfigError("epoch must be an unsigned 64-bit integer")
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
            raise GossipConfigError("max_datagram is too small to carry gossip messages")
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
            raise GossipConfigError(
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


__all__ = [
    "MAX_DATAGRAM",
    "NONCE_SIZE",
    "PLAIN_OVERHEAD",
    "SEALED_OVERHEAD",
    "TAG_SIZE",
    "VERSION_PLAIN",
    "VERSION_SEALED",
    "Codec",
]
