"""Live connections of a listener, so shutdown can drain them gracefully."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import trio

from peermesh.net.http.h1server import H1ServerConnection
from peermesh.net.http.h2session import H2Session


@dataclass
class ConnectionTracker:
    """What is open on one listener; ``drain()`` sends GOAWAY / closes idle keep-alives."""

    name: str
    h2: set[H2Session] = field(default_factory=set)
    h1: dict[H1ServerConnection, trio.CancelScope] = field(default_factory=dict)
    draining: bool = False

    @property
    def connections(self) -> int:
        return len(self.h2) + len(self.h1)

    @property
    def streams(self) -> int:
        return sum(s.open_streams for s in self.h2) + sum(1 for c in self.h1 if c.busy)

    def drain(self) -> None:
        self.draining = True
        for session in list(self.h2):
            session.start_drain()
        for conn, scope in list(self.h1.items()):
            conn.draining = True
            if not conn.busy:
                scope.cancel()


def close_revoked(sessions: Iterable[H2Session], is_revoked: Callable[[str | None], bool]) -> int:
    """Hard-close every mTLS session whose peer identity is now revoked; how many.

    The handshake check only covers new connections; a revocation must also end the
    ones already open (requests in flight on them are cancelled).
    """
    closed = 0
    for session in list(sessions):
        if session.peer is not None and is_revoked(str(session.peer)):
            session.close("peer identity revoked")
            closed += 1
    return closed
