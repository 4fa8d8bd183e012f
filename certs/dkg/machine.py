"""What every run's state machine shares: identity, authentication, complaints, abort state."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from certs.dkg import messages
from certs.dkg.complaints import verify_complaint
from certs.dkg.errors import DkgAborted, DkgError, DkgMessageRejected, Verdict
from certs.dkg.roster import Roster
from certs.ed25519_group import RandomBytes
from certs.frost import PublicKeyPackage, SigningKeyShare

__all__ = ["DkgOutput", "Machine", "OutputMachine", "RepairOutput"]


@dataclass(frozen=True)
class DkgOutput:
    """What a successful DKG or refresh leaves a participant with."""

    key_share: SigningKeyShare
    public: PublicKeyPackage
    transcript_hash: bytes


@dataclass(frozen=True)
class RepairOutput:
    """What a successful repair gives its target."""

    key_share: SigningKeyShare
    public: PublicKeyPackage


_M = TypeVar(
    "_M",
    messages.DkgRound1,
    messages.DkgRound2,
    messages.RepairRequest,
    messages.RepairCommit,
    messages.RepairDeltas,
    messages.RepairSigma,
)


class Machine:
    """Shared plumbing: identity, authentication, complaints, abort state."""

    def __init__(
        self,
        roster: Roster,
        identifier: int,
        identity_key: Ed25519PrivateKey,
        random_bytes: RandomBytes,
    ) -> None:
        if identifier not in roster.identity_keys:
            raise DkgError(f"participant {identifier} is not in the roster")
        if identity_key.public_key().public_bytes_raw() != roster.identity_keys[identifier]:
            raise DkgError("identity key does not match the roster")
        self.roster = roster
        self.identifier = identifier
        self._identity_key = identity_key
        self._random = random_bytes
        self._verdicts: list[Verdict] = []
        self._started = False

    @property
    def aborted(self) -> bool:
        """True once any participant has been proven at fault."""
        return bool(self._verdicts)

    def _sign(self, message: Any) -> Any:
        return message.signed(self.roster.purpose, self._identity_key)

    def _complain(
        self,
        kind: str,
        accused: int,
        evidence: Sequence[messages.DkgMessage],
        revealed: bytes = b"",
    ) -> list[messages.DkgMessage]:
        complaint = self._sign(
            messages.Complaint(
                self.roster.session_id, self.identifier, accused, kind, tuple(evidence), revealed
            )
        )
        self._verdicts.append(verify_complaint(complaint, self.roster))
        self._forget_secrets()
        return [complaint]

    def _forget_secrets(self) -> None:
        """Drop polynomials, summands and received shares (Python cannot wipe memory)."""

    def receive(self, message: messages.DkgMessage) -> list[messages.DkgMessage]:
        """Process one incoming broadcast; returns the messages to broadcast in reply."""
        if message.sender == self.identifier:
            return []  # our own broadcast looped back
        if not self.roster.authentic(message):
            raise DkgMessageRejected(
                f"{message.TYPE} claiming to be from {message.sender} is not authentic"
            )
        if isinstance(message, messages.Complaint):
            if not self.aborted:
                self._forget_secrets()
            verdict = verify_complaint(message, self.roster)
            if verdict not in self._verdicts:
                self._verdicts.append(verdict)
            return []
        if self.aborted:
            return []
        return self._dispatch(message)

    def _dispatch(self, message: messages.DkgMessage) -> list[messages.DkgMessage]:
        raise NotImplementedError

    def _check_result(self, done: bool) -> None:
        if self._verdicts:
            raise DkgAborted(self._verdicts)
        if not done:
            raise DkgError("run not finished yet")

    def _admit(
        self,
        store: dict[int, _M],
        message: _M,
        problem: Callable[[Roster, _M], str | None] | None = None,
        pending: list[_M] | None = None,
    ) -> list[messages.DkgMessage]:
        """Take one message of a kind: nothing for a repeat, a complaint for equivocation or
        a broken rule; else queue it on ``pending`` (if given) and move the run on."""
        is_new, conflicting = self._record(store, message)
        if conflicting is not None:
            return self._complain(
                messages.KIND_EQUIVOCATION, message.sender, [conflicting, message]
            )
        if not is_new:
            return []
        if problem is not None and problem(self.roster, message):
            return self._complain(messages.KIND_INVALID, message.sender, [message])
        if pending is not None:
            pending.append(message)
        return self._progress()

    def _progress(self) -> list[messages.DkgMessage]:
        raise NotImplementedError

    @staticmethod
    def _record(store: dict[int, _M], message: _M) -> tuple[bool, _M | None]:
        """(is_new, previous): detect duplicates and equivocation of one message kind."""
        previous = store.get(message.sender)
        if previous is None:
            store[message.sender] = message
            return True, None
        return False, (None if previous == message else previous)


_O = TypeVar("_O", DkgOutput, RepairOutput)


class OutputMachine(Machine, Generic[_O]):
    """A machine whose successful run leaves this participant an output."""

    _output: _O | None = None

    @property
    def done(self) -> bool:
        """True once the output is available."""
        return self._output is not None

    def result(self) -> _O:
        """The output; raises :class:`DkgAborted` naming the culprits."""
        self._check_result(self.done)
        assert self._output is not None
        return self._output
