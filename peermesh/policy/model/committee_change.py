"""``CommitteeChange``: the record of one change of the threshold CA's committee.

The committee itself lives in the CA's own state and changes only through its endorsed
succession; this kind is the audit trail beside it. The agent that coordinated a change
writes one object per resulting epoch, signed like every record, so ``peermesh policy
history CommitteeChange/epoch-N`` on any agent says who changed the committee and when.
Nothing reads it back into the CA: it is a record, not a command.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from peermesh.policy.model.common import JSON, _drop_empty

#: Most nodes one record lists in each of its member lists (a committee is far smaller).
MAX_COMMITTEE_NODES = 256


class CommitteeChangeKind(enum.StrEnum):
    """How the committee changed."""

    #: The root key was re-shared among the reachable signers; the rest were dropped.
    REFRESH = "Refresh"
    #: A mesh member was given a share by repair.
    ENROLL = "Enroll"


def committee_change_name(epoch: int) -> str:
    """The object name of the record of the change that produced ``epoch``."""
    return f"epoch-{epoch}"


@dataclass(frozen=True)
class CommitteeChangeSpec:
    """What one committee change did: the epoch it produced and who holds shares now."""

    change: CommitteeChangeKind
    epoch: int
    threshold: int
    #: The committee after the change (node names), sorted.
    members: tuple[str, ...]
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    def to_dict(self) -> JSON:
        return _drop_empty(
            {
                "change": self.change.value,
                "epoch": self.epoch,
                "threshold": self.threshold,
                "members": list(self.members),
                "added": list(self.added),
                "removed": list(self.removed),
            }
        )


__all__ = [
    "MAX_COMMITTEE_NODES",
    "CommitteeChangeKind",
    "CommitteeChangeSpec",
    "committee_change_name",
]
