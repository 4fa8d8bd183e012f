"""Bootstrap: N agents sharing a token agree on a roster, run the DKG, sign the root.

Everything here happens on the bootstrap listener (no mTLS yet): the roster by
``hello``, gossip by ``pushpull`` until we have a certificate, the DKG relayed by the
lowest node name, then the root and every initial agent's first leaf.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import trio
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from certs.x509 import TbsRefused, assemble_certificate, build_root_tbs, certificate_signature_valid
from peermesh.ca import channel_messages as cm
from peermesh.ca import messages as m
from peermesh.ca.dkgrelay import RunSpec, relay_run
from peermesh.ca.errors import (
    CaBadRequest,
    CaConflict,
    CaForbidden,
    CaStateError,
    CaUnavailable,
    ChannelError,
    RelayError,
    RosterError,
)
from peermesh.ca.flows.calls import MemberCalls
from peermesh.ca.flows.dkg import DkgParticipant, StepCall, per_node, relay_steps
from peermesh.ca.flows.issue import Issuer
from peermesh.ca.node import CaNode, der, utcnow
from peermesh.ca.roster import Roster, RosterEntry, default_threshold, root_validity
from peermesh.ca.signer import root_decision
from peermesh.ca.state import Committee, CommitteeMember
from peermesh.core.errors import PeermeshError
from peermesh.membership.gossip import default_advertise_address
from peermesh.net.rpc import Opaque, RpcError

log = logging.getLogger(__name__)


class Bootstrap:
    """This agent's part in bootstrapping a new mesh (``--bootstrap-expect N``)."""

    def __init__(
        self, node: CaNode, calls: MemberCalls, issuer: Issuer, dkg: DkgParticipant
    ) -> None:
        self.node = node
        self.calls = calls
        self.issuer = issuer
        self.dkg = dkg

    @property
    def roster(self) -> Roster | None:
        return self.dkg.roster

    async def run(self) -> None:
        """From nothing (or a resumed DKG) to our first certificate."""
        node, settings = self.node, self.node.settings
        if settings.bootstrap_expect is None:
            raise CaStateError(
                "this agent was a bootstrap member but --bootstrap-expect is missing; start it"
                " with the flags it was bootstrapped with"
            )
        roster = self.dkg.roster = Roster(self._my_entry(settings.bootstrap_expect))
        if node.committee is None or node.committee.root_der is None:
            node.phase = f"bootstrap: waiting for {settings.bootstrap_expect} agents"
            await self._gather_roster(roster)
            self._gossip_over_bootstrap(roster)
            if node.committee is None:
                if roster.coordinator == node.name:
                    await self._coordinate_dkg(roster)
                else:
                    node.phase = "bootstrap: DKG"
            await self._wait_or_make_root(roster)
        node.phase = "bootstrap: first certificate"
        key = Ed25519PrivateKey.generate()
        tbs = node.leaf_tbs(key.public_key(), settings.service, node.name)
        auth = m.SignAuth(m.AuthKind.BOOTSTRAP, node=node.name)
        result = await self.issuer.retry(
            lambda: self.issuer.sign(tbs, auth, self.issuer.boot_signer_call)
        )
        node.install(assemble_certificate(tbs, result.signature), key)
        log.info(
            "threshold CA: %s has its first certificate (signers %s)", node.name, result.signers
        )

    def _my_entry(self, n: int) -> RosterEntry:
        node, settings = self.node, self.node.settings
        assert node.bootstrap_address is not None
        inbound = node.ports.listeners.inbound()
        host = settings.advertise or default_advertise_address(inbound[0])
        return RosterEntry(
            node=node.name,
            service=settings.service,
            identity_key=node.state.identity_public,
            bootstrap=(host, node.bootstrap_address[1]),
            inbound=(host, inbound[1]),
            expect=n,
            threshold=settings.threshold or default_threshold(n),
            trust_domain=node.trust_domain,
        )

    async def _gather_roster(self, roster: Roster) -> None:
        node = self.node
        seeds = {(h, p + 1) for h, p in node.settings.join}
        while not roster.complete:
            targets = seeds | {e.bootstrap for e in roster.entries.values() if e.node != node.name}
            # mDNS candidates: their default bootstrap port.
            targets |= {(h, p + 1) for h, p in node.ports.discovery.candidates(node.trust_domain)}
            async with trio.open_nursery() as nursery:
                for address in targets:
                    nursery.start_soon(self._hello, roster, address)
            if roster.problems:
                node.last_error = "; ".join(roster.problems)
            if not roster.complete:
                await trio.sleep(0.2)
        if len(roster.entries) > roster.me.expect:
            node.last_error = (
                f"saw {len(roster.entries)} agents with our bootstrap token but"
                f" --bootstrap-expect is {roster.me.expect}: {', '.join(sorted(roster.entries))}"
            )
            raise RosterError(node.last_error)

    async def _hello(self, roster: Roster, address: tuple[str, int]) -> None:
        hello = cm.RosterMessage(tuple(roster.wire()))
        try:
            reply = await self.calls.boot(address, cm.BOOT_HELLO, hello, timeout=2)
        except ChannelError as exc:
            log.debug("bootstrap hello to %s: %s", address, exc)
            return
        roster.merge(reply.entries)

    async def serve_hello(self, body: cm.RosterMessage) -> cm.RosterMessage:
        roster = self.roster
        if roster is None:
            raise CaUnavailable(f"{self.node.name} is not bootstrapping (no --bootstrap-expect)")
        roster.merge(body.entries)
        return cm.RosterMessage(tuple(roster.wire()))

    def _gossip_over_bootstrap(self, roster: Roster) -> None:
        """Until we have a certificate, push-pull gossip state over the bootstrap channel."""
        ports = self.node.ports
        gossip = ports.gossip
        if not gossip.enabled or ports.tls.loaded:
            return
        by_inbound = {e.inbound: e.bootstrap for e in roster.entries.values()}

        async def transport(address: tuple[str, int], state: bytes) -> Any:
            target = by_inbound.get(address, (address[0], address[1] + 1))
            try:
                return (await self.calls.boot(target, cm.BOOT_PUSHPULL, Opaque(state))).value
            except ChannelError as exc:
                raise RpcError(502, str(exc)) from exc

        gossip.use_transport(transport)
        for entry in roster.entries.values():
            if entry.node != self.node.name:
                inbound = entry.inbound

                async def join(address: tuple[str, int] = inbound) -> None:
                    await gossip.join_via(address, attempts=5)

                ports.background.spawn(join)

    async def serve_pushpull(self, body: Opaque) -> Opaque:
        gossip = self.node.ports.gossip
        if not gossip.enabled:
            raise CaUnavailable("gossip is off on this agent")
        return Opaque(gossip.answer_push_pull(body.value))

    async def _coordinate_dkg(self, roster: Roster) -> None:
        node = self.node
        node.phase = "bootstrap: DKG (relaying)"
        members = {x.node: x for x in roster.members()}
        local = relay_steps(self.dkg.boot_begin, self.dkg.deliver, self.dkg.boot_finish)

        def steps(name: str) -> StepCall:
            if name == node.name:
                return local
            address = members[name].bootstrap
            assert address is not None
            return relay_steps(
                lambda body: self.calls.boot(address, cm.BOOT_DKG_BEGIN, body, timeout=20),
                lambda body: self.calls.boot(address, cm.BOOT_DKG_DELIVER, body, timeout=20),
                lambda body: self.calls.boot(address, cm.BOOT_DKG_FINISH, body, timeout=20),
            )

        delay = 0.2
        while node.committee is None:
            spec = RunSpec(
                "dkg", secrets.token_bytes(32), roster.me.threshold, roster.participants()
            )
            try:
                started = trio.current_time()
                report = await relay_run(spec, per_node(steps))
                node.dkg_seconds = trio.current_time() - started
                log.info("threshold CA: DKG done in %d rounds", report.rounds)
                return
            except (RelayError, PeermeshError) as exc:
                node.last_error = f"DKG: {exc}"
                log.info("threshold CA: DKG attempt failed (%s); retrying", exc)
            await trio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _wait_or_make_root(self, roster: Roster) -> None:
        node = self.node
        if roster.coordinator != node.name:
            node.phase = "bootstrap: waiting for the root"
            await node.root_ready.wait()
            return
        committee = node.committee
        assert committee is not None
        node.phase = "bootstrap: signing the root"
        not_before, not_after = root_validity(utcnow())
        tbs = build_root_tbs(
            committee.public.group_public_key.to_bytes(), node.trust_domain, not_before, not_after
        )
        auth = m.SignAuth(m.AuthKind.ROOT)
        result = await self.issuer.retry(
            lambda: self.issuer.sign(tbs, auth, self.issuer.boot_signer_call, committee=committee)
        )
        root = cm.RootMessage(der(assemble_certificate(tbs, result.signature)))
        await self.serve_root(root)
        pending = {x.node: x for x in committee.members if x.node != node.name}
        delay = 0.1
        while pending:
            async with trio.open_nursery() as nursery:
                for member in list(pending.values()):

                    async def push(peer: CommitteeMember = member) -> None:
                        assert peer.bootstrap is not None
                        try:
                            await self.calls.boot(peer.bootstrap, cm.BOOT_ROOT, root)
                            pending.pop(peer.node, None)
                        except ChannelError as exc:
                            log.debug("root to %s: %s", peer.node, exc)

                    nursery.start_soon(push)
            if pending:
                await trio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def serve_root(self, body: cm.RootMessage) -> m.Ok:
        node = self.node
        committee = node.committee
        if committee is None:
            raise CaUnavailable(f"{node.name} has no share yet; retry")
        try:
            root = x509.load_der_x509_certificate(body.root)
        except ValueError as exc:
            raise CaBadRequest(f"root is not a DER certificate: {exc}") from None
        if committee.root_der is not None:
            if committee.root_der == der(root):
                return m.Ok()
            raise CaConflict("a different root is already installed here")
        group_key = committee.public.group_public_key.to_bytes()
        if not certificate_signature_valid(root, group_key):
            raise CaForbidden("root is not signed by the committee's group key")
        try:
            root_decision(
                root.tbs_certificate_bytes,
                group_public_key=group_key,
                policy=node.policy,
                now=utcnow(),
            )
        except TbsRefused as exc:
            raise CaForbidden(f"root refused: {exc}") from None
        node.committee = Committee(
            committee.epoch, committee.trust_domain, committee.public, committee.members, der(root)
        )
        node.state.save_committee(node.committee)
        node.root_ready.set()
        return m.Ok()
