"""Policy regexes are RE2: what could backtrack or grow without bound is refused on apply."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from peermesh.policy.compiled.routing import Matcher
from peermesh.policy.model import StringMatch
from peermesh.policy.safe_regex import MAX_PROGRAM_SIZE, RegexRefused, compile_regex
from peermesh.policy.validate import PolicyError, parse_object
from peermesh.policy.validate.walker import MAX_NAMED

# Exponential under a backtracking engine (Python's re takes minutes on 30 a's and a 'b'),
# and its backreference has no linear-time equivalent: RE2 cannot compile it.
BACKTRACKING = r"^(a+)+\1$"

ROUTE: dict[str, Any] = {
    "kind": "Route",
    "name": "reviews",
    "spec": {
        "host": "reviews",
        "http": [
            {
                "match": [{"uri": {"prefix": "/"}}],
                "route": [{"destination": {"host": "reviews"}}],
            }
        ],
    },
}


def route_with(match: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(ROUTE)
    doc["spec"]["http"][0]["match"] = [match]
    return doc


def refusal(doc: dict[str, Any]) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        parse_object(doc)
    return info.value


@pytest.mark.parametrize(
    ("match", "path"),
    [
        ({"uri": {"regex": BACKTRACKING}}, "spec.http[0].match[0].uri.regex"),
        (
            {"headers": {"x-user": {"regex": "(?=admin).*"}}},
            "spec.http[0].match[0].headers.x-user.regex",
        ),
        ({"queryParams": {"q": {"regex": r"(\w)\1"}}}, "spec.http[0].match[0].queryParams.q.regex"),
        ({"uri": {"regex": "/(?<!x)y"}}, "spec.http[0].match[0].uri.regex"),
    ],
)
def test_patterns_re2_cannot_compile_are_refused_with_the_field_path(match, path) -> None:
    error = refusal(route_with(match))
    (single,) = error.errors
    assert single.path == path
    assert "bad regular expression" in single.reason
    assert single.hint is not None and "RE2" in single.hint


def test_a_pattern_whose_program_is_too_big_is_refused() -> None:
    with pytest.raises(RegexRefused, match="program of size"):
        compile_regex("[a-z]{900}x[0-9]{900}")
    error = refusal(route_with({"uri": {"regex": "/(a|b|c){999}"}}))
    assert error.errors[0].path == "spec.http[0].match[0].uri.regex"
    assert str(MAX_PROGRAM_SIZE) in error.errors[0].reason or "repetition" in error.errors[0].reason


def test_nested_quantifiers_are_linear_under_re2() -> None:
    # Catastrophic for a backtracking engine; RE2 answers at once, so it may stay.
    parse_object(route_with({"uri": {"regex": "/(a+)+"}}))
    matcher = Matcher.of(StringMatch(regex="/(a+)+"))
    assert matcher("/" + "a" * 64)
    assert not matcher("/" + "a" * 50_000 + "b")


def test_match_maps_are_bounded() -> None:
    headers = {f"x-h{i}": {"exact": "v"} for i in range(MAX_NAMED + 1)}
    error = refusal(route_with({"headers": headers}))
    assert error.errors[0].path == "spec.http[0].match[0].headers"
    assert f"the limit is {MAX_NAMED}" in error.errors[0].reason
    query = {f"q{i}": {"exact": "v"} for i in range(MAX_NAMED + 1)}
    assert "limit" in refusal(route_with({"queryParams": query})).errors[0].reason
    doc = copy.deepcopy(ROUTE)
    doc["spec"]["http"][0]["headers"] = {
        "request": {"set": {f"x-s{i}": "v" for i in range(MAX_NAMED + 1)}}
    }
    assert "limit" in refusal(doc).errors[0].reason
