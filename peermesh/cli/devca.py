"""``peermesh dev-ca``: create a development root and issue agent certificates from it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from certs.devca import DevCAError
from certs.spiffe import spiffe_id_from_certificate
from peermesh.ca.devca import CA_CERT_FILE, CA_KEY_FILE, CA_META_FILE, DevCA, init_dev_ca
from peermesh.net.identity_files import BUNDLE_FILE, CERT_FILE, KEY_FILE

F = TypeVar("F", bound=Callable[..., Any])


def _required_dir(*names: str, help: str) -> Callable[[F], F]:
    """A required directory option, handed to the command as a ``Path``."""
    return click.option(
        *names, required=True, type=click.Path(file_okay=False, path_type=Path), help=help
    )


@click.group("dev-ca")
def dev_ca() -> None:
    """Single-key development CA (tests and experiments only: the root key is one file)."""


@dev_ca.command("init")
@_required_dir("--dir", "ca_dir", help="Directory to create the CA in (ca.pem, ca.key, ca.json).")
@click.option("--trust-domain", required=True, help="SPIFFE trust domain, e.g. mesh.local.")
@click.option("--force", is_flag=True, help="Replace an existing CA (old certs become untrusted).")
def init_cmd(ca_dir: Path, trust_domain: str, force: bool) -> None:
    """Create a new Ed25519 development root."""
    try:
        ca = init_dev_ca(ca_dir, trust_domain, force=force)
    except DevCAError as exc:
        raise click.ClickException(str(exc)) from None
    cert = ca.certificate
    click.echo(f"dev CA for trust domain {trust_domain} ({ca.spiffe_id})")
    click.echo(f"  wrote {ca_dir / CA_CERT_FILE}  (root certificate, share it)")
    click.echo(f"  wrote {ca_dir / CA_KEY_FILE}  (root key, mode 0600, keep it private)")
    click.echo(f"  wrote {ca_dir / CA_META_FILE}")
    click.echo(f"  valid until {cert.not_valid_after_utc.isoformat()}")


@dev_ca.command("issue")
@_required_dir("--ca-dir", help="Directory made by 'dev-ca init'.")
@click.option("--node", required=True, help="Node name (DNS SAN), e.g. node-a.")
@click.option("--service", required=True, help="Service name: spiffe://<td>/svc/<service>.")
@_required_dir("--data-dir", help="Agent data dir to write cert.pem, key.pem, bundle.pem into.")
@click.option(
    "--hours",
    type=click.FloatRange(min=0, min_open=True),
    default=24.0,
    show_default=True,
    help="Certificate lifetime in hours.",
)
def issue_cmd(ca_dir: Path, node: str, service: str, data_dir: Path, hours: float) -> None:
    """Issue a workload certificate (X.509-SVID) into an agent data dir."""
    try:
        ca = DevCA.load(ca_dir)
        cert = ca.issue(node, service, data_dir, lifetime=dt.timedelta(hours=hours))
    except DevCAError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"issued {spiffe_id_from_certificate(cert)} for node {node}")
    click.echo(f"  wrote {data_dir / CERT_FILE}")
    click.echo(f"  wrote {data_dir / KEY_FILE}  (mode 0600)")
    click.echo(f"  wrote {data_dir / BUNDLE_FILE}  (trust bundle)")
    click.echo(f"  valid until {cert.not_valid_after_utc.isoformat()}")


COMMANDS: tuple[click.Command, ...] = (dev_ca,)
