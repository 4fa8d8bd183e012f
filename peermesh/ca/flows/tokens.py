"""Join tokens: minted into policy by an admin, handed straight to the signers.

``peermesh token create`` writes a ``JoinToken`` policy object, then makes sure t
signers have it now (``ca/token/check``, with the policy diff they lack) instead of
waiting for anti-entropy, so the printed token works at once.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import trio

from peermesh.ca import messages as m
from peermesh.ca.errors import CaBadRequest, CaForbidden, QuorumError
from peermesh.ca.flows.calls import MemberCalls
from peermesh.ca.flows.committee import CommitteeFlows, missing_quorum
from peermesh.ca.flows.signing import SigningService
from peermesh.ca.issuance import quorum_message
from peermesh.ca.node import CaNode, root_fingerprint, utcnow
from peermesh.ca.state import CommitteeMember
from peermesh.ca.tokens import JoinToken, token_sha256
from peermesh.core.errors import PeermeshError
from peermesh.net.rpc import ControlRequest
from peermesh.policy.errors import UpdateRefused
from peermesh.policy.model import JOIN_TOKEN


@dataclass(eq=False)
class TokenFlows:
    """Creating join tokens (any member) and confirming them (signers)."""

    node: CaNode
    calls: MemberCalls
    committee: CommitteeFlows
    signing: SigningService

    async def rpc_check(self, request: ControlRequest[m.TokenCheckRequest]) -> m.TokenCheckReply:
        """Does this signer's policy hold join token ``id``? Merges ``update`` first if given."""
        self.signing.need_signer()
        policy = self.node.ports.policy
        body = request.body
        if body.update:
            try:
                policy.apply_update(body.update, source=f"token create by {request.peer}")
            except UpdateRefused as exc:
                raise CaBadRequest(f"policy update refused: {exc.reason}") from None
        return m.TokenCheckReply(
            known=body.token_id in policy.compiled().join_tokens, sv=policy.state_vector()
        )

    async def create(self, service: str | None, ttl: float, uses: int | None) -> JoinToken:
        """Write a ``JoinToken`` policy object and hand it to the signers; print-ready token.

        Refused up front when fewer than t signers are reachable (the token could not be
        honoured now) or when MeshConfig admins exist and this agent is not one of them.
        """
        node = self.node
        committee = node.committee
        if committee is None or committee.root_der is None:
            raise QuorumError("this agent has no threshold CA state; bootstrap or join first")
        policy = node.ports.policy
        admins = policy.compiled().mesh.admins
        me = str(node.ports.tls.identity)
        if admins and me not in admins:
            raise CaForbidden(
                f"this agent runs as {me}, which is not a MeshConfig admin; create tokens on"
                f" an agent running as one of: {', '.join(admins)}"
            )
        reachable = await self.committee.reachable_signers(committee)
        if len(reachable) < committee.threshold:
            raise QuorumError(missing_quorum(committee, reachable))
        token = JoinToken.generate(root_fingerprint(committee.root_der))
        expires = utcnow() + dt.timedelta(seconds=ttl)
        spec: dict[str, Any] = {
            "tokenSha256": token_sha256(str(token)),
            "expiresAt": expires.isoformat(timespec="seconds").replace("+00:00", "Z"),
        }
        if service is not None:
            spec["service"] = service
        if uses is not None:
            spec["maxUses"] = uses
        writer = node.ports.policy_writer()
        if writer is None:
            raise QuorumError("policy is not running yet on this agent; try again in a moment")
        written = writer.apply(
            [{"kind": JOIN_TOKEN, "name": token.token_id, "spec": spec}], source="token create"
        )
        if written.status != 200:
            detail = json.loads(written.body)
            raise CaForbidden(f"token not written to policy: {detail.get('error', detail)}")
        confirmed: list[str] = []
        failed: dict[str, str] = {}

        async def hand(member: CommitteeMember) -> None:
            if member.node == node.name:
                if token.token_id in policy.compiled().join_tokens:
                    confirmed.append(member.node)
                return
            address = node.address_of(member)
            try:
                check = m.TokenCheckRequest(token.token_id)
                reply = await self.calls.call(member.node, address, m.TOKEN_CHECK, check, timeout=5)
                if not reply.known:
                    check = m.TokenCheckRequest(token.token_id, policy.diff_since(reply.sv))
                    reply = await self.calls.call(
                        member.node, address, m.TOKEN_CHECK, check, timeout=5
                    )
                if reply.known:
                    confirmed.append(member.node)
                else:
                    failed[member.node] = "does not see the token in its policy"
            except (PeermeshError, ValueError) as exc:
                failed[member.node] = str(exc)

        async with trio.open_nursery() as nursery:
            for member in reachable:
                nursery.start_soon(hand, member)
        if len(confirmed) < committee.threshold:
            raise QuorumError(
                f"token {token.token_id} is in policy and will work once it replicates, but"
                " not enough signers have it now: "
                + quorum_message(
                    committee.threshold,
                    confirmed,
                    [n for n in committee.names() if n not in confirmed],
                    failed,
                )
            )
        return token
