"""Distributed key generation, proactive refresh and share repair for FROST(Ed25519), sans-IO.

* **DKG** — Pedersen DKG with proofs of knowledge (Komlo & Goldberg 2020, FROST
  KeyGen): every participant deals a random polynomial, broadcasts Feldman
  commitments and a Schnorr proof of knowledge of its constant term (bound to the
  session id and its identifier), then sends each other participant its share,
  encrypted.  The group secret is the sum of the constant terms and never exists.
* **Refresh** — the same two rounds, but every polynomial has constant term zero:
  shares change, the group key does not, and old shares no longer combine with new.
* **Repair / enrolment** — the repairable threshold scheme of Laing & Stinson: t
  helpers give participant ``i`` its share f(i) without learning it.  Helper j splits
  ``lambda_j(i) * s_j`` into random summands, one per helper; each helper adds what it
  received and forwards the sum to ``i``.  Every summand is committed (``delta * B``),
  so a wrong value is caught and attributed.

Authentication and evidence.  Every message is signed with its sender's long-term
Ed25519 identity key (``Roster.identity_keys``), so a message is evidence anyone can
check.  Round two echoes the round-one messages its sender saw: two different signed
versions of one message prove equivocation, which keeps every honest participant on
the same group key or aborts the run naming the culprit.

Encryption (documented choice).  Each recipient publishes in its first message a
fresh X25519 key *per sender* (per session).  A sender encrypts with an ephemeral
X25519 key to that recipient key (ephemeral-static ECDH), derives a one-time key
with HKDF-SHA256 and seals with ChaCha20-Poly1305 (zero nonce, as the key is used
once), binding protocol, purpose, session, sender and recipient in the HKDF info and
the AAD.  A recipient that gets a bad share complains by revealing only the X25519
secret it published for that one sender: anyone can then decrypt that single
ciphertext and check it against the sender's commitments.  The revealed key opens
nothing but a value the accused itself chose, so complaining leaks nothing.

Every machine has ``start() -> list[message]`` and ``receive(message) -> list[message]``;
all messages are broadcasts (deliver them to every member of the roster), frozen
dataclasses with ``to_wire()`` / :func:`message_from_wire` for msgpack.  A machine that
sees misbehaviour returns a :class:`Complaint`, aborts, and :meth:`result` raises
:class:`DkgAborted` naming the culprit; :func:`verify_complaint` lets anyone judge a
complaint from its evidence alone.  Any authentic complaint aborts the run on every
machine that receives it: the verdict names the accused, or the complainer if the
evidence does not hold up, and the protocol layer reruns without the culprit.  Silent
participants are not detected here (a timeout in the protocol layer is).

Modules: :mod:`~certs.dkg.messages` (the signed broadcasts and their wire forms, over
:mod:`~certs.dkg.codec`), :mod:`~certs.dkg.roster` (who takes part),
:mod:`~certs.dkg.primitives` (proofs of knowledge, sealing), :mod:`~certs.dkg.rules` (the
pure checks), :mod:`~certs.dkg.complaints` (judging evidence), and the state machines
:mod:`~certs.dkg.participant` and :mod:`~certs.dkg.repair` over :mod:`~certs.dkg.machine`.
Everything public is importable from ``certs.dkg`` itself.
"""

from __future__ import annotations

from certs.dkg.complaints import *
from certs.dkg.errors import *
from certs.dkg.machine import *
from certs.dkg.messages import *
from certs.dkg.participant import *
from certs.dkg.repair import *
from certs.dkg.roster import *
