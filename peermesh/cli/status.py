"""``peermesh status``, ``ping`` and ``members``: this agent and the mesh it sees."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from rich.table import Table

from peermesh.cli.admin import admin_ok, agent_option, table_view

console = Console()


def field_table(title: str) -> Table:
    """A two-column table of an agent's named fields and their values."""
    table = Table(title=title)
    table.add_column("field")
    table.add_column("value")
    return table


@click.command()
@table_view("/v1/status")
def status(data: dict[str, Any]) -> None:
    """Show the local agent's status."""
    table = field_table(f"agent {data['node']} ({data['service']})")
    for key in ("identity", "ready", "draining", "certificate_not_after", "trust_domain"):
        table.add_row(key, str(data.get(key)))
    for name, address in data["listeners"].items():
        table.add_row(f"listener {name}", address)
    for peer in data["peers"]:
        table.add_row(
            f"peer {peer['address']}", f"{peer['connections']} conn, {peer['streams']} streams"
        )
    console.print(table)


@click.command()
@agent_option
@click.argument("address")
def ping(agent_url: str, address: str) -> None:
    """Ping a peer agent's control API (HOST:PORT of its inbound listener) through mTLS."""
    data = admin_ok(agent_url, "/v1/ping", {"address": address})
    click.echo(f"{address}: node {data['node']} ({data['service']}) in {data['rtt_ms']} ms")


@click.command()
@table_view("/v1/members")
def members(data: dict[str, Any]) -> None:
    """List the mesh members this agent sees (gossip membership)."""
    if not data.get("running"):
        raise click.ClickException(f"gossip is not running: {data.get('reason', 'unknown')}")
    table = Table(title=f"members seen by {data['node']} (digest {data['digest']})")
    for column in ("name", "state", "address", "inbound", "services", "incarnation"):
        table.add_column(column)
    colours = {"alive": "green", "suspect": "yellow", "dead": "red", "left": "dim"}
    for member in data["members"]:
        services = ", ".join(
            name + ("{" + ",".join(f"{k}={v}" for k, v in labels.items()) + "}" if labels else "")
            for name, labels in member["services"].items()
        )
        state = member["state"]
        table.add_row(
            member["name"],
            f"[{colours.get(state, 'white')}]{state}[/]",
            member["address"],
            str(member["inbound_port"]),
            services,
            str(member["incarnation"]),
        )
    console.print(table)


COMMANDS: tuple[click.Command, ...] = (status, ping, members)
