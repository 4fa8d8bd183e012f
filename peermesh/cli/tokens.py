"""``peermesh token``: join tokens that let a new agent get its first certificate."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from peermesh.cli.admin import admin_ok, agent_option, output_option, printed_as_json
from peermesh.core.units import parse_duration


@click.group()
def token() -> None:
    """Join tokens for new agents."""


@token.command("create")
@agent_option
@click.option("--service", help="The only service the new agent may ask a certificate for.")
@click.option("--ttl", default="1h", show_default=True, help="Validity, e.g. 30m, 1h, 2d (≤ 7d).")
@click.option(
    "--uses",
    default=1,
    show_default=True,
    type=click.IntRange(min=0),
    help="How many agents may use it; 0: any number until it expires.",
)
def token_create(agent_url: str, service: str | None, ttl: str, uses: int) -> None:
    """Print a join token (pass it to the new agent's --join-token).

    The token goes into the replicated policy as a JoinToken object (only its SHA-256)
    and straight to the signers, so it works as soon as it is printed.
    """
    try:
        seconds = parse_duration(ttl)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--ttl") from None
    data = admin_ok(
        agent_url,
        "/v1/ca/token",
        {"service": service, "ttl": seconds, "uses": uses or None},
        timeout=60,
    )
    click.echo(data["token"])


@token.command("list")
@agent_option
@output_option
def token_list(agent_url: str, output: str) -> None:
    """Join tokens in the policy (hashes only), and their uses counted on this agent."""
    data = admin_ok(agent_url, "/v1/ca/tokens")
    if printed_as_json(data, output):
        return
    table = Table(title=f"join tokens seen by {data['node']}")
    for column in ("id", "service", "expires", "max uses", "used here", "from"):
        table.add_column(column)
    for t in data["tokens"]:
        table.add_row(
            t["id"],
            t["service"] or "(any)",
            t["expiresAt"] or "never",
            str(t["maxUses"] or "unlimited"),
            "-" if t["usedHere"] is None else str(t["usedHere"]),
            t["source"],
        )
    Console().print(table)


@token.command("delete")
@agent_option
@click.argument("token_id")
def token_delete(agent_url: str, token_id: str) -> None:
    """Revoke a join token that is not used up yet (deletes its JoinToken object)."""
    admin_ok(agent_url, f"/v1/policy/JoinToken/{token_id}", method="DELETE")
    click.echo(f"deleted JoinToken/{token_id}; signers refuse it once the deletion reaches them")


COMMANDS: tuple[click.Command, ...] = (token,)
