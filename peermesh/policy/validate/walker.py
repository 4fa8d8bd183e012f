"""The field walker every kind's checks share: typed reads that record problems, not raise.

A check reads one field with a parser such as ``_int(ctx, value, path, lo=1, hi=10)``;
a bad value adds a :class:`PolicyError` with its field path to the context and returns
None, so one pass finds *every* problem in an object. The names are underscored because
they are this package's internals; :mod:`peermesh.policy.validate` is the public face.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from peermesh.policy.errors import PolicyError
from peermesh.policy.model import Pairs, parse_duration
from peermesh.policy.safe_regex import RE2_HINT, RegexRefused, compile_regex

MAX_LIST = 1024
# Header/query matches and header edits are checked or applied on every request; a
# mapping of this many entries is far beyond any real policy and keeps that work bounded.
MAX_NAMED = 64
MAX_REGEX_LEN = 1024
MAX_DURATION = 24 * 3600.0
HOUR = 3600.0

T = TypeVar("T")


class _Ctx:
    """Collects every problem in one object instead of stopping at the first."""

    def __init__(self, kind: str | None, name: str | None) -> None:
        self.kind = kind
        self.name = name
        self.errors: list[PolicyError] = []

    def error(self, path: str, reason: str, hint: str | None = None) -> None:
        self.errors.append(
            PolicyError(reason, kind=self.kind, name=self.name, path=path, hint=hint)
        )


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


class _Fields:
    """A mapping already checked for unknown keys, with one-line access to optional fields."""

    def __init__(self, ctx: _Ctx, data: dict[str, Any], path: str) -> None:
        self.ctx = ctx
        self.data = data
        self.path = path

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def __len__(self) -> int:
        return len(self.data)

    def at(self, key: str) -> str:
        return _join(self.path, key)

    def get(self, key: str, parse: Callable[..., T | None], **options: Any) -> T | None:
        """Parse ``key`` with ``parse(ctx, value, path, **options)``; None if absent or bad."""
        if key not in self.data:
            return None
        return parse(self.ctx, self.data[key], self.at(key), **options)

    def get_or(
        self, key: str, default: T, parse: Callable[..., T | None], **options: Any
    ) -> T | None:
        """Like :meth:`get` but ``default`` when absent (None still means invalid)."""
        if key not in self.data:
            return default
        return parse(self.ctx, self.data[key], self.at(key), **options)

    def many(
        self, key: str, parse: Callable[..., T | None], *, min_items: int = 0
    ) -> tuple[T, ...]:
        if key not in self.data:
            return ()
        return _each(self.ctx, self.data[key], self.at(key), parse, min_items=min_items)


def _mapping(
    ctx: _Ctx, value: object, path: str, allowed: Sequence[str], required: Sequence[str] = ()
) -> _Fields | None:
    """A mapping with only ``allowed`` keys; unknown keys are refused with a suggestion."""
    if not isinstance(value, Mapping):
        ctx.error(
            path or "(top level)",
            f"expected a mapping with fields {', '.join(allowed)}, got {_type_name(value)}",
        )
        return None
    result: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            ctx.error(path, f"field names must be strings, got {_type_name(key)} {key!r}")
        elif key not in allowed:
            import difflib  # only misspelt input pays for it

            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(allowed)}"
            ctx.error(_join(path, key), f"unknown field '{key}'", hint)
        else:
            result[key] = item
    for key in required:
        if key not in value:
            ctx.error(_join(path, key), "required field is missing")
    return _Fields(ctx, result, path)


def _some(ctx: _Ctx, value: object, path: str, allowed: Sequence[str]) -> _Fields | None:
    """A mapping of optional fields with at least one of them set (an empty one would
    mean nothing and is refused)."""
    f = _mapping(ctx, value, path, allowed)
    if f is not None and not len(f):
        ctx.error(path, f"set {', '.join(repr(a) for a in allowed)} or both")
        return None
    return f


def _wrapped(
    ctx: _Ctx, value: object, path: str, key: str, allowed: Sequence[str]
) -> _Fields | None:
    """The fields of a mapping wrapped in a required one-key mapping (``{key: {...}}``, as
    each entry of an AuthorizationPolicy rule's ``from`` and ``to`` is written)."""
    outer = _mapping(ctx, value, path, (key,), (key,))
    if outer is None or key not in outer:
        return None
    return _mapping(ctx, outer.data[key], outer.at(key), allowed)


def _list(ctx: _Ctx, value: object, path: str, *, min_items: int = 0) -> list[Any] | None:
    if not isinstance(value, list | tuple):
        ctx.error(path, f"expected a list, got {_type_name(value)}")
        return None
    if len(value) < min_items:
        ctx.error(path, f"needs at least {min_items} entr{'y' if min_items == 1 else 'ies'}")
        return None
    if len(value) > MAX_LIST:
        ctx.error(path, f"has {len(value)} entries, the limit is {MAX_LIST}")
        return None
    return list(value)


def _each(
    ctx: _Ctx,
    value: object,
    path: str,
    parse: Callable[..., T | None],
    *,
    min_items: int = 0,
) -> tuple[T, ...]:
    items = _list(ctx, value, path, min_items=min_items)
    if items is None:
        return ()
    out: list[T] = []
    for i, item in enumerate(items):
        parsed = parse(ctx, item, f"{path}[{i}]")
        if parsed is not None:
            out.append(parsed)
    return tuple(out)


def _str(
    ctx: _Ctx,
    value: object,
    path: str,
    *,
    pattern: re.Pattern[str] | None = None,
    what: str = "",
    max_len: int = 1024,
    hint: str | None = None,
    allow_empty: bool = False,
) -> str | None:
    if not isinstance(value, str):
        label = f" ({what})" if what else ""
        ctx.error(path, f"expected a string{label}, got {_type_name(value)}")
        return None
    if not value and not allow_empty:
        ctx.error(path, "must not be empty")
        return None
    if len(value) > max_len:
        ctx.error(path, f"is {len(value)} characters long, the limit is {max_len}")
        return None
    if pattern is not None and not pattern.fullmatch(value):
        ctx.error(path, f"{value!r} is not a valid {what}", hint)
        return None
    return value


def _text(
    *,
    pattern: re.Pattern[str] | None = None,
    what: str = "",
    max_len: int = 1024,
    hint: str | None = None,
    allow_empty: bool = False,
) -> Callable[[_Ctx, object, str], str | None]:
    """The leaf check of one kind of string field: :func:`_str` with these rules."""

    def check(ctx: _Ctx, value: object, path: str) -> str | None:
        return _str(
            ctx,
            value,
            path,
            pattern=pattern,
            what=what,
            max_len=max_len,
            hint=hint,
            allow_empty=allow_empty,
        )

    return check


def _int(ctx: _Ctx, value: object, path: str, *, lo: int, hi: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        ctx.error(path, f"expected an integer, got {_type_name(value)} {value!r}")
        return None
    if not lo <= value <= hi:
        ctx.error(path, f"{value} is out of range, must be between {lo} and {hi}")
        return None
    return value


def _number(ctx: _Ctx, value: object, path: str, *, lo: float, hi: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        ctx.error(path, f"expected a number, got {_type_name(value)} {value!r}")
        return None
    number = float(value)
    if not math.isfinite(number) or not lo <= number <= hi:
        ctx.error(path, f"{value} is out of range, must be between {lo:g} and {hi:g}")
        return None
    return number


def _bool(ctx: _Ctx, value: object, path: str) -> bool | None:
    if not isinstance(value, bool):
        ctx.error(path, f"expected true or false, got {_type_name(value)} {value!r}")
        return None
    return value


def _enum(ctx: _Ctx, value: object, path: str, *, choices: Sequence[str]) -> str | None:
    if not isinstance(value, str):
        ctx.error(path, f"expected one of {', '.join(choices)}, got {_type_name(value)}")
        return None
    if value not in choices:
        upper = value.upper()
        hint = f"did you mean '{upper}'?" if upper in choices else None
        ctx.error(path, f"{value!r} is not one of {', '.join(choices)}", hint)
        return None
    return value


def _duration(
    ctx: _Ctx, value: object, path: str, *, lo: float = 0.0, hi: float = MAX_DURATION
) -> float | None:
    """Durations are strings with units; bare numbers are refused (their unit is a guess)."""
    if isinstance(value, bool) or not isinstance(value, str):
        hint = f"write e.g. '{value}s'" if isinstance(value, int | float) else None
        ctx.error(
            path,
            f"expected a duration string such as '250ms' or '2s', got {_type_name(value)}",
            hint,
        )
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        ctx.error(path, str(exc))
        return None
    if seconds <= 0.0:
        ctx.error(path, f"duration {value!r} must be greater than zero")
        return None
    if seconds < lo or seconds > hi:
        ctx.error(path, f"duration {value!r} is out of range, must be between {lo:g}s and {hi:g}s")
        return None
    return seconds


def _percentage(ctx: _Ctx, value: object, path: str) -> float | None:
    """Istio's ``{value: 0..100}`` shape."""
    fields = _mapping(ctx, value, path, ("value",), ("value",))
    if fields is None:
        return None
    return fields.get("value", _number, lo=0.0, hi=100.0)


def _regex(ctx: _Ctx, value: object, path: str) -> str | None:
    text = _str(ctx, value, path, what="regular expression", max_len=MAX_REGEX_LEN)
    if text is None:
        return None
    try:
        compile_regex(text)
    except RegexRefused as exc:
        ctx.error(path, f"bad regular expression {text!r}: {exc}", RE2_HINT)
        return None
    return text


def _unique(ctx: _Ctx, items: Iterable[tuple[str, object]], what: str) -> None:
    seen: set[object] = set()
    for item_path, item in items:
        if item in seen:
            ctx.error(item_path, f"{what} {item!r} is listed twice")
        seen.add(item)


def _pairs(
    ctx: _Ctx,
    value: object,
    path: str,
    *,
    key_check: Callable[[_Ctx, object, str], str | None],
    value_check: Callable[[_Ctx, object, str], str | None],
    max_items: int = MAX_NAMED,
) -> Pairs | None:
    """A string-to-string mapping, stored sorted so equal mappings compare (and hash) equal."""
    if not isinstance(value, Mapping):
        ctx.error(path, f"expected a mapping, got {_type_name(value)}")
        return None
    if len(value) > max_items:
        ctx.error(path, f"has {len(value)} entries, the limit is {max_items}")
        return None
    out: dict[str, str] = {}
    for raw_key, raw_value in value.items():
        sub = _join(path, str(raw_key))
        key = key_check(ctx, raw_key, sub)
        val = value_check(ctx, raw_value, sub)
        if key is not None and key in out:
            ctx.error(sub, f"'{key}' is given twice (names are case-insensitive)")
        elif key is not None and val is not None:
            out[key] = val
    return tuple(sorted(out.items()))
