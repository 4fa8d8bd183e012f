"""Why a datagram or push-pull body was refused, with what an operator can do about it."""

from __future__ import annotations

import enum


class DropReason(enum.Enum):
    """Why an incoming datagram (or push-pull body) was refused."""

    OVERSIZED = "oversized"
    TRUNCATED = "truncated"
    UNKNOWN_VERSION = "unknown_version"
    PLAINTEXT_REFUSED = "plaintext_refused"
    ENCRYPTED_REFUSED = "encrypted_refused"
    AUTH_FAILED = "auth_failed"
    RETIRED_KEY = "retired_key"
    MALFORMED = "malformed"
    REPLAYED = "replayed"
    REFLECTED = "reflected"

    @property
    def explanation(self) -> str:
        """What happened, why, and what an operator can do about it."""
        return _EXPLANATIONS[self]


_EXPLANATIONS = {
    DropReason.OVERSIZED: (
        "datagram larger than the gossip size limit; a peer with a bigger "
        "udp_buffer_size setting? use the same profile on every node"
    ),
    DropReason.TRUNCATED: "datagram shorter than its header; damaged in transit or not gossip",
    DropReason.UNKNOWN_VERSION: (
        "unknown wire version byte; the sender runs an incompatible peermesh or is not gossip"
    ),
    DropReason.PLAINTEXT_REFUSED: (
        "unencrypted datagram while this node requires the mesh gossip key; "
        "the sender runs with --insecure-gossip: give it the key file"
    ),
    DropReason.ENCRYPTED_REFUSED: (
        "encrypted datagram while this node runs with --insecure-gossip; "
        "give this node the mesh gossip key file"
    ),
    DropReason.AUTH_FAILED: (
        "no installed key authenticates the datagram; the sender uses a key this "
        "node does not have (install it with the keyring) or the packet was forged"
    ),
    DropReason.RETIRED_KEY: (
        "datagram sealed with a key removed from this keyring; the sender has not "
        "rotated yet: give it the new primary key"
    ),
    DropReason.MALFORMED: "authenticated but not a valid gossip message; a bug or a version skew",
    DropReason.REPLAYED: "datagram already seen from that sender (or too old); a replay",
    DropReason.REFLECTED: "datagram claims to come from this node itself; a reflection",
}

__all__ = [
    "DropReason",
]
