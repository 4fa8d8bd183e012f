"""Checked reads of decoded msgpack/JSON maps, for messages' ``from_wire``.

Every message that crosses between agents is a frozen dataclass whose ``from_wire``
reads its fields through ``Fields``: a wrong type, a missing field, an oversized
string or list, or a number out of range is a ``WireError`` (400) naming the field,
never a ``KeyError`` or ``TypeError`` from deep inside a handler.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Mapping
from typing import Any, Protocol, Self, TypeVar

from peermesh.core.errors import PeermeshError

MAX_TEXT = 4096
MAX_ITEMS = 10_000

_T = TypeVar("_T")


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


class Fields:
    """One decoded map read field by field, each read checking type and bounds."""

    __slots__ = ("raw", "what")

    def __init__(self, raw: object, what: str) -> None:
        if not isinstance(raw, Mapping):
            raise WireError(f"{what}: expected a map, got {_type_name(raw)}")
        self.raw: Mapping[Any, Any] = raw
        self.what = what

    def _get(self, key: str, default: Any) -> tuple[Any, bool]:
        """The field's value and True, or the default and False when it is absent."""
        value = self.raw.get(key)
        if value is not None:
            return value, True
        if default is _MISSING:
            raise WireError(f"{self.what}: field {key!r} is missing")
        return default, False

    def _bad(self, key: str, expected: str, value: object) -> WireError:
        return WireError(f"{self.what}.{key}: expected {expected}, got {_type_name(value)}")

    def has(self, key: str) -> bool:
        return key in self.raw and self.raw[key] is not None

    def text(self, key: str, *, max_len: int = MAX_TEXT, default: Any = _MISSING) -> str:
        value, present = self._get(key, default)
        if not present:
            return value
        if not isinstance(value, str):
            raise self._bad(key, "text", value)
        if len(value) > max_len:
            raise WireError(f"{self.what}.{key}: {len(value)} characters, over {max_len}")
        return value

    def opt_text(self, key: str, *, max_len: int = MAX_TEXT) -> str | None:
        return self.text(key, max_len=max_len, default=None) if self.has(key) else None

    def blob(self, key: str, *, max_len: int = 1 << 20, default: Any = _MISSING) -> bytes:
        value, present = self._get(key, default)
        if not present:
            return value
        if not isinstance(value, bytes | bytearray):
            raise self._bad(key, "bytes", value)
        if len(value) > max_len:
            raise WireError(f"{self.what}.{key}: {len(value)} bytes, over {max_len}")
        return bytes(value)

    def integer(
        self,
        key: str,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
        default: Any = _MISSING,
    ) -> int:
        value, present = self._get(key, default)
        if not present:
            return value
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            value = int(value)  # pycrdt and JSON turn integers into floats
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._bad(key, "an integer", value)
        if minimum is not None and value < minimum:
            raise WireError(f"{self.what}.{key}: {value} is below {minimum}")
        if maximum is not None and value > maximum:
            raise WireError(f"{self.what}.{key}: {value} is above {maximum}")
        return value

    def number(
        self,
        key: str,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        default: Any = _MISSING,
    ) -> float:
        value, present = self._get(key, default)
        if not present:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._bad(key, "a number", value)
        try:
            number = float(value)
        except OverflowError:
            raise WireError(f"{self.what}.{key}: number out of range") from None
        if not math.isfinite(number):
            raise WireError(f"{self.what}.{key}: {number} is not a finite number")
        if minimum is not None and number < minimum:
            raise WireError(f"{self.what}.{key}: {number} is below {minimum}")
        if maximum is not None and number > maximum:
            raise WireError(f"{self.what}.{key}: {number} is above {maximum}")
        return number

    def flag(self, key: str, *, default: Any = _MISSING) -> bool:
        value, present = self._get(key, default)
        if not present:
            return value
        if not isinstance(value, bool):
            raise self._bad(key, "true or false", value)
        return value

    def items(self, key: str, *, max_items: int = MAX_ITEMS, default: Any = _MISSING) -> list[Any]:
        value, present = self._get(key, default)
        if not present:
            return value
        if not isinstance(value, list | tuple):
            raise self._bad(key, "a list", value)
        if len(value) > max_items:
            raise WireError(f"{self.what}.{key}: {len(value)} items, over {max_items}")
        return list(value)

    def fields(self, key: str, *, default: Any = _MISSING) -> Fields:
        value, present = self._get(key, default)
        return Fields(value if present or value is not None else {}, f"{self.what}.{key}")

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


def _type_name(value: object) -> str:
    if value is None:
        return "nothing"
    return type(value).__name__
