"""SWIM membership with Lifeguard, as a sans-IO state machine (one concern per module).

The machine never touches a socket or a clock. Its owner feeds it datagrams and
the current time and carries out the actions it returns::

    actions = swim.handle_datagram(now, addr, data)   # a UDP datagram arrived
    actions = swim.tick(now)                          # at swim.next_deadline()
    actions = swim.join(now, seeds) / leave(now) / update_metadata(now, meta)
    body    = swim.push_pull_state()                  # full-state exchange (HTTP/2)
    actions = swim.merge_push_pull(now, peer_body)

Outputs are :class:`SendDatagram` and :class:`StartPushPull` actions and
``Member*`` events. Because time is only ever a parameter, the same core runs
under trio in the agent and under the deterministic simulator (``gossip.sim``)
with thousands of instances in one process.

Protocol, in short: each probe period one member (round-robin over a list
reshuffled every round) gets a Ping; if no Ack comes within the probe timeout,
``indirect_checks`` helpers ping it for us and relay its Ack or send a Nack.
With no Ack by the end of the period it becomes *suspect*; a suspect that
does not refute (by announcing a higher incarnation) before its Lifeguard
suspicion timer fires is declared *dead*. Membership changes ride on every
datagram (piggyback) and on a gossip fan-out every gossip interval, each sent a
limited number of times; a periodic push-pull exchanges whole tables.
Lifeguard's awareness stretches our own timeouts when we are the unhealthy one;
the buddy system tells a suspect directly.

Beyond memberlist (each measured with ``gossip.sim``, mostly for partitions):

* a third party's "dead" verdict about a member we do not already suspect, or
  from a judge we believe dead, counts only as an accusation; we need to have
  suspected the member for half the minimum suspicion timeout ourselves;
* a member we suspect or buried that talks to us is told so, and answers to a
  stale accusation carry the refutation we know of: both make a healed
  partition's refutations cross at the first datagrams;
* our own refutation rides in front of every datagram; among equally sent
  broadcasts, alive news goes before accusations;
* members we believe dead are pinged now and then with that news, revived
  members are probed next, and revivals trigger extra push-pulls;
* a joiner does a second push-pull once the rumours in flight at its join have
  run their course; a member that talks to us but is unknown to us is asked to
  introduce itself (``Ping.introduce``).

Modules: ``outputs`` (actions, events, counters), ``table`` (internal records),
``state`` (shared state and datagram plumbing), ``verdicts`` (suspicion, death,
refutation), ``probe`` (the probe cycle), ``antientropy`` (push-pull), ``node``
(the :class:`Swim` facade).
"""

from gossip.swim.node import *
from gossip.swim.outputs import *
from gossip.swim.probe import *
