"""``peermesh`` command line: the agent, and tools that talk to a running agent.

One module per command group; each lists its commands in ``COMMANDS`` and this root
group adds them all the same way.

``peermesh agent`` is the long-lived process, so it is the one command registered up
front: the other groups (and what they print with: rich tables, YAML) are imported the
first time any other command, ``--help`` or a completion asks for them, which keeps the
agent's resident memory free of code it never runs.
"""

from __future__ import annotations

import importlib

import click

from peermesh import __version__
from peermesh.cli import agent

GROUPS = (
    "agent",
    "status",
    "policy",
    "observability",
    "keygen",
    "tokens",
    "ca",
    "devca",
    "capture",
    "k8s",
)


class _RootGroup(click.Group):
    """A group that imports every command module the first time a command is looked up
    that is not registered yet (or the list is asked for)."""

    _loaded = False

    def _load_all(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for name in GROUPS:
            module = importlib.import_module(f"peermesh.cli.{name}")
            for command in module.COMMANDS:
                if command.name not in self.commands:
                    self.add_command(command)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            self._load_all()
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_all()
        return super().list_commands(ctx)


@click.group(cls=_RootGroup)
@click.version_option(__version__, prog_name="peermesh")
def main() -> None:
    """peermesh: a service mesh with no central control plane."""


for _command in agent.COMMANDS:
    main.add_command(_command)

__all__ = ["main"]
