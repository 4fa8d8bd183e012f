"""Joining with a token: the new agent's side, and the member's side that helps it.

The joiner fetches the root from any member (``ca/join/info``), checks it against the
fingerprint its token pins, then sends the token and its CSR over TLS pinned to that
root (``ca/join``). The member threshold-signs over mTLS; each signer checks the token.
"""

from __future__ import annotations

import logging

import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from certs.spiffe import IdentityError, SpiffeId
from certs.x509 import assemble_certificate, certificate_signature_valid
from gossip.codec import save_keyring
from peermesh.ca import channel
from peermesh.ca import channel_messages as cm
from peermesh.ca import messages as m
from peermesh.ca.errors import (
    CaBadRequest,
    CaStateError,
    CaUnavailable,
    ChannelError,
    ChannelRefused,
    JoinError,
    QuorumError,
)
from peermesh.ca.flows.issue import Issuer
from peermesh.ca.node import CaNode, der, pem, raw_key, root_fingerprint
from peermesh.ca.rules import csr_identity
from peermesh.ca.tokens import JoinToken
from peermesh.net.rpc import Empty

log = logging.getLogger(__name__)


class Joiner:
    """A new agent getting its first certificate with ``--join-token``."""

    def __init__(self, node: CaNode) -> None:
        self.node = node

    async def run(self) -> None:
        node, settings = self.node, self.node.settings
        token = node.join_token
        assert token is not None
        if not settings.join:
            raise CaStateError("--join-token needs --join HOST:PORT (any member's address)")
        key = Ed25519PrivateKey.generate()
        identity = str(SpiffeId.for_service(node.trust_domain, settings.service))
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node.name)]))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(identity), x509.DNSName(node.name)]
                ),
                critical=False,
            )
            .sign(key, None)
        )
        node.phase = "joining"
        delay = 0.2
        while True:
            for host, port in settings.join:
                for address in ((host, port), (host, port + 1)):
                    try:
                        await self._join_via(address, token, key, csr)
                        return
                    except ChannelRefused as exc:
                        node.last_error = exc.message
                        log.warning("join via %s:%d refused: %s", *address, exc.message)
                        break  # a refusal is an answer: do not try the other port
                    except (ChannelError, JoinError) as exc:
                        # Some transport errors have no text: the type is the reason then.
                        node.last_error = str(exc) or type(exc).__name__
                        log.info("join via %s:%d: %s", address[0], address[1], node.last_error)
            await trio.sleep(node.rng.uniform(delay / 2, delay))
            delay = min(delay * 2, 5.0)

    async def _join_via(
        self,
        address: tuple[str, int],
        token: JoinToken,
        key: Ed25519PrivateKey,
        csr: x509.CertificateSigningRequest,
    ) -> None:
        node = self.node
        info = await channel.call_method(
            address, cm.JOIN_INFO, Empty(), context=channel.bootstrap_client_context(), timeout=3
        )
        root_der = info.root
        if root_fingerprint(root_der) != token.root_fingerprint:
            raise JoinError(
                f"{address[0]}:{address[1]} serves root {root_fingerprint(root_der)[:16]}…, not"
                f" the {token.root_fingerprint[:16]}… our token pins: wrong mesh or an impostor"
            )
        if info.trust_domain != node.trust_domain:
            # Refused before the token is spent: our CSR names the wrong trust domain.
            raise JoinError(
                f"the mesh at {address[0]}:{address[1]} has trust domain {info.trust_domain!r},"
                f" this agent {node.trust_domain!r}: start it with --trust-domain"
                f" {info.trust_domain}"
            )
        try:
            root = x509.load_der_x509_certificate(root_der)
        except ValueError as exc:
            raise JoinError(
                f"the root {address[0]}:{address[1]} serves is not DER: {exc}"
            ) from None
        request = cm.JoinRequest(
            token.token_id, token.secret, csr.public_bytes(serialization.Encoding.DER)
        )
        reply = await channel.call_method(
            address,
            cm.JOIN,
            request,
            context=channel.pinned_client_context(pem(root)),
            timeout=30,
        )
        try:
            cert = x509.load_der_x509_certificate(reply.cert)
        except ValueError as exc:
            raise JoinError(f"the certificate we got is not DER: {exc}") from None
        if not certificate_signature_valid(cert, raw_key(root)):
            raise JoinError("the certificate we got is not signed by the pinned root")
        if cert.public_key() != key.public_key():
            raise JoinError("the certificate we got is not for our key")
        committee = reply.committee
        if committee.root_der != root_der:
            raise JoinError("the committee we got is for another root")
        if committee.public.group_public_key.to_bytes() != raw_key(root):
            raise JoinError("the committee's group key is not the root key")
        node.committee = committee
        node.state.save_committee(committee)
        node.root_ready.set()
        gossip = node.ports.gossip
        if reply.gossip_keys:
            keys = list(reply.gossip_keys)
            save_keyring(node.state.gossip_key_path, keys)
            gossip.sync_keys(keys)
        node.install(cert, key)
        if gossip.enabled:
            for seed in node.settings.join:

                async def join(address: tuple[str, int] = seed) -> None:
                    await gossip.join_via(address, attempts=5)

                node.ports.background.spawn(join)
        log.info("threshold CA: joined through %s:%d as %s", address[0], address[1], cert.subject)


class JoinHelper:
    """A member's side: hands out the root and gets a joiner's CSR threshold-signed."""

    def __init__(self, node: CaNode, issuer: Issuer) -> None:
        self.node = node
        self.issuer = issuer

    def _need_member(self) -> None:
        node = self.node
        committee = node.committee
        if committee is None or committee.root_der is None or not node.ports.tls.loaded:
            raise CaUnavailable(f"{node.name} is not a member with a certificate yet")

    async def serve_info(self, body: Empty) -> cm.JoinInfo:
        self._need_member()
        committee = self.node.committee
        assert committee is not None and committee.root_der is not None
        return cm.JoinInfo(committee.root_der, committee.trust_domain)

    async def serve_join(self, body: cm.JoinRequest) -> cm.JoinReply:
        self._need_member()
        node = self.node
        try:
            csr = x509.load_der_x509_csr(body.csr)
            service, name, key = csr_identity(csr, node.trust_domain)
        except (TypeError, ValueError, IdentityError) as exc:
            raise CaBadRequest(f"CSR refused: {exc}") from None
        tbs = node.leaf_tbs(key, service, name)
        auth = m.SignAuth(
            m.AuthKind.JOIN, token_id=body.token_id, secret=body.secret, service=service
        )
        try:
            result = await self.issuer.issue_mtls(tbs, auth)
        except QuorumError as exc:
            raise CaUnavailable(f"cannot issue: {exc}") from None
        assert node.committee is not None
        keys = node.ports.gossip.gossip_keys()
        return cm.JoinReply(
            cert=der(assemble_certificate(tbs, result.signature)),
            committee=node.committee,
            gossip_keys=None if keys is None else tuple(keys),
        )
