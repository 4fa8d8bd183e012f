"""One agent's part of the threshold CA: its durable state, its limits and its identity.

Every flow works on this one object: the committee and our share, the join-token use
ledger, the phase shown by ``peermesh ca status``, and the handles the agent gave us.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import random
from collections.abc import Mapping
from typing import Any

import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from certs.spiffe import SpiffeId
from gossip.messages import MemberState
from peermesh.ca import channel
from peermesh.ca.dkgrelay import ParticipantSessions
from peermesh.ca.errors import CaForbidden
from peermesh.ca.issuance import IssuanceResult
from peermesh.ca.ports import CaPorts
from peermesh.ca.settings import CaSettings
from peermesh.ca.signer import Signer, SigningPolicy, leaf_template
from peermesh.ca.state import CaState, Committee, CommitteeMember
from peermesh.ca.succession import check_committee_update, endorsement_valid
from peermesh.ca.tokens import JoinToken

log = logging.getLogger(__name__)

_REACHABLE = (MemberState.ALIVE, MemberState.SUSPECT)


def root_fingerprint(root_der: bytes) -> str:
    """SHA-256 of the root certificate (DER), hex: what a join token pins."""
    return hashlib.sha256(root_der).hexdigest()


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def raw_key(cert: x509.Certificate) -> bytes:
    """The certificate's Ed25519 key (raw), or empty when it has another kind."""
    key = cert.public_key()
    return key.public_bytes_raw() if isinstance(key, Ed25519PublicKey) else b""


def read_tbs(tbs: bytes) -> x509.Certificate:
    """A parseable certificate around a bare TBS (signature zeroed), to read its fields."""
    from certs.x509 import _wrap

    return x509.load_der_x509_certificate(_wrap(tbs, bytes(64)))


def still_counted(expires: float | None, now: float) -> bool:
    """Keep a token's uses until a day after it expired (clock skew between signers)."""
    return expires is None or expires > now - 86400


def load_uses(raw: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """The signer's token-use ledger from disk (older files kept whole records)."""
    uses: dict[str, tuple[str, ...]] = {}
    for token_id, entry in raw.items():
        used_by = entry.get("used_by", ()) if isinstance(entry, Mapping) else ()
        uses[str(token_id)] = tuple(str(x) for x in used_by)
    return uses


class CaNode:
    """The CA state one agent holds, and what every flow asks of it."""

    def __init__(self, settings: CaSettings, ports: CaPorts) -> None:
        self.settings = settings
        self.ports = ports
        self.name = settings.name
        self.trust_domain = settings.trust_domain
        self.state = CaState(settings.data_dir)
        self.bootstrap_token: bytes | None = None
        if settings.bootstrap_token_file is not None:
            self.bootstrap_token = channel.read_bootstrap_token(settings.bootstrap_token_file)
        self.mac_key = (
            channel.bootstrap_mac_key(self.bootstrap_token) if self.bootstrap_token else None
        )
        self.join_token = JoinToken.parse(settings.join_token) if settings.join_token else None
        self.committee: Committee | None = self.state.load_committee()
        self.signer: Signer | None = None
        self.load_signer()
        # Keys each join token admitted through this signer (its durable use ledger).
        self.token_uses: dict[str, tuple[str, ...]] = load_uses(self.state.load_tokens())
        self.sessions = ParticipantSessions()
        self.phase = "idle"
        self.last_error: str | None = None
        self.issued: list[IssuanceResult] = []
        self.renewals = 0
        self.refused_updates = 0  # committee updates refused for want of proof
        self.root_ready = trio.Event()
        self.identity_ready = trio.Event()
        self.bootstrap_address: tuple[str, int] | None = None
        self.rng = random.Random()
        self.dkg_seconds: float | None = None  # how long the relayed DKG took (coordinator)

    @property
    def enabled(self) -> bool:
        """Does this agent take part in the threshold CA at all?"""
        return bool(self.bootstrap_token or self.join_token or self.committee)

    @property
    def policy(self) -> SigningPolicy:
        """The limits this signer applies: its flag, lowered by MeshConfig certificateLifetime."""
        limit = self.settings.max_cert_lifetime
        compiled = self.ports.policy.compiled()
        if compiled.mesh_config_name is not None:
            limit = min(limit, compiled.mesh.certificate_lifetime)
        return SigningPolicy(self.trust_domain, max_leaf_lifetime=dt.timedelta(seconds=limit))

    @property
    def leaf_lifetime(self) -> dt.timedelta:
        """What this agent asks for: its flag, capped by what signers will sign."""
        asked = dt.timedelta(seconds=self.settings.cert_lifetime)
        return min(asked, self.policy.max_leaf_lifetime)

    def load_signer(self) -> None:
        loaded = self.state.load_share()
        if loaded is None or self.committee is None:
            self.signer = None
            return
        _epoch, share = loaded
        self.signer = Signer(share, self.committee.public, self.state.nonces)

    def set_committee(self, committee: Committee) -> None:
        """Adopt ``committee`` durably (and the share on disk with it)."""
        self.committee = committee
        self.state.save_committee(committee)
        self.load_signer()

    def change_authorized(self, peer: SpiffeId | str | None, node: str | None) -> str | None:
        """Why ``peer`` on ``node`` may not coordinate a committee change or mint tokens, or None.

        With MeshConfig ``spec.admins`` set, only those identities may; without, only a
        committee member's *node* (its certificate's DNS SAN, which signers bind to the
        node that authenticated: see :func:`peermesh.ca.signer.leaf_decision`) running as
        that member's service. Another instance of a member's service is another node.
        """
        if peer is None:
            return "an unauthenticated caller may not change the CA"
        principal = str(peer)
        admins = self.ports.policy.compiled().mesh.admins
        if admins:
            if principal in admins:
                return None
            return f"{principal} is not a MeshConfig admin (admins: {', '.join(admins)})"
        member = self.committee.member(node) if self.committee is not None and node else None
        if member is not None and principal == str(
            SpiffeId.for_service(self.trust_domain, member.service)
        ):
            return None
        return (
            f"{principal} on node {node or '?'} is neither a MeshConfig admin nor a committee"
            " member's node; list operators' identities in MeshConfig spec.admins"
        )

    def address_of(self, member: CommitteeMember) -> tuple[str, int]:
        """Where ``member`` listens now: gossip's view if it is live there, else the committee's."""
        gossip = self.ports.gossip
        if gossip.running:
            known = gossip.member(member.node)
            if known is not None and known.state in _REACHABLE and known.address is not None:
                return known.address
        return member.address

    def leaf_tbs(self, key: Ed25519PublicKey, service: str, node: str) -> bytes:
        """The signers' template leaf for ``service`` on ``node`` at our clock, our lifetime."""
        assert self.committee is not None
        return leaf_template(
            key,
            identity=str(SpiffeId.for_service(self.trust_domain, service)),
            node_name=node,
            root=self.committee.root,
            issued_at=utcnow(),
            lifetime=self.leaf_lifetime,
        )

    def install(self, cert: x509.Certificate, key: Ed25519PrivateKey) -> None:
        """Make ``cert`` our identity (the agent reloads TLS and gossips over mTLS from now)."""
        assert self.committee is not None
        self.ports.installer.install(cert, key, [self.committee.root])

    def adopt_committee(self, new: Committee) -> bool:
        """Take a newer committee if it provably succeeds ours; False if it is not newer.

        Raises CaForbidden (and logs) for a committee without that proof (see
        :mod:`peermesh.ca.succession`): our share stays. The same epoch is taken again
        only to add the endorsement to the committee we already hold.
        """
        old = self.committee
        if old is None or new.epoch < old.epoch:
            return False
        if new.epoch == old.epoch:
            if old.endorsement is not None or new.statement() != old.statement():
                return False
            if not endorsement_valid(new):
                self.refused_updates += 1
                log.warning("refused an endorsement for committee epoch %d: invalid", new.epoch)
                raise CaForbidden("the committee's endorsement does not verify")
        else:
            try:
                check_committee_update(old, new)
            except CaForbidden as exc:
                self.refused_updates += 1
                log.warning("refused committee epoch %d: %s", new.epoch, exc.message)
                raise
        self.committee = new
        self.state.save_committee(new)
        loaded = self.state.load_share()
        if loaded is not None and (loaded[0] < new.epoch) and new.member(self.name) is None:
            # Proven above: t holders of new shares signed a committee without us.
            self.state.drop_share()
        self.load_signer()
        return True
