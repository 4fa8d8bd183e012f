"""``peermesh ca``: the threshold CA's status and committee changes."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console

from peermesh.cli.admin import admin_ok, agent_option, table_view
from peermesh.cli.status import field_table

console = Console()


@click.group("ca")
def ca_group() -> None:
    """The threshold CA: status and committee changes."""


@ca_group.command("status")
@table_view("/v1/ca/status")
def ca_status(data: dict[str, Any]) -> None:
    """Committee, threshold, reachable signers, root and this node's certificate."""
    table = field_table(f"threshold CA seen by {data['node']}")
    for key in (
        "phase", "signer", "epoch", "threshold", "reachable_signers", "root_fingerprint",
        "root_not_after", "certificate_not_after", "renewals", "last_error",
    ):  # fmt: skip
        if key in data:
            table.add_row(key, str(data[key]))
    for member in data.get("committee", []):
        mark = "[green]reachable[/]" if member["reachable"] else "[red]unreachable[/]"
        table.add_row(f"signer {member['id']} {member['node']}", f"{member['address']} {mark}")
    console.print(table)


@ca_group.command("enroll")
@agent_option
@click.argument("node")
def ca_enroll(agent_url: str, node: str) -> None:
    """Make mesh member NODE a signer (t signers repair a share for it)."""
    data = admin_ok(agent_url, "/v1/ca/enroll", {"node": node})
    click.echo(f"{data['node']} is signer {data['identifier']} (committee epoch {data['epoch']})")


@ca_group.command("renew")
@agent_option
def ca_renew(agent_url: str) -> None:
    """Renew this agent's certificate now (a fresh key, signed by t signers)."""
    data = admin_ok(agent_url, "/v1/ca/renew", {}, timeout=60)
    click.echo(f"renewed {data['identity']} until {data['not_after']} (signers"
               f" {', '.join(str(s) for s in data['signers'])})")  # fmt: skip


@ca_group.command("refresh")
@agent_option
def ca_refresh(agent_url: str) -> None:
    """Re-share the root key among reachable signers; old shares stop working."""
    data = admin_ok(agent_url, "/v1/ca/refresh", {})
    removed = ", ".join(data["removed"]) or "none"
    click.echo(f"refreshed: epoch {data['epoch']}, signers {', '.join(data['members'])};"
               f" removed {removed}")  # fmt: skip


COMMANDS: tuple[click.Command, ...] = (ca_group,)
