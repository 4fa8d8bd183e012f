"""One whole object: size and depth limits, kind and name, the spec by kind, canonical JSON."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from peermesh.policy.errors import PolicyError
from peermesh.policy.model import (
    API_VERSION,
    AUTHORIZATION_POLICY,
    COMMITTEE_CHANGE,
    JOIN_TOKEN,
    KINDS,
    MESH_CONFIG,
    MESH_CONFIG_NAME,
    OBJECT_TYPES,
    ROUTE,
    TRAFFIC_POLICY,
    PolicyObject,
)
from peermesh.policy.validate.authorization import _authz_spec
from peermesh.policy.validate.committee_change import _committee_change_spec
from peermesh.policy.validate.common import _DNS_NAME, _NAME_HINT, _TOKEN_ID
from peermesh.policy.validate.join_token import _join_token_spec
from peermesh.policy.validate.mesh_config import _mesh_config_spec
from peermesh.policy.validate.route import _route_spec
from peermesh.policy.validate.traffic_policy import _traffic_policy_spec
from peermesh.policy.validate.walker import _Ctx, _mapping, _str, _type_name

#: Largest accepted object, measured as compact JSON. Policy replicates to every agent and
#: is held in memory everywhere, so one runaway object must not be able to bloat the mesh.
MAX_OBJECT_BYTES = 256 * 1024
MAX_DEPTH = 32

#: Kinds people paste from Istio or Linkerd, mapped to ours, for a helpful hint.
_FOREIGN_KINDS = {
    "VirtualService": ROUTE,
    "DestinationRule": TRAFFIC_POLICY,
    "PeerAuthentication": MESH_CONFIG,
    "ServiceProfile": ROUTE,
}


def shape_problem(
    data: object, limit: int = MAX_OBJECT_BYTES, reported_limit: int = MAX_OBJECT_BYTES
) -> str | None:
    """Why ``data`` is too big or too deeply nested to be a policy object, or None.

    One iterative walk that stops as soon as a limit is passed, so a 10 MB object or a YAML
    alias bomb is refused without ever being serialised in full. Sizes approximate compact
    JSON (UTF-8) closely enough for a limit.
    """
    total = 0
    stack: list[tuple[object, int]] = [(data, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"object is nested more than {MAX_DEPTH} levels deep"
        # Concrete types first: an ABC isinstance check per scalar would dominate the walk.
        if isinstance(item, str):
            total += (len(item) if item.isascii() else len(item.encode("utf-8", "replace"))) + 3
        elif isinstance(item, bool | int | float) or item is None:
            total += 6
        elif isinstance(item, dict | Mapping):
            total += 2
            for key, value in item.items():
                stack.append((key, depth + 1))
                stack.append((value, depth + 1))
        elif isinstance(item, list | tuple):
            total += 2
            stack.extend((v, depth + 1) for v in item)
        else:
            total += len(str(item)) + 1
        if total > limit:
            return (
                f"object too large: at least {total} bytes encoded, the limit is "
                f"{reported_limit} bytes"
            )
    return None


_SPEC_PARSERS: dict[str, Callable[[_Ctx, object], Any]] = {
    ROUTE: _route_spec,
    TRAFFIC_POLICY: _traffic_policy_spec,
    AUTHORIZATION_POLICY: _authz_spec,
    MESH_CONFIG: _mesh_config_spec,
    JOIN_TOKEN: _join_token_spec,
    COMMITTEE_CHANGE: _committee_change_spec,
}


def _kind(ctx: _Ctx, value: object, path: str) -> str | None:
    if isinstance(value, str) and value in KINDS:
        return value
    if isinstance(value, str) and value in _FOREIGN_KINDS:
        hint = f"the peermesh equivalent is '{_FOREIGN_KINDS[value]}'"
    else:
        import difflib  # only misspelt input pays for it

        close = difflib.get_close_matches(str(value), KINDS, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"kinds are {', '.join(KINDS)}"
    ctx.error(path, f"unknown kind {value!r}", hint)
    return None


def check_object(
    data: object, *, size_checked: bool = False
) -> tuple[PolicyObject | None, list[PolicyError]]:
    """Parse one document; returns the object or every problem found (never both).

    ``size_checked`` skips the size/depth walk for data decoded from JSON text whose length
    the caller already bounded (records from peers); the schema-driven parser never descends
    into unknown fields, so depth cannot hurt it.
    """
    obj, _, errors = check_object_canonical(data, size_checked=size_checked)
    return obj, errors


def check_object_canonical(
    data: object, *, size_checked: bool = False
) -> tuple[PolicyObject | None, str | None, list[PolicyError]]:
    """:func:`check_object` that also returns the canonical JSON it had to compute."""
    raw_kind = data.get("kind") if isinstance(data, Mapping) else None
    raw_name = data.get("name") if isinstance(data, Mapping) else None
    ctx = _Ctx(
        raw_kind if isinstance(raw_kind, str) else None,
        raw_name if isinstance(raw_name, str) else None,
    )
    if not isinstance(data, Mapping):
        ctx.error(
            "", f"a policy object is a mapping with kind, name and spec, got {_type_name(data)}"
        )
        return None, None, ctx.errors
    # Early guard (generous, approximate): never walk or serialise absurd inputs in full.
    problem = None if size_checked else shape_problem(data, 2 * MAX_OBJECT_BYTES)
    if problem is not None:
        hint = (
            "split it into several objects (one Route per service)" if "large" in problem else None
        )
        ctx.error("", problem, hint)
        return None, None, ctx.errors
    # Every problem is reported in one round: a Kubernetes-style ``metadata`` block is
    # refused with a hint but the rest of the object is still checked, using
    # ``metadata.name`` to say which object the other problems belong to.
    fields = ("apiVersion", "kind", "name", "spec")
    required: tuple[str, ...] = ("kind", "name", "spec")
    if "metadata" in data and "name" not in data:
        metadata = data["metadata"]
        meta_name = metadata.get("name") if isinstance(metadata, Mapping) else None
        if ctx.name is None and isinstance(meta_name, str):
            ctx.name = meta_name
        ctx.error(
            "metadata",
            "unknown field 'metadata'",
            "peermesh objects put 'name' at the top level, next to 'kind'",
        )
        data = {k: v for k, v in data.items() if k != "metadata"}
        required = ("kind", "spec")
    f = _mapping(ctx, data, "", fields, required)
    assert f is not None
    if "apiVersion" in f and f.data["apiVersion"] != API_VERSION:
        ctx.error(
            "apiVersion",
            f"unsupported apiVersion {f.data['apiVersion']!r}",
            f"use '{API_VERSION}' or leave it out",
        )
    kind = f.get("kind", _kind)
    name = f.get(
        "name",
        _str,
        pattern=_DNS_NAME,
        what="object name",
        max_len=253,
        hint=f"names are {_NAME_HINT}",
    )
    if kind == MESH_CONFIG and name is not None and name != MESH_CONFIG_NAME:
        ctx.error(
            "name",
            f"a MeshConfig must be named '{MESH_CONFIG_NAME}', not {name!r}",
            "there is exactly one mesh configuration",
        )
    if kind == JOIN_TOKEN and name is not None and not _TOKEN_ID.fullmatch(name):
        ctx.error(
            "name",
            f"a JoinToken's name is its token id (lowercase letters, digits, '-'), not {name!r}",
            "'peermesh token create' names it for you",
        )
    spec = _SPEC_PARSERS[kind](ctx, f.data["spec"]) if kind is not None and "spec" in f else None
    if ctx.errors or kind is None or name is None or spec is None:
        if not ctx.errors:  # defensive: a parser gave up without saying why
            ctx.error("spec", "invalid spec")
        return None, None, ctx.errors
    obj = OBJECT_TYPES[kind](name=name, spec=spec)
    # The authoritative limit is on the canonical encoding, which every replica computes
    # identically: an object accepted here is never refused by a peer for its size.
    canonical = canonical_json(obj)
    size = len(canonical.encode())
    if size > MAX_OBJECT_BYTES:
        ctx.error(
            "",
            f"object too large: {size} bytes encoded, the limit is {MAX_OBJECT_BYTES} bytes",
            "split it into several objects",
        )
        return None, None, ctx.errors
    return obj, canonical, []


def parse_object(data: object) -> PolicyObject:
    """Parse and validate one document (a mapping from YAML or JSON).

    Raises :class:`PolicyError` describing every problem if the document is invalid.
    """
    obj, errors = check_object(data)
    if errors:
        raise PolicyError.collect(errors)
    assert obj is not None
    return obj


def canonical_json(obj: PolicyObject) -> str:
    """The one spelling of an object that every replica hashes and stores."""
    return json.dumps(obj.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def normalize(obj: PolicyObject) -> PolicyObject:
    """Re-validate an object built in code (dataclasses do not validate on construction)."""
    return parse_object(obj.to_dict())
