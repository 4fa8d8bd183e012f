"""``peermesh`` command line: the agent, and tools that talk to a running agent."""

from __future__ import annotations

import json
import logging
import signal
import sys
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click
import trio
from rich.console import Console
from rich.table import Table

from certs.cli import dev_ca
from peermesh import __version__
from peermesh.config import (
    DEFAULT_ADMIN,
    DEFAULT_INBOUND,
    DEFAULT_OUTBOUND,
    AgentConfig,
    ConfigError,
)

console = Console()


def _load_toml(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--config FILE``: TOML keys (top level or ``[agent]``) become option defaults."""
    if not value:
        return value
    try:
        data = tomllib.loads(Path(value).read_text())
    except OSError as exc:
        raise click.BadParameter(f"cannot read {value}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise click.BadParameter(f"{value} is not valid TOML: {exc}") from None
    table = data.get("agent", data)
    if not isinstance(table, dict):
        raise click.BadParameter(f"{value}: [agent] must be a table")
    known = {p.name for p in ctx.command.params if p.name}
    defaults: dict[str, Any] = {}
    for key, item in table.items():
        name = key.replace("-", "_")
        if name == "peers":
            name = "peer"
        if name not in known or name == "config":
            raise click.BadParameter(f"{value}: unknown setting {key!r}")
        defaults[name] = item
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


@click.group()
@click.version_option(__version__, prog_name="peermesh")
def main() -> None:
    """peermesh: a service mesh with no central control plane."""


main.add_command(dev_ca)


@main.command()
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    callback=_load_toml,
    is_eager=True,
    expose_value=False,
    envvar="PEERMESH_CONFIG",
    help="TOML file with any of these options (flags and PEERMESH_* env win).",
)
@click.option("--name", envvar="PEERMESH_NAME", required=True, help="This node's name.")
@click.option(
    "--service",
    envvar="PEERMESH_SERVICE",
    required=True,
    help="The local service: NAME=PORT[,proto=h1|h2c][,host=ADDR].",
)
@click.option("--data-dir", envvar="PEERMESH_DATA_DIR", help="Key, certificate, bundle, state.")
@click.option("--trust-domain", envvar="PEERMESH_TRUST_DOMAIN", help="SPIFFE trust domain.")
@click.option("--outbound", envvar="PEERMESH_OUTBOUND", default=DEFAULT_OUTBOUND, show_default=True)
@click.option("--inbound", envvar="PEERMESH_INBOUND", default=DEFAULT_INBOUND, show_default=True)
@click.option("--admin", envvar="PEERMESH_ADMIN", default=DEFAULT_ADMIN, show_default=True)
@click.option(
    "--peer",
    envvar="PEERMESH_PEER",
    multiple=True,
    help="Static endpoint SERVICE=HOST:PORT (repeatable; env: space-separated).",
)
@click.option(
    "--endpoints-file",
    envvar="PEERMESH_ENDPOINTS_FILE",
    type=click.Path(dir_okay=False),
    help="YAML/JSON endpoint table, re-read when it changes.",
)
@click.option(
    "--drain-timeout",
    envvar="PEERMESH_DRAIN_TIMEOUT",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds to let in-flight requests finish on SIGTERM.",
)
@click.option(
    "--label",
    envvar="PEERMESH_LABEL",
    multiple=True,
    help="Service label KEY=VALUE advertised to the mesh (e.g. version=v2); repeatable.",
)
@click.option(
    "--gossip",
    envvar="PEERMESH_GOSSIP",
    default="0.0.0.0:15946",
    show_default=True,
    help="UDP address for SWIM gossip, or 'off' (static --peer endpoints only).",
)
@click.option(
    "--join",
    envvar="PEERMESH_JOIN",
    multiple=True,
    help="Seed: a peer agent's inbound HOST[:PORT] (mTLS); repeatable.",
)
@click.option(
    "--gossip-key-file",
    envvar="PEERMESH_GOSSIP_KEY_FILE",
    type=click.Path(dir_okay=False, exists=True),
    help="Mesh gossip keyring (from 'peermesh keygen gossip').",
)
@click.option(
    "--insecure-gossip",
    envvar="PEERMESH_INSECURE_GOSSIP",
    is_flag=True,
    help="Gossip without encryption (local experiments only).",
)
@click.option(
    "--gossip-profile",
    envvar="PEERMESH_GOSSIP_PROFILE",
    type=click.Choice(["lan", "wan", "local"]),
    default="lan",
    show_default=True,
)
@click.option(
    "--mdns/--no-mdns",
    envvar="PEERMESH_MDNS",
    default=True,
    show_default=True,
    help="Advertise and discover agents on the local link with mDNS.",
)
@click.option("--advertise", envvar="PEERMESH_ADVERTISE", help="Address peers use to reach us.")
@click.option(
    "--plaintext",
    envvar="PEERMESH_PLAINTEXT",
    help="Also accept plain HTTP from non-mesh clients here (MeshConfig PERMISSIVE only).",
)
@click.option(
    "--bootstrap-expect",
    envvar="PEERMESH_BOOTSTRAP_EXPECT",
    type=int,
    help="Bootstrap the threshold CA once this many agents with our bootstrap token meet.",
)
@click.option(
    "--bootstrap-token-file",
    envvar="PEERMESH_BOOTSTRAP_TOKEN_FILE",
    type=click.Path(dir_okay=False, exists=True),
    help="Secret shared by the initial agents (from 'peermesh keygen bootstrap-token').",
)
@click.option(
    "--bootstrap-listen",
    envvar="PEERMESH_BOOTSTRAP_LISTEN",
    help="Bootstrap/join listener HOST:PORT (default: inbound port + 1).",
)
@click.option(
    "--threshold",
    envvar="PEERMESH_THRESHOLD",
    type=int,
    help="Signers needed per certificate (default: a majority of --bootstrap-expect).",
)
@click.option(
    "--join-token",
    envvar="PEERMESH_JOIN_TOKEN",
    help="Join token from 'peermesh token create' (first certificate through --join).",
)
@click.option(
    "--cert-lifetime",
    envvar="PEERMESH_CERT_LIFETIME",
    default="24h",
    show_default=True,
    help="Lifetime of this agent's certificates (renewed at half of it; at most 24h).",
)
@click.option(
    "--access-log",
    envvar="PEERMESH_ACCESS_LOG",
    help="Write one JSON line per request to this file ('-' for stdout).",
)
@click.option(
    "--otlp-endpoint",
    envvar="PEERMESH_OTLP_ENDPOINT",
    help="Export a span per hop to this OTLP/HTTP collector (e.g. http://127.0.0.1:4318).",
)
@click.option(
    "--trace-sampling",
    envvar="PEERMESH_TRACE_SAMPLING",
    default="1",
    show_default=True,
    help="Fraction of new traces to sample (0..1, or a percentage like 1%); a decision"
    " arriving with the request (traceparent flags, x-b3-sampled) is always honoured.",
)
@click.option(
    "--log-level",
    envvar="PEERMESH_LOG_LEVEL",
    default="info",
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def agent(
    name: str,
    service: str,
    data_dir: str | None,
    trust_domain: str | None,
    outbound: str,
    inbound: str,
    admin: str,
    peer: tuple[str, ...],
    endpoints_file: str | None,
    drain_timeout: float,
    label: tuple[str, ...],
    gossip: str,
    join: tuple[str, ...],
    gossip_key_file: str | None,
    insecure_gossip: bool,
    gossip_profile: str,
    mdns: bool,
    advertise: str | None,
    plaintext: str | None,
    bootstrap_expect: int | None,
    bootstrap_token_file: str | None,
    bootstrap_listen: str | None,
    threshold: int | None,
    join_token: str | None,
    cert_lifetime: str,
    access_log: str | None,
    otlp_endpoint: str | None,
    trace_sampling: str,
    log_level: str,
) -> None:
    """Run the sidecar agent beside one service."""
    logging.basicConfig(
        level=getattr(logging, log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = AgentConfig.build(
            name=name,
            service=service,
            data_dir=data_dir,
            trust_domain=trust_domain,
            outbound=outbound,
            inbound=inbound,
            admin=admin,
            peers=tuple(p for item in peer for p in item.split()),
            endpoints_file=endpoints_file,
            drain_timeout=drain_timeout,
            labels=label,
            gossip=gossip,
            join=tuple(j for item in join for j in item.split()),
            gossip_key_file=gossip_key_file,
            insecure_gossip=insecure_gossip,
            gossip_profile=gossip_profile,
            mdns=mdns,
            advertise=advertise,
            plaintext=plaintext,
            bootstrap_expect=bootstrap_expect,
            bootstrap_token_file=bootstrap_token_file,
            bootstrap_listen=bootstrap_listen,
            threshold=threshold,
            join_token=join_token,
            cert_lifetime=cert_lifetime,
            access_log=access_log,
            otlp_endpoint=otlp_endpoint,
            trace_sampling=trace_sampling,
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        trio.run(_run_agent, config)
    except OSError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(0)


async def _run_agent(config: AgentConfig) -> None:
    from gossip.codec import KeyfileError
    from peermesh.agent import Agent
    from peermesh.core.endpoint import EndpointError
    from peermesh.policy.store import PolicyStoreCorrupt

    try:
        node = Agent(config)
    except (EndpointError, KeyfileError, OSError, PolicyStoreCorrupt) as exc:
        raise click.ClickException(str(exc)) from None
    if not node.tls.loaded:
        logging.getLogger("peermesh").warning(
            "no certificate in %s yet (%s); mTLS is refused until one appears",
            config.data_dir,
            node.tls.last_reload_error,
        )
    async with trio.open_nursery() as nursery:

        async def on_signals() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                count = 0
                async for _ in signals:
                    count += 1
                    if count == 1:
                        node.request_shutdown()
                    else:
                        nursery.cancel_scope.cancel()  # second signal: stop now

        nursery.start_soon(on_signals)
        await node.run()  # returns once the graceful drain is over
        nursery.cancel_scope.cancel()


def _admin_get(
    agent_url: str,
    path: str,
    body: Any = None,
    *,
    method: str | None = None,
    timeout: float = 10.0,
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        agent_url.rstrip("/") + path,
        data=data,
        method=method or ("POST" if data is not None else "GET"),
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"null")
        except ValueError:
            return exc.code, None
    except (urllib.error.URLError, OSError) as exc:
        raise click.ClickException(
            f"cannot reach the agent's admin API at {agent_url}: {exc}; is the agent running?"
        ) from None


agent_option = click.option(
    "--agent",
    "agent_url",
    envvar="PEERMESH_AGENT",
    default=f"http://{DEFAULT_ADMIN}",
    show_default=True,
    help="Admin URL of the local agent.",
)


@main.command()
@agent_option
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def status(agent_url: str, output: str) -> None:
    """Show the local agent's status."""
    _code, data = _admin_get(agent_url, "/v1/status")
    if output == "json":
        click.echo(json.dumps(data, indent=2))
        return
    table = Table(title=f"agent {data['node']} ({data['service']})")
    table.add_column("field")
    table.add_column("value")
    for key in ("identity", "ready", "draining", "certificate_not_after", "trust_domain"):
        table.add_row(key, str(data.get(key)))
    for name, address in data["listeners"].items():
        table.add_row(f"listener {name}", address)
    for peer in data["peers"]:
        table.add_row(
            f"peer {peer['address']}", f"{peer['connections']} conn, {peer['streams']} streams"
        )
    console.print(table)


@main.command()
@agent_option
@click.argument("address")
def ping(agent_url: str, address: str) -> None:
    """Ping a peer agent's control API (HOST:PORT of its inbound listener) through mTLS."""
    code, data = _admin_get(agent_url, "/v1/ping", {"address": address})
    if code != 200:
        raise click.ClickException(str((data or {}).get("error", f"HTTP {code}")))
    click.echo(f"{address}: node {data['node']} ({data['service']}) in {data['rtt_ms']} ms")


@main.command()
@agent_option
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def members(agent_url: str, output: str) -> None:
    """List the mesh members this agent sees (gossip membership)."""
    _code, data = _admin_get(agent_url, "/v1/members")
    if output == "json":
        click.echo(json.dumps(data, indent=2))
        return
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


def _policy_group() -> None:
    from peermesh.policy_cli import make_policy_group

    main.add_command(make_policy_group(_admin_get, agent_option), name="policy")


_policy_group()


# --- observability (issue 7): top, tap, check ---------------------------------------------
def _observability_commands() -> None:
    from peermesh.observability_cli import make_commands

    for command in make_commands(_admin_get, agent_option):
        main.add_command(command)


_observability_commands()
# --- end observability ----------------------------------------------------------------------


@main.group()
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


# --- threshold CA (issue 4) --------------------------------------------------------------


@keygen.command("bootstrap-token")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Token file.")
def keygen_bootstrap_token(out: str) -> None:
    """A new bootstrap token file (mode 0600) for the initial agents' --bootstrap-token-file."""
    from peermesh.ca.channel import write_bootstrap_token

    if Path(out).exists():
        raise click.ClickException(f"{out} exists; a bootstrap token is made once per mesh")
    write_bootstrap_token(Path(out))
    click.echo(f"wrote bootstrap token to {out} (mode 0600); give it to every initial agent")


@main.group()
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
    from peermesh.ca.renewal import parse_duration

    try:
        seconds = parse_duration(ttl)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--ttl") from None
    code, data = _admin_get(
        agent_url,
        "/v1/ca/token",
        {"service": service, "ttl": seconds, "uses": uses or None},
        timeout=60,
    )
    if code != 200:
        raise click.ClickException(str((data or {}).get("error", f"HTTP {code}")))
    click.echo(data["token"])


@token.command("list")
@agent_option
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def token_list(agent_url: str, output: str) -> None:
    """Join tokens in the policy (hashes only), and their uses counted on this agent."""
    code, data = _admin_get(agent_url, "/v1/ca/tokens")
    if code != 200:
        raise click.ClickException(str((data or {}).get("error", f"HTTP {code}")))
    if output == "json":
        click.echo(json.dumps(data, indent=2))
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
    code, data = _admin_get(agent_url, f"/v1/policy/JoinToken/{token_id}", method="DELETE")
    if code != 200:
        raise click.ClickException(str((data or {}).get("error", f"HTTP {code}")))
    click.echo(f"deleted JoinToken/{token_id}; signers refuse it once the deletion reaches them")


@main.group("ca")
def ca_group() -> None:
    """The threshold CA: status and committee changes."""


@ca_group.command("status")
@agent_option
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def ca_status(agent_url: str, output: str) -> None:
    """Committee, threshold, reachable signers, root and this node's certificate."""
    _code, data = _admin_get(agent_url, "/v1/ca/status")
    if output == "json":
        click.echo(json.dumps(data, indent=2))
        return
    table = Table(title=f"threshold CA seen by {data['node']}")
    table.add_column("field")
    table.add_column("value")
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
    code, data = _admin_get(agent_url, "/v1/ca/enroll", {"node": node})
    if code != 200:
        raise click.ClickException(str((data or {}).get("error", f"HTTP {code}")))
    click.echo(f"{data['node']} is signer {data['identifier']} (committee epoch {data['epoch']})")


@ca_group.command("renew")
@agent_option
def ca_renew(agent_url: str) -> None:
    """Renew this agent's certificate now (a fresh key, signed by t signers)."""
    code, data = _admin_get(agent_url, "/v1/ca/renew", {}, timeout=60)
    if code != 200:
        raise click.ClickException(str((data or {}).get("error", f"HTTP {code}")))
    click.echo(f"renewed {data['identity']} until {data['not_after']} (signers"
               f" {', '.join(str(s) for s in data['signers'])})")  # fmt: skip


@ca_group.command("refresh")
@agent_option
def ca_refresh(agent_url: str) -> None:
    """Re-share the root key among reachable signers; old shares stop working."""
    code, data = _admin_get(agent_url, "/v1/ca/refresh", {})
    if code != 200:
        raise click.ClickException(str((data or {}).get("error", f"HTTP {code}")))
    removed = ", ".join(data["removed"]) or "none"
    click.echo(f"refreshed: epoch {data['epoch']}, signers {', '.join(data['members'])};"
               f" removed {removed}")  # fmt: skip


if __name__ == "__main__":  # pragma: no cover
    main()
