"""Share repair and enrolment (Laing & Stinson): the helpers and the target of a repair run."""

from __future__ import annotations

import secrets

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from certs.dkg.errors import DkgError, DkgMessageRejected
from certs.dkg.machine import Machine, OutputMachine, RepairOutput
from certs.dkg.messages import (
    KIND_BAD_SHARE,
    KIND_EQUIVOCATION,
    KIND_INVALID,
    DkgMessage,
    RepairCommit,
    RepairDeltas,
    RepairRequest,
    RepairSigma,
)
from certs.dkg.primitives import open_scalar, seal, x25519_keypair
from certs.dkg.roster import Roster
from certs.dkg.rules import (
    repair_commit_problem,
    repair_deltas_problem,
    repair_request_problem,
    repair_sigma_problem,
)
from certs.ed25519_group import Point, RandomBytes, Scalar
from certs.frost import SigningKeyShare, lagrange_coefficient

__all__ = ["RepairHelper", "RepairTarget"]


class RepairHelper(Machine):
    """A current share holder helping ``roster.target`` to its share (Laing & Stinson)."""

    def __init__(
        self,
        roster: Roster,
        key_share: SigningKeyShare,
        identity_key: Ed25519PrivateKey,
        *,
        random_bytes: RandomBytes = secrets.token_bytes,
    ) -> None:
        if roster.purpose != "repair":
            raise DkgError("RepairHelper runs repair rosters only")
        super().__init__(roster, key_share.identifier, identity_key, random_bytes)
        assert roster.public is not None
        if key_share.identifier not in roster.members:
            raise DkgError("the repair target cannot help itself")
        if key_share.public_key != roster.public.verification_share(key_share.identifier):
            raise DkgError("key share does not match the group's verification share")
        self._key_share = key_share
        self._deltas: dict[int, Scalar] = {}
        self._enc_secrets: dict[int, bytes] = {}
        self._request: RepairRequest | None = None
        self._commits: dict[int, RepairCommit] = {}
        self._delta_msgs: dict[int, RepairDeltas] = {}
        self._pending: list[RepairDeltas] = []
        self._received: dict[int, Scalar] = {}
        self._sent_deltas = False
        self._sent_sigma = False

    def start(self) -> list[DkgMessage]:
        """Split ``lambda * share`` into committed summands and broadcast the commitments."""
        if self._started:
            raise DkgError("already started")
        self._started = True
        assert self.roster.target is not None
        helpers = self.roster.members
        lam = lagrange_coefficient(helpers, self.identifier, self.roster.target)
        value = lam * self._key_share.secret
        while True:
            deltas = {k: Scalar.random_nonzero(self._random) for k in helpers[:-1]}
            rest = value
            for d in deltas.values():
                rest = rest - d
            if not rest.is_zero():
                deltas[helpers[-1]] = rest
                break
        self._deltas = deltas
        enc_keys = []
        for k in helpers:
            if k != self.identifier:
                secret, public = x25519_keypair(self._random)
                self._enc_secrets[k] = secret
                enc_keys.append((k, public))
        message: RepairCommit = self._sign(
            RepairCommit(
                self.roster.session_id,
                self.identifier,
                tuple((k, Point.base_mul(d).to_bytes()) for k, d in sorted(deltas.items())),
                tuple(enc_keys),
            )
        )
        self._commits[self.identifier] = message
        self._received[self.identifier] = deltas[self.identifier]
        return [message, *self._progress()]

    def _dispatch(self, message: DkgMessage) -> list[DkgMessage]:
        if isinstance(message, RepairRequest):
            if self._request is not None:
                if self._request != message:
                    return self._complain(
                        KIND_EQUIVOCATION, message.sender, [self._request, message]
                    )
                return []
            if repair_request_problem(self.roster, message):
                return self._complain(KIND_INVALID, message.sender, [message])
            self._request = message
            return self._progress()
        if isinstance(message, RepairCommit):
            return self._admit(self._commits, message, repair_commit_problem)
        if isinstance(message, RepairDeltas):
            return self._admit(self._delta_msgs, message, repair_deltas_problem, self._pending)
        if isinstance(message, RepairSigma):
            return []  # for the target only
        raise DkgMessageRejected(f"unexpected {message.TYPE} in a repair run")

    def _progress(self) -> list[DkgMessage]:
        out: list[DkgMessage] = []
        helpers = self.roster.members
        if not self._started or len(self._commits) < len(helpers):
            return out
        session = self.roster.session_id
        if not self._sent_deltas:
            self._sent_deltas = True
            sealed = []
            for k in helpers:
                if k == self.identifier:
                    continue
                key = dict(self._commits[k].enc_keys)[self.identifier]
                value = self._deltas[k].to_bytes()
                sealed.append(
                    (k, seal("repair", session, self.identifier, k, key, value, self._random))
                )
            out.append(self._sign(RepairDeltas(session, self.identifier, tuple(sealed))))
        while self._pending and not self.aborted:
            m = self._pending.pop(0)
            delta = open_scalar(
                "repair",
                session,
                m.sender,
                self.identifier,
                self._enc_secrets[m.sender],
                dict(m.deltas)[self.identifier],
            )
            expected = Point.from_bytes(
                dict(self._commits[m.sender].delta_commitments)[self.identifier]
            )
            if isinstance(delta, str) or Point.base_mul(delta) != expected:
                evidence: list[DkgMessage] = [
                    self._commits[m.sender],
                    m,
                    self._commits[self.identifier],
                ]
                return [
                    *out,
                    *self._complain(
                        KIND_BAD_SHARE, m.sender, evidence, self._enc_secrets[m.sender]
                    ),
                ]
            self._received[m.sender] = delta
        if (
            not self.aborted
            and not self._sent_sigma
            and self._request is not None
            and len(self._received) == len(helpers)
        ):
            self._sent_sigma = True
            sigma = Scalar.ZERO
            for d in self._received.values():
                sigma = sigma + d
            target = self.roster.target
            assert target is not None
            key = dict(self._request.enc_keys)[self.identifier]
            sealed_sigma = seal(
                "repair", session, self.identifier, target, key, sigma.to_bytes(), self._random
            )
            out.append(self._sign(RepairSigma(session, self.identifier, sealed_sigma)))
            self._forget_secrets()
        return out

    def _forget_secrets(self) -> None:
        self._deltas = {}
        self._received = {}
        self._enc_secrets = {}

    @property
    def done(self) -> bool:
        """True once this helper has sent its sum to the target."""
        return self._sent_sigma

    def result(self) -> None:
        """Raises :class:`DkgAborted` if the run was aborted, :class:`DkgError` if unfinished."""
        self._check_result(self.done)


class RepairTarget(OutputMachine[RepairOutput]):
    """The participant that receives its (new or lost) share at ``roster.target``."""

    def __init__(
        self,
        roster: Roster,
        identity_key: Ed25519PrivateKey,
        *,
        random_bytes: RandomBytes = secrets.token_bytes,
    ) -> None:
        if roster.purpose != "repair" or roster.target is None:
            raise DkgError("RepairTarget runs repair rosters only")
        super().__init__(roster, roster.target, identity_key, random_bytes)
        self._enc_secrets: dict[int, bytes] = {}
        self._request: RepairRequest | None = None
        self._commits: dict[int, RepairCommit] = {}
        self._sigma_msgs: dict[int, RepairSigma] = {}
        self._pending: list[RepairSigma] = []
        self._sigmas: dict[int, Scalar] = {}
        self._output = None

    def start(self) -> list[DkgMessage]:
        """Broadcast the request with one fresh encryption key per helper."""
        if self._started:
            raise DkgError("already started")
        self._started = True
        enc_keys = []
        for k in self.roster.members:
            secret, public = x25519_keypair(self._random)
            self._enc_secrets[k] = secret
            enc_keys.append((k, public))
        message: RepairRequest = self._sign(
            RepairRequest(self.roster.session_id, self.identifier, tuple(enc_keys))
        )
        self._request = message
        return [message]

    def _dispatch(self, message: DkgMessage) -> list[DkgMessage]:
        if isinstance(message, RepairCommit):
            return self._admit(self._commits, message, repair_commit_problem)
        if isinstance(message, RepairSigma):
            return self._admit(self._sigma_msgs, message, repair_sigma_problem, self._pending)
        if isinstance(message, RepairDeltas):
            return []  # between helpers
        raise DkgMessageRejected(f"unexpected {message.TYPE} in a repair run")

    def _progress(self) -> list[DkgMessage]:
        helpers = self.roster.members
        if not self._started or len(self._commits) < len(helpers):
            return []
        assert self._request is not None and self.roster.public is not None
        while self._pending and not self.aborted:
            m = self._pending.pop(0)
            sigma = open_scalar(
                "repair",
                self.roster.session_id,
                m.sender,
                self.identifier,
                self._enc_secrets[m.sender],
                m.sigma,
            )
            expected = Point.identity()
            for c in self._commits.values():
                expected = expected + Point.from_bytes(dict(c.delta_commitments)[m.sender])
            if isinstance(sigma, str) or Point.base_mul(sigma) != expected:
                evidence: list[DkgMessage] = [
                    m,
                    self._request,
                    *(self._commits[k] for k in helpers),
                ]
                return self._complain(
                    KIND_BAD_SHARE, m.sender, evidence, self._enc_secrets[m.sender]
                )
            self._sigmas[m.sender] = sigma
        if not self.aborted and self._output is None and len(self._sigmas) == len(helpers):
            secret = Scalar.ZERO
            for s in self._sigmas.values():
                secret = secret + s
            public = self.roster.public.with_participant(self.identifier)
            if Point.base_mul(secret) != public.verification_share(self.identifier):
                raise DkgError(
                    "internal error: repaired share does not match its verification share"
                )
            self._output = RepairOutput(
                SigningKeyShare(self.identifier, secret, public.group_public_key), public
            )
            self._forget_secrets()
        return []

    def _forget_secrets(self) -> None:
        self._sigmas = {}
        self._enc_secrets = {}
