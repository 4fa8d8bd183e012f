"""Checked reads of decoded msgpack/JSON maps, for messages' ``from_wire``.

Every message that crosses between agents is a frozen dataclass whose ``from_wire``
reads its fields through ``Fields``: a wrong type, a missing field, an oversized
string or list, or a number out of range is a ``WireError`` (400) naming the field,
never a ``KeyError`` or ``TypeError`` from deep inside a handler.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection, Mapping
from typing import Any, Protocol, Self, TypeVar

from peermesh.core.errors import PeermeshError

MAX_TEXT = 4096
MAX_ITEMS = 10_000
MAX_BLOB = 1 << 20


class WireError(PeermeshError, ValueError):
    """A message whose decoded shape is not what its kind requires."""

    default_status = 400
    default_code = "bad-message"


class Message(Protocol):
    """What travels in a control RPC body: encodes itself, decodes with checks."""

    def to_wire(self) -> Any:
        """A msgpack-ready value (maps, lists, str, bytes, int, float, bool, None)."""

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        """Decode and validate; raises ``WireError`` on anything unexpected."""


_MISSING: Any = object()


def check_text(value: object, where: str, max_len: int = MAX_TEXT) -> str:
    """``value`` as text of at most ``max_len`` characters; ``where`` names it in the error."""
    if not isinstance(value, str):
        raise _bad(where, "text", value)
    if len(value) > max_len:
        raise WireError(f"{where}: {len(value)} characters, over {max_len}")
    return value


def check_blob(value: object, where: str, max_len: int = MAX_BLOB) -> bytes:
    if not isinstance(value, bytes | bytearray):
        raise _bad(where, "bytes", value)
    if len(value) > max_len:
        raise WireError(f"{where}: {len(value)} bytes, over {max_len}")
    return bytes(value)


def check_integer(
    value: object, where: str, minimum: int | None = None, maximum: int | None = None
) -> int:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        value = int(value)  # pycrdt and JSON turn integers into floats
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(where, "an integer", value)
    return _in_range(value, where, minimum, maximum)


def check_number(
    value: object, where: str, minimum: float | None = None, maximum: float | None = None
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(where, "a number", value)
    try:
        number = float(value)
    except OverflowError:
        raise WireError(f"{where}: number out of range") from None
    if not math.isfinite(number):
        raise WireError(f"{where}: {number} is not a finite number")
    return _in_range(number, where, minimum, maximum)


def check_flag(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise _bad(where, "true or false", value)
    return value


def check_items(value: object, where: str, max_items: int = MAX_ITEMS) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise _bad(where, "a list", value)
    if len(value) > max_items:
        raise WireError(f"{where}: {len(value)} items, over {max_items}")
    return list(value)


_N = TypeVar("_N", int, float)


def _in_range(value: _N, where: str, minimum: _N | None, maximum: _N | None) -> _N:
    if minimum is not None and value < minimum:
        raise WireError(f"{where}: {value} is below {minimum}")
    if maximum is not None and value > maximum:
        raise WireError(f"{where}: {value} is above {maximum}")
    return value


class Fields:
    """One decoded map read field by field, each read checking type and bounds."""

    __slots__ = ("raw", "what")

    def __init__(self, raw: object, what: str) -> None:
        if not isinstance(raw, Mapping):
            raise _bad(what, "a map", raw)
        self.raw: Mapping[Any, Any] = raw
        self.what = what

    def _read(self, key: str, default: Any, check: Callable[..., Any], *bounds: Any) -> Any:
        """The field checked by ``check`` (with ``bounds``), or ``default`` when it is absent."""
        value = self.raw.get(key)
        if value is not None:
            return check(value, f"{self.what}.{key}", *bounds)
        if default is _MISSING:
            raise WireError(f"{self.what}: field {key!r} is missing")
        return default

    def has(self, key: str) -> bool:
        return key in self.raw and self.raw[key] is not None

    def text(self, key: str, *, max_len: int = MAX_TEXT, default: Any = _MISSING) -> str:
        return self._read(key, default, check_text, max_len)

    def opt_text(self, key: str, *, max_len: int = MAX_TEXT) -> str | None:
        return self.text(key, max_len=max_len, default=None)

    def blob(self, key: str, *, max_len: int = MAX_BLOB, default: Any = _MISSING) -> bytes:
        return self._read(key, default, check_blob, max_len)

    def integer(
        self,
        key: str,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
        default: Any = _MISSING,
    ) -> int:
        return self._read(key, default, check_integer, minimum, maximum)

    def number(
        self,
        key: str,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        default: Any = _MISSING,
    ) -> float:
        return self._read(key, default, check_number, minimum, maximum)

    def flag(self, key: str, *, default: Any = _MISSING) -> bool:
        return self._read(key, default, check_flag)

    def items(self, key: str, *, max_items: int = MAX_ITEMS, default: Any = _MISSING) -> list[Any]:
        return self._read(key, default, check_items, max_items)

    def fields(self, key: str, *, default: Any = _MISSING) -> Fields:
        value = self.raw.get(key)
        if value is None:
            if default is _MISSING:
                raise WireError(f"{self.what}: field {key!r} is missing")
            value = {} if default is None else default
        return Fields(value, f"{self.what}.{key}")

    def value(self, key: str, default: Any = None) -> Any:
        """A field whose shape the caller checks itself (opaque payloads)."""
        return self.raw.get(key, default)


def field_map(
    message: Any, *, rename: Mapping[str, str] | None = None, skip: Collection[str] = ()
) -> dict[str, Any]:
    """A dataclass message's fields as a map under their names (or ``rename``'s), tuples as
    lists; what needs more than that (nested messages, pairs) the caller encodes itself."""
    names = rename or {}
    return {
        names.get(f.name, f.name): _plain(getattr(message, f.name))
        for f in dataclasses.fields(message)
        if f.name not in skip
    }


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _bad(where: str, expected: str, value: object) -> WireError:
    return WireError(f"{where}: expected {expected}, got {type_name(value)}")


def type_name(value: object) -> str:
    if value is None:
        return "nothing"
    return type(value).__name__
