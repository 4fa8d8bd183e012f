"""Control messages whose wire form follows from their fields: ``WireMessage``.

A message declares its fields with types and, where a type check is not enough, the
field's constraints (``wire(max_len=..., minimum=..., key=...)``); the map it travels
as, and every bounded, checked read of it, are derived once when the class is defined:

* ``str``, ``bytes``, ``int``, ``float``, ``bool``: the :mod:`peermesh.core.wire`
  checks with the field's bounds; an ``Enum`` travels as its value;
* ``X | None``: absent (or nil) decodes as ``None``;
* ``tuple[X, ...]``: a bounded list of ``X``; ``tuple[X, Y]``: a list of exactly those;
* ``Mapping[...]``: a map, checked further by the field's ``decode`` hook if it has one;
* another message, or a type with its own ``to_wire``/``from_wire``: nested, its errors
  named by the field that holds it;
* ``Any``: carried as is (an opaque payload its handler checks).

A wrong type, a missing field, an unknown enum value or an oversized value is a
:class:`~peermesh.core.wire.WireError` (400) naming the message and the field, or
whatever the class's ``refuse`` turns that into (a file's own error, say).
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Self, dataclass_transform

from peermesh.core.errors import PeermeshError
from peermesh.core.wire import (
    MAX_BLOB,
    MAX_ITEMS,
    MAX_TEXT,
    WireError,
    check_blob,
    check_flag,
    check_integer,
    check_items,
    check_number,
    check_text,
    field_map,
    type_name,
)

__all__ = ["WireMessage", "WireSpec", "wire"]

_SPEC = "peermesh.wire"
_NONE: Any = object()

Read = Callable[[Any, str], Any]
Write = Callable[[Any], Any]

# What a nested type's own ``from_wire`` may raise on a malformed value: named by field.
_NESTED_ERRORS = (
    PeermeshError,
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
    IndexError,
    ArithmeticError,
)


@dataclasses.dataclass(frozen=True)
class WireSpec:
    """One field's constraints beyond its type, and hooks where its form is its own."""

    key: str | None = None  # the wire name, when it is not the field's
    max_len: int | None = None  # characters, bytes or list items
    length: int | None = None  # bytes: exactly this many
    minimum: float | None = None
    maximum: float | None = None
    item_len: int | None = None  # each text or bytes item of a list
    choices: tuple[str, ...] = ()  # text: one of these
    absent: Any = _NONE  # the value a missing field decodes as, when not the field default
    check: Read | None = None  # (value, where) -> value, after the type's read
    decode: Read | None = None  # (raw, where) -> value, instead of the type's read
    item: Read | None = None  # (raw, where) -> item, for each item of a list
    encode: Write | None = None  # value -> wire, instead of the type's form


def wire(*, default: Any = dataclasses.MISSING, **spec: Any) -> Any:
    """A message field with constraints (see :class:`WireSpec`) and an optional default."""
    return dataclasses.field(default=default, metadata={_SPEC: WireSpec(**spec)})


@dataclasses.dataclass(frozen=True)
class _Field:
    name: str
    key: str
    read: Read
    write: Write
    optional: bool
    default: Any  # _NONE: required
    nested: bool  # read by another type's decoder or a hook: checked after plain fields


@dataclass_transform(frozen_default=True, field_specifiers=(wire, dataclasses.field))
class WireMessage:
    """A frozen dataclass whose ``to_wire``/``from_wire`` are derived from its fields.

    Class keywords: ``what`` names the message in errors; ``bare`` sends the one field's
    value itself rather than a map; ``omit_none`` leaves unset optional fields out of the
    map; ``refuse`` turns a decode's ``WireError`` into the error the caller expects.
    """

    _what: ClassVar[str]
    _bare: ClassVar[bool]
    _omit_none: ClassVar[bool]
    _refuse: ClassVar[Callable[[WireError], Exception] | None]
    _fields: ClassVar[tuple[_Field, ...]]
    _reads: ClassVar[tuple[_Field, ...]]

    def __init_subclass__(
        cls,
        *,
        what: str,
        bare: bool = False,
        omit_none: bool = False,
        refuse: Callable[[WireError], Exception] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        dataclasses.dataclass(frozen=True)(cls)
        cls._what, cls._bare, cls._omit_none, cls._refuse = what, bare, omit_none, refuse
        hints = typing.get_type_hints(cls)
        cls._fields = tuple(
            _field(f, hints[f.name]) for f in dataclasses.fields(typing.cast(Any, cls))
        )
        # Cheap shape checks first: a body wrong in a plain field costs no nested decode.
        cls._reads = tuple(sorted(cls._fields, key=lambda f: f.nested))
        if bare and len(cls._fields) > 1:
            raise TypeError(f"{cls.__name__}: a bare message has at most one field")

    def to_wire(self) -> Any:
        """A msgpack-ready value: the fields under their keys, in declaration order."""
        if self._bare:
            return (
                self._fields[0].write(getattr(self, self._fields[0].name)) if self._fields else None
            )
        out: dict[str, Any] = {}
        for f in self._fields:
            value = getattr(self, f.name)
            if value is None:
                if not self._omit_none:
                    out[f.key] = None
            else:
                out[f.key] = f.write(value)
        return out

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        """Decode and check every field; anything unexpected is a ``WireError`` naming it."""
        try:
            message = cls(**cls._decode(raw))
        except WireError as exc:
            if cls._refuse is None:
                raise
            raise cls._refuse(exc) from None
        message.check_decoded()
        return message

    @classmethod
    def _decode(cls, raw: Any) -> dict[str, Any]:
        if cls._bare:
            return {f.name: _bare_value(f, raw, cls._what) for f in cls._fields}
        if not isinstance(raw, Mapping):
            raise WireError(f"{cls._what}: expected a map, got {type_name(raw)}")
        values = {}
        for f in cls._reads:
            value = raw.get(f.key)
            if value is None and f.default is _NONE and not f.optional:
                raise WireError(f"{cls._what}: field {f.key!r} is missing")
            values[f.name] = _value(f, value, f"{cls._what}.{f.key}")
        return values

    def check_decoded(self) -> None:
        """What a decoded message must also satisfy across its fields (none by default)."""


def _bare_value(f: _Field, raw: Any, what: str) -> Any:
    return f.default if raw is None and f.default is not _NONE else f.read(raw, what)


def _value(f: _Field, value: Any, where: str) -> Any:
    if value is not None:
        return f.read(value, where)
    return None if f.default is _NONE else f.default


def _field(f: dataclasses.Field[Any], hint: Any) -> _Field:
    spec: WireSpec = f.metadata.get(_SPEC, WireSpec())
    tp, optional = _unwrap_optional(hint)
    derived, write = _codec(tp, spec)
    read = _required(spec.decode or derived, tp)
    if spec.check is not None:
        read = _then(read, spec.check)
    default = spec.absent
    if default is _NONE and f.default is not dataclasses.MISSING:
        default = f.default
    if default is _NONE and optional:
        default = None
    nested = spec.decode is not None or (hasattr(tp, "from_wire") and not typing.get_args(tp))
    return _Field(f.name, spec.key or f.name, read, spec.encode or write, optional, default, nested)


def _required(read: Read | None, tp: Any) -> Read:
    if read is None:
        raise TypeError(f"fields of type {tp!r} need a decode (or item) hook")
    return read


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], len(args) < len(typing.get_args(hint))
    return hint, False


def _then(read: Read, check: Read) -> Read:
    return lambda value, where: check(read(value, where), where)


def _as_is(value: Any) -> Any:
    return value


def _opaque(value: Any, where: str) -> Any:
    return value


def _codec(tp: Any, spec: WireSpec) -> tuple[Read | None, Write]:
    """How a field of type ``tp`` is read (checked) and written."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return _opaque, _as_is
    if tp is str:
        return _text_reader(spec), _as_is
    if tp is bytes:
        return _blob_reader(spec), _as_is
    if tp is bool:
        return check_flag, _as_is
    if tp is int:
        low, high = spec.minimum, spec.maximum
        return lambda v, w: check_integer(v, w, _opt_int(low), _opt_int(high)), _as_is
    if tp is float:
        return lambda v, w: check_number(v, w, spec.minimum, spec.maximum), _as_is
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum_reader(tp, spec), lambda v: v.value
    if origin is tuple:
        return _tuple_codec(typing.get_args(tp), spec)
    if origin is not None and isinstance(origin, type) and issubclass(origin, Mapping):
        return _map_reader, dict
    if isinstance(tp, type) and issubclass(tp, WireMessage):
        return lambda v, w: tp.from_wire(v), lambda v: v.to_wire()
    if hasattr(tp, "from_wire") and hasattr(tp, "to_wire"):
        return _nested_reader(tp), lambda v: v.to_wire()
    if dataclasses.is_dataclass(tp):
        return None, field_map  # a plain record: its field's decode or item hook reads it
    raise TypeError(f"no wire form for fields of type {tp!r}")


def _opt_int(bound: float | None) -> int | None:
    return None if bound is None else int(bound)


def _text_reader(spec: WireSpec) -> Read:
    max_len, choices = spec.max_len or MAX_TEXT, spec.choices

    def read(value: Any, where: str) -> str:
        text = check_text(value, where, max_len)
        if choices and text not in choices:
            raise WireError(f"{where}: {text!r} is not one of {', '.join(choices)}")
        return text

    return read


def _blob_reader(spec: WireSpec) -> Read:
    max_len, length = spec.length or spec.max_len or MAX_BLOB, spec.length

    def read(value: Any, where: str) -> bytes:
        blob = check_blob(value, where, max_len)
        if length is not None and len(blob) != length:
            raise WireError(f"{where}: expected {length} bytes")
        return blob

    return read


def _enum_reader(tp: type[enum.Enum], spec: WireSpec) -> Read:
    known = ", ".join(str(k.value) for k in tp)
    by_value = {k.value: k for k in tp}

    def read(value: Any, where: str) -> enum.Enum:
        text = check_text(value, where, spec.max_len or 64)
        member = by_value.get(text)
        if member is None:
            raise WireError(f"{where}: {text!r} is not one of {known}")
        return member

    return read


def _tuple_codec(args: tuple[Any, ...], spec: WireSpec) -> tuple[Read | None, Write]:
    item_spec = WireSpec(max_len=spec.item_len)
    if len(args) == 2 and args[1] is Ellipsis:
        derived, item_write = _codec(args[0], item_spec)
        item_read = _required(spec.item or derived, args[0])
        max_items = spec.max_len or MAX_ITEMS

        def read_list(value: Any, where: str) -> tuple[Any, ...]:
            items = check_items(value, where, max_items)
            return tuple(item_read(item, f"{where}[{i}]") for i, item in enumerate(items))

        if item_write is _as_is:
            return read_list, list
        return read_list, lambda v: [item_write(item) for item in v]
    codecs = [(_required(r, a), w) for a in args for r, w in [_codec(a, item_spec)]]
    shape = ", ".join(getattr(a, "__name__", str(a)) for a in args)

    def read_fixed(value: Any, where: str) -> tuple[Any, ...]:
        if not isinstance(value, list | tuple) or len(value) != len(codecs):
            raise WireError(f"{where}: expected [{shape}], got {type_name(value)}")
        return tuple(
            r(item, f"{where}[{i}]")
            for i, ((r, _), item) in enumerate(zip(codecs, value, strict=True))
        )

    return read_fixed, lambda v: [w(item) for (_, w), item in zip(codecs, v, strict=True)]


def _map_reader(value: Any, where: str) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise WireError(f"{where}: expected a map, got {type_name(value)}")
    return value


def _nested_reader(tp: Any) -> Read:
    def read(value: Any, where: str) -> Any:
        try:
            return tp.from_wire(value)
        except WireError:
            raise
        except _NESTED_ERRORS as exc:
            raise WireError(f"{where}: {exc}") from None

    return read


def _no_reader(tp: Any) -> Read:
    def read(value: Any, where: str) -> Any:
        raise TypeError(f"{where}: {tp.__name__} fields need a decode hook")

    return read
