"""A local edit's input checked whole: objects validated, delete keys parsed, sans-IO.

Every problem of one edit is collected and raised together (:class:`PolicyError`), so
the admin API answers them all at once and the store writes nothing of a bad edit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from peermesh.policy.errors import PolicyError
from peermesh.policy.model import PolicyObject, object_key, split_key
from peermesh.policy.validate import check_object, normalize


def parse_edit(
    upserts: Iterable[PolicyObject | Mapping[str, Any]],
    deletes: Iterable[str | tuple[str, str]],
    existing: Mapping[str, PolicyObject],
) -> tuple[list[PolicyObject], list[str]]:
    """Validate an edit's objects and delete keys; raises :class:`PolicyError` with all
    problems (an object that does not exist cannot be deleted)."""
    parsed: list[PolicyObject] = []
    errors: list[PolicyError] = []
    for item in upserts:
        if isinstance(item, Mapping):
            obj, problems = check_object(item)
        else:
            try:
                obj, problems = normalize(item), []
            except PolicyError as exc:
                obj, problems = None, list(exc.errors)
        errors.extend(problems)
        if obj is not None:
            parsed.append(obj)
    delete_keys: list[str] = []
    for ref in deletes:
        key = object_key(*ref) if isinstance(ref, tuple) else ref
        try:
            kind, name = split_key(key)
        except ValueError as exc:
            errors.append(PolicyError(str(exc), path="", hint="write e.g. Route/reviews"))
            continue
        if key not in existing:
            errors.append(
                PolicyError(
                    "does not exist (or is already deleted)",
                    kind=kind,
                    name=name,
                    hint="see `peermesh policy get` for what exists",
                )
            )
        delete_keys.append(key)
    if errors:
        raise PolicyError.collect(errors)
    if len(set(delete_keys)) != len(delete_keys) or {o.key for o in parsed} & set(delete_keys):
        raise PolicyError("the same object is deleted twice or both written and deleted")
    return parsed, delete_keys
