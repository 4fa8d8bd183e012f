"""``peermesh`` command line: the agent, and tools that talk to a running agent.

One module per command group; each lists its commands in ``COMMANDS`` and this root
group adds them all the same way.
"""

from __future__ import annotations

import click

from peermesh import __version__
from peermesh.cli import (
    agent,
    ca,
    capture,
    devca,
    k8s,
    keygen,
    observability,
    policy,
    status,
    tokens,
)

GROUPS = (agent, status, policy, observability, keygen, tokens, ca, devca, capture, k8s)


@click.group()
@click.version_option(__version__, prog_name="peermesh")
def main() -> None:
    """peermesh: a service mesh with no central control plane."""


for _group in GROUPS:
    for _command in _group.COMMANDS:
        main.add_command(_command)

__all__ = ["main"]
