"""Anti-entropy: the periodic full-table push-pull, and adopting a snapshot.

The shell carries the exchange (HTTP/2 in the agent); the core only says when and
with whom (:class:`~gossip.swim.StartPushPull`), encodes its table and merges a
peer's. A remote "dead" is taken only as a suspicion here: the peer may be the
cut-off one.
"""

from __future__ import annotations

from gossip.codec import DropReason, encode_state_entry, join_state, open_state
from gossip.swim.outputs import Output, StartPushPull
from gossip.swim.probe import Prober
from gossip.swim.state import ALIVE, DEAD, LEFT


class AntiEntropy(Prober):
    """Full-state exchanges that close the gaps rumours left."""

    def _start_push_pull(self, out: list[Output]) -> None:
        for name in self._pool.sample(self.rng, 3):
            m = self._members[name]
            if m.state == ALIVE:
                out.append(StartPushPull(m.meta.gossip_addr, name))
                return

    def push_pull_state(self) -> bytes:
        """Our whole member table, for the full-state exchange."""
        entries = [
            encode_state_entry(m.name, m.incarnation, m.state, m.blob)
            for m in self._members.values()
        ]
        return join_state(self.name, entries)

    def merge_push_pull(self, now: float, data: bytes) -> list[Output]:
        """Merge a peer's full state. A responder merges *before* answering with its own.

        Changes it brings are gossiped on (they are gaps that rumours missed),
        except third-party news in the answer to our own join: that is the
        peer's whole table, new to us only.
        """
        joining = self._join_sync
        self._join_sync = False
        return self._merge(now, data, joining, joining)

    def restore(self, now: float, data: bytes) -> list[Output]:
        """Adopt a full state (ours from a snapshot, or a pre-converged start) quietly.

        Like the answer to a join, but with no follow-up exchange: the state is
        taken as complete. Nothing in it is gossiped on, except that we refute
        what it says against us.
        """
        return self._merge(now, data, True, False)

    def _merge(self, now: float, data: bytes, joining: bool, resync: bool) -> list[Output]:
        opened = open_state(data)
        if isinstance(opened, DropReason) or opened[0] == self.name:
            self.stats.push_pull_rejected += 1
            return []
        sender, entries = opened
        self.stats.push_pulls += 1
        self._clock = max(self._clock, now)
        if resync:
            # The table we just got is a snapshot: joins that were still being gossiped
            # when it was taken may be missing. One more exchange once that gossip has
            # run its course closes the gap, instead of waiting a full push-pull period.
            self._sync_at = now + self._settle_time(len(entries))
            self._sync_followups = 1
        out: list[Output] = []
        me = self._me
        members = self._members
        for node, inc, state, blob in entries:
            if node == self.name:
                if state == ALIVE:
                    self._alive(now, node, inc, blob, out, True)
                elif inc >= me.incarnation:
                    if not self._leaving:
                        self._refute(inc)
                else:
                    self._reannounce()
                continue
            # Changes learned here are gaps in what gossip brought us, and maybe in
            # what it brought others: pass them on. Not on joining, though: then the
            # whole table is new to us and old news to everyone else.
            news = not joining
            if state == ALIVE:
                self._alive(now, node, inc, blob, out, news)
                continue
            m = members.get(node)
            if m is None or inc < m.incarnation:
                continue
            if state == LEFT:
                if m.state < DEAD:
                    self._dead(now, m, inc, node, out, news)
            else:
                # A remote "dead" is only a suspicion here: the peer may be the cut-off one.
                self._suspect(now, m, inc, sender, out, True)
        period = self.profile.push_pull_period(len(self._pool) + 1)
        if period > self._push_pull_period:
            # We just learned a much bigger mesh: spread our periodic exchanges over the
            # longer period it calls for, or a mesh that formed at once would push-pull
            # in step.
            self._push_pull_period = period
            self._next_push_pull_at = now + self.rng.uniform(0.0, period)
        return out
