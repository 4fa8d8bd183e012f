"""What every kind shares: the kind names, durations, and one canonical spelling."""

from __future__ import annotations

import decimal
import math
import re
from typing import Any, TypeAlias

API_VERSION = "peermesh.io/v1"
ROUTE = "Route"
TRAFFIC_POLICY = "TrafficPolicy"
AUTHORIZATION_POLICY = "AuthorizationPolicy"
MESH_CONFIG = "MeshConfig"
JOIN_TOKEN = "JoinToken"
#: Written only by the agent that coordinated a committee change (a record, never a command).
COMMITTEE_CHANGE = "CommitteeChange"
KINDS: tuple[str, ...] = (
    ROUTE,
    TRAFFIC_POLICY,
    AUTHORIZATION_POLICY,
    MESH_CONFIG,
    JOIN_TOKEN,
    COMMITTEE_CHANGE,
)
#: MeshConfig is a singleton: exactly one name is accepted, so replicas cannot disagree
#: about which of several mesh configurations applies.
MESH_CONFIG_NAME = "default"

Pairs: TypeAlias = tuple[tuple[str, str], ...]
JSON: TypeAlias = dict[str, Any]

# ---------------------------------------------------------------------------- durations

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(text: str) -> float:
    """Parse a Go/Istio style duration (``"250ms"``, ``"2s"``, ``"1m30s"``) into seconds.

    Raises ``ValueError`` with a message that says what a valid duration looks like,
    because a bare number is the most common mistake and its unit would be a guess.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected a duration string such as '250ms' or '2s', got {text!r}")
    stripped = text.strip()
    if not stripped:
        raise ValueError("empty duration; write e.g. '250ms', '2s' or '1m30s'")
    if stripped.startswith("-"):
        raise ValueError(f"negative duration {text!r} is not allowed")
    pos = 0
    parts: list[tuple[str, str]] = []
    while pos < len(stripped):
        match = _DURATION_PART.match(stripped, pos)
        if match is None:
            if re.fullmatch(r"\d+(\.\d*)?", stripped[pos:]):
                raise ValueError(f"duration {text!r} has no unit; write e.g. '{stripped}s'")
            raise ValueError(
                f"invalid duration {text!r}; use numbers with units ns, us, ms, s, m, h "
                "such as '250ms', '2s' or '1m30s'"
            )
        parts.append((match.group(1), match.group(2)))
        pos = match.end()
    if len(parts) == 1:
        number, unit = parts[0]
        # Integer milliseconds are divided, not multiplied, so "100ms" is exactly 0.1.
        if unit == "ms" and number.isdigit():
            return int(number) / 1000
        return float(number) * _UNIT_SECONDS[unit]
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def format_duration(seconds: float) -> str:
    """Format seconds as the shortest duration string that parses back to the same float."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"cannot format duration {seconds!r}")
    if seconds == 0:
        return "0s"
    if seconds.is_integer():
        whole = int(seconds)
        if whole % 3600 == 0:
            return f"{whole // 3600}h"
        if whole % 60 == 0:
            return f"{whole // 60}m"
        return f"{whole}s"
    millis = round(seconds * 1000)
    if millis > 0 and millis / 1000 == seconds:
        return f"{millis}ms"
    # Shortest repr, written without an exponent ("1e-06" is not a duration).
    return f"{format(decimal.Decimal(repr(seconds)), 'f')}s"


def _drop_empty(data: JSON) -> JSON:
    """Omit unset fields so the canonical form (and thus the content hash) has one spelling;
    a nested model object is written as its own document form."""
    out: JSON = {}
    for key, value in data.items():
        if hasattr(value, "to_dict"):
            value = value.to_dict()
        if value is not None and value != [] and value != {}:
            out[key] = value
    return out


__all__ = [
    "API_VERSION",
    "AUTHORIZATION_POLICY",
    "COMMITTEE_CHANGE",
    "JOIN_TOKEN",
    "JSON",
    "KINDS",
    "MESH_CONFIG",
    "MESH_CONFIG_NAME",
    "ROUTE",
    "TRAFFIC_POLICY",
    "Pairs",
    "format_duration",
    "parse_duration",
]
