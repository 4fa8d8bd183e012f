"""Running a DKG, refresh or repair between agents, with one agent relaying the broadcasts.

The machines in :mod:`certs.dkg` only need every message delivered to everybody.
One agent (the *relay*: the bootstrap coordinator, or whoever runs ``peermesh ca
refresh``/``enroll``) collects each participant's messages and hands them to all the
others, round after round, until every machine is done. The relay is not trusted:
every message is signed by its sender's identity key and every private share is
encrypted to its recipient, so a relay can only drop messages (the run then times
out and nothing changes), never read or forge one.

Two-phase end: participants keep their output in memory until the relay says
``finish`` (after all reported done), so a run that fails halfway changes no share.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from certs.frost import FrostError, PublicKeyPackage, SigningKeyShare
from peermesh.ca.errors import RelayError

if TYPE_CHECKING:
    from certs import dkg

# The DKG state machines (``certs.dkg``) run only during a key ceremony (bootstrap,
# refresh, repair), so the functions that drive one import them: an agent that is not
# in a ceremony does not keep their code resident.

log = logging.getLogger(__name__)

__all__ = ["ParticipantSessions", "RelayCall", "RelayError", "RunSpec", "relay_run"]

RelayCall = Callable[[str, str, Any], Awaitable[Any]]
MAX_ROUNDS = 12


@dataclass(frozen=True)
class RunSpec:
    """What every participant is told about a run (and checks against its own state)."""

    purpose: str  # dkg | refresh | repair
    session_id: bytes
    threshold: int
    #: node -> (identifier, identity public key), for every participant incl. a repair target
    participants: Mapping[str, tuple[int, bytes]]
    target: str | None = None
    epoch: int = 0  # the committee epoch the run starts from (refresh/repair)

    def to_wire(self) -> dict[str, Any]:
        return {
            "purpose": self.purpose,
            "session": self.session_id,
            "threshold": self.threshold,
            "participants": [[n, i, k] for n, (i, k) in sorted(self.participants.items())],
            "target": self.target,
            "epoch": self.epoch,
        }

    @classmethod
    def from_wire(cls, data: Any) -> RunSpec:
        try:
            return cls(
                purpose=str(data["purpose"]),
                session_id=bytes(data["session"]),
                threshold=int(data["threshold"]),
                participants={str(n): (int(i), bytes(k)) for n, i, k in data["participants"]},
                target=None if data.get("target") is None else str(data["target"]),
                epoch=int(data.get("epoch", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RelayError(f"run spec is malformed: {exc!r}") from None

    def identity_keys(self) -> dict[int, bytes]:
        return {i: k for i, k in self.participants.values()}

    def roster(self, public: PublicKeyPackage | None) -> dkg.Roster:
        from certs import dkg

        keys = self.identity_keys()
        if self.purpose == "dkg":
            return dkg.Roster.for_dkg(self.session_id, self.threshold, keys)
        if public is None:
            raise RelayError(f"{self.purpose} needs the current group's public key package")
        if self.purpose == "refresh":
            return dkg.Roster.for_refresh(self.session_id, public, keys)
        if self.target is None:
            raise RelayError("repair needs a target")
        target_id = self.participants[self.target][0]
        return dkg.Roster.for_repair(self.session_id, public, target_id, keys)


@dataclass(frozen=True)
class RunOutput:
    """What a participant keeps from a finished run (None for a repair helper)."""

    share: SigningKeyShare | None
    public: PublicKeyPackage
    spec: RunSpec


@dataclass
class _Session:
    spec: RunSpec
    machine: dkg.DkgParticipant | dkg.RepairHelper | dkg.RepairTarget
    public: PublicKeyPackage | None
    output: RunOutput | None = None


class ParticipantSessions:
    """The participant side: machines by session id (sans-IO; the service moves bytes)."""

    def __init__(self) -> None:
        self._sessions: dict[bytes, _Session] = {}

    def begin(
        self,
        spec: RunSpec,
        me: str,
        identity_key: Ed25519PrivateKey,
        *,
        share: SigningKeyShare | None,
        public: PublicKeyPackage | None,
    ) -> list[dict[str, Any]]:
        """Start our machine for ``spec``; our first broadcasts (wire form)."""
        from certs import dkg

        if spec.session_id in self._sessions:
            raise RelayError("session already started")
        if me not in spec.participants:
            raise RelayError(f"{me} is not a participant of this run")
        my_id, my_key = spec.participants[me]
        if my_key != identity_key.public_key().public_bytes_raw():
            raise RelayError("the run lists a different identity key for us")
        try:
            roster = spec.roster(public)
            machine: dkg.DkgParticipant | dkg.RepairHelper | dkg.RepairTarget
            if spec.purpose == "dkg":
                machine = dkg.DkgParticipant(roster, my_id, identity_key)
            elif spec.purpose == "refresh":
                machine = dkg.DkgParticipant(roster, my_id, identity_key, key_share=share)
            elif spec.target == me:
                machine = dkg.RepairTarget(roster, identity_key)
            else:
                if share is None:
                    raise RelayError("a repair helper needs a share")
                machine = dkg.RepairHelper(roster, share, identity_key)
            messages = machine.start()
        except (dkg.DkgError, FrostError) as exc:
            raise RelayError(f"cannot start {spec.purpose}: {exc}") from None
        self._sessions[spec.session_id] = _Session(spec, machine, public)
        return [m.to_wire() for m in messages]

    def deliver(self, session_id: bytes, messages: Sequence[Any]) -> dict[str, Any]:
        """Feed broadcasts; answer our new broadcasts and whether we are done."""
        from certs import dkg

        session = self._sessions.get(session_id)
        if session is None:
            raise RelayError("unknown session (agent restarted?); rerun the command")
        out: list[dict[str, Any]] = []
        for wire in messages:
            try:
                message = dkg.message_from_wire(wire)
                out += [m.to_wire() for m in session.machine.receive(message)]
            except dkg.DkgMessageRejected as exc:
                log.info("dropped DKG message: %s", exc)
            except (dkg.DkgError, FrostError, ValueError, TypeError, KeyError) as exc:
                log.info("bad DKG message: %s", exc)
        done = bool(session.machine.done)
        error = None
        if session.machine.aborted:
            try:
                session.machine.result()
            except dkg.DkgError as exc:
                error = str(exc)
        if done and session.output is None:
            session.output = self._output(session)
        return {"messages": out, "done": done, "error": error}

    @staticmethod
    def _output(session: _Session) -> RunOutput:
        from certs import dkg

        machine = session.machine
        if isinstance(machine, dkg.DkgParticipant):
            result = machine.result()
            return RunOutput(result.key_share, result.public, session.spec)
        if isinstance(machine, dkg.RepairTarget):
            repaired = machine.result()
            return RunOutput(repaired.key_share, repaired.public, session.spec)
        assert session.public is not None
        return RunOutput(None, session.public, session.spec)

    def finish(self, session_id: bytes) -> RunOutput:
        """Hand over the output to persist, and forget the session."""
        session = self._sessions.pop(session_id, None)
        if session is None or session.output is None:
            raise RelayError("session is not finished here")
        return session.output


@dataclass
class RelayReport:
    """How a relayed run went."""

    rounds: int
    messages: int
    done: list[str] = field(default_factory=list)


async def relay_run(spec: RunSpec, call: RelayCall, *, timeout: float = 30.0) -> RelayReport:
    """Drive a run among ``spec.participants`` by relaying broadcasts; raise RelayError."""
    names = sorted(spec.participants)
    log_: list[dict[str, Any]] = []  # every broadcast so far, in arrival order
    sent: dict[str, int] = dict.fromkeys(names, 0)
    origin: list[str] = []
    done: dict[str, bool] = dict.fromkeys(names, False)
    errors: dict[str, str] = {}

    async def each(fn: Callable[[str], Awaitable[None]]) -> None:
        async with trio.open_nursery() as nursery:
            for name in names:
                nursery.start_soon(fn, name)

    async def begin(name: str) -> None:
        try:
            messages = await call(name, "begin", spec.to_wire())
        except Exception as exc:
            errors[name] = str(exc)
            return
        for m in messages or []:
            log_.append(m)
            origin.append(name)

    rounds = 0
    with trio.move_on_after(timeout) as scope:
        await each(begin)
        if errors:
            raise RelayError(_describe("could not start", errors))
        while not all(done.values()):
            rounds += 1
            if rounds > MAX_ROUNDS:
                raise RelayError(f"no progress after {MAX_ROUNDS} rounds; participants silent?")
            snapshot = len(log_)

            async def deliver(name: str, upto: int = snapshot) -> None:
                batch = [
                    m
                    for m, o in zip(log_[sent[name] : upto], origin[sent[name] : upto], strict=True)
                    if o != name
                ]
                try:
                    reply = await call(
                        name, "deliver", {"session": spec.session_id, "messages": batch}
                    )
                except Exception as exc:
                    errors[name] = str(exc)
                    return
                sent[name] = upto
                for m in reply.get("messages") or []:
                    log_.append(m)
                    origin.append(name)
                done[name] = bool(reply.get("done"))
                if reply.get("error"):
                    errors[name] = str(reply["error"])

            await each(deliver)
            if errors:
                raise RelayError(_describe(f"{spec.purpose} failed", errors))

        async def finish(name: str) -> None:
            try:
                await call(name, "finish", {"session": spec.session_id})
            except Exception as exc:
                errors[name] = str(exc)

        await each(finish)
        if errors:
            raise RelayError(_describe(f"{spec.purpose} finished only partly", errors))
    if scope.cancelled_caught:
        raise RelayError(f"{spec.purpose} did not finish within {timeout}s")
    return RelayReport(rounds=rounds, messages=len(log_), done=names)


def _describe(what: str, errors: Mapping[str, str]) -> str:
    return f"{what}: " + "; ".join(f"{n}: {e}" for n, e in sorted(errors.items()))
