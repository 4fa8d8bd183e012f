"""``peermesh inject`` (like ``istioctl kube-inject``) and ``peermesh k8s webhook``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import yaml

from peermesh.config import DEFAULT_TRUST_DOMAIN
from peermesh.k8s.inject import InjectConfig, InjectionError, inject_manifest

# (option, default, help) of each InjectConfig setting with a shown default.
_INJECT_SETTINGS: tuple[tuple[str, str, str], ...] = (
    ("--image", InjectConfig.image, "peermesh image."),
    (
        "--seeds",
        InjectConfig.seeds,
        "Headless Service of the committee (DNS name agents join through).",
    ),
    (
        "--join-token-secret",
        InjectConfig.join_token_secret,
        "Secret (key 'token') holding the join token.",
    ),
)


def _inject_options(func: Any) -> Any:
    for name, default, help_text in _INJECT_SETTINGS:
        func = click.option(name, default=default, show_default=True, help=help_text)(func)
    func = click.option(
        "--capture/--no-capture", default=True, help="Add the traffic-capture init container."
    )(func)
    func = click.option("--trust-domain", default=DEFAULT_TRUST_DOMAIN, show_default=True)(func)
    return func


def _config(
    image: str, seeds: str, join_token_secret: str, capture: bool, trust_domain: str
) -> InjectConfig:
    return InjectConfig(
        image=image,
        seeds=seeds,
        join_token_secret=join_token_secret,
        capture=capture,
        trust_domain=trust_domain,
    )


@click.command("inject")
@click.option("-f", "--filename", "path", required=True, help="Kubernetes YAML ('-' for stdin).")
@_inject_options
def inject_cmd(
    path: str, image: str, seeds: str, join_token_secret: str, capture: bool, trust_domain: str
) -> None:
    """Print FILE with the peermesh agent added to every pod template (idempotent)."""
    config = _config(image, seeds, join_token_secret, capture, trust_domain)
    text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise click.ClickException(f"{path}: malformed YAML: {exc}") from None
    out = []
    for doc in docs:
        if not isinstance(doc, dict):
            raise click.ClickException(f"{path}: every document must be a mapping")
        try:
            out.append(inject_manifest(doc, config))
        except InjectionError as exc:
            name = (doc.get("metadata") or {}).get("name", "?")
            raise click.ClickException(f"{doc.get('kind')}/{name}: {exc}") from None
    click.echo(yaml.safe_dump_all(out, sort_keys=False), nl=False)


@click.group("k8s")
def k8s() -> None:
    """Run peermesh's Kubernetes parts."""


@k8s.command("webhook")
@click.option("--listen", default="0.0.0.0:8443", show_default=True, help="HOST:PORT (TLS).")
@click.option("--tls-cert", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--tls-key", required=True, type=click.Path(exists=True, dir_okay=False))
@_inject_options
def webhook_cmd(
    listen: str,
    tls_cert: str,
    tls_key: str,
    image: str,
    seeds: str,
    join_token_secret: str,
    capture: bool,
    trust_domain: str,
) -> None:
    """Serve the mutating admission webhook (AdmissionReview v1 over TLS)."""
    import trio

    from peermesh.k8s.webhook import Webhook, server_context

    host, _, port = listen.rpartition(":")
    if not port.isdigit():
        raise click.UsageError("--listen is HOST:PORT")
    config = _config(image, seeds, join_token_secret, capture, trust_domain)
    hook = Webhook(config, server_context(Path(tls_cert), Path(tls_key)))
    click.echo(f"peermesh webhook on https://{listen}", err=True)
    trio.run(hook.serve, host or "0.0.0.0", int(port))


COMMANDS: tuple[click.Command, ...] = (inject_cmd, k8s)
