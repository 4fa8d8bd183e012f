"""Real mTLS over loopback with trio: handshakes, refusals, and certificate reload."""

from __future__ import annotations

import datetime as dt
import math
import re
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from certs.devca import pem_bundle
from certs.spiffe import SpiffeId
from peermesh.ca.devca import init_dev_ca
from peermesh.core.durable import SECRET_MODE, atomic_write
from peermesh.net.identity_files import BUNDLE_FILE, KEY_FILE
from peermesh.net.tls import (
    MeshTls,
    PeerIdentityError,
    TlsConfigError,
    TlsNotReady,
    identity_from_der,
    peer_identity,
)
from tests.support.pki import (
    TRUST_DOMAIN,
    issue_custom,
    make_foreign_root_dir,
    make_mesh_pki,
    make_no_cert_dir,
    make_two_uri_san_dir,
    mesh_ca,
    raw_client_context,
)

FRONTEND = SpiffeId.for_service(TRUST_DOMAIN, "frontend")
ORDERS = SpiffeId.for_service(TRUST_DOMAIN, "orders")


class FakeClock:
    """Monotonic clock the test advances by hand (no sleeping)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@dataclass(frozen=True)
class Accepted:
    """What the server saw for one connection."""

    identity: SpiffeId | None
    error: BaseException | None
    alpn: str | None = None
    version: str | None = None


@dataclass
class EchoServer:
    port: int
    results: trio.MemoryReceiveChannel[Accepted]
    accepted: list[Accepted] = field(default_factory=list)

    async def next_result(self) -> Accepted:
        with trio.fail_after(5):
            return await self.results.receive()


@asynccontextmanager
async def echo_server(context: Callable[[], ssl.SSLContext]) -> AsyncIterator[EchoServer]:
    """TLS echo server the way the proxy does it: handshake, peer_identity, then serve."""
    send, recv = trio.open_memory_channel[Accepted](math.inf)

    async def handler(tcp: trio.SocketStream) -> None:
        stream = trio.SSLStream(tcp, context(), server_side=True)
        try:
            await stream.do_handshake()
            identity = peer_identity(stream, TRUST_DOMAIN)
        except (trio.BrokenResourceError, PeerIdentityError) as exc:
            send.send_nowait(Accepted(None, exc))
            await trio.aclose_forcefully(stream)
            return
        send.send_nowait(
            Accepted(identity, None, stream.selected_alpn_protocol(), stream.version())
        )
        try:
            async for data in stream:
                await stream.send_all(data)
        except trio.BrokenResourceError:
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        yield EchoServer(port, recv)
        nursery.cancel_scope.cancel()


async def connect(port: int, ctx: ssl.SSLContext) -> trio.SSLStream[trio.SocketStream]:
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    stream = trio.SSLStream(tcp, ctx)
    with trio.fail_after(5):
        await stream.do_handshake()
    return stream


async def echo(stream: trio.SSLStream[trio.SocketStream], payload: bytes) -> bytes:
    with trio.fail_after(5):
        await stream.send_all(payload)
        got = b""
        while len(got) < len(payload):
            chunk = await stream.receive_some()
            if not chunk:
                break
            got += chunk
    return got


def served_serial(stream: trio.SSLStream[trio.SocketStream]) -> int:
    der = stream.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    return make_mesh_pki(tmp_path)


# -- contexts -----------------------------------------------------------------------------


def test_contexts_are_tls13_only_mutual_h2_and_trust_only_the_bundle(
    dirs: dict[str, Path],
) -> None:
    tls = MeshTls(dirs["node-a"], TRUST_DOMAIN)
    assert tls.loaded
    assert tls.identity == FRONTEND
    assert tls.not_after > dt.datetime.now(dt.UTC)
    for ctx in (tls.server_context(), tls.client_context()):
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
        assert ctx.maximum_version == ssl.TLSVersion.TLSv1_3
        assert ctx.verify_mode == ssl.CERT_REQUIRED
        assert not ctx.check_hostname
        cas = ctx.get_ca_certs()
        assert len(cas) == 1  # only our root, no system CAs
        assert "peermesh dev root" in str(cas[0]["subject"])


def test_missing_files_raise_or_wait_when_not_required(tmp_path: Path) -> None:
    with pytest.raises(TlsConfigError, match=r"cert\.pem is missing"):
        MeshTls(tmp_path / "empty", TRUST_DOMAIN)
    clock = FakeClock()
    tls = MeshTls(tmp_path / "later", TRUST_DOMAIN, require=False, clock=clock)
    assert not tls.loaded
    assert tls.last_reload_error is not None
    with pytest.raises(TlsNotReady, match="no usable TLS identity"):
        tls.server_context()
    ca = init_dev_ca(tmp_path / "ca", TRUST_DOMAIN)
    ca.issue("node-c", "billing", tmp_path / "later")
    # Not loaded yet, so the reload interval does not delay the first success.
    assert tls.client_context() is not None
    assert tls.loaded
    assert tls.identity == SpiffeId.for_service(TRUST_DOMAIN, "billing")
    assert tls.last_reload_error is None


def test_wrong_trust_domain_and_foreign_bundle_are_refused_at_load(tmp_path: Path) -> None:
    dirs = make_mesh_pki(tmp_path)
    with pytest.raises(TlsConfigError, match=r"trust domain 'mesh\.test'"):
        MeshTls(dirs["node-a"], "other.test")
    other = init_dev_ca(tmp_path / "other-ca", TRUST_DOMAIN)
    atomic_write(dirs["node-b"] / BUNDLE_FILE, pem_bundle([other.certificate]))
    with pytest.raises(TlsConfigError, match="not signed by any certificate"):
        MeshTls(dirs["node-b"], TRUST_DOMAIN)


# -- handshakes ---------------------------------------------------------------------------


async def test_mutual_tls_handshake_gives_both_sides_spiffe_ids_and_h2(
    dirs: dict[str, Path],
) -> None:
    server_tls = MeshTls(dirs["node-a"], TRUST_DOMAIN)
    client_tls = MeshTls(dirs["node-b"], TRUST_DOMAIN)
    async with echo_server(server_tls.server_context) as server:
        stream = await connect(server.port, client_tls.client_context())
        assert peer_identity(stream, TRUST_DOMAIN, expect=FRONTEND) == FRONTEND
        assert stream.selected_alpn_protocol() == "h2"
        assert stream.version() == "TLSv1.3"
        accepted = await server.next_result()
        assert accepted.error is None
        assert accepted.identity == ORDERS
        assert accepted.alpn == "h2"
        assert accepted.version == "TLSv1.3"
        assert await echo(stream, b"ping") == b"ping"
        with pytest.raises(PeerIdentityError, match=re.escape(f"expected {ORDERS}")):
            peer_identity(stream, TRUST_DOMAIN, expect=ORDERS)
        await stream.aclose()


async def test_client_without_certificate_is_refused_at_handshake(
    tmp_path: Path, dirs: dict[str, Path]
) -> None:
    server_tls = MeshTls(dirs["node-a"], TRUST_DOMAIN)
    bare = raw_client_context(make_no_cert_dir(tmp_path))
    async with echo_server(server_tls.server_context) as server:
        # In TLS 1.3 the client finishes its half before the server checks its
        # certificate, so the refusal may surface on the first read instead.
        with pytest.raises(trio.BrokenResourceError):
            stream = await connect(server.port, bare)
            await echo(stream, b"ping")
        accepted = await server.next_result()
        assert isinstance(accepted.error, trio.BrokenResourceError)
        assert "certificate" in str(accepted.error.__cause__)


async def test_client_certificate_from_another_root_is_refused(
    tmp_path: Path, dirs: dict[str, Path]
) -> None:
    server_tls = MeshTls(dirs["node-a"], TRUST_DOMAIN)
    foreign = MeshTls(make_foreign_root_dir(tmp_path), TRUST_DOMAIN)
    async with echo_server(server_tls.server_context) as server:
        with pytest.raises(trio.BrokenResourceError):
            stream = await connect(server.port, foreign.client_context())
            await echo(stream, b"ping")
        accepted = await server.next_result()
        assert isinstance(accepted.error, trio.BrokenResourceError)
        assert "certificate verify failed" in str(accepted.error.__cause__)


async def test_certificate_with_two_uri_sans_is_refused_by_peer_identity(
    tmp_path: Path, dirs: dict[str, Path]
) -> None:
    server_tls = MeshTls(dirs["node-a"], TRUST_DOMAIN)
    two = make_two_uri_san_dir(tmp_path)
    with pytest.raises(TlsConfigError, match="2 URI SANs"):
        MeshTls(two, TRUST_DOMAIN)  # we would not even load it as our own identity
    async with echo_server(server_tls.server_context) as server:
        stream = await connect(server.port, raw_client_context(two))  # chain itself is valid
        accepted = await server.next_result()
        assert isinstance(accepted.error, PeerIdentityError)
        assert "certificate has 2 URI SANs; an X.509-SVID carries exactly one" in str(
            accepted.error
        )
        try:
            got = await echo(stream, b"ping")
        except trio.BrokenResourceError:
            got = b""
        assert got == b""  # the server closed the connection instead of serving it


async def test_tls12_only_client_is_refused(dirs: dict[str, Path]) -> None:
    server_tls = MeshTls(dirs["node-a"], TRUST_DOMAIN)
    old = raw_client_context(dirs["node-b"])
    old.minimum_version = ssl.TLSVersion.TLSv1_2
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    async with echo_server(server_tls.server_context) as server:
        with pytest.raises(trio.BrokenResourceError):
            await connect(server.port, old)
        accepted = await server.next_result()
        assert isinstance(accepted.error, trio.BrokenResourceError)
        assert "unsupported protocol" in str(accepted.error.__cause__).lower()


# -- reload -------------------------------------------------------------------------------


async def test_reissued_cert_is_served_to_new_connections_while_open_ones_keep_working(
    tmp_path: Path, dirs: dict[str, Path]
) -> None:
    clock = FakeClock()
    server_tls = MeshTls(dirs["node-a"], TRUST_DOMAIN, reload_interval=30.0, clock=clock)
    client_tls = MeshTls(dirs["node-b"], TRUST_DOMAIN)
    async with echo_server(server_tls.server_context) as server:
        first = await connect(server.port, client_tls.client_context())
        old_serial = served_serial(first)
        assert (await server.next_result()).identity == ORDERS

        new_cert = mesh_ca(tmp_path).issue("node-a", "frontend", dirs["node-a"])
        assert new_cert.serial_number != old_serial

        # Within the reload interval the files are not even looked at.
        clock.t += 10
        second = await connect(server.port, client_tls.client_context())
        assert served_serial(second) == old_serial
        await server.next_result()

        clock.t += 30
        third = await connect(server.port, client_tls.client_context())
        assert served_serial(third) == new_cert.serial_number
        await server.next_result()
        assert server_tls.generation == 2
        assert server_tls.not_after == new_cert.not_valid_after_utc

        # The connection made before the rotation is still fine.
        assert await echo(first, b"still here") == b"still here"
        assert await echo(third, b"new") == b"new"
        for stream in (first, second, third):
            await stream.aclose()


def _write_garbage_key(data_dir: Path) -> None:
    atomic_write(data_dir / KEY_FILE, b"-----BEGIN PRIVATE KEY-----\nnope\n", SECRET_MODE)


def _write_other_key(data_dir: Path) -> None:
    key = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    atomic_write(data_dir / KEY_FILE, key, SECRET_MODE)


@pytest.mark.parametrize("break_key", [_write_garbage_key, _write_other_key])
async def test_bad_key_mid_rotation_keeps_old_contexts_and_records_error(
    tmp_path: Path, dirs: dict[str, Path], break_key: Callable[[Path], None]
) -> None:
    server_tls = MeshTls(dirs["node-a"], TRUST_DOMAIN, reload_interval=0)
    client_tls = MeshTls(dirs["node-b"], TRUST_DOMAIN)
    before = server_tls.server_context()
    break_key(dirs["node-a"])

    assert server_tls.maybe_reload(now=1.0) is False
    assert server_tls.server_context() is before
    assert server_tls.last_reload_error is not None
    assert "key.pem" in server_tls.last_reload_error
    with pytest.raises(TlsConfigError):
        server_tls.reload()

    async with echo_server(server_tls.server_context) as server:
        stream = await connect(server.port, client_tls.client_context())
        assert (await server.next_result()).identity == ORDERS
        assert await echo(stream, b"old key works") == b"old key works"
        await stream.aclose()

    # Finishing the rotation recovers on the next check.
    mesh_ca(tmp_path).issue("node-a", "frontend", dirs["node-a"])
    assert server_tls.server_context() is not before
    assert server_tls.last_reload_error is None


# -- peer identity unit checks -------------------------------------------------------------


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def test_identity_from_der_rejections(tmp_path: Path) -> None:
    make_mesh_pki(tmp_path)
    ca = mesh_ca(tmp_path)
    with pytest.raises(PeerIdentityError, match="no certificate"):
        identity_from_der(None, TRUST_DOMAIN)
    with pytest.raises(PeerIdentityError, match="cannot be parsed"):
        identity_from_der(b"\x30\x03junk", TRUST_DOMAIN)
    good = ca.issue("node-x", "pay", tmp_path / "x")
    assert identity_from_der(_der(good), TRUST_DOMAIN) == SpiffeId.for_service(TRUST_DOMAIN, "pay")
    with pytest.raises(PeerIdentityError, match="not ours"):
        identity_from_der(_der(good), "other.test")
    none = issue_custom(ca, tmp_path / "n", [x509.DNSName("node-n")])
    with pytest.raises(PeerIdentityError, match="0 URI SANs"):
        identity_from_der(_der(none), TRUST_DOMAIN)
    no_ext = issue_custom(ca, tmp_path / "e", [])
    with pytest.raises(PeerIdentityError, match="no subjectAltName"):
        identity_from_der(_der(no_ext), TRUST_DOMAIN)
    https = issue_custom(ca, tmp_path / "h", [x509.UniformResourceIdentifier("https://x.test/")])
    with pytest.raises(PeerIdentityError, match="not a valid SPIFFE ID"):
        identity_from_der(_der(https), TRUST_DOMAIN)
    ca_leaf = issue_custom(
        ca,
        tmp_path / "c",
        [x509.UniformResourceIdentifier("spiffe://mesh.test/svc/sneaky")],
        ca_flag=True,
    )
    with pytest.raises(PeerIdentityError, match="CA certificate"):
        identity_from_der(_der(ca_leaf), TRUST_DOMAIN)
