"""Network faults inside lab namespaces, with nftables: partitions and packet loss.

Each fault lives in its own nft table (``inet pmchaos``) inside a host's namespace, so
``heal`` is one ``nft delete table`` per host and leaves nothing behind.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from chaos.netns import Host, run

TABLE = "pmchaos"


def _nft(host: Host, script: str) -> None:
    proc = subprocess.run(
        host.command("nft", "-f", "-"), input=script, text=True, capture_output=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"nft on {host.name} failed: {proc.stderr.strip()}")


def block(host: Host, peers: Sequence[Host], *, oneway: bool = False) -> None:
    """Drop traffic between ``host`` and ``peers`` (incoming only with ``oneway``)."""
    addresses = ", ".join(p.address for p in peers)
    rules = [f"add rule inet {TABLE} input ip saddr {{ {addresses} }} drop"]
    if not oneway:
        rules.append(f"add rule inet {TABLE} output ip daddr {{ {addresses} }} drop")
    _nft(
        host,
        "\n".join(
            [
                f"add table inet {TABLE}",
                f"add chain inet {TABLE} input {{ type filter hook input priority 0; }}",
                f"add chain inet {TABLE} output {{ type filter hook output priority 0; }}",
                *rules,
            ]
        )
        + "\n",
    )


def partition(groups: Sequence[Sequence[Host]]) -> None:
    """Symmetric partition: hosts talk only within their own group."""
    for i, group in enumerate(groups):
        others = [h for j, g in enumerate(groups) if j != i for h in g]
        for host in group:
            if others:
                block(host, others)


def loss(host: Host, percent: float) -> None:
    """Drop ``percent`` of incoming packets at random (nft numgen)."""
    if not 0 < percent < 100:
        raise ValueError("loss percentage must be between 0 and 100")
    threshold = int(percent * 100)
    _nft(
        host,
        f"add table inet {TABLE}\n"
        f"add chain inet {TABLE} input {{ type filter hook input priority 0; }}\n"
        f'add rule inet {TABLE} input iifname != "lo" numgen random mod 10000 < {threshold} drop\n',
    )


def heal(hosts: Sequence[Host]) -> None:
    """Remove every fault from ``hosts`` (idempotent)."""
    for host in hosts:
        run(*host.command("nft", "delete", "table", "inet", TABLE), check=False)
