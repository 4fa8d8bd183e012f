"""The bootstrap listener: how agents talk before any of them holds a mesh certificate.

mTLS cannot authenticate anything at bootstrap (there is no root yet) nor a joining
agent (it has no certificate yet), so the agent runs a second, much smaller listener
(``--bootstrap-listen``, default inbound port + 1):

* TLS 1.3 with no client certificate. The server presents the agent's mesh
  certificate once it has one (a joiner pins the root and verifies it), else an
  ephemeral self-signed one generated at start (bootstrap: confidentiality only).
* One framed msgpack request, one framed reply, as many as the caller likes per
  connection: ``u32 length || msgpack``. It is not HTTP: nothing but the methods
  below can be reached, never the app nor another control method.
* ``ca/bootstrap/*`` requests and their replies carry an HMAC-SHA256 keyed from the
  bootstrap token (HKDF), over method, body, timestamp and a fresh nonce; the server
  refuses a stale timestamp or a repeated nonce.
* ``ca/join/info`` is public (the trust bundle, which is public anyway); ``ca/join``
  carries the join token's secret and is only sent after the client has verified the
  server's certificate against the root its token pins.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import os
import secrets
import ssl
import struct
import tempfile
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Final

import msgpack
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID

from certs.x509 import certificate_builder
from peermesh.ca.errors import ChannelError, ChannelRefused
from peermesh.core.durable import SECRET_MODE, atomic_write
from peermesh.core.errors import PeermeshError
from peermesh.core.wire import WireError
from peermesh.net.rpc.method import Req, Resp, RpcMethod

log = logging.getLogger(__name__)

ALPN: Final[str] = "peermesh-bootstrap/1"
MAX_FRAME: Final[int] = 4 << 20
MAX_SKEW: Final[float] = 300.0
BOOTSTRAP_PREFIX: Final[str] = "ca/bootstrap/"
JOIN_METHODS: Final[frozenset[str]] = frozenset({"ca/join/info", "ca/join"})

#: Observers of every frame this process sends on a bootstrap channel (both sides),
#: as plaintext before TLS. Used by tests to prove no secret crosses the wire.
WIRE_TAPS: list[Callable[[bytes], None]] = []

Handler = Callable[[Any], Awaitable[Any]]


def _hkdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def bootstrap_mac_key(token: bytes) -> bytes:
    """The HMAC key of bootstrap messages (never the token itself on the wire)."""
    return _hkdf(token, b"peermesh/bootstrap/mac/v1")


def gossip_key_from_token(token: bytes) -> bytes:
    """The mesh gossip key when no ``--gossip-key-file`` is given at bootstrap."""
    return _hkdf(token, b"peermesh/bootstrap/gossip-key/v1")


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _mac(key: bytes, *parts: Any) -> bytes:
    return hmac.new(key, _pack(list(parts)), hashlib.sha256).digest()


async def _send_frame(stream: trio.abc.Stream, obj: Any) -> None:
    data = _pack(obj)
    for tap in WIRE_TAPS:
        tap(data)
    await stream.send_all(struct.pack(">I", len(data)) + data)


async def _receive_exactly(stream: trio.abc.Stream, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.receive_some(n - len(buf))
        if not chunk:
            return None if not buf else bytes(buf)
        buf += chunk
    return bytes(buf)


async def _receive_frame(stream: trio.abc.Stream) -> Any:
    head = await _receive_exactly(stream, 4)
    if head is None:
        return None
    if len(head) != 4:
        raise ChannelError("connection closed inside a frame header")
    (length,) = struct.unpack(">I", head)
    if length > MAX_FRAME:
        raise ChannelError(f"frame of {length} bytes is over the {MAX_FRAME}-byte limit")
    data = await _receive_exactly(stream, length)
    if data is None or len(data) != length:
        raise ChannelError("connection closed inside a frame")
    try:
        return msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise ChannelError(f"frame is not msgpack: {exc}") from None


def _base_context(protocol: int) -> ssl.SSLContext:
    ctx = ssl.SSLContext(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols([ALPN])
    return ctx


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """Server side: our certificate, no client certificate asked for."""
    ctx = _base_context(ssl.PROTOCOL_TLS_SERVER)
    ctx.verify_mode = ssl.CERT_NONE
    ctx.num_tickets = 0
    ctx.load_cert_chain(certfile=str(cert_path), keyfile=str(key_path))
    return ctx


def ephemeral_server_context(node: str) -> ssl.SSLContext:
    """A throwaway self-signed server identity for the time before any root exists."""
    key = Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"peermesh bootstrap {node}")])
    now = dt.datetime.now(dt.UTC)
    cert = certificate_builder(
        name,
        name,
        key.public_key(),
        x509.random_serial_number(),
        now - dt.timedelta(minutes=5),
        now + dt.timedelta(days=30),
    ).sign(key, None)
    with tempfile.TemporaryDirectory(prefix="peermesh-boot-") as tmp:
        cert_path, key_path = Path(tmp) / "c.pem", Path(tmp) / "k.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        return server_context(cert_path, key_path)


def bootstrap_client_context() -> ssl.SSLContext:
    """Bootstrap calls: the server is authenticated by the token MAC on its reply."""
    ctx = _base_context(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def pinned_client_context(root_pem: bytes) -> ssl.SSLContext:
    """Join calls: the server must present a certificate issued by the pinned root."""
    ctx = _base_context(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.load_verify_locations(cadata=root_pem.decode("ascii"))
    return ctx


class BootstrapServer:
    """Serves the bootstrap methods; everything else on this port is refused."""

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        *,
        mac_key: bytes | None,
        context: Callable[[], ssl.SSLContext],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.handlers = dict(handlers)
        self.mac_key = mac_key
        self.context = context
        self.clock = clock
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self.refused = 0

    async def serve_connection(self, tcp: trio.SocketStream) -> None:
        stream = trio.SSLStream(tcp, self.context(), server_side=True)
        try:
            with trio.fail_after(10):
                await stream.do_handshake()
            while True:
                with trio.fail_after(30):
                    request = await _receive_frame(stream)
                if request is None:
                    break
                reply = await self._dispatch(request)
                await _send_frame(stream, reply)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
            pass
        except (ChannelError, trio.TooSlowError) as exc:
            log.debug("bootstrap connection dropped: %s", exc)
        finally:
            await trio.aclose_forcefully(stream)

    def _authentic(self, request: Mapping[str, Any]) -> str | None:
        """Why a bootstrap request is not authentic, or None."""
        if self.mac_key is None:
            return "this agent has no bootstrap token (--bootstrap-token-file)"
        nonce, stamp, mac = request.get("n"), request.get("t"), request.get("a")
        if not isinstance(nonce, bytes) or not isinstance(stamp, int | float):
            return "missing nonce or timestamp"
        if not isinstance(mac, bytes) or not hmac.compare_digest(
            mac, _mac(self.mac_key, "req", request.get("m"), request.get("b"), stamp, nonce)
        ):
            return "bad MAC: the caller does not hold our bootstrap token"
        if abs(self.clock() - stamp) > MAX_SKEW:
            return f"timestamp more than {MAX_SKEW:.0f}s away from ours; check clocks (NTP)"
        if nonce in self._seen:
            return "replayed request"
        self._seen[nonce] = None
        while len(self._seen) > 10000:
            self._seen.popitem(last=False)
        return None

    async def _dispatch(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict) or not isinstance(request.get("m"), str):
            return {"s": 400, "e": "request is not a {m, b, ...} map"}
        method: str = request["m"]
        nonce = request.get("n")
        if method.startswith(BOOTSTRAP_PREFIX):
            why = self._authentic(request)
            if why is not None:
                self.refused += 1
                log.info("bootstrap request %s refused: %s", method, why)
                return {"s": 401, "e": f"{method}: {why}", "n": nonce}
        elif method not in JOIN_METHODS:
            return {"s": 404, "e": f"{method!r} is not served on the bootstrap listener"}
        handler = self.handlers.get(method)
        if handler is None:
            return {"s": 404, "e": f"{method!r} is not served on the bootstrap listener"}
        try:
            result = await handler(request.get("b"))
            reply: dict[str, Any] = {"s": 200, "r": result, "n": nonce}
        except PeermeshError as exc:
            reply = {"s": exc.status, "e": exc.message, "n": nonce}
        if method.startswith(BOOTSTRAP_PREFIX) and self.mac_key is not None:
            reply["a"] = _mac(
                self.mac_key, "rep", method, nonce, reply["s"], reply.get("r"), reply.get("e")
            )
        return reply


async def call(
    address: tuple[str, int],
    method: str,
    body: Any = None,
    *,
    context: ssl.SSLContext,
    mac_key: bytes | None = None,
    timeout: float = 5.0,
) -> Any:
    """One request on a fresh connection; the result, or ChannelError/ChannelRefused."""
    nonce = secrets.token_bytes(16)
    stamp = time.time()
    request: dict[str, Any] = {"m": method, "b": body, "t": stamp, "n": nonce}
    if mac_key is not None:
        request["a"] = _mac(mac_key, "req", method, body, stamp, nonce)
    where = f"{address[0]}:{address[1]}"
    reply: Any = None
    with trio.move_on_after(timeout) as scope:
        try:
            tcp = await trio.open_tcp_stream(*address)
        except OSError as exc:
            raise ChannelError(f"{method} to {where}: {exc.strerror or exc}") from None
        stream = trio.SSLStream(tcp, context, server_hostname=None)
        try:
            await stream.do_handshake()
            await _send_frame(stream, request)
            reply = await _receive_frame(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError) as exc:
            raise ChannelError(f"{method} to {where}: {exc}") from None
        finally:
            await trio.aclose_forcefully(stream)
    if scope.cancelled_caught:
        raise ChannelError(f"{method} to {where}: no reply within {timeout}s")
    if not isinstance(reply, dict) or "s" not in reply:
        raise ChannelError(f"{method} to {where}: malformed reply")
    if mac_key is not None:
        expected = _mac(
            mac_key, "rep", method, nonce, reply.get("s"), reply.get("r"), reply.get("e")
        )
        mac = reply.get("a")
        if not isinstance(mac, bytes) or not hmac.compare_digest(mac, expected):
            raise ChannelError(
                f"{method} to {where}: reply not authenticated with our bootstrap token"
                f" ({reply.get('e') or 'no MAC'}); do all agents share one --bootstrap-token-file?"
            )
    if reply["s"] != 200:
        raise ChannelRefused(int(reply["s"]), f"{method} refused by {where}: {reply.get('e')}")
    return reply.get("r")


def serve(method: RpcMethod[Req, Resp], handler: Callable[[Req], Awaitable[Resp]]) -> Handler:
    """A listener handler for ``method``: the body decoded and checked, the reply encoded."""

    async def served(body: Any) -> Any:
        return (await handler(method.request.from_wire(body))).to_wire()

    return served


async def call_method(
    address: tuple[str, int],
    method: RpcMethod[Req, Resp],
    body: Req,
    *,
    context: ssl.SSLContext,
    mac_key: bytes | None = None,
    timeout: float = 5.0,
) -> Resp:
    """A typed :func:`call`; a reply that does not decode as the method's is a ChannelError."""
    raw = await call(
        address, method.name, body.to_wire(), context=context, mac_key=mac_key, timeout=timeout
    )
    try:
        return method.response.from_wire(raw)
    except WireError as exc:
        raise ChannelError(f"{method.name} from {address[0]}:{address[1]}: {exc}") from None


MIN_TOKEN_BYTES: Final[int] = 16


def read_bootstrap_token(path: Path) -> bytes:
    """The bootstrap token in ``path``; ValueError says how to make a good one."""
    token = Path(path).read_bytes().strip()
    if len(token) < MIN_TOKEN_BYTES:
        raise ValueError(
            f"{path}: the bootstrap token must be at least {MIN_TOKEN_BYTES} bytes;"
            " make one with 'peermesh keygen bootstrap-token --out FILE'"
        )
    return token


def write_bootstrap_token(path: Path) -> Path:
    """A fresh bootstrap token file (mode 0600)."""
    atomic_write(path, secrets.token_hex(32).encode() + b"\n", SECRET_MODE)
    return path
