"""Click options derived from the config declarations, and ``--config FILE`` for TOML.

Nothing about a setting is written here: flag, default, help, environment name and
TOML key all come from its :class:`~peermesh.config.Setting`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from peermesh.config import ConfigError, Kind, Setting
from peermesh.config.declare import ENV_PREFIX, toml_values

F = TypeVar("F", bound=Callable[..., Any])

_TYPES: dict[Kind, click.ParamType | type] = {
    Kind.TEXT: str,
    Kind.INT: int,
    Kind.FLOAT: float,
    Kind.FILE: click.Path(dir_okay=False),
    Kind.EXISTING_FILE: click.Path(dir_okay=False, exists=True),
}


def click_option(item: Setting) -> Callable[[F], F]:
    """The click option for one setting (``--x/--no-x`` for a switch)."""
    options: dict[str, Any] = {
        "envvar": item.env,
        "help": item.help or None,
        "multiple": item.multiple,
        "required": item.required,
    }
    if item.default is not None and item.default != () and item.default is not False:
        options |= {"default": item.default, "show_default": True}
    if item.kind is Kind.FLAG:
        options["is_flag"] = True
    elif item.kind is Kind.CHOICE:
        options["type"] = click.Choice(list(item.choices))
    elif item.kind is not Kind.SWITCH:
        options["type"] = _TYPES[item.kind]
    flag = item.flag
    if item.kind is Kind.SWITCH:
        flag = f"{flag}/--no-{flag.removeprefix('--')}"
    return click.option(flag, item.key, **options)


def config_options(settings: Mapping[str, Setting]) -> Callable[[F], F]:
    """Add ``--config FILE`` and one option per setting, in declaration order."""

    def load(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
        """TOML keys become option defaults, so flags and ``PEERMESH_*`` env still win."""
        if not value:
            return value
        try:
            defaults = toml_values(Path(value), settings)
        except ConfigError as exc:
            raise click.BadParameter(str(exc)) from None
        ctx.default_map = {**(ctx.default_map or {}), **defaults}
        return value

    def decorate(command: F) -> F:
        for item in reversed(list(settings.values())):
            command = click_option(item)(command)
        return click.option(
            "--config",
            type=click.Path(dir_okay=False),
            callback=load,
            is_eager=True,
            expose_value=False,
            envvar=ENV_PREFIX + "CONFIG",
            help="TOML file with any of these options (flags and PEERMESH_* env win).",
        )(command)

    return decorate
