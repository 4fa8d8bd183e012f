"""Routing and authorization policy that lives on every agent, replicated as a CRDT.

Sans-IO cores:

* :mod:`~peermesh.policy.model` — the kinds (Route, TrafficPolicy,
  AuthorizationPolicy, MeshConfig, JoinToken, CommitteeChange) as frozen dataclasses;
* :mod:`~peermesh.policy.validate` — strict validation with readable errors;
* :mod:`~peermesh.policy.errors` — every refusal, each a ``PeermeshError``;
* :mod:`~peermesh.policy.loader` — YAML/JSON files and directories;
* :mod:`~peermesh.policy.store` — the replicated store, over ``records`` (codec),
  ``crdt`` (the document), ``index`` (winners), ``authority`` (MeshConfig admins) and
  ``intake`` (checks on peers' updates); ``authorship`` signs and verifies records;
* :mod:`~peermesh.policy.compiled` — tables the proxy consults per request;
* :mod:`~peermesh.policy.messages` — the policy control RPCs' messages;
* :mod:`~peermesh.policy.sim` — many replicas over a simulated network.

Trio and file shells (not imported here): ``persistence`` and ``journal`` (the store's
durable storage), ``replicator`` (anti-entropy between agents), ``api`` (``/v1/policy``).
"""

from peermesh.policy.compiled import (
    AuthzDecision,
    CompiledPolicy,
    RouteDecision,
    compile_policy,
)
from peermesh.policy.errors import (
    PolicyError,
    PolicyStoreCorrupt,
    PolicyWarning,
    UpdateRefused,
)
from peermesh.policy.loader import (
    PolicyLoadError,
    dump_json,
    dump_yaml,
    load_path,
    load_policy,
    load_text,
    parse_documents,
)
from peermesh.policy.model import (
    KINDS,
    AuthorizationPolicy,
    JoinToken,
    MeshConfig,
    PolicyObject,
    Route,
    TrafficPolicy,
    format_duration,
    parse_duration,
)
from peermesh.policy.results import ApplyReport, ApplyResult, HistoryEntry
from peermesh.policy.store import PolicyStore
from peermesh.policy.validate import (
    check_set,
    parse_object,
    validate_documents,
)

__all__ = [
    "KINDS",
    "ApplyReport",
    "ApplyResult",
    "AuthorizationPolicy",
    "AuthzDecision",
    "CompiledPolicy",
    "HistoryEntry",
    "JoinToken",
    "MeshConfig",
    "PolicyError",
    "PolicyLoadError",
    "PolicyObject",
    "PolicyStore",
    "PolicyStoreCorrupt",
    "PolicyWarning",
    "Route",
    "RouteDecision",
    "TrafficPolicy",
    "UpdateRefused",
    "check_set",
    "compile_policy",
    "dump_json",
    "dump_yaml",
    "format_duration",
    "load_path",
    "load_policy",
    "load_text",
    "parse_documents",
    "parse_duration",
    "parse_object",
    "validate_documents",
]
