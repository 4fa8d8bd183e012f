"""Renewal: a fresh key and certificate at half-life, authorized by the current one."""

from __future__ import annotations

import logging

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from certs.x509 import assemble_certificate
from peermesh.ca import messages as m
from peermesh.ca.errors import QuorumError
from peermesh.ca.flows.issue import Issuer
from peermesh.ca.issuance import IssuanceResult
from peermesh.ca.node import CaNode, utcnow
from peermesh.ca.renewal import renewal_delay, retry_delay
from peermesh.net.tls import TlsError

log = logging.getLogger(__name__)


class Renewal:
    """Keeps this agent's certificate fresh."""

    def __init__(self, node: CaNode, issuer: Issuer) -> None:
        self.node = node
        self.issuer = issuer

    async def renew(self) -> IssuanceResult:
        """A fresh key and certificate for our current identity, authorized by the current one."""
        node = self.node
        identity = node.ports.tls.identity
        service = identity.service
        if service is None:
            raise QuorumError(f"our identity {identity} is not a /svc/ identity; cannot renew")
        key = Ed25519PrivateKey.generate()
        tbs = node.leaf_tbs(key.public_key(), service, node.name)
        result = await self.issuer.issue_mtls(tbs, m.SignAuth(m.AuthKind.RENEW))
        node.install(assemble_certificate(tbs, result.signature), key)
        node.renewals += 1
        log.info("threshold CA: renewed %s (signers %s)", identity, result.signers)
        return result

    async def loop(self) -> None:
        """Renew at half-life (jittered); after a failure, retry well before expiry."""
        node = self.node
        failures = 0
        while True:
            tls = node.ports.tls
            if not tls.loaded or node.committee is None or node.committee.root_der is None:
                await trio.sleep(1.0)
                continue
            cert = tls.certificate
            if failures:
                delay = retry_delay(cert.not_valid_after_utc, utcnow(), failures)
            else:
                delay = renewal_delay(
                    cert.not_valid_before_utc, cert.not_valid_after_utc, utcnow(), node.rng
                )
            await trio.sleep(delay)
            try:
                await self.renew()
                failures = 0
                node.last_error = None
            except (QuorumError, TlsError, OSError) as exc:
                failures += 1
                node.last_error = f"renewal failed: {exc}"
                log.warning("threshold CA: %s", node.last_error)
