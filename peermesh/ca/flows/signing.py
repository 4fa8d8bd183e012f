"""The signer's side of issuance: commitments, then a share for a TBS it checked itself.

Over mTLS a signer signs renewals (for the caller's own identity), joins (with a
join token it counts in its durable ledger) and admin-set changes (for a current admin);
on the bootstrap listener only the root and the initial agents' first leaves.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from certs import frost
from certs.spiffe import SpiffeId
from certs.x509 import TbsRefused
from peermesh.ca.errors import CaForbidden, CaStateError, CaUnavailable, TokenError
from peermesh.ca.messages import AuthKind, CommitReply, SignAuth, SignReply, SignRequest
from peermesh.ca.node import CaNode, read_tbs, root_fingerprint, still_counted, utcnow
from peermesh.ca.signer import Signer
from peermesh.ca.state import Committee
from peermesh.ca.tokens import JoinToken, check_token
from peermesh.core.durable import StorageFailed
from peermesh.net.rpc import ControlRequest, Empty
from peermesh.policy.compiled import JoinTokenGrant

log = logging.getLogger(__name__)


class AdminSetSigner(Protocol):
    """The signer's check of an admin-set request (:mod:`peermesh.ca.flows.admin_set`)."""

    def sign(
        self,
        signer: Signer,
        committee: Committee,
        package: Mapping[str, Any],
        peer: SpiffeId | None,
        node_name: str | None,
    ) -> frost.SignatureShare: ...


class SigningService:
    """Answers ``commit`` and ``sign`` for this agent's share."""

    def __init__(self, node: CaNode, admin_set: AdminSetSigner) -> None:
        self.node = node
        self.admin_set = admin_set

    def need_signer(self) -> tuple[Signer, Committee]:
        node = self.node
        if node.signer is None or node.committee is None:
            raise CaUnavailable(f"{node.name} is not a signer")
        return node.signer, node.committee

    def commit(self) -> CommitReply:
        signer, committee = self.need_signer()
        return CommitReply(signer.commit(), committee.epoch)

    async def rpc_commit(self, request: ControlRequest[Empty]) -> CommitReply:
        return self.commit()

    async def boot_commit(self, body: Empty) -> CommitReply:
        return self.commit()

    async def rpc_sign(self, request: ControlRequest[SignRequest]) -> SignReply:
        signer, committee = self.need_signer()
        body, auth, now = request.body, request.body.auth, utcnow()
        policy = self.node.policy
        compiled = self.node.ports.policy.compiled()
        if compiled.is_revoked(str(request.peer)):
            log.warning("refused to sign for revoked identity %s", request.peer)
            raise CaForbidden(f"{request.peer} is revoked by the MeshConfig; no renewal")
        try:
            if auth.kind is AuthKind.RENEW:
                if request.node is None:
                    raise TbsRefused("the caller's certificate names no node (one DNS SAN)")
                share = signer.sign_leaf(
                    body.package,
                    identity=str(request.peer),
                    node_name=request.node,
                    root=committee.root,
                    policy=policy,
                    now=now,
                )
            elif auth.kind is AuthKind.JOIN:
                share = self.sign_join(signer, committee, body.package, auth, now)
            elif auth.kind is AuthKind.ADMIN_SET:
                share = self.admin_set.sign(
                    signer, committee, body.package, request.peer, request.node
                )
            elif auth.kind is AuthKind.ENDORSE:
                refusal = self.node.change_authorized(request.peer, request.node)
                if refusal is not None:
                    raise TbsRefused(refusal)
                share = signer.sign_statement(body.package, committee.statement())
            else:
                raise TbsRefused(f"{auth.kind.value!r} requests are not accepted over mTLS")
        except (TbsRefused, TokenError, CaStateError) as exc:
            log.info("refused to sign for %s: %s", request.peer, exc)
            raise CaForbidden(f"{self.node.name} refuses to sign: {exc}") from None
        return SignReply(share)

    async def boot_sign(self, body: SignRequest) -> SignReply:
        signer, committee = self.need_signer()
        auth, now, policy = body.auth, utcnow(), self.node.policy
        try:
            if auth.kind is AuthKind.ROOT:
                if committee.root_der is not None:
                    raise TbsRefused("the root is already signed; no second root")
                share = signer.sign_root(body.package, policy=policy, now=now)
            elif auth.kind is AuthKind.BOOTSTRAP:
                member = committee.member(str(auth.node))
                if member is None:
                    raise TbsRefused(f"{auth.node!r} is not an initial agent")
                identity = str(SpiffeId.for_service(self.node.trust_domain, member.service))
                share = signer.sign_leaf(
                    body.package,
                    identity=identity,
                    node_name=member.node,
                    root=committee.root,
                    policy=policy,
                    now=now,
                )
            else:
                raise TbsRefused(f"{auth.kind.value!r} requests are not served before mTLS")
        except (TbsRefused, CaStateError) as exc:
            raise CaForbidden(f"{self.node.name} refuses to sign: {exc}") from None
        return SignReply(share)

    def sign_join(
        self,
        signer: Signer,
        committee: Committee,
        package: Mapping[str, Any],
        auth: SignAuth,
        now: dt.datetime,
    ) -> frost.SignatureShare:
        """A share for a joiner's first leaf, if the token admits its key (counted first)."""
        token_id, service = str(auth.token_id), str(auth.service)
        message = package.get("message")
        if not isinstance(message, bytes):
            raise TbsRefused("signing package has no message")
        try:
            subject = read_tbs(message).public_key()
        except ValueError as exc:
            raise TbsRefused(f"not a TBSCertificate: {exc}") from None
        if not isinstance(subject, Ed25519PublicKey):
            raise TbsRefused("subject public key is not Ed25519")
        assert committee.root_der is not None
        try:
            token = JoinToken.parse(
                f"pmjt1.{token_id}.{auth.secret}.{root_fingerprint(committee.root_der)}"
            )
        except TokenError:
            raise TokenError("join token is malformed: copy it whole") from None
        grants = self.node.ports.policy.compiled().join_tokens
        used = self.node.token_uses.get(token_id, ())
        updated = check_token(
            grants.get(token_id),
            used,
            token=token,
            service=service,
            subject_key=subject.public_bytes_raw().hex(),
            now=now.timestamp(),
        )
        identity = str(SpiffeId.for_service(self.node.trust_domain, service))
        if self.node.ports.policy.compiled().is_revoked(identity):
            raise TbsRefused(f"{identity} is revoked by the MeshConfig; no join")
        policy = self.node.policy
        checked = signer.check_leaf(
            package, identity=identity, root=committee.root, policy=policy, now=now
        )
        node_name = (
            read_tbs(checked.message)
            .extensions.get_extension_for_class(x509.SubjectAlternativeName)
            .value.get_values_for_type(x509.DNSName)[0]
        )
        if committee.member(node_name) is not None:
            # Node names are what committee rights hang on: a joiner may not take a member's.
            raise TbsRefused(f"node name {node_name!r} belongs to a committee member")
        if updated != used:
            # Count the use durably before the share can leave (like the nonce). If that
            # write fails, nothing is signed and memory forgets the use too, so a retry
            # once space returns is counted exactly once.
            before = dict(self.node.token_uses)
            self.node.token_uses[token_id] = updated
            try:
                self.save_uses(grants)
            except StorageFailed:
                self.node.token_uses = before
                raise
        return signer.sign_checked(checked)

    def save_uses(self, grants: Mapping[str, JoinTokenGrant]) -> None:
        """Persist the ledger, dropping tokens gone from policy or expired a day ago."""
        node, now = self.node, time.time()
        node.token_uses = {
            k: v
            for k, v in node.token_uses.items()
            if k in grants and still_counted(grants[k].expires, now)
        }
        node.state.save_tokens({k: {"used_by": list(v)} for k, v in node.token_uses.items()})
