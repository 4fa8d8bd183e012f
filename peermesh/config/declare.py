"""A setting is declared once, on its dataclass field; flags, env and TOML are read off it.

:func:`setting` puts a :class:`Setting` in the field's metadata: the flag, the text
default (as a user would write it), the help line and the parser that turns that text
into the field's value. The field's own default is that parser applied to the text
default, so the two cannot disagree. The command line derives its options from
:func:`declared` (peermesh/cli/options.py), the environment variable is
:attr:`Setting.env`, and :func:`toml_values` maps a file's keys onto the same names.
"""

from __future__ import annotations

import dataclasses
import enum
import tomllib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

ENV_PREFIX = "PEERMESH_"


class ConfigError(ValueError):
    """A setting that cannot work; the message names the setting and the fix."""


class Kind(enum.Enum):
    """How a setting is written on the command line."""

    TEXT = "text"
    INT = "int"
    FLOAT = "float"
    FLAG = "flag"  # ``--x`` alone turns it on
    SWITCH = "switch"  # ``--x`` / ``--no-x``
    FILE = "file"  # a file path (need not exist yet)
    EXISTING_FILE = "existing-file"
    CHOICE = "choice"


@dataclasses.dataclass(frozen=True)
class Setting:
    """What the command line, the environment and a TOML file need to know of a field."""

    flag: str
    default: Any
    help: str
    parse: Callable[[Any], Any]
    kind: Kind = Kind.TEXT
    choices: tuple[str, ...] = ()
    multiple: bool = False
    required: bool = False
    aliases: tuple[str, ...] = ()  # other keyword / TOML names for the same setting

    @property
    def key(self) -> str:
        """The keyword name: ``--drain-timeout`` is ``drain_timeout``."""
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def env(self) -> str:
        """``PEERMESH_DRAIN_TIMEOUT`` for ``--drain-timeout``."""
        return ENV_PREFIX + self.key.upper()

    @property
    def names(self) -> tuple[str, ...]:
        return (self.key, *self.aliases)


def _identity(value: Any) -> Any:
    return value


def setting(
    flag: str,
    default: Any = None,
    *,
    help: str = "",
    parse: Callable[[Any], Any] = _identity,
    kind: Kind = Kind.TEXT,
    choices: tuple[str, ...] = (),
    multiple: bool = False,
    required: bool = False,
    aliases: tuple[str, ...] = (),
) -> Any:
    """A dataclass field declared as a setting; its default is ``parse(default)``."""
    if multiple and default is None:
        default = ()
    item = Setting(
        flag=flag,
        default=default,
        help=help,
        parse=parse,
        kind=kind,
        choices=choices,
        multiple=multiple,
        required=required,
        aliases=aliases,
    )
    metadata = {"setting": item}
    if required:
        return dataclasses.field(metadata=metadata)
    value = parse(default)
    if isinstance(value, dict | list | set):
        return dataclasses.field(default_factory=lambda: parse(default), metadata=metadata)
    return dataclasses.field(default=value, metadata=metadata)


def choice_setting(
    flag: str,
    values: type[enum.Enum],
    default: Any = None,
    *,
    help: str = "",
    parse: Callable[[Any], Any] | None = None,
) -> Any:
    """A setting that takes one of an enum's values; the offered choices are read off it."""
    return setting(
        flag,
        default,
        help=help,
        parse=values if parse is None else parse,
        kind=Kind.CHOICE,
        choices=tuple(str(member.value) for member in values),
    )


def setting_of(field: dataclasses.Field[Any]) -> Setting | None:
    found = field.metadata.get("setting")
    return found if isinstance(found, Setting) else None


def declared(section: type) -> Iterator[tuple[str, Setting]]:
    """``(field name, setting)`` for every declared field of a section, in order."""
    for field in dataclasses.fields(section):
        found = setting_of(field)
        if found is not None:
            yield field.name, found


def parse_section(section: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """The section's field values from raw ``values`` (keyed by setting name or alias)."""
    out: dict[str, Any] = {}
    for name, item in declared(section):
        raw = next((values[n] for n in item.names if n in values), item.default)
        if raw is None and item.required:
            raise ConfigError(f"{item.flag} is required")
        out[name] = item.parse(raw)
    return out


def toml_values(path: Path, known: Mapping[str, Setting]) -> dict[str, Any]:
    """A TOML file's settings (top level or an ``[agent]`` table) by setting key.

    Keys may use ``-`` or ``_``; an unknown key is refused by name so a typo is not
    silently ignored.
    """
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    table = data.get("agent", data)
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [agent] must be a table")
    by_name = {name: item for item in known.values() for name in item.names}
    values: dict[str, Any] = {}
    for key, value in table.items():
        item = by_name.get(key.replace("-", "_"))
        if item is None:
            raise ConfigError(f"{path}: unknown setting {key!r}")
        values[item.key] = value
    return values
