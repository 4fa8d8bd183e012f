"""The gossip library's one exception root: every error it raises on purpose carries a code.

``gossip`` imports nothing from ``peermesh``; the shells translate these where they
cross into the agent. Each class also keeps the builtin it has always been
(``ValueError``, ``RuntimeError``), so callers that catch those keep working.
Nothing decoded from the network raises: bad input is dropped and counted
(:class:`gossip.codec.DropReason`).
"""

from __future__ import annotations

from typing import ClassVar


class GossipError(Exception):
    """Root of the gossip library's errors; ``code`` is a stable token for logs and APIs."""

    default_code: ClassVar[str] = "gossip-error"

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = self.default_code if code is None else code


class GossipConfigError(GossipError, ValueError):
    """A setting, key or constructor argument the library cannot work with."""

    default_code = "gossip-config"


class KeyfileError(GossipConfigError):
    """The gossip key file cannot be used; the message says which line and what to do."""

    default_code = "gossip-keyfile"


class MetadataError(GossipError, ValueError):
    """Bytes that are not valid member metadata."""

    default_code = "gossip-metadata"


class LeftMeshError(GossipError, RuntimeError):
    """The node already left the mesh; it can no longer change what it advertises."""

    default_code = "gossip-left"
