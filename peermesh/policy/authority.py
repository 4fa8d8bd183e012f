"""Who may edit: the MeshConfig ``admins`` chain, walked the same way on every replica.

Only for a store that checks signatures (the agent's). The walk starts from "no admins"
at epoch 0 and takes the MeshConfig versions in rank order. A version whose admins equal
the set so far *counts* if that set is empty or its author is in it. With an anchor (the
root key of a threshold CA, :mod:`~peermesh.policy.anchor`), a version whose admins
*differ* counts only if its author could edit (the same rule) and its endorsement is the
committee's signature over that exact change, by that very version (its content hash),
at the next epoch; it then moves the set on
and the epoch up by one. Of two endorsed successors of one epoch the lower rank is walked
first and wins; the other names an epoch that is gone. Lamport counters are the writer's
choice, but that buys nothing: a backdated version still needs an endorsement for the set
it claims to change, and signers endorse only for an admin of their current set.

Without an anchor (dev-CA mode: one key holder exists by construction) a version that
counts sets the admins directly, and the walk order is rank order except that a version
whose certificate was issued after another's had expired comes after it
(:func:`authority_order`).

Only counted MeshConfig versions can win (the last counted one). Once the resulting admin
set is non-empty, versions of other kinds whose author is not in it are kept (for
convergence and history) but never win. The answer depends only on the set of versions,
so every replica agrees; MeshConfig versions are therefore never pruned (the walk needs
all of them) and a peer update that deletes one is refused.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from cryptography import x509

from peermesh.policy.anchor import AdminEndorsement, AdminSetAnchor, admin_set_statement
from peermesh.policy.errors import EndorsementRequired, NotAdmin, PolicyError
from peermesh.policy.model import MESH_CONFIG, PolicyObject
from peermesh.policy.records import VersionRecord, content_hash
from peermesh.policy.validate import canonical_json

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
    """The order in which MeshConfig versions are walked when no anchor decides changes.

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


@dataclass(frozen=True)
class Walk:
    """What one walk over the MeshConfig versions found."""

    admins: frozenset[str]
    epoch: int
    counted: frozenset[str]
    winners: Mapping[str, VersionRecord]
    #: Map keys of versions that changed the admin set without a valid endorsement.
    unendorsed: frozenset[str]


def walk(records: Sequence[VersionRecord], anchor: AdminSetAnchor | None) -> Walk:
    """The admin chain over ``records`` (module docstring); deterministic in the set."""
    admins: frozenset[str] = frozenset()
    epoch = 0
    counted: set[str] = set()
    last: dict[str, VersionRecord] = {}
    unendorsed: set[str] = set()
    order = sorted(records, key=lambda r: r.rank) if anchor else authority_order(records)
    for r in order:
        may_edit = not admins or r.author in admins
        proposed = r.admins()
        if anchor is not None and proposed != admins:
            if not (may_edit and _endorsed(r, anchor, epoch, admins, proposed)):
                unendorsed.add(r.map_key)
                continue
            epoch += 1
        elif not may_edit:
            continue
        counted.add(r.map_key)
        last[r.key] = r
        admins = proposed
    return Walk(admins, epoch, frozenset(counted), last, frozenset(unendorsed))


def _endorsed(
    record: VersionRecord,
    anchor: AdminSetAnchor,
    epoch: int,
    previous: frozenset[str],
    proposed: frozenset[str],
) -> bool:
    endorsement = record.endorsement
    if endorsement is None or endorsement.epoch != epoch + 1:
        return False
    statement = admin_set_statement(
        anchor.trust_domain, epoch + 1, previous, proposed, version=record.hash
    )
    return anchor.verify(statement, endorsement.signature)


class Authority:
    """The admin set one replica's MeshConfig versions give, and which versions may win.

    Without ``enforced`` (stores that do not check signatures: tests, simulations,
    benchmarks) every version may win and the admin set stays empty. ``anchor`` is the
    root key admin-set changes must be endorsed by (None: dev-CA mode, no anchor).
    """

    def __init__(self, *, enforced: bool, anchor: AdminSetAnchor | None = None) -> None:
        self.enforced = enforced
        self.anchor = anchor
        self.admins: frozenset[str] = frozenset()
        #: How many admin-set changes the walk has found so far (the next needs epoch + 1).
        self.epoch = 0
        # Map keys of the MeshConfig versions that counted in the walk, and the last
        # counted version of each MeshConfig (its winner).
        self._counted: frozenset[str] = frozenset()
        self._winners: Mapping[str, VersionRecord] = {}
        self._unendorsed: frozenset[str] = frozenset()
        #: Versions seen changing the admin set without a valid endorsement (ignored).
        self.unendorsed_changes = 0

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
        result = walk(records, self.anchor)
        for map_key in sorted(result.unendorsed - self._unendorsed):
            self.unendorsed_changes += 1
            log.warning(
                "ignoring MeshConfig version %s: it changes the admin set without the signer"
                " committee's endorsement of that change at epoch %d",
                map_key,
                result.epoch + 1,
            )
        previous = self.admins
        self.admins, self.epoch = result.admins, result.epoch
        self._counted, self._winners = result.counted, result.winners
        self._unendorsed = result.unendorsed
        if result.admins != previous:
            log.info(
                "policy admins are now %s (epoch %d)",
                ", ".join(sorted(result.admins))
                if result.admins
                else "none (any mesh identity may edit)",
                result.epoch,
            )
        return result.admins != previous

    def needs_endorsement(self, admins: frozenset[str]) -> bool:
        """Whether a MeshConfig version setting ``admins`` counts only when endorsed."""
        return self.enforced and self.anchor is not None and admins != self.admins

    def endorsement_valid(
        self, admins: frozenset[str], version: str, endorsement: AdminEndorsement
    ) -> bool:
        """Whether ``endorsement`` moves the current set to ``admins`` at the next epoch,
        by the MeshConfig version whose content hash is ``version``."""
        if self.anchor is None or endorsement.epoch != self.epoch + 1:
            return False
        statement = admin_set_statement(
            self.anchor.trust_domain, self.epoch + 1, self.admins, admins, version=version
        )
        return self.anchor.verify(statement, endorsement.signature)

    def check_edit(
        self,
        parsed: Sequence[PolicyObject],
        deletes: Sequence[str],
        endorsement: AdminEndorsement | None,
    ) -> AdminEndorsement | None:
        """The endorsement a local edit's MeshConfig record must carry (None: none needed).

        Raises :class:`EndorsementRequired` for an edit that changes the admin set
        without a valid endorsement: the version would count on no replica.
        """
        configs = [o for o in parsed if o.kind == AUTHORITY_KIND]
        if configs:
            admins = frozenset(getattr(configs[-1].spec, "admins", ()))
        elif any(is_authority(k) for k in deletes):
            admins = frozenset()
        else:
            return None
        if not self.needs_endorsement(admins):
            return None
        if not configs:
            raise EndorsementRequired(
                "deleting the MeshConfig would empty the admin set, which needs the signer"
                " committee's endorsement",
                hint="apply a MeshConfig with the admins you want (possibly none) through"
                " `peermesh policy apply` instead",
            )
        if endorsement is None:
            raise EndorsementRequired(
                "this MeshConfig changes the admin set, which needs the signer committee's"
                " endorsement",
                hint="apply it through `peermesh policy apply` (the admin API), which asks"
                " the committee; a quorum of signers must be reachable",
            )
        version = content_hash(canonical_json(configs[-1]))
        if not self.endorsement_valid(admins, version, endorsement):
            raise EndorsementRequired(
                f"the endorsement does not move the current admin set (epoch {self.epoch})"
                " to this MeshConfig's admins; the admin set changed meanwhile",
                hint="apply the MeshConfig again",
            )
        return endorsement

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
