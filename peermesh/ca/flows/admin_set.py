"""Admin-set endorsements: the coordinator asks the committee, each signer checks alone.

``peermesh policy apply`` of a MeshConfig whose admins differ from the current set makes
this agent the coordinator: a commitment round, then a ``ca/sign`` request of kind
``admin-set`` whose message is the statement (it carries the epoch, the new set and the
MeshConfig version's content hash).
Signers check it with :mod:`peermesh.ca.admin_set` and release a share only then. The
aggregate is verified under the group key before the policy store sees it, and the store
checks it once more against its own admin set when it writes the record.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from certs import frost
from certs.spiffe import SpiffeId
from certs.x509 import TbsRefused
from peermesh.ca import messages as m
from peermesh.ca.admin_set import expected_statement, requester_refusal
from peermesh.ca.errors import CaUnavailable, QuorumError
from peermesh.ca.flows.issue import Issuer
from peermesh.ca.node import CaNode
from peermesh.ca.signer import Signer
from peermesh.ca.state import Committee
from peermesh.policy.anchor import AdminEndorsement, admin_set_statement, ed25519_verifies

log = logging.getLogger(__name__)


class AdminSetCoordinator:
    """The coordinator's side: have the committee endorse one admin-set change."""

    def __init__(self, node: CaNode, issuer: Issuer) -> None:
        self.node = node
        self.issuer = issuer

    async def endorse(
        self, previous: frozenset[str], epoch: int, admins: frozenset[str], version: str
    ) -> AdminEndorsement:
        """Coordinate the committee's signature moving ``previous`` to ``admins`` at
        ``epoch`` by the MeshConfig version with content hash ``version``; raises
        :class:`QuorumError` (503) when t signers will not sign."""
        node = self.node
        committee = node.committee
        if committee is None or committee.root_der is None:
            raise CaUnavailable(
                f"{node.name} knows no signer committee yet, so it cannot have the admin"
                " set change endorsed",
                hint="wait until the threshold CA is up (`peermesh ca status`)",
            )
        statement = admin_set_statement(node.trust_domain, epoch, previous, admins, version=version)
        result = await self.issuer.issue_mtls(statement, m.SignAuth(m.AuthKind.ADMIN_SET))
        group_key = (node.committee or committee).public.group_public_key.to_bytes()
        if not ed25519_verifies(group_key, statement, result.signature):
            raise QuorumError("the aggregated admin-set endorsement does not verify")
        log.info(
            "admin set change to epoch %d (%s) endorsed by %s",
            epoch,
            ", ".join(sorted(admins)) or "none",
            ", ".join(result.signers),
        )
        return AdminEndorsement(epoch, result.signature)


class AdminSetSigning:
    """The signer's side: check an admin-set request alone, then release a share."""

    def __init__(self, node: CaNode) -> None:
        self.node = node
        self.refused = 0  # requests this signer refused
        self.endorsed = 0  # shares this signer released

    def sign(
        self,
        signer: Signer,
        committee: Committee,
        package: Mapping[str, Any],
        peer: SpiffeId | str | None,
        node_name: str | None,
    ) -> frost.SignatureShare:
        """A share for an admin-set statement this signer rebuilt itself, or TbsRefused."""
        node = self.node
        view = node.ports.policy
        admins, epoch = view.admins, view.admin_epoch
        try:
            refusal = requester_refusal(
                peer,
                node_name,
                admins=admins,
                committee=committee,
                trust_domain=node.trust_domain,
            )
            if refusal is not None:
                raise TbsRefused(refusal)
            statement = expected_statement(
                package.get("message"),
                trust_domain=node.trust_domain,
                admins=admins,
                epoch=epoch,
            )
        except TbsRefused as exc:
            self.refused += 1
            signer.refusals += 1  # the signer's refusal figure covers every kind
            log.warning("refused to endorse an admin-set change for %s: %s", peer, exc)
            raise
        share = signer.sign_statement(package, statement)
        self.endorsed += 1
        return share
