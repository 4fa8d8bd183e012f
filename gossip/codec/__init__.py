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

from gossip.codec.datagram import (
    MAX_DATAGRAM,
    NONCE_SIZE,
    PLAIN_OVERHEAD,
    SEALED_OVERHEAD,
    TAG_SIZE,
    VERSION_PLAIN,
    VERSION_SEALED,
    Codec,
)
from gossip.codec.drops import DropReason
from gossip.codec.keyring import (
    KEY_ID_SIZE,
    KEY_SIZE,
    Keyring,
    format_keyfile,
    generate_gossip_key,
    key_id,
    load_keyring,
    parse_keyfile,
    save_keyring,
)
from gossip.codec.meta import MAX_NAME, decode_meta, encode_meta
from gossip.codec.state import (
    MAX_STATE_BYTES,
    STATE_VERSION,
    decode_state,
    encode_state,
    encode_state_entry,
    join_state,
    open_state,
)
from gossip.codec.wire import (
    TAG_ACK,
    TAG_ALIVE,
    TAG_DEAD,
    TAG_INDIRECT_PING,
    TAG_NACK,
    TAG_PING,
    TAG_SUSPECT,
    encode_message,
    pack_ack,
    pack_alive,
    pack_dead,
    pack_indirect_ping,
    pack_nack,
    pack_ping,
    pack_suspect,
    wire_to_message,
)
from gossip.errors import KeyfileError

__all__ = [
    "KEY_ID_SIZE",
    "KEY_SIZE",
    "MAX_DATAGRAM",
    "MAX_NAME",
    "MAX_STATE_BYTES",
    "NONCE_SIZE",
    "PLAIN_OVERHEAD",
    "SEALED_OVERHEAD",
    "STATE_VERSION",
    "TAG_ACK",
    "TAG_ALIVE",
    "TAG_DEAD",
    "TAG_INDIRECT_PING",
    "TAG_NACK",
    "TAG_PING",
    "TAG_SIZE",
    "TAG_SUSPECT",
    "VERSION_PLAIN",
    "VERSION_SEALED",
    "Codec",
    "DropReason",
    "KeyfileError",
    "Keyring",
    "decode_meta",
    "decode_state",
    "encode_message",
    "encode_meta",
    "encode_state",
    "encode_state_entry",
    "format_keyfile",
    "generate_gossip_key",
    "join_state",
    "key_id",
    "load_keyring",
    "open_state",
    "pack_ack",
    "pack_alive",
    "pack_dead",
    "pack_indirect_ping",
    "pack_nack",
    "pack_ping",
    "pack_suspect",
    "parse_keyfile",
    "save_keyring",
    "wire_to_message",
]
