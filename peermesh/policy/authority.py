"""Who may edit: the MeshConfig ``admins`` chain, walked the same way on every replica.

Only for a store that checks signatures (the agent's). MeshConfig versions are walked in
rank order (but a version whose certificate was issued after another's had expired comes
after it, see :func:`authority_order`) starting from "no admins"; one *counts* if the admin
set so far is empty or its author is in it, and then its ``spec.admins`` (none for a
delete) becomes the admin set. Only counted MeshConfig versions can win (the last counted
one). Once the resulting admin set is non-empty, versions of other kinds whose author is
not in it are kept (for convergence and history) but never win. The answer depends only
on the set of versions, so every replica agrees; MeshConfig versions are therefore never
pruned (the walk needs all of them) and a peer update that deletes one is refused.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Final

from cryptography import x509

from peermesh.policy.errors import NotAdmin, PolicyError
from peermesh.policy.model import MESH_CONFIG, PolicyObject
from peermesh.policy.records import VersionRecord

log = logging.getLogger(__name__)

#: The kind whose versions decide who may edit.
AUTHORITY_KIND: Final = MESH_CONFIG


def is_authority(key: str) -> bool:
    """Whether an object key (``Kind/name``) or map key names a MeshConfig."""
    return key.startswith(AUTHORITY_KIND + "/")


@functools.lru_cache(maxsize=4096)
def _period(der: bytes) -> tuple[float, float]:
    cert = x509.load_der_x509_certificate(der)
    return cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()


def authority_order(records: Sequence[VersionRecord]) -> list[VersionRecord]:
    """The order in which MeshConfig versions are walked to decide who is an admin.

    Rank order (Lamport counter, node, hash), except that a version whose certificate was
    issued after another version's certificate had expired comes after it: it was
    certainly signed later, whatever counter it claims. Counters are chosen by the
    writer, so without this a compromised non-admin could sign a MeshConfig with a
    counter below the one that first set admins and be walked first (backdating). With
    it, backdating only works with a certificate that overlapped the admins' own (about a
    day: leaves live 24 h). The certificates' periods are used as ordering facts only;
    validity is not checked. Deterministic: the result depends only on the records.
    Records without a certificate sort as if issued at the epoch.
    """
    remaining = sorted(records, key=lambda r: r.rank)
    periods = {
        r.map_key: _period(r.cert) if r.cert is not None else (0.0, math.inf) for r in remaining
    }
    ordered: list[VersionRecord] = []
    while remaining:
        # Whoever's certificate expires first bounds everyone issued after that moment.
        deadline = min(periods[r.map_key][1] for r in remaining)
        for i, r in enumerate(remaining):
            if periods[r.map_key][0] <= deadline:
                ordered.append(remaining.pop(i))
                break
    return ordered


class Authority:
    """The admin set one replica's MeshConfig versions give, and which versions may win.

    Without ``enforced`` (stores that do not check signatures: tests, simulations,
    benchmarks) every version may win and the admin set stays empty.
    """

    def __init__(self, *, enforced: bool) -> None:
        self.enforced = enforced
        self.admins: frozenset[str] = frozenset()
        # Map keys of the MeshConfig versions that counted in the walk, and the last
        # counted version of each MeshConfig (its winner).
        self._counted: set[str] = set()
        self._winners: dict[str, VersionRecord] = {}

    def authorized(self, record: VersionRecord) -> bool:
        """Whether ``record`` may win."""
        if not self.enforced:
            return True
        if record.kind == AUTHORITY_KIND:
            return record.map_key in self._counted
        return not self.admins or record.author in self.admins

    def winner(self, obj_key: str) -> VersionRecord | None:
        """The winning version of a MeshConfig: the last one that counted."""
        return self._winners.get(obj_key)

    def recompute(self, versions: Mapping[str, Mapping[str, VersionRecord]]) -> bool:
        """Walk every MeshConfig version (module docstring); True if the admin set changed."""
        records = [r for key, kept in versions.items() if is_authority(key) for r in kept.values()]
        admins: frozenset[str] = frozenset()
        counted: set[str] = set()
        last: dict[str, VersionRecord] = {}
        for r in authority_order(records):
            if not admins or r.author in admins:
                counted.add(r.map_key)
                last[r.key] = r
                admins = r.admins()
        previous = self.admins
        self.admins, self._counted, self._winners = admins, counted, last
        if admins != previous:
            log.info(
                "policy admins are now %s",
                ", ".join(sorted(admins)) if admins else "none (any mesh identity may edit)",
            )
        return admins != previous

    def require_admin(self, author: str) -> None:
        """Raise :class:`NotAdmin` if edits signed as ``author`` would not be in effect."""
        if self.enforced and self.admins and author not in self.admins:
            raise NotAdmin(author, sorted(self.admins))

    @staticmethod
    def check_lockout(author: str, parsed: Sequence[PolicyObject], deletes: Sequence[str]) -> None:
        """Refuse a batch that sets admins without its author *and* writes other objects:
        those would never be in effect (their signer is no admin once it lands)."""
        configs = [o for o in parsed if o.kind == AUTHORITY_KIND]
        admins = frozenset(getattr(configs[-1].spec, "admins", ())) if configs else frozenset()
        others = [o.key for o in parsed if o.kind != AUTHORITY_KIND]
        others += [k for k in deletes if not is_authority(k)]
        if admins and author not in admins and others:
            raise PolicyError(
                f"this change sets admins to {', '.join(sorted(admins))}, which does not"
                f" include {author} (this agent), so the other {len(others)} object(s) in"
                " it would never be in effect",
                kind=AUTHORITY_KIND,
                name=configs[-1].name,
                path="spec.admins",
                hint="add this agent's identity to admins, or apply the other objects from"
                " an agent running as an admin once the MeshConfig is in place",
            )
