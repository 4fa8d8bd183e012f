"""Bounded decoding of JSON and msgpack bodies at the agent's edges (admin API, control RPCs).

``json.loads`` recurses (deep nesting raises ``RecursionError``, not ``ValueError``), turns
``1e999`` into infinity and accepts ``NaN``; integers thousands of digits long cost quadratic
time to convert. A body is refused here, with a reason, before any handler sees it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

#: Deepest nesting of lists/maps accepted; real requests are a handful of levels deep.
MAX_DEPTH: Final = 64
#: Integers must fit in 64 bits (what msgpack carries, and more than any field needs).
MAX_INT: Final = 2**64 - 1
MIN_INT: Final = -(2**63)
_MAX_INT_DIGITS: Final = 20


class BoundsError(ValueError):
    """A body is well-formed but outside the bounds the agent accepts."""


def _parse_int(text: str) -> int:
    digits = text.lstrip("-")
    if len(digits) > _MAX_INT_DIGITS:
        raise BoundsError(f"integer of {len(digits)} digits does not fit in 64 bits")
    return _in_range(int(text))


def _parse_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise BoundsError(f"number {text[:40]!r} does not fit in a double")
    return value


def _no_constant(name: str) -> Any:
    raise BoundsError(f"{name} is not a JSON number")


def _in_range(value: int) -> int:
    if not MIN_INT <= value <= MAX_INT:
        raise BoundsError(f"integer {value} does not fit in 64 bits")
    return value


def check_bounds(value: object, *, max_depth: int = MAX_DEPTH) -> None:
    """Raise :class:`BoundsError` if ``value`` nests deeper than ``max_depth`` or holds an
    integer outside 64 bits; iterative, so hostile input cannot exhaust the stack."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, bool):
            continue
        if isinstance(item, int):
            _in_range(item)
        elif isinstance(item, Mapping | list | tuple):
            if depth > max_depth:
                raise BoundsError(f"nested deeper than {max_depth} levels")
            children = (
                list(item.keys()) + list(item.values()) if isinstance(item, Mapping) else item
            )
            stack.extend((child, depth + 1) for child in children)


def loads_json(data: bytes | str) -> Any:
    """``json.loads`` with bounds: raises ``ValueError`` (:class:`BoundsError` for bounds)."""
    try:
        value = json.loads(
            data, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_no_constant
        )
    except RecursionError:
        raise BoundsError(f"nested deeper than {MAX_DEPTH} levels") from None
    check_bounds(value)
    return value


def json_bounds_problem(data: bytes) -> str | None:
    """Why a JSON body is out of bounds, or None (also None if it is not JSON at all: the
    route that reads it says what it expected)."""
    try:
        loads_json(data)
    except BoundsError as exc:
        return str(exc)
    except ValueError:
        return None
    return None
