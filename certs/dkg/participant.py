"""A participant of a DKG or a proactive refresh: deal, check every dealer, sum the shares."""

from __future__ import annotations

import hashlib
import secrets

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from certs.dkg.codec import canonical
from certs.dkg.errors import DkgError, DkgMessageRejected
from certs.dkg.machine import DkgOutput, OutputMachine
from certs.dkg.messages import (
    KIND_BAD_SHARE,
    KIND_EQUIVOCATION,
    KIND_INVALID,
    PROTOCOL_LABEL,
    DkgMessage,
    DkgRound1,
    DkgRound2,
)
from certs.dkg.primitives import open_scalar, prove_knowledge, seal, x25519_keypair
from certs.dkg.roster import Roster
from certs.dkg.rules import dealer_commitment, round1_problem, round2_problem
from certs.ed25519_group import Point, RandomBytes, Scalar
from certs.frost import (
    PublicKeyPackage,
    SigningKeyShare,
    evaluate_vss_commitment,
    polynomial_evaluate,
    vss_verify,
)

__all__ = ["DkgParticipant"]


class DkgParticipant(OutputMachine[DkgOutput]):
    """One participant of a DKG (``Roster.for_dkg``) or refresh (``Roster.for_refresh``).

    For a refresh pass the participant's current ``key_share``.
    """

    def __init__(
        self,
        roster: Roster,
        identifier: int,
        identity_key: Ed25519PrivateKey,
        *,
        key_share: SigningKeyShare | None = None,
        random_bytes: RandomBytes = secrets.token_bytes,
    ) -> None:
        if roster.purpose not in ("dkg", "refresh"):
            raise DkgError("DkgParticipant runs DKG or refresh rosters only")
        super().__init__(roster, identifier, identity_key, random_bytes)
        if roster.purpose == "refresh":
            assert roster.public is not None
            if key_share is None or key_share.identifier != identifier:
                raise DkgError("refresh needs this participant's current key share")
            if key_share.public_key != roster.public.verification_share(identifier):
                raise DkgError("key share does not match the group's verification share")
        self._old_share = key_share
        self._coefficients: list[Scalar] = []
        self._enc_secrets: dict[int, bytes] = {}
        self._round1: dict[int, DkgRound1] = {}
        self._round2: dict[int, DkgRound2] = {}
        self._pending2: list[DkgRound2] = []
        self._shares: dict[int, Scalar] = {}
        self._sent_round2 = False
        self._output = None

    def start(self) -> list[DkgMessage]:
        """Deal: sample the polynomial and broadcast round one (and round two if ready)."""
        if self._started:
            raise DkgError("already started")
        self._started = True
        t = self.roster.threshold
        if self.roster.purpose == "dkg":
            coefficients = [Scalar.random_nonzero(self._random) for _ in range(t)]
            published = coefficients
            proof = prove_knowledge(
                self.roster.session_id, self.identifier, coefficients[0], self._random
            )
        else:
            coefficients = [Scalar.ZERO] + [
                Scalar.random_nonzero(self._random) for _ in range(t - 1)
            ]
            published = coefficients[1:]
            proof = b""
        self._coefficients = coefficients
        enc_keys = []
        for j in self.roster.members:
            if j != self.identifier:
                secret, public = x25519_keypair(self._random)
                self._enc_secrets[j] = secret
                enc_keys.append((j, public))
        message: DkgRound1 = self._sign(
            DkgRound1(
                self.roster.session_id,
                self.identifier,
                tuple(Point.base_mul(c).to_bytes() for c in published),
                proof,
                tuple(enc_keys),
            )
        )
        self._round1[self.identifier] = message
        return [message, *self._progress()]

    def _dispatch(self, message: DkgMessage) -> list[DkgMessage]:
        if isinstance(message, DkgRound1):
            return self._admit(self._round1, message, round1_problem)
        if isinstance(message, DkgRound2):
            return self._admit(self._round2, message, pending=self._pending2)
        raise DkgMessageRejected(f"unexpected {message.TYPE} in a {self.roster.purpose} run")

    def _progress(self) -> list[DkgMessage]:
        out: list[DkgMessage] = []
        if not self._started or len(self._round1) < len(self.roster.members):
            return out
        if not self._sent_round2:
            self._sent_round2 = True
            out.append(self._make_round2())
        while self._pending2 and not self.aborted:
            out.extend(self._check_round2(self._pending2.pop(0)))
        if (
            not self.aborted
            and self._output is None
            and len(self._shares) == len(self.roster.members)
        ):
            self._finish()
        return out

    def _make_round2(self) -> DkgRound2:
        purpose, session = self.roster.purpose, self.roster.session_id
        shares = []
        for j in self.roster.members:
            value = polynomial_evaluate(Scalar.from_int(j), self._coefficients)
            if j == self.identifier:
                self._shares[j] = value
                continue
            recipient_key = dict(self._round1[j].enc_keys)[self.identifier]
            sealed = seal(
                purpose, session, self.identifier, j, recipient_key, value.to_bytes(), self._random
            )
            shares.append((j, sealed))
        echo = tuple(self._round1[i] for i in self.roster.members)
        message: DkgRound2 = self._sign(DkgRound2(session, self.identifier, tuple(shares), echo))
        return message

    def _check_round2(self, m: DkgRound2) -> list[DkgMessage]:
        problem = round2_problem(self.roster, m, self._round1)
        if problem:
            return self._complain(KIND_INVALID, m.sender, [m])
        for echoed in m.echo:
            mine = self._round1[echoed.sender]
            if echoed != mine:  # authentic (checked above) yet different: equivocation
                return self._complain(KIND_EQUIVOCATION, echoed.sender, [mine, echoed])
        sealed = dict(m.shares)[self.identifier]
        share = open_scalar(
            self.roster.purpose,
            self.roster.session_id,
            m.sender,
            self.identifier,
            self._enc_secrets[m.sender],
            sealed,
        )
        commitment = dealer_commitment(self.roster, self._round1[m.sender])
        assert not isinstance(commitment, str)
        if isinstance(share, str) or not vss_verify(self.identifier, share, commitment):
            evidence: list[DkgMessage] = [self._round1[m.sender], m, self._round1[self.identifier]]
            return self._complain(KIND_BAD_SHARE, m.sender, evidence, self._enc_secrets[m.sender])
        self._shares[m.sender] = share
        return []

    def _finish(self) -> None:
        roster = self.roster
        t = roster.threshold
        total = [Point.identity() for _ in range(t)]
        for m in self._round1.values():
            commitment = dealer_commitment(roster, m)
            assert not isinstance(commitment, str)
            total = [a + b for a, b in zip(total, commitment, strict=True)]
        secret = Scalar.ZERO
        for s in self._shares.values():
            secret = secret + s
        if roster.purpose == "dkg":
            group_key = total[0]
            if group_key.is_identity():
                raise DkgError("group key is the identity; rerun the DKG")
            shares = {j: evaluate_vss_commitment(j, total) for j in roster.members}
        else:
            assert roster.public is not None and self._old_share is not None
            group_key = roster.public.group_public_key
            secret = secret + self._old_share.secret
            shares = {
                j: roster.public.verification_share(j) + evaluate_vss_commitment(j, total)
                for j in roster.members
            }
        if Point.base_mul(secret) != shares[self.identifier]:
            raise DkgError("internal error: own share does not match its verification share")
        transcript = hashlib.sha256(
            canonical(
                [
                    PROTOCOL_LABEL,
                    roster.purpose,
                    [self._round1[i].to_wire() for i in roster.members],
                ]
            )
        ).digest()
        self._output = DkgOutput(
            SigningKeyShare(self.identifier, secret, group_key),
            PublicKeyPackage(t, group_key, shares),
            transcript,
        )
        self._forget_secrets()

    def _forget_secrets(self) -> None:
        self._coefficients = []
        self._shares = {}
        self._enc_secrets = {}
