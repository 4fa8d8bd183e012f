"""The canonical encoding every signature covers, and checked reads of wire fields.

A field of the wrong type is a :class:`DkgMessageRejected` naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias

from certs.dkg.errors import DkgMessageRejected

__all__ = [
    "Pairs",
    "canonical",
    "pair_map",
    "pairs_to_wire",
    "read_bytes",
    "read_bytes_list",
    "read_int",
    "read_list",
    "read_pairs",
    "read_str",
]


def canonical(obj: Any) -> bytes:
    """Deterministic, injective encoding of wire values (ints, bytes, str, lists, dicts)."""
    if isinstance(obj, bool):
        raise TypeError("booleans are not part of the wire format")
    if isinstance(obj, int):
        return b"i" + obj.to_bytes(16, "big", signed=True)
    if isinstance(obj, bytes | bytearray):
        return b"b" + len(obj).to_bytes(4, "big") + bytes(obj)
    if isinstance(obj, str):
        raw = obj.encode()
        return b"s" + len(raw).to_bytes(4, "big") + raw
    if isinstance(obj, list | tuple):
        return b"l" + len(obj).to_bytes(4, "big") + b"".join(canonical(x) for x in obj)
    if isinstance(obj, Mapping):
        keys = sorted(obj)
        return (
            b"d"
            + len(keys).to_bytes(4, "big")
            + b"".join(canonical(k) + canonical(obj[k]) for k in keys)
        )
    raise TypeError(f"cannot encode {type(obj).__name__}")


def read_bytes(data: Mapping[str, Any], key: str) -> bytes:
    value = data.get(key)
    if not isinstance(value, bytes | bytearray):
        raise DkgMessageRejected(f"field {key!r}: expected bytes")
    return bytes(value)


def read_int(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DkgMessageRejected(f"field {key!r}: expected an int")
    return value


def read_str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise DkgMessageRejected(f"field {key!r}: expected a string")
    return value


def read_list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    if not isinstance(value, list | tuple):
        raise DkgMessageRejected(f"field {key!r}: expected a list")
    return list(value)


def read_bytes_list(data: Mapping[str, Any], key: str) -> tuple[bytes, ...]:
    items = read_list(data, key)
    if not all(isinstance(x, bytes | bytearray) for x in items):
        raise DkgMessageRejected(f"field {key!r}: expected a list of bytes")
    return tuple(bytes(x) for x in items)


Pairs: TypeAlias = tuple[tuple[int, bytes], ...]


def read_pairs(data: Mapping[str, Any], key: str) -> Pairs:
    out = []
    for pair in read_list(data, key):
        if (
            not isinstance(pair, list | tuple)
            or len(pair) != 2
            or isinstance(pair[0], bool)
            or not isinstance(pair[0], int)
            or not isinstance(pair[1], bytes | bytearray)
        ):
            raise DkgMessageRejected(f"field {key!r}: expected [int, bytes] pairs")
        out.append((pair[0], bytes(pair[1])))
    return tuple(out)


def pairs_to_wire(pairs: Pairs) -> list[list[Any]]:
    return [[i, b] for i, b in pairs]


def pair_map(pairs: Pairs, expected: set[int], what: str) -> dict[int, bytes] | str:
    """The pairs as a dict if they name exactly ``expected``, else a reason string."""
    got = [i for i, _ in pairs]
    if len(set(got)) != len(got):
        return f"{what} names a participant twice"
    if set(got) != expected:
        return f"{what} covers participants {sorted(got)}, expected {sorted(expected)}"
    return dict(pairs)
