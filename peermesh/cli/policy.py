"""``peermesh policy ...``: edit and inspect the replicated policy through the local agent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NoReturn

import click
import yaml
from rich.console import Console
from rich.table import Table

from peermesh.cli.admin import admin_call, admin_ok, agent_option, output_option, printed_as_json
from peermesh.config import DEFAULT_TRUST_DOMAIN
from peermesh.policy.errors import PolicyError
from peermesh.policy.loader import Document, PolicyLoadError, dump_yaml, load_path
from peermesh.policy.model import MESH_CONFIG
from peermesh.policy.translate import merge_mesh_config
from peermesh.policy.translate.batch import Batch, translate_documents
from peermesh.policy.validate import parse_object

console = Console()


@click.group()
def policy() -> None:
    """Edit and inspect the mesh policy (replicated to every agent)."""


def _load(path: str) -> list[Document]:
    try:
        return load_path(Path(path))
    except PolicyLoadError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror}") from None


def _trust_domain(agent_url: str, given: str | None) -> str:
    """The trust domain Istio principals are mapped into: given, else the agent's own."""
    if given:
        return given
    code, data = admin_call(agent_url, "/v1/status")
    if code == 200 and isinstance(data, dict) and isinstance(data.get("trust_domain"), str):
        return str(data["trust_domain"])
    return DEFAULT_TRUST_DOMAIN


def _problems(errors: tuple[PolicyError, ...], verb: str) -> str:
    lines = [f"{verb} ({len(errors)} problem(s)):"]
    for err in errors:
        where = f" ({err.source})" if err.source else ""
        hint = f" — {err.hint}" if err.hint else ""
        lines.append(f"  {err.object}{where}: {err.path}: {err.reason}{hint}")
    return "\n".join(lines)


def _batch(path: str, trust_domain: str) -> Batch:
    """Every document of FILE|DIR as peermesh objects; all problems refused in one round."""
    batch = translate_documents(_load(path), trust_domain=trust_domain)
    if batch.errors:
        raise click.ClickException(_problems(batch.errors, "policy refused"))
    return batch


def _objects(agent_url: str, batch: Batch) -> list[dict[str, Any]]:
    """The batch's objects; a MeshConfig made from PeerAuthentications (mTLS fields only)
    is laid over the live one rather than replacing it."""
    out = batch.objects
    for i, obj in enumerate(out):
        if (
            obj.get("kind") == MESH_CONFIG
            and f"{MESH_CONFIG}/{obj.get('name')}" in batch.translated
        ):
            code, current = admin_call(agent_url, f"/v1/policy/{MESH_CONFIG}/{obj['name']}")
            out[i] = merge_mesh_config(current if code == 200 else None, obj)
    return out


trust_domain_option = click.option(
    "--trust-domain",
    default=None,
    help="Trust domain Istio principals map into (default: the agent's).",
)


def _fail(code: int, data: Any) -> NoReturn:
    if isinstance(data, dict) and data.get("error") == "invalid_policy":
        lines = [f"policy refused ({len(data.get('errors', []))} problem(s)):"]
        for err in data.get("errors", []):
            where = f" ({err['source']})" if err.get("source") else ""
            hint = f" — {err['hint']}" if err.get("hint") else ""
            lines.append(
                f"  {err['kind']}/{err['name']}{where}: {err['path']}: {err['reason']}{hint}"
            )
        raise click.ClickException("\n".join(lines))
    message = data.get("error") if isinstance(data, dict) else data
    advice = data.get("hint") if isinstance(data, dict) else None
    raise click.ClickException(
        f"agent answered {code}: {message}" + (f" (hint: {advice})" if advice else "")
    )


@policy.command("apply")
@agent_option
@click.option("-f", "--filename", "path", required=True, help="YAML/JSON file or directory.")
@trust_domain_option
def apply_cmd(agent_url: str, path: str, trust_domain: str | None) -> None:
    """Validate every object in FILE|DIR, then apply them together.

    Istio (VirtualService, DestinationRule, AuthorizationPolicy, PeerAuthentication) and
    Gateway API HTTPRoute objects are translated first (see ``policy convert``).
    """
    batch = _batch(path, _trust_domain(agent_url, trust_domain))
    objects = _objects(agent_url, batch)
    data = admin_ok(agent_url, "/v1/policy", {"objects": objects}, method="PUT", fail=_fail)
    for key in data["changed"]:
        click.echo(f"{key} configured")
    for key in data["unchanged"]:
        click.echo(f"{key} unchanged")
    for warning in data["warnings"]:
        click.echo(
            f"warning: {warning['kind']}/{warning['name']}: {warning['path']}: "
            f"{warning['message']}",
            err=True,
        )


@policy.command("convert")
@click.option("-f", "--filename", "path", required=True, help="YAML/JSON file or directory.")
@click.option("--trust-domain", default=DEFAULT_TRUST_DOMAIN, show_default=True)
def convert_cmd(path: str, trust_domain: str) -> None:
    """Print FILE|DIR as peermesh YAML (Istio and Gateway API objects translated).

    Nothing is applied. Every field that cannot be honoured is listed at once, with its
    path and why; the exit status is 1 when there is any.
    """
    batch = translate_documents(_load(path), trust_domain=trust_domain)
    good = []
    for doc in batch.documents:
        try:
            good.append(parse_object(doc.data))
        except PolicyError:
            continue  # listed below with the other problems
    if good:
        click.echo(dump_yaml(good), nl=False)
    if batch.errors:
        verb = "cannot be honoured (objects printed above leave these out)"
        raise click.ClickException(_problems(batch.errors, verb))


@policy.command("get")
@agent_option
@click.argument("kind", required=False)
@click.argument("name", required=False)
@click.option("-o", "--output", type=click.Choice(["table", "yaml", "json"]), default="table")
def get_cmd(agent_url: str, kind: str | None, name: str | None, output: str) -> None:
    """Show objects: all, one KIND, or KIND NAME."""
    if kind and name:
        objects = [admin_ok(agent_url, f"/v1/policy/{kind}/{name}", fail=_fail)]
    else:
        query = f"?kind={kind}" if kind else ""
        objects = admin_ok(agent_url, "/v1/policy" + query, fail=_fail).get("objects", [])
    if output == "json":
        click.echo(json.dumps(objects if not name else objects[0], indent=2))
    elif output == "yaml":
        click.echo(yaml.safe_dump_all(objects, sort_keys=False), nl=False)
    else:
        table = Table()
        for column in ("kind", "name", "summary"):
            table.add_column(column)
        for obj in objects:
            table.add_row(obj["kind"], obj["name"], _summary(obj))
        console.print(table)


@policy.command("delete")
@agent_option
@click.argument("target")
def delete_cmd(agent_url: str, target: str) -> None:
    """Delete KIND/NAME."""
    kind, sep, name = target.partition("/")
    if not sep or not name:
        raise click.UsageError("write KIND/NAME, e.g. Route/reviews")
    admin_ok(agent_url, f"/v1/policy/{kind}/{name}", method="DELETE", fail=_fail)
    click.echo(f"{kind}/{name} deleted")


@policy.command("history")
@agent_option
@click.argument("target")
def history_cmd(agent_url: str, target: str) -> None:
    """Every edit of KIND/NAME (or NAME if unique), including the ones that lost."""
    if "/" not in target:
        data = admin_ok(agent_url, "/v1/policy", fail=_fail)
        matches = [o for o in data["objects"] if o["name"] == target]
        if len(matches) != 1:
            raise click.ClickException(
                f"{len(matches)} objects are called {target!r}; write KIND/NAME"
            )
        target = f"{matches[0]['kind']}/{target}"
    kind, _, name = target.partition("/")
    data = admin_ok(agent_url, f"/v1/policy/{kind}/{name}/history", fail=_fail)
    table = Table(title=f"history of {target}")
    for column in ("won", "node", "author", "time", "lamport", "hash", "deleted"):
        table.add_column(column)
    for entry in data["history"]:
        author = str(entry.get("author") or "")
        if entry.get("authorized") is False:  # never wins: not signed by an admin
            author += " [red](unauthorized: not a MeshConfig admin)[/]"
        table.add_row(
            "[green]✔[/]" if entry.get("won") else "",
            str(entry.get("node")),
            author,
            str(entry.get("time")),
            str(entry.get("lamport")),
            str(entry.get("hash", ""))[:12],
            "yes" if entry.get("deleted") else "",
        )
    console.print(table)


@policy.command("diff")
@agent_option
@click.option("-f", "--filename", "path", required=True)
@trust_domain_option
def diff_cmd(agent_url: str, path: str, trust_domain: str | None) -> None:
    """What applying FILE|DIR would change (nothing is written)."""
    batch = _batch(path, _trust_domain(agent_url, trust_domain))
    objects = _objects(agent_url, batch)
    data = admin_ok(agent_url, "/v1/policy/diff", {"objects": objects}, fail=_fail)
    for change in data["changes"]:
        click.echo(f"{change['change']:9} {change['object']}")
        if change["change"] == "update":
            before = yaml.safe_dump(change["before"], sort_keys=False).splitlines()
            after = yaml.safe_dump(change["after"], sort_keys=False).splitlines()
            import difflib

            for line in difflib.unified_diff(before, after, "live", "file", lineterm=""):
                click.echo("    " + line)


@policy.command("status")
@agent_option
@output_option
def status_cmd(agent_url: str, output: str) -> None:
    """Policy version and digest here and at every peer (convergence at a glance)."""
    data = admin_ok(agent_url, "/v1/policy/status", fail=_fail)
    if printed_as_json(data, output):
        return
    here = data["here"]
    table = Table(title="policy convergence")
    for column in ("node", "version", "objects", "digest", "same as here"):
        table.add_column(column)
    table.add_row("(here)", str(here["version"]), str(here["objects"]), here["digest"], "")
    for peer in data["peers"]:
        if not peer["reachable"]:
            table.add_row(peer["node"], "", "", "[red]unreachable[/]", "")
            continue
        same = "[green]✔[/]" if peer["digest"] == here["digest"] else "[yellow]✘[/]"
        table.add_row(
            peer["node"], str(peer["version"]), str(peer["objects"]), peer["digest"], same
        )
    console.print(table)
    admins = here.get("admins") or []
    console.print("admins: " + (", ".join(admins) if admins else "none (any mesh identity)"))


@policy.command("recover")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="PEERMESH_DATA_DIR",
    required=True,
    help="The stopped agent's data dir.",
)
@click.option(
    "--all",
    "everything",
    is_flag=True,
    help="Move the snapshot and the log aside even if they look intact.",
)
def recover_cmd(data_dir: Path, everything: bool) -> None:
    """Move a damaged local policy store aside so the agent resyncs it from its peers.

    Run it while the agent is stopped. It checks what a start checks: checksums, then
    every record's signature (against DATA_DIR/bundle.pem), authority and object. Damaged
    files are renamed to NAME.damaged-<UTC time> (kept, never deleted); on its next start
    the agent pulls every policy record from its peers and checks each signature, as any
    sync does.
    """
    import datetime as dt

    from peermesh.net.identity_files import BUNDLE_FILE
    from peermesh.policy.authorship import RecordVerifier, trust_bundle_file
    from peermesh.policy.persistence import DiskPersistence
    from peermesh.policy.recovery import recover

    if not data_dir.is_dir():
        raise click.ClickException(f"{data_dir} is not a directory")
    bundle = data_dir / BUNDLE_FILE
    verifier = None
    if bundle.is_file():
        verifier = RecordVerifier(trust_bundle_file(bundle))
    else:
        click.echo(f"no {bundle}: record signatures are not checked, only checksums and objects")
    try:
        result = recover(
            DiskPersistence.in_data_dir(data_dir),
            now=dt.datetime.now(dt.UTC),
            everything=everything,
            verifier=verifier,
        )
    except OSError as exc:
        raise click.ClickException(f"cannot move the policy files aside: {exc}") from None
    for damage in result.damaged:
        where = ""
        if damage.record is not None:
            at = f" at byte {damage.offset}" if damage.offset is not None else ""
            where = f" record {damage.record}{at} is refused"
        click.echo(f"damaged: {damage.path}:{where} {damage.reason}")
    for source, target in result.moved:
        click.echo(f"moved {source} -> {target}")
    if not result.moved:
        click.echo(f"the policy store in {data_dir} is intact; nothing was moved (see --all)")
        return
    click.echo(
        "start the agent: it rebuilds its policy from its peers (every record's signature"
        " is checked); `peermesh policy status` shows when it has converged"
    )


def _summary(obj: dict[str, Any]) -> str:
    spec = obj.get("spec", {})
    kind = obj.get("kind")
    if kind == "Route":
        return f"host={spec.get('host', '')} rules={len(spec.get('http', []))}"
    if kind == "AuthorizationPolicy":
        return f"{spec.get('action', 'ALLOW')} rules={len(spec.get('rules', []))}"
    if kind == "TrafficPolicy":
        return f"host={spec.get('host', '')} subsets={len(spec.get('subsets', []))}"
    return ", ".join(sorted(spec))[:60]


COMMANDS: tuple[click.Command, ...] = (policy,)
