"""Push-pull state: the whole member table for the periodic full-state exchange.

It is not encrypted here: the shell carries it over mutually authenticated TLS.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgpack

from gossip.codec.drops import DropReason
from gossip.codec.meta import MAX_NAME, _Bad, _meta_by_bytes, _str, decode_meta, encode_meta
from gossip.codec.wire import _array_header, _pack
from gossip.messages import MemberState, NodeMeta, PushPullEntry, PushPullState

STATE_VERSION = 0x01
MAX_STATE_BYTES = 64 * 1024 * 1024
_STATE_TAG = "pp"


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


__all__ = [
    "MAX_STATE_BYTES",
    "STATE_VERSION",
    "decode_state",
    "encode_state",
    "encode_state_entry",
    "join_state",
    "open_state",
]
