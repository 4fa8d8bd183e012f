"""How every command but ``agent`` reaches the local agent: its admin API over HTTP."""

from __future__ import annotations

import functools
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, NoReturn

import click

from peermesh.config import AdminConfig
from peermesh.net.admin_guard import ADMIN_HEADERS

_host, _port = AdminConfig().listen

agent_option = click.option(
    "--agent",
    "agent_url",
    envvar="PEERMESH_AGENT",
    default=f"http://{_host}:{_port}",
    show_default=True,
    help="Admin URL of the local agent.",
)

output_option = click.option(
    "-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True
)


def printed_as_json(data: Any, output: str) -> bool:
    """Print ``data`` as JSON when ``--output json`` asked for it; True when it did."""
    if output != "json":
        return False
    click.echo(json.dumps(data, indent=2))
    return True


def table_view(path: str) -> Callable[[Callable[[Any], None]], Callable[[str, str], None]]:
    """A read-only view of the admin API's answer at ``path``: ``--agent`` and ``--output``
    options, JSON printed as is, anything else handed to the decorated renderer.

    The view renders whatever status the agent answers with, so a refusal shows up in the
    table the same way it does in the JSON.
    """

    def decorate(render: Callable[[Any], None]) -> Callable[[str, str], None]:
        @agent_option
        @output_option
        @functools.wraps(render)
        def command(agent_url: str, output: str) -> None:
            _code, data = admin_call(agent_url, path)
            if not printed_as_json(data, output):
                render(data)

        return command

    return decorate


def admin_call(
    agent_url: str,
    path: str,
    body: Any = None,
    *,
    method: str | None = None,
    timeout: float = 10.0,
) -> tuple[int, Any]:
    """``(status, decoded JSON)`` from the admin API; a ClickException if it is not there."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        agent_url.rstrip("/") + path,
        data=data,
        method=method or ("POST" if data is not None else "GET"),
        # The admin API refuses mutations without it (see peermesh.net.admin_guard).
        headers={"content-type": "application/json", **ADMIN_HEADERS},
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


def refused(code: int, data: Any) -> NoReturn:
    """A ClickException carrying the agent's ``error`` (or the status when it gave none)."""
    error = data.get("error") if isinstance(data, dict) else None
    raise click.ClickException(str(error if error is not None else f"HTTP {code}"))


def admin_ok(
    agent_url: str,
    path: str,
    body: Any = None,
    *,
    method: str | None = None,
    timeout: float = 10.0,
    fail: Callable[[int, Any], NoReturn] = refused,
) -> Any:
    """The decoded JSON of a 200 answer from the admin API; any other answer goes to
    ``fail`` (status, decoded body), which raises."""
    code, data = admin_call(agent_url, path, body, method=method, timeout=timeout)
    if code != 200:
        fail(code, data)
    return data
