"""``peermesh capture``: steer an unmodified app's traffic through the agent (nftables).

Run as root in the app's network namespace, before the agent (a systemd ``ExecStartPre``,
or an init container). Only the table ``inet peermesh_capture`` is touched.
"""

from __future__ import annotations

import pwd
from collections.abc import Iterator
from contextlib import contextmanager

import click

from peermesh.capture import nft
from peermesh.capture.rules import DEFAULT_MARK, CaptureError, CaptureSpec, InboundMode


@contextmanager
def _refusal_as_click_error() -> Iterator[None]:
    """What nft refuses ends the command with its message, not a traceback."""
    try:
        yield
    except CaptureError as exc:
        raise click.ClickException(str(exc)) from None


def _uid(text: str | None) -> int | None:
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    try:
        return pwd.getpwnam(text).pw_uid
    except KeyError:
        raise click.BadParameter(f"no such user {text!r}", param_hint="--agent-user") from None


@click.group()
def capture() -> None:
    """Transparent capture of the app's traffic (nftables, this network namespace)."""


@capture.command("install")
@click.option("--agent-user", help="User (name or uid) the agent runs as; its traffic is exempt.")
@click.option("--mark", type=int, default=DEFAULT_MARK, show_default=True,
              help="Socket mark that exempts a socket (0: none).")  # fmt: skip
@click.option("--outbound-port", type=int, default=15001, show_default=True)
@click.option("--dns-port", type=int, default=15053, show_default=True,
              help="Agent's mesh DNS port; 0 leaves the app's DNS alone.")  # fmt: skip
@click.option("--admin-port", type=int, default=15000, show_default=True)
@click.option("--app-port", "app_ports", type=int, multiple=True,
              help="The app's port (repeatable).")  # fmt: skip
@click.option("--inbound", type=click.Choice([m.value for m in InboundMode]), default="off",
              show_default=True,
              help="strict: refuse non-mesh connections to the app's ports; permissive: send"
              " them to the plaintext listener.")  # fmt: skip
@click.option("--plaintext-port", type=int, help="The agent's --plaintext port (permissive).")
@click.option("--mesh-cidr", "mesh_cidrs", multiple=True,
              help="Members' addresses: TCP to them is captured too (repeatable).")  # fmt: skip
@click.option("--exclude-cidr", "exclude_cidrs", multiple=True, help="Never capture (repeatable).")
@click.option("--exclude-port", "exclude_ports", type=int, multiple=True,
              help="Never capture this destination port (repeatable).")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Print the nft script instead of applying it.")
def capture_install(
    agent_user: str | None,
    mark: int,
    outbound_port: int,
    dns_port: int,
    admin_port: int,
    app_ports: tuple[int, ...],
    inbound: str,
    plaintext_port: int | None,
    mesh_cidrs: tuple[str, ...],
    exclude_cidrs: tuple[str, ...],
    exclude_ports: tuple[int, ...],
    dry_run: bool,
) -> None:
    """Install (or replace: it is idempotent) the capture table."""
    spec = CaptureSpec(
        outbound_port=outbound_port,
        dns_port=dns_port or None,
        admin_port=admin_port,
        agent_uid=_uid(agent_user),
        mark=mark,
        app_ports=app_ports,
        inbound=InboundMode(inbound),
        plaintext_port=plaintext_port,
        mesh_cidrs=mesh_cidrs,
        exclude_cidrs=exclude_cidrs,
        exclude_ports=exclude_ports,
    )
    with _refusal_as_click_error():
        if dry_run:
            from peermesh.capture.rules import table_script

            click.echo(table_script(spec), nl=False)
            return
        nft.install(spec)
    click.echo("capture installed (table inet peermesh_capture)")


@capture.command("remove")
def capture_remove() -> None:
    """Delete the capture table; the namespace's other rules stay as they were."""
    with _refusal_as_click_error():
        nft.remove()
    click.echo("capture removed")


@capture.command("status")
def capture_status() -> None:
    """Print the capture table, or say it is not installed (exit status 3)."""
    with _refusal_as_click_error():
        table = nft.status()
    if table is None:
        click.echo("capture: not installed")
        raise SystemExit(3)
    click.echo(table, nl=False)


COMMANDS: tuple[click.Command, ...] = (capture,)
