"""The CA's checks that need no I/O: is this run, CSR or enrolment one we may take part in?

Each takes what the agent holds and what it was sent, and raises a :mod:`peermesh.ca.errors`
class with the reason (the flows answer it with the error's status).
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from certs import frost
from certs.spiffe import SpiffeId, validate_node_name
from peermesh.ca.dkgrelay import RunSpec
from peermesh.ca.errors import CaBadRequest, CaConflict, CaForbidden, CaUnavailable
from peermesh.ca.node import raw_key
from peermesh.ca.roster import Roster
from peermesh.ca.state import Committee

#: The longest a join token may live (kubeadm's default is 24 h; a week covers rollouts).
MAX_TOKEN_TTL = 7 * 86400.0


def check_bootstrap_spec(
    spec: RunSpec, roster: Roster | None, committee: Committee | None, me: str
) -> None:
    """A bootstrap DKG must be the one our own roster implies, and our first."""
    if roster is None or not roster.complete:
        raise CaUnavailable(f"{me} has not seen every bootstrap agent yet; retry")
    if committee is not None:
        raise CaConflict(f"{me} already holds a committee; no second DKG")
    if spec.purpose != "dkg" or spec.threshold != roster.me.threshold:
        raise CaForbidden("run is not the DKG our roster implies (purpose/threshold)")
    if dict(spec.participants) != dict(roster.participants()):
        raise CaForbidden("run's participants differ from the roster we saw")


def check_change_spec(
    spec: RunSpec,
    offered: Committee | None,
    committee: Committee | None,
    is_signer: bool,
    me: str,
) -> tuple[Committee | None, frost.PublicKeyPackage]:
    """A refresh or repair over mTLS: the committee we would end in, and the run's public key.

    As the target of an enrolment we get the new committee with the request, and it must
    be for our root (if we know one) and carry the root's key; as a helper the run must
    match our committee exactly.
    """
    if spec.purpose not in ("refresh", "repair"):
        raise CaForbidden("only refresh and repair run over mTLS")
    if spec.target == me:
        if offered is None:
            raise CaBadRequest("enrolment comes without the committee to join")
        root_der = committee.root_der if committee else None
        if root_der is not None and offered.root_der != root_der:
            raise CaForbidden("enrolment offers another root than ours")
        if offered.root_der is None or offered.public.group_public_key.to_bytes() != raw_key(
            x509.load_der_x509_certificate(offered.root_der)
        ):
            raise CaForbidden("enrolment committee's group key is not its root key")
        base = offered.public.without_participants([spec.participants[me][0]])
        return offered, base
    if committee is None or not is_signer:
        raise CaUnavailable(f"{me} is not a signer")
    if spec.epoch != committee.epoch:
        raise CaConflict(f"run is for committee epoch {spec.epoch}, ours is {committee.epoch}")
    if spec.threshold != committee.threshold:
        raise CaForbidden("run changes the threshold")
    for node, (ident, key) in spec.participants.items():
        if node == spec.target:
            continue
        member = committee.member(node)
        if member is None or member.identifier != ident or member.identity_key != key:
            raise CaForbidden(f"run lists {node} differently from our committee")
    return None, committee.public


def csr_identity(
    csr: x509.CertificateSigningRequest, trust_domain: str
) -> tuple[str, str, Ed25519PublicKey]:
    """(service, node, key) a joiner's CSR asks for; ValueError or IdentityError says why not."""
    if not csr.is_signature_valid:
        raise ValueError("CSR signature does not verify (no proof of key possession)")
    key = csr.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("CSR key is not Ed25519")
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    dns = san.get_values_for_type(x509.DNSName)
    if len(uris) != 1 or len(dns) != 1:
        raise ValueError("CSR must carry exactly one URI SAN and one DNS SAN (node name)")
    spiffe = SpiffeId.parse(uris[0])
    if spiffe.trust_domain != trust_domain or spiffe.service is None:
        raise ValueError(f"{spiffe} is not spiffe://{trust_domain}/svc/<service>")
    return spiffe.service, validate_node_name(dns[0]), key


def token_request(raw: object) -> tuple[str | None, float, int | None]:
    """(service, ttl, uses) of ``POST /v1/ca/token``; ValueError says what is wrong."""
    if not isinstance(raw, dict):
        raise ValueError("POST /v1/ca/token {service, ttl, uses}")
    service = raw.get("service")
    ttl = float(raw.get("ttl", 3600))
    raw_uses = raw.get("uses", 1)
    uses = None if raw_uses is None else int(raw_uses)
    if (uses is not None and uses < 1) or not 0 < ttl <= MAX_TOKEN_TTL:
        raise ValueError(
            f"uses must be ≥ 1 (or null: unlimited) and 0 < ttl ≤ {MAX_TOKEN_TTL:.0f} s"
        )
    if service is not None and not isinstance(service, str):
        raise ValueError("service must be a service name")
    return service, ttl, uses
