"""What keeps a browser on the same host out of the loopback admin API.

Loopback binding stops other machines, not other origins: a web page can make the
browser send a cross-origin "simple" request (an ``<img>`` GET, a form or ``text/plain``
POST) to 127.0.0.1, and DNS rebinding lets a page on ``evil.example`` reach us under its
own name. The checks, as Vault Agent (``require_request_header``), Consul and etcd do:

- ``Host`` must name loopback (``localhost``, 127.0.0.0/8, ``::1``) or the configured admin
  address, else 421: a rebinding page always sends its own name.
- An ``Origin`` header must be this very admin origin (``http://<Host>``), else 403; browsers
  send it on every cross-origin request and on same-origin non-GET requests.
- Anything but GET/HEAD changes state, and needs ``X-Peermesh-Request: 1``: a browser
  cannot add that header to a cross-origin request without a CORS preflight, and
  ``OPTIONS`` (the preflight) is refused with no CORS grant. GET/HEAD never change state.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

from peermesh.net.http.headers import RequestHead

#: The header every mutation must carry; the CLI and every internal caller send it.
REQUEST_HEADER: Final = "X-Peermesh-Request"
REQUEST_HEADER_VALUE: Final = "1"
#: Ready to pass as ``headers=`` to an HTTP client.
ADMIN_HEADERS: Final = {REQUEST_HEADER: REQUEST_HEADER_VALUE}
SAFE_METHODS: Final = frozenset({b"GET", b"HEAD"})


@dataclass(frozen=True)
class Refusal:
    status: int
    reason: str


def split_host(authority: str) -> str:
    """The host part of a ``Host`` value (``[::1]:15000`` -> ``::1``), lowercased."""
    text = authority.strip().lower()
    if text.startswith("["):
        return text[1:].partition("]")[0]
    if text.count(":") == 1:
        return text.partition(":")[0]
    return text  # a bare IPv6 address or a name without a port


def _loopback(host: str) -> bool:
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class BrowserGuard:
    """Decides whether one admin request may proceed (None) or how it is refused."""

    def __init__(self, admin_hosts: Collection[str] = ()) -> None:
        self.admin_hosts = frozenset(split_host(h) for h in admin_hosts if h)
        self.refused = 0

    def host_allowed(self, host: str) -> bool:
        return _loopback(host) or host in self.admin_hosts

    def check(self, head: RequestHead) -> Refusal | None:
        refusal = self._check(head)
        if refusal is not None:
            self.refused += 1
        return refusal

    def _check(self, head: RequestHead) -> Refusal | None:
        authority = head.authority.decode("latin-1")
        if not self.host_allowed(split_host(authority)):
            return Refusal(
                421,
                f"Host {authority[:100]!r} is not this agent's admin address; the admin API"
                " answers only to localhost or a loopback address (DNS-rebinding defence)",
            )
        origin = head.header(b"origin")
        if origin is not None and origin.decode("latin-1") != f"http://{authority}":
            return Refusal(
                403,
                f"cross-origin request from {origin.decode('latin-1')[:100]!r} refused:"
                " the admin API is not for web pages",
            )
        if head.method == b"OPTIONS":
            return Refusal(405, "the admin API grants no CORS access")
        if head.method not in SAFE_METHODS:
            sent = head.header(REQUEST_HEADER.lower().encode())
            if sent != REQUEST_HEADER_VALUE.encode():
                return Refusal(
                    403,
                    f"{head.method.decode('latin-1')} needs the header"
                    f" '{REQUEST_HEADER}: {REQUEST_HEADER_VALUE}' (the peermesh CLI sends it);"
                    " refusing what may be a browser's cross-site request",
                )
        return None
