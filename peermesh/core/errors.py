"""The one exception root: every error peermesh raises on purpose says what, why and what to do.

An error that reaches an API boundary (an admin route, a control RPC, a proxied request)
is answered with its ``status`` and ``code``; ``hint`` is the operator's next step.
A subclass declares its defaults with the class (``class Gone(PeermeshError, status=410,
code="gone")``), checked when it is defined.
``gossip/`` and ``certs/`` are libraries with roots of their own; the shells translate
their errors where they cross into peermesh.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

_CODE = re.compile(r"[a-z][a-z0-9-]*")


class PeermeshError(Exception):
    """Root of peermesh's own errors: ``status`` (HTTP), ``code`` (a stable token), ``hint``."""

    default_status: ClassVar[int] = 500
    default_code: ClassVar[str] = "internal-error"
    hint: str | None = None

    def __init_subclass__(
        cls, *, status: int | None = None, code: str | None = None, **kwargs: Any
    ) -> None:
        """``class X(Root, status=403, code="x")`` declares the defaults with the class."""
        super().__init_subclass__(**kwargs)
        if status is not None:
            if not 400 <= status <= 599:
                raise TypeError(f"{cls.__name__}: status {status} is not an HTTP error status")
            cls.default_status = status
        if code is not None:
            if not _CODE.fullmatch(code):
                raise TypeError(f"{cls.__name__}: code {code!r} is not a lower-case token")
            cls.default_code = code

    def __init__(
        self,
        message: str = "",
        *,
        status: int | None = None,
        code: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = self.default_status if status is None else status
        self.code = self.default_code if code is None else code
        self.hint = hint

    def to_dict(self) -> dict[str, Any]:
        """The JSON/msgpack shape an API answers with."""
        out: dict[str, Any] = {"error": self.message, "code": self.code}
        if self.hint:
            out["hint"] = self.hint
        return out


class TransportError(PeermeshError):
    """A connection or stream ended under a request (reset, closed, refused, gone).

    These are how the data plane learns that the other side went away; code that
    answers refusals (an RPC router, an admin route) lets them propagate to the
    connection handler that owns the stream.
    """

    default_status = 502
    default_code = "transport"
