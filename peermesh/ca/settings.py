"""What the threshold CA is configured with: the agent's flags it needs, and nothing else."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CA_DIR = "ca"
GOSSIP_KEY_FILE = "gossip.key"


def joined_gossip_key(data_dir: Path) -> Path:
    """Where an agent keeps the gossip keyring the mesh gave it with its first certificate."""
    return Path(data_dir) / CA_DIR / GOSSIP_KEY_FILE


@dataclass(frozen=True)
class CaSettings:
    """The CA's view of the agent's configuration (built once by the composition root)."""

    name: str
    service: str
    trust_domain: str
    data_dir: Path
    #: Seconds this agent asks for, and the most its signers sign (MeshConfig may lower it).
    cert_lifetime: float
    max_cert_lifetime: float
    bootstrap_token_file: Path | None = None
    bootstrap_expect: int | None = None
    threshold: int | None = None
    bootstrap_listen: tuple[str, int] | None = None
    advertise: str | None = None
    #: Members to join through (inbound addresses); their bootstrap port is one above.
    join: tuple[tuple[str, int], ...] = ()
    join_token: str | None = None
