"""Why a DKG, refresh or repair run refuses a message or stops, and who is at fault."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from certs.errors import CertsError, ErrorCode

__all__ = ["DkgAborted", "DkgError", "DkgMessageRejected", "Verdict"]


class DkgError(CertsError, ValueError):
    """A DKG, refresh or repair run cannot proceed; the message says why."""

    default_code = ErrorCode.DKG


class DkgMessageRejected(DkgError):
    """A message is not authentic or not for this run: dropped, nobody can be blamed."""

    default_code = ErrorCode.DKG_MESSAGE_REJECTED


@dataclass(frozen=True)
class Verdict:
    """Who is at fault, and why, as anyone can determine from a complaint's evidence."""

    culprit: int
    reason: str

    def __str__(self) -> str:
        return f"participant {self.culprit} is at fault: {self.reason}"


class DkgAborted(DkgError):
    """The run was aborted; ``culprits`` names every participant proven at fault."""

    default_code = ErrorCode.DKG_ABORTED

    def __init__(self, verdicts: Sequence[Verdict]) -> None:
        self.verdicts: tuple[Verdict, ...] = tuple(verdicts)
        self.culprits: tuple[int, ...] = tuple(sorted({v.culprit for v in verdicts}))
        super().__init__("run aborted: " + "; ".join(str(v) for v in self.verdicts))
