"""Member metadata as an opaque msgpack blob, and the field checks every decoder shares."""

from __future__ import annotations

from typing import Any

import msgpack

from gossip.errors import GossipError, MetadataError
from gossip.messages import NodeMeta, Service

MAX_NAME = 255
_U32 = 1 << 32
_U64 = 1 << 64

_META_CACHE_MAX = 1 << 16
_meta_by_bytes: dict[bytes, NodeMeta] = {}
_bytes_by_meta: dict[NodeMeta, bytes] = {}


class _Bad(GossipError):
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
        raise MetadataError("invalid member metadata") from None
    except Exception as exc:
        raise MetadataError(f"invalid member metadata: {exc}") from None
    if len(_meta_by_bytes) >= _META_CACHE_MAX:
        _meta_by_bytes.clear()
    _meta_by_bytes[blob] = meta
    return meta


__all__ = [
    "MAX_NAME",
    "decode_meta",
    "encode_meta",
]
