"""Policy regexes run in linear time: RE2, with a program-size cap (Envoy's ``safe_regex``).

Python's ``re`` backtracks, so one pattern such as ``(a+)+$`` against one crafted path can
hold the event loop for minutes. RE2 has no backtracking and no backreferences or lookaround;
what it cannot compile (or what compiles to a program larger than :data:`MAX_PROGRAM_SIZE`)
is refused when the policy is validated, so it never reaches a replica's route table.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    import re2

# RE2 (with libre2, abseil and libstdc++ behind it, about 2.4 MiB resident) is loaded by
# the first policy regex, not by every agent at start-up: an agent whose policy has no
# regex never needs it. A missing package is still refused here, when this module loads.
if importlib.util.find_spec("re2") is None:
    raise ImportError("peermesh needs RE2 for policy regexes: pip install google-re2")

# Envoy's default ``re2.max_program_size.error_level`` is 100; policies in the wild (and
# ours) use alternations of a few dozen literals, so the cap leaves room for those while
# still bounding both memory and the per-request cost of one match.
MAX_PROGRAM_SIZE: Final = 1000
# RE2's own memory budget for one compiled pattern (its DFA cache included).
MAX_MEMORY: Final = 1 << 20

RE2_HINT: Final = (
    "policy regexes use RE2 syntax (as Envoy and Istio do): no backreferences such as"
    " '\\1', no lookahead/lookbehind, repetition counts up to 1000"
)


class CompiledRegex(Protocol):
    """What the route table needs from a compiled pattern."""

    def fullmatch(self, text: str) -> object | None:
        """A match object if the whole of ``text`` matches, else None."""


class RegexRefused(ValueError):
    """The pattern is not valid RE2, or compiles to a program over the cap."""


def _options() -> re2.Options:
    import re2

    options = re2.Options()
    options.max_mem = MAX_MEMORY
    options.log_errors = False  # RE2 writes refusals to stderr otherwise
    return options


def compile_regex(pattern: str) -> CompiledRegex:
    """Compile ``pattern`` with RE2; raises :class:`RegexRefused` with the reason."""
    import re2

    try:
        compiled = re2.compile(pattern, _options())
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise RegexRefused(str(reason)) from None
    size = int(compiled.programsize)
    if size > MAX_PROGRAM_SIZE:
        raise RegexRefused(
            f"compiles to an RE2 program of size {size}, the limit is {MAX_PROGRAM_SIZE}"
        )
    return compiled
