"""``RpcError``: a control call that did not return a result, with its status end to end."""

from __future__ import annotations

from peermesh.core.errors import PeermeshError

_CODES = {
    400: "bad-request",
    403: "forbidden",
    404: "no-such-method",
    405: "method-not-allowed",
    409: "conflict",
    413: "too-large",
    429: "too-many-requests",
    500: "internal-error",
    502: "bad-reply",
    503: "unavailable",
    504: "timeout",
}


class RpcError(PeermeshError):
    """Raised by a handler to refuse a call, and by the client when a call gets no result.

    A handler's ``RpcError(403, ...)`` reaches the caller as ``RpcError`` with status 403
    and the same code and message; transport failures are 503 (unreachable), 504 (no
    reply in time) and 502 (a reply that is not one).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        hint: str | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(
            message, status=status, code=code or _CODES.get(status, "refused"), hint=hint
        )
        #: The refusing handler's own message, without where the call went (client side).
        self.reason = message if reason is None else reason

    def __str__(self) -> str:
        return self.message
