"""What every translator shares: the problems it collects and strict reads of foreign fields.

A translator never drops a field it does not understand. Each mapping it reads is checked
against the fields it can honour; every other field becomes an :class:`Unhonoured` entry
with its path and why, so one pass lists them all and nothing changes behaviour silently.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from peermesh.policy.errors import PolicyError


class Why(enum.Enum):
    """Why a foreign field cannot be taken over as written."""

    UNSUPPORTED = "unsupported"
    DIFFERENT_SEMANTICS = "different semantics"
    INVALID = "invalid"


@dataclass(frozen=True)
class Unhonoured:
    """One field of a foreign object peermesh cannot honour, and why."""

    kind: str
    name: str
    path: str
    why: Why
    reason: str
    hint: str | None = None

    def __str__(self) -> str:
        text = f"{self.kind}/{self.name}: {self.path}: {self.why.value}: {self.reason}"
        return text + (f" (hint: {self.hint})" if self.hint else "")

    def to_error(self, source: str | None = None) -> PolicyError:
        return PolicyError(
            f"{self.why.value}: {self.reason}",
            kind=self.kind,
            name=self.name,
            path=self.path,
            hint=self.hint,
            source=source,
        )

    def to_dict(self) -> dict[str, str | None]:
        return {
            "kind": self.kind,
            "name": self.name,
            "path": self.path,
            "why": self.why.value,
            "reason": self.reason,
            "hint": self.hint,
        }


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


class Tx:
    """The translation of one foreign object: where problems go, with its kind and name."""

    def __init__(self, kind: str, name: str) -> None:
        self.kind = kind
        self.name = name
        self.problems: list[Unhonoured] = []

    def refuse(
        self, path: str, reason: str, why: Why = Why.UNSUPPORTED, hint: str | None = None
    ) -> None:
        self.problems.append(Unhonoured(self.kind, self.name, path, why, reason, hint))

    def spec(
        self,
        data: Mapping[str, Any],
        honoured: Sequence[str],
        reasons: Mapping[str, tuple[Why, str]] | None = None,
        *,
        required: bool = True,
    ) -> dict[str, Any]:
        """The honoured fields of a document's ``spec`` (absent is empty unless ``required``)."""
        spec = data.get("spec") if required else data.get("spec") or {}
        return self.fields(spec, "spec", honoured, reasons)

    def fields(
        self,
        value: object,
        path: str,
        honoured: Sequence[str],
        reasons: Mapping[str, tuple[Why, str]] | None = None,
    ) -> dict[str, Any]:
        """The honoured fields of a mapping; every other field is refused with its reason."""
        if not isinstance(value, Mapping):
            self.refuse(
                path or "(top level)",
                f"expected a mapping, got {type(value).__name__}",
                Why.INVALID,
            )
            return {}
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key in honoured:
                out[str(key)] = item
                continue
            why, reason = (reasons or {}).get(
                str(key), (Why.UNSUPPORTED, f"peermesh has no equivalent of '{key}'")
            )
            self.refuse(join(path, str(key)), reason, why)
        return out

    def wrapped(
        self,
        value: object,
        path: str,
        key: str,
        honoured: Sequence[str],
        reasons: Mapping[str, tuple[Why, str]] | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """``(path, fields)`` of a mapping wrapped in a one-key mapping (``{key: {...}}``,
        as Istio writes each entry of ``from`` and ``to``); a missing inner one is empty."""
        outer = self.fields(value, path, (key,))
        inner = join(path, key)
        return inner, self.fields(outer.get(key, {}), inner, honoured, reasons)

    def exported_to_mesh(self, spec: Mapping[str, Any], hint: str | None = None) -> None:
        """Refuse an Istio ``spec.exportTo`` other than the whole mesh (``['*']``): peermesh
        policy is visible everywhere."""
        export = spec.get("exportTo")
        if export is not None and export != ["*"]:
            self.refuse(
                "spec.exportTo",
                "peermesh policy is visible to the whole mesh",
                Why.DIFFERENT_SEMANTICS,
                hint=hint,
            )

    def items(self, value: object, path: str) -> list[tuple[str, Any]]:
        """``(path, item)`` for each entry of a list; anything else is refused."""
        if value is None:
            return []
        if not isinstance(value, list | tuple):
            self.refuse(path, f"expected a list, got {type(value).__name__}", Why.INVALID)
            return []
        return [(join(path, i), item) for i, item in enumerate(value)]

    def mapping(self, value: object, path: str) -> Mapping[str, Any]:
        if isinstance(value, Mapping):
            return value
        self.refuse(path, f"expected a mapping, got {type(value).__name__}", Why.INVALID)
        return {}
