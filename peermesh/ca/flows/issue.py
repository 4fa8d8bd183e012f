"""The coordinator's side of issuance: gather t signers, over mTLS or the bootstrap channel.

``threshold_sign`` (sans-IO apart from its calls) picks signers and catches cheaters;
this module gives it the signer calls and syncs the committee once when a signer
reports a newer one mid-issuance.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from peermesh.ca import channel_messages as cm
from peermesh.ca import messages as m
from peermesh.ca.errors import (
    ChannelError,
    ChannelRefused,
    QuorumError,
    SignerRefused,
    SignerUnavailable,
)
from peermesh.ca.flows.calls import MemberCalls
from peermesh.ca.flows.signing import SigningService
from peermesh.ca.issuance import IssuanceResult, SignerCall, threshold_sign
from peermesh.ca.node import CaNode
from peermesh.ca.state import Committee, CommitteeMember
from peermesh.core.errors import PeermeshError
from peermesh.net.rpc import Empty, RpcError

log = logging.getLogger(__name__)


def signer_error(exc: PeermeshError) -> SignerUnavailable:
    """A refusal (403: policy, token) is an answer; anything else means "try another"."""
    if exc.status == 403:
        return SignerRefused(exc.reason if isinstance(exc, RpcError) else exc.message)
    return SignerUnavailable(str(exc))


class Issuer:
    """Threshold-signs TBS bytes for this agent's flows."""

    def __init__(self, node: CaNode, calls: MemberCalls, signing: SigningService) -> None:
        self.node = node
        self.calls = calls
        self.signing = signing
        self._newer_committee_at: CommitteeMember | None = None

    async def mtls_signer_call(self, member: CommitteeMember, method: str, body: Any) -> Any:
        """``threshold_sign``'s call over mTLS (or in-process for ourselves)."""
        address = self.node.address_of(member)
        try:
            if method == "commit":
                reply = await self.calls.call(member.node, address, m.COMMIT, Empty(), timeout=5)
                committee = self.node.committee
                if committee is not None and reply.epoch > committee.epoch:
                    self._newer_committee_at = member
                return reply.to_wire()
            request = m.SignRequest.from_wire(body)
            return (
                await self.calls.call(member.node, address, m.SIGN, request, timeout=5)
            ).to_wire()
        except PeermeshError as exc:
            if isinstance(exc, SignerUnavailable):
                raise
            raise signer_error(exc) from None

    async def boot_signer_call(self, member: CommitteeMember, method: str, body: Any) -> Any:
        """``threshold_sign``'s call on the bootstrap channel (before anyone has mTLS)."""
        try:
            if member.node == self.node.name:
                if method == "commit":
                    return (await self.signing.boot_commit(Empty())).to_wire()
                return (await self.signing.boot_sign(m.SignRequest.from_wire(body))).to_wire()
            if member.bootstrap is None:
                raise SignerUnavailable("no bootstrap address known")
            if method == "commit":
                reply: Any = await self.calls.boot(member.bootstrap, cm.BOOT_COMMIT, Empty())
            else:
                request = m.SignRequest.from_wire(body)
                reply = await self.calls.boot(member.bootstrap, cm.BOOT_SIGN, request)
            return reply.to_wire()
        except ChannelRefused as exc:
            raise signer_error(exc) from None
        except ChannelError as exc:
            raise SignerUnavailable(str(exc)) from None
        except SignerUnavailable:
            raise
        except PeermeshError as exc:
            raise signer_error(exc) from None

    async def sign(
        self,
        tbs: bytes,
        auth: m.SignAuth,
        call: SignerCall,
        *,
        committee: Committee | None = None,
    ) -> IssuanceResult:
        node = self.node
        committee = committee or node.committee
        if committee is None:
            raise QuorumError(f"{node.name} knows no signer committee yet")
        prefer = [node.name] if committee.member(node.name) and node.signer else []
        result = await threshold_sign(
            tbs, committee, call, auth.to_wire(), prefer=prefer, rng=node.rng
        )
        node.issued.append(result)
        del node.issued[:-100]
        return result

    async def issue_mtls(self, tbs: bytes, auth: m.SignAuth) -> IssuanceResult:
        """Threshold-sign over mTLS; syncs the committee once if a signer reports a newer one."""
        for _ in range(2):
            self._newer_committee_at = None
            try:
                return await self.sign(tbs, auth, self.mtls_signer_call)
            except QuorumError:
                newer = self._newer_committee_at
                if newer is None or not await self._sync_committee(newer):
                    raise
        raise QuorumError("committee changed twice during one issuance; retry")

    async def _sync_committee(self, member: CommitteeMember) -> bool:
        address = self.node.address_of(member)
        try:
            reply = await self.calls.call(member.node, address, m.COMMITTEE, Empty(), timeout=5)
            return self.node.adopt_committee(reply.committee)
        except PeermeshError:
            return False

    async def retry(self, attempt: Callable[[], Awaitable[IssuanceResult]]) -> IssuanceResult:
        """Until it works: a quorum may be missing only while agents are still starting."""
        delay = 0.1
        while True:
            try:
                return await attempt()
            except QuorumError as exc:
                self.node.last_error = str(exc)
                log.info("threshold CA: %s; retrying", exc)
            await trio.sleep(self.node.rng.uniform(delay / 2, delay))
            delay = min(delay * 2, 5.0)
