"""Clock skew for one lab host, through libfaketime (the Debian package ``faketime``).

Network namespaces do not virtualise ``CLOCK_REALTIME`` and the agent reads wall time
in many places (``time.time()``, ``datetime.now()``, OpenSSL's certificate validity
checks). So the host's agent *process* gets the skew: it is restarted (same data dir,
same ports, as ``restart`` does) with libfaketime preloaded and ``FAKETIME="+30s"``,
which offsets every ``time()``/``gettimeofday()``/``clock_gettime(CLOCK_REALTIME)``
call in it, Python and OpenSSL alike. ``FAKETIME_DONT_FAKE_MONOTONIC=1`` leaves the
monotonic clock alone, so trio's timers (and SWIM, retries, deadlines) run normally.
That is how a host with a wrong clock behaves: everything that reads the wall clock
is wrong by the same amount, nothing else is.

The library is preloaded directly (not through the ``faketime`` wrapper, which forks
and would leave the lab holding the wrapper's pid instead of the agent's).
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping

MAX_OFFSET_S = 86_400.0  # ±1 day: beyond that it is a broken clock, not a skew
LIBRARY_NAMES = ("libfaketimeMT.so.1", "libfaketime.so.1")  # MT: the agent has threads
LIBRARY_DIRS = (
    "/usr/lib/*/faketime",
    "/usr/lib/faketime",
    "/usr/lib64/faketime",
    "/usr/local/lib/faketime",
    "/usr/local/lib/*/faketime",
)
LIBRARY_ENV = "CHAOS_LIBFAKETIME"  # an explicit path wins (a libfaketime built elsewhere)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86_400.0}
_OFFSET = re.compile(r"^([+-]?)(\d+(?:\.\d+)?)(ms|s|min|m|h|d)?$")


class ClockSkewError(ValueError):
    """A clock skew that cannot be applied; the message says what, why and what to do."""


class FaketimeMissing(ClockSkewError):
    """libfaketime is not installed (or does not work) on this machine."""


def parse_offset(text: str | float | int) -> float:
    """``"30s"``, ``"+30s"``, ``"-45s"``, ``"0"``, ``"2m"``, ``"500ms"``, ``30`` -> seconds.

    A bare number is seconds. Refused: anything else, and more than ±1 day.
    """
    if isinstance(text, bool):
        raise ClockSkewError(f"clock offset {text!r} is not a duration (e.g. 30s, -45s, 0)")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        spec = str(text).strip().lower().replace(" ", "")
        match = _OFFSET.match(spec)
        if not match:
            raise ClockSkewError(
                f"clock offset {text!r} is not a duration: write a signed number with an "
                "optional unit ms, s, m, h or d (e.g. 30s, -45s, +2m, 0)"
            )
        sign, number, unit = match.groups()
        seconds = float(number) * _UNITS[unit or "s"] * (-1.0 if sign == "-" else 1.0)
    if not math.isfinite(seconds):
        raise ClockSkewError(f"clock offset {text!r} is not a finite number of seconds")
    if abs(seconds) > MAX_OFFSET_S:
        raise ClockSkewError(
            f"clock offset {text!r} ({seconds:+g} s) is larger than ±1 day: that is a "
            "broken clock (certificates would be expired or not yet valid everywhere), not "
            "a skew; use an offset within ±86400 s"
        )
    return round(seconds, 3)


def format_offset(seconds: float) -> str:
    """Seconds -> libfaketime's relative format (``+30s``, ``-45s``, ``+1.5s``)."""
    if float(seconds).is_integer():
        return f"{int(seconds):+d}s"
    return f"{seconds:+.3f}s"


def find_library(env: Mapping[str, str] | None = None) -> str:
    """The path of libfaketime, or FaketimeMissing saying how to install it."""
    env = os.environ if env is None else env
    explicit = env.get(LIBRARY_ENV)
    if explicit:
        if os.path.isfile(explicit):
            return explicit
        raise FaketimeMissing(f"{LIBRARY_ENV}={explicit} does not exist")
    for name in LIBRARY_NAMES:
        for pattern in LIBRARY_DIRS:
            found = sorted(glob.glob(os.path.join(pattern, name)))
            if found:
                return found[0]
    raise FaketimeMissing(
        "clock-skew needs libfaketime, which is not installed: the agent reads wall time in "
        "many places (Python and OpenSSL), and only a preloaded libfaketime offsets all of "
        "them for one process. Install it with 'apt-get install faketime' (or set "
        f"{LIBRARY_ENV} to a libfaketime.so)"
    )


def faketime_env(seconds: float, library: str | None = None) -> dict[str, str]:
    """The environment that runs a process with its wall clock offset by ``seconds``.

    Empty for 0 (a restored clock is the real clock, nothing preloaded).
    """
    if seconds == 0:
        return {}
    return {
        "LD_PRELOAD": library or find_library(),
        "FAKETIME": format_offset(seconds),
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",  # trio's timers must not jump
    }


_PROBE = (
    "import datetime, json, time; "
    "print(json.dumps([time.time(), datetime.datetime.now(datetime.timezone.utc)"
    ".timestamp(), time.monotonic(), time.perf_counter()]))"
)


def probe(seconds: float, library: str | None = None) -> dict[str, float]:
    """Run Python under the skew; how far each of its clocks is from ours.

    ``wall`` and ``datetime`` should be ``seconds`` (± a process start-up),
    ``monotonic`` and ``perf_counter`` (trio's clock) ≈ 0.
    """
    env = dict(os.environ, **faketime_env(seconds, library))
    before = (time.time(), time.monotonic(), time.perf_counter())
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=30
    )
    after = (time.time(), time.monotonic(), time.perf_counter())
    if out.returncode != 0:
        raise FaketimeMissing(
            f"python under libfaketime failed ({out.returncode}): {out.stderr.strip()[-300:]}"
        )
    wall, now_dt, mono, perf = json.loads(out.stdout)
    mid = [(a + b) / 2 for a, b in zip(before, after, strict=True)]
    return {
        "wall": wall - mid[0],
        "datetime": now_dt - mid[0],
        "monotonic": mono - mid[1],
        "perf_counter": perf - mid[2],
        "startup": after[1] - before[1],
    }


def verify(seconds: float, library: str | None = None) -> dict[str, float]:
    """Refuse (FaketimeMissing) unless the skew really reaches a process's clocks.

    The wall clock must be off by ``seconds`` and the monotonic clocks not at all,
    each within the probe's own start-up time (+1 s).
    """
    if seconds == 0:
        return {}
    seen = probe(seconds, library)
    slack = seen["startup"] + 1.0
    problems = []
    for clock in ("wall", "datetime"):
        if abs(seen[clock] - seconds) > slack:
            problems.append(f"{clock} clock off by {seen[clock]:+.1f} s, not {seconds:+g} s")
    for clock in ("monotonic", "perf_counter"):
        if abs(seen[clock]) > slack:
            problems.append(f"{clock} clock moved by {seen[clock]:+.1f} s (must not)")
    if problems:
        raise FaketimeMissing(
            "libfaketime is installed but does not skew a Python process as expected: "
            + "; ".join(problems)
            + " (is the library for this architecture? is LD_PRELOAD ignored here?)"
        )
    return seen
