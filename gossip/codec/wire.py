"""Gossip messages on the wire: msgpack arrays tagged by type, packed and checked fast.

Encoding goes straight from fields to bytes (``pack_*``); decoding first checks
every message's shape and types without building objects (:func:`_wire_ok`), and
builds message objects only on request (:func:`wire_to_message`).
"""

from __future__ import annotations

from typing import Any

import msgpack

from gossip.codec.meta import _U32, _meta_by_bytes, decode_meta, encode_meta
from gossip.messages import (
    Ack,
    Address,
    Alive,
    Dead,
    IndirectPing,
    Message,
    Nack,
    Ping,
    Suspect,
)

# Message type tags on the wire (the first element of every message array).
TAG_PING, TAG_INDIRECT_PING, TAG_ACK, TAG_NACK, TAG_ALIVE, TAG_SUSPECT, TAG_DEAD = range(7)
_T_PING, _T_IPING, _T_ACK, _T_NACK = TAG_PING, TAG_INDIRECT_PING, TAG_ACK, TAG_NACK
_T_ALIVE, _T_SUSPECT, _T_DEAD = TAG_ALIVE, TAG_SUSPECT, TAG_DEAD

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


__all__ = [
    "TAG_ACK",
    "TAG_ALIVE",
    "TAG_DEAD",
    "TAG_INDIRECT_PING",
    "TAG_NACK",
    "TAG_PING",
    "TAG_SUSPECT",
    "encode_message",
    "pack_ack",
    "pack_alive",
    "pack_dead",
    "pack_indirect_ping",
    "pack_nack",
    "pack_ping",
    "pack_suspect",
    "wire_to_message",
]
