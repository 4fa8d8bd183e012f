"""``CommitteeChange`` records: the change, the epoch it produced, the nodes it names."""

from __future__ import annotations

import re

from peermesh.policy.model import (
    MAX_COMMITTEE_NODES,
    CommitteeChangeKind,
    CommitteeChangeSpec,
    committee_change_name,
)
from peermesh.policy.validate.walker import _Ctx, _enum, _Fields, _int, _mapping, _text, _unique

#: The node names policy records carry (letters, digits, '-', '_', '.').
_NODE_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,251}[A-Za-z0-9])?")
_MAX_EPOCH = 2**32 - 1
_MAX_THRESHOLD = MAX_COMMITTEE_NODES

_node = _text(pattern=_NODE_NAME, what="node name", max_len=253)


def _nodes(ctx: _Ctx, f: _Fields, key: str, *, min_items: int = 0) -> tuple[str, ...]:
    nodes = f.many(key, _node, min_items=min_items)
    if len(nodes) > MAX_COMMITTEE_NODES:
        ctx.error(f.at(key), f"lists {len(nodes)} nodes, the limit is {MAX_COMMITTEE_NODES}")
    _unique(ctx, ((f"{f.at(key)}[{i}]", n) for i, n in enumerate(nodes)), "node")
    return tuple(sorted(nodes))


def _committee_change_spec(ctx: _Ctx, value: object) -> CommitteeChangeSpec | None:
    fields = ("change", "epoch", "threshold", "members", "added", "removed")
    f = _mapping(ctx, value, "spec", fields, ("change", "epoch", "threshold", "members"))
    if f is None:
        return None
    change = f.get("change", _enum, choices=[k.value for k in CommitteeChangeKind])
    epoch = f.get("epoch", _int, lo=1, hi=_MAX_EPOCH)
    threshold = f.get("threshold", _int, lo=1, hi=_MAX_THRESHOLD)
    members = _nodes(ctx, f, "members", min_items=1)
    added = _nodes(ctx, f, "added")
    removed = _nodes(ctx, f, "removed")
    if threshold is not None and members and threshold > len(members):
        ctx.error(f.at("threshold"), f"{threshold} is more than the {len(members)} members")
    if set(added) - set(members):
        ctx.error(f.at("added"), "names a node that is not among the members")
    if set(removed) & set(members):
        ctx.error(f.at("removed"), "names a node that is still among the members")
    if epoch is not None and ctx.name is not None and ctx.name != committee_change_name(epoch):
        ctx.error(
            "name",
            f"the record of epoch {epoch} is named {committee_change_name(epoch)!r},"
            f" not {ctx.name!r}",
        )
    if change is None or epoch is None or threshold is None or not members:
        return None
    return CommitteeChangeSpec(
        CommitteeChangeKind(change), epoch, threshold, members, added, removed
    )


__all__ = ["_committee_change_spec"]
