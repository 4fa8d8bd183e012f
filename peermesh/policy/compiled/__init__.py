"""Routing and authorization tables compiled once per policy change.

The proxy asks two questions per request, "where does this go?" and "may this caller do
this?". Both are answered here from immutable tables built by :func:`compile_policy`:
regexes are compiled, subsets are resolved to label selectors, rules of several Routes for
one host are concatenated in name order, and every :class:`RouteDecision` is prebuilt, so a
request costs a few comparisons and no allocation of policy objects. A new table is built
on every change and swapped in whole; requests in flight keep the table they started with.
:func:`compile_policy` is a pure function of immutable inputs, so for very large policies
it can run off the event-loop thread (``trio.to_thread.run_sync``).

``routing`` and ``authz`` hold the two kinds of table, ``table`` the whole policy.
"""

from peermesh.policy.compiled.authz import (
    AuthzDecision,
    AuthzRequest,
    CompiledAuthzPolicy,
    CompiledAuthzRule,
    Wildcard,
)
from peermesh.policy.compiled.routing import (
    CompiledMatch,
    CompiledRule,
    DestinationPolicy,
    Matcher,
    ResolvedDestination,
    RouteDecision,
)
from peermesh.policy.compiled.table import (
    EMPTY_POLICY,
    CompiledPolicy,
    JoinTokenGrant,
    compile_policy,
)

__all__ = [
    "EMPTY_POLICY",
    "AuthzDecision",
    "AuthzRequest",
    "CompiledAuthzPolicy",
    "CompiledAuthzRule",
    "CompiledMatch",
    "CompiledPolicy",
    "CompiledRule",
    "DestinationPolicy",
    "JoinTokenGrant",
    "Matcher",
    "ResolvedDestination",
    "RouteDecision",
    "Wildcard",
    "compile_policy",
]
