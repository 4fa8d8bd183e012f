"""HTTP/1.1 <-> HTTP/2 header translation, as pure functions (sans-IO).

Headers are lists of ``(name, value)`` byte pairs with lowercase names, which is
what both h11 and h2 hand us. A proxy must drop hop-by-hop headers (RFC 9110
§7.6.1, RFC 9113 §8.2.2): they describe one connection, not the message.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from peermesh.core.errors import PeermeshError

Header = tuple[bytes, bytes]
Headers = list[Header]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"http2-settings",
    }
)

#: Names the mesh owns; an app or peer cannot inject them.
MESH_ERROR_HEADER = b"x-peermesh-error"
CLIENT_CERT_HEADER = b"x-forwarded-client-cert"

MESH_DOMAIN_SUFFIXES = (".mesh", ".svc", ".svc.cluster.local")


class HeaderError(PeermeshError, ValueError):
    """A request whose headers cannot be proxied (answered with 400)."""

    default_status = 400
    default_code = "bad-request"


@dataclass(frozen=True)
class RequestHead:
    """A request as the mesh sees it, independent of the wire version."""

    method: bytes
    scheme: bytes
    authority: bytes
    path: bytes
    headers: tuple[Header, ...]

    def header(self, name: bytes) -> bytes | None:
        """First value of ``name`` (lowercase), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


def strip_hop_by_hop(headers: Iterable[Header], *, keep_te_trailers: bool = True) -> Headers:
    """Drop hop-by-hop headers and every header that ``Connection`` names.

    ``TE: trailers`` survives because gRPC needs it end to end.
    """
    headers = list(headers)
    named: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            named.update(token.strip().lower() for token in value.split(b",") if token.strip())
    out: Headers = []
    for name, value in headers:
        if name in named or name.startswith(b"proxy-"):
            continue
        if name == b"te":
            if keep_te_trailers and b"trailers" in [t.strip().lower() for t in value.split(b",")]:
                out.append((b"te", b"trailers"))
            continue
        if name in HOP_BY_HOP:
            continue
        out.append((name, value))
    return out


def split_cookies(headers: Iterable[Header]) -> Headers:
    """HTTP/2 may carry one cookie pair per field (RFC 9113 §8.2.3), which compresses better."""
    out: Headers = []
    for name, value in headers:
        if name == b"cookie":
            for crumb in value.split(b";"):
                crumb = crumb.strip()
                if crumb:
                    out.append((b"cookie", crumb))
        else:
            out.append((name, value))
    return out


def join_cookies(headers: Iterable[Header]) -> Headers:
    """HTTP/1.1 allows a single Cookie field: join HTTP/2's crumbs with ``; ``."""
    crumbs: list[bytes] = []
    out: Headers = []
    first_index = -1
    for name, value in headers:
        if name == b"cookie":
            if first_index < 0:
                first_index = len(out)
                out.append((b"cookie", b""))
            crumbs.append(value)
        else:
            out.append((name, value))
    if first_index >= 0:
        out[first_index] = (b"cookie", b"; ".join(crumbs))
    return out


def destination_service(authority: bytes) -> str:
    """The mesh service an authority names: ``orders``, ``orders:80``, ``orders.mesh``."""
    text = authority.decode("ascii", "replace").strip().lower()
    if not text:
        raise HeaderError("request has no Host or :authority; cannot tell which service it is for")
    if text.startswith("["):
        raise HeaderError(f"authority {text!r} is an IP literal, not a mesh service name")
    host = text.rsplit(":", 1)[0] if ":" in text else text
    for suffix in MESH_DOMAIN_SUFFIXES:
        if host.endswith(suffix):
            host = host[: -len(suffix)]
            break
    if not host or not all(c.isalnum() or c in "-_." for c in host):
        raise HeaderError(f"authority {text!r} is not a valid service name")
    # "orders.default" (namespace style) names the service "orders".
    return host.split(".", 1)[0]


#: Request ids only need to be unique, not secret: a PRNG seeded from the OS spares
#: a getrandom() syscall per request.
_request_ids = random.Random(secrets.randbits(128))


def new_request_id() -> bytes:
    """A random request id in the UUID-like shape Envoy uses."""
    raw = f"{_request_ids.getrandbits(128):032x}"
    return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}".encode()


def add_proxy_headers(headers: Headers, client_address: str | None) -> Headers:
    """Add ``x-request-id`` when absent and append the client to ``x-forwarded-for``."""
    out: Headers = []
    xff: bytes | None = None
    has_request_id = False
    for name, value in headers:
        if name == b"x-forwarded-for":
            xff = value if xff is None else xff + b", " + value
            continue
        if name == b"x-request-id":
            has_request_id = True
        out.append((name, value))
    if client_address:
        addr = client_address.encode()
        xff = addr if xff is None else xff + b", " + addr
    if xff is not None:
        out.append((b"x-forwarded-for", xff))
    if not has_request_id:
        out.append((b"x-request-id", new_request_id()))
    return out


def h1_request_to_head(
    method: bytes, target: bytes, headers: Sequence[Header], *, client_address: str | None
) -> RequestHead:
    """Turn an HTTP/1.1 request (origin- or absolute-form) into a mesh request head."""
    host: bytes | None = None
    for name, value in headers:
        if name == b"host":
            host = value
            break
    if target.startswith((b"http://", b"https://")):
        parts = urlsplit(target.decode("ascii", "replace"))
        if not parts.netloc:
            raise HeaderError(f"absolute-form target {target!r} has no host")
        authority = parts.netloc.encode()
        path = (parts.path or "/").encode()
        if parts.query:
            path += b"?" + parts.query.encode()
    elif target == b"*" or target.startswith(b"/"):
        if host is None:
            raise HeaderError("HTTP/1.1 request has no Host header")
        authority, path = host, target
    else:
        raise HeaderError(
            f"request target {target[:80]!r} is neither origin-form nor absolute-form"
            " (CONNECT tunnels are not supported)"
        )
    regular = [(n, v) for n, v in headers if n != b"host"]
    regular = split_cookies(add_proxy_headers(strip_hop_by_hop(regular), client_address))
    return RequestHead(
        method=method.upper(),
        scheme=b"http",
        authority=authority,
        path=path,
        headers=tuple(regular),
    )


def h2_request_to_head(headers: Sequence[Header], *, client_address: str | None) -> RequestHead:
    """Turn an HTTP/2 request header block into a mesh request head."""
    pseudo: dict[bytes, bytes] = {}
    regular: Headers = []
    for name, value in headers:
        if name.startswith(b":"):
            pseudo[name] = value
        else:
            regular.append((name, value))
    method = pseudo.get(b":method")
    path = pseudo.get(b":path")
    if method is None or path is None:
        raise HeaderError("HTTP/2 request lacks :method or :path")
    authority = pseudo.get(b":authority")
    hosts = [value for name, value in regular if name == b"host"]
    if authority is not None and any(h != authority for h in hosts):
        # RFC 9113 §8.3.1: a Host that disagrees with :authority is malformed; each hop
        # would otherwise route by a different one.
        raise HeaderError("HTTP/2 request has a Host header that disagrees with :authority")
    if authority is None and hosts:
        authority = hosts[0]
    if authority is None:
        raise HeaderError("HTTP/2 request has no :authority or Host")
    regular = [(n, v) for n, v in regular if n != b"host"]
    regular = add_proxy_headers(strip_hop_by_hop(regular), client_address)
    return RequestHead(
        method=method,
        scheme=pseudo.get(b":scheme", b"http"),
        authority=authority,
        path=path,
        headers=tuple(regular),
    )


def head_to_h2(head: RequestHead, *, scheme: bytes | None = None) -> Headers:
    """The HTTP/2 header block for a request head."""
    out: Headers = [
        (b":method", head.method),
        (b":scheme", scheme or head.scheme),
        (b":authority", head.authority),
        (b":path", head.path),
    ]
    out.extend(head.headers)
    return out


def head_to_h1(head: RequestHead) -> Headers:
    """HTTP/1.1 request headers for a head: Host first, cookies joined, no pseudo-headers."""
    out: Headers = [(b"host", head.authority)]
    out.extend(join_cookies((n, v) for n, v in head.headers if n != b"te"))
    return out


def response_to_h1(headers: Sequence[Header]) -> tuple[int, Headers]:
    """Status and HTTP/1.1 response headers from an HTTP/2 response header block."""
    status = 502
    regular: Headers = []
    for name, value in headers:
        if name == b":status":
            status = int(value)
        elif not name.startswith(b":"):
            regular.append((name, value))
    return status, join_cookies(strip_hop_by_hop(regular, keep_te_trailers=False))


def response_to_h2(status: int, headers: Iterable[Header]) -> Headers:
    """HTTP/2 response header block from a status and (any version's) response headers."""
    out: Headers = [(b":status", str(status).encode())]
    out.extend(strip_hop_by_hop(headers, keep_te_trailers=False))
    return out


def status_of(headers: Sequence[Header]) -> int:
    """The :status of an HTTP/2 response header block."""
    for name, value in headers:
        if name == b":status":
            return int(value)
    raise HeaderError("response header block has no :status")


def without(headers: Iterable[Header], *names: bytes) -> Headers:
    """Headers minus every field called one of ``names``."""
    drop = set(names)
    return [(n, v) for n, v in headers if n not in drop]


#: The most header fields one request may carry (Envoy's ``max_headers_count``).
MAX_HEADER_FIELDS = 100
#: Header list bytes a peer agent accepts, counted as HTTP/2 does (RFC 9113 §6.5.2).
MAX_HEADER_LIST_SIZE = 64 << 10
_FIELD_OVERHEAD = 32  # bytes per field on top of name and value (RFC 7541 §4.1)


class HeadersTooLarge(HeaderError):
    """The request's header section is over what the peer agent would accept (431)."""

    default_status = 431
    default_code = "headers-too-large"


def h2_list_size(head: RequestHead) -> int:
    """The header list size of ``head`` as its HTTP/2 HEADERS frame carries it."""
    pseudo = (
        (b":method", head.method),
        (b":scheme", head.scheme),
        (b":authority", head.authority),
        (b":path", head.path),
    )
    return sum(len(n) + len(v) + _FIELD_OVERHEAD for n, v in (*pseudo, *head.headers))


def fit_request_head(head: RequestHead) -> RequestHead:
    """``head`` within the limits the peer agent enforces, or HeadersTooLarge.

    Checked by the sending agent so that a request the receiving agent would refuse
    is refused to its own app (431), never sent on the connection other apps share.
    Cookie crumbs each cost the 32-byte field overhead: when they alone push the list
    over, the cookie travels as one field (RFC 9113 §8.2.3 allows either form).
    """
    size = h2_list_size(head)
    crumbs = sum(1 for n, _ in head.headers if n == b"cookie")
    if size > MAX_HEADER_LIST_SIZE and crumbs > 1:
        head = RequestHead(
            head.method, head.scheme, head.authority, head.path, tuple(join_cookies(head.headers))
        )
        size = h2_list_size(head)
        crumbs = 1
    fields = len(head.headers) - max(crumbs - 1, 0)  # a Cookie is one field, however split
    if size > MAX_HEADER_LIST_SIZE:
        raise HeadersTooLarge(
            f"request headers are {size} bytes as HTTP/2 counts them;"
            f" the limit is {MAX_HEADER_LIST_SIZE}"
        )
    if fields > MAX_HEADER_FIELDS:
        raise HeadersTooLarge(
            f"request has {fields} header fields; the limit is {MAX_HEADER_FIELDS}"
        )
    return head
