"""Every refusal the policy package makes, each a ``PeermeshError`` with a status and a code.

``PolicyError`` is the model for structured errors: what (kind/name), where (a field
path such as ``spec.http[0].route[1].weight``), why, and what to do, with every problem
of one input carried together. The others say why an update, a snapshot, a record's
authorship or a local edit was refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from peermesh.core.errors import PeermeshError
from peermesh.core.wire import field_map

_PROBLEM_FIELDS = ("kind", "name", "path", "reason", "hint", "source")


class PolicyError(PeermeshError, ValueError):
    """A refused policy object: what (kind/name), where (field path), why, and what to do.

    ``errors`` holds every problem found in the same input, this one first, so an API can
    report them all at once instead of making the user fix them one by one.
    """

    default_status = 400
    default_code = "invalid-policy"

    def __init__(
        self,
        reason: str,
        *,
        kind: str | None = None,
        name: str | None = None,
        path: str = "",
        hint: str | None = None,
        source: str | None = None,
        errors: Sequence[PolicyError] = (),
    ) -> None:
        self.reason = reason
        self.kind = kind
        self.name = name
        self.path = path
        self.hint = hint
        self.source = source
        self.errors: tuple[PolicyError, ...] = tuple(errors) or (self,)
        super().__init__(self._describe(), hint=hint)

    @property
    def object(self) -> str:
        """``Kind/name`` as far as known, for messages."""
        return f"{self.kind or '?'}/{self.name or '?'}"

    def _describe(self) -> str:
        text = (
            f"{self.object}: {self.path}: {self.reason}"
            if self.path
            else (f"{self.object}: {self.reason}")
        )
        if self.source:
            text = f"{self.source}: {text}"
        if self.hint:
            text += f" (hint: {self.hint})"
        if len(self.errors) > 1:
            text += f" [and {len(self.errors) - 1} more problem(s)]"
        return text

    def to_dict(self) -> dict[str, Any]:
        """Structured JSON form for the admin API; ``errors`` lists every problem found."""
        return {
            "error": "invalid_policy",
            **self.single_dict(),
            "errors": [e.single_dict() for e in self.errors],
        }

    def single_dict(self) -> dict[str, Any]:
        """This one problem as JSON, without the list of siblings."""
        return {name: getattr(self, name) for name in _PROBLEM_FIELDS}

    def with_source(self, source: str | None) -> PolicyError:
        """The same problem (and its siblings) located in a file, e.g. ``routes.yaml:12``."""
        return PolicyError.collect([e._single(source=e.source or source) for e in self.errors])

    def _single(self, source: str | None, errors: Sequence[PolicyError] = ()) -> PolicyError:
        return PolicyError(
            self.reason,
            kind=self.kind,
            name=self.name,
            path=self.path,
            hint=self.hint,
            source=source,
            errors=errors,
        )

    def identity(self) -> tuple[str | None, str | None, str, str]:
        """What the problem is, for telling new problems from ones already present."""
        return (self.kind, self.name, self.path, self.reason)

    @classmethod
    def collect(cls, errors: Sequence[PolicyError]) -> PolicyError:
        """One exception carrying all of ``errors`` (the first one's fields on top)."""
        flat = [single for error in errors for single in error.errors]
        return flat[0]._single(flat[0].source, flat)


@dataclass(frozen=True)
class PolicyWarning:
    """A legal but suspicious policy: reported to the user, never refused."""

    kind: str
    name: str
    path: str
    message: str
    code: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}: {self.path}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        return field_map(self)


class UpdateRefused(PeermeshError, ValueError):
    """A peer's update was refused as a whole; the store is unchanged."""

    default_status = 400
    default_code = "update-refused"

    def __init__(
        self, source: str, reason: str, error: PolicyError | None = None, *, unsigned: bool = False
    ) -> None:
        self.source = source
        self.reason = reason
        self.error = error
        self.unsigned = unsigned  # refused only because a record carries no signature
        super().__init__(
            f"update from {source} refused: {reason} "
            "(nothing was applied; the peer should resend a diff against our state vector)"
        )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "error": "update_refused",
            "source": self.source,
            "reason": self.reason,
        }
        if self.error is not None:
            data["policy_errors"] = [e.single_dict() for e in self.error.errors]
        return data


class PolicyStoreCorrupt(PeermeshError, RuntimeError):
    """The snapshot on disk cannot be loaded; we refuse to start rather than lose policy."""

    default_status = 500
    default_code = "policy-store-corrupt"

    def __str__(self) -> str:
        # The agent's start-up failure prints str(exc): the operator's next step belongs in it.
        return f"{self.message}; {self.hint}" if self.hint else self.message


class AuthorshipError(PeermeshError, ValueError):
    """A record's authorship cannot be established; the message says what and why."""

    default_status = 400
    default_code = "unauthentic-record"


class NoIdentity(AuthorshipError):
    """This agent has no certificate (or no trust bundle) yet, so it cannot sign or verify."""

    default_status = 503
    default_code = "no-identity"


class NotAdmin(PeermeshError, PermissionError):
    """A local edit by an identity MeshConfig ``admins`` does not list; nothing was written."""

    default_status = 403
    default_code = "not-admin"

    def __init__(self, identity: str, admins: Sequence[str]) -> None:
        self.identity = identity
        self.admins = tuple(sorted(admins))
        super().__init__(
            f"{identity} is not a MeshConfig admin; edit from one of: {', '.join(self.admins)}"
            " (records this agent signs would not be in effect on any agent)"
        )


class EndorsementRequired(PeermeshError):
    """A local edit that changes MeshConfig ``admins`` without the committee's endorsement.

    Where the admin set is anchored in the root key, a MeshConfig version whose admins
    differ from the current set is in effect only with a threshold signature of the
    signer committee; writing one without it would be ignored on every replica.
    """

    default_status = 503
    default_code = "admin-set-not-endorsed"
