"""Parsers for the quantities people write in flags and files: durations and fractions."""

from __future__ import annotations


def parse_duration(text: str) -> float:
    """'90s', '30m', '1h', '2d' (or plain seconds) to seconds; ValueError says the format."""
    text = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        unit = units.get(text[-1:], 0)
        value = float(text[:-1]) * unit if unit else float(text)
    except ValueError:
        raise ValueError(f"duration {text!r}: write e.g. 90s, 30m, 1h or 2d") from None
    if value <= 0:
        raise ValueError(f"duration {text!r} must be positive")
    return value


def parse_sampling(value: str | float) -> float:
    """A sampling fraction from ``0.25``, ``1`` or ``"5%"``; ValueError when outside 0..1."""
    text = str(value).strip()
    try:
        fraction = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ValueError(
            "give the fraction of traces to sample, from 0 to 1 (e.g. 0.01), or a percentage"
            " (e.g. 1%)"
        ) from None
    if not 0.0 <= fraction <= 1.0:  # also refuses NaN
        raise ValueError("the fraction of traces to sample must lie between 0 and 1 (0%..100%)")
    return fraction
