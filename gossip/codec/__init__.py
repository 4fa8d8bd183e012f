"""Bytes on the wire: msgpack messages in authenticated, encrypted, replay-checked datagrams.

Datagram layout (every field is covered by the AES-GCM tag)::

    sealed:    0x01 | key id (4) | nonce (12) | AES-256-GCM(body) + tag (16)
    insecure:  0x02 | body
    body:      msgpack [sender, epoch, seq, [message, ...]]

The version byte and key id are the associated data, so a datagram cannot be
replayed under another version or re-labelled with another key. ``epoch``
grows across restarts of the sender and ``seq`` grows with every datagram, so a
receiver keeps a sliding window per sender and drops anything it has already
seen. Decoding never raises: a bad datagram is dropped and counted under a
:class:`DropReason`, because a packet from the network must never kill the task
serving everyone else.

Push-pull state (the periodic full-table exchange) is encoded here too but not
encrypted: the shell carries it over mutually authenticated TLS.

Modules: ``drops`` (why input was refused), ``keyring`` (keys and the key file),
``meta`` (member metadata), ``wire`` (messages), ``datagram`` (framing, sealing,
anti-replay: :class:`Codec`), ``state`` (push-pull bodies).
"""

from gossip.codec.datagram import *
from gossip.codec.drops import *
from gossip.codec.keyring import *
from gossip.codec.meta import *
from gossip.codec.state import *
from gossip.codec.wire import *
from gossip.errors import KeyfileError as KeyfileError
