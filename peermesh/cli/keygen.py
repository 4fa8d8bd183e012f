"""``peermesh keygen``: the mesh's shared secrets (gossip key, bootstrap token)."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def keygen() -> None:
    """Make mesh secrets."""


@keygen.command("gossip")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Key file.")
@click.option("--force", is_flag=True, help="Replace an existing key file.")
def keygen_gossip(out: str, force: bool) -> None:
    """A new AES-256 gossip key file (mode 0600); copy it to every agent."""
    from gossip.codec import generate_gossip_key, save_keyring

    if Path(out).exists() and not force:
        raise click.ClickException(
            f"{out} exists; pass --force to replace it (agents with the old key stop hearing"
            " this one), or add a key for rotation by editing the file (primary key first)"
        )
    save_keyring(out, [generate_gossip_key()])
    click.echo(f"wrote gossip key to {out} (mode 0600); give it to every agent")


@keygen.command("bootstrap-token")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Token file.")
def keygen_bootstrap_token(out: str) -> None:
    """A new bootstrap token file (mode 0600) for the initial agents' --bootstrap-token-file."""
    from peermesh.ca.channel import write_bootstrap_token

    if Path(out).exists():
        raise click.ClickException(f"{out} exists; a bootstrap token is made once per mesh")
    write_bootstrap_token(Path(out))
    click.echo(f"wrote bootstrap token to {out} (mode 0600); give it to every initial agent")


COMMANDS: tuple[click.Command, ...] = (keygen,)
