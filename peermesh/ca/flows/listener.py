"""The bootstrap listener's shell: its socket, its TLS identity, its methods.

It presents our mesh certificate once we have one (a joiner pins the root and checks
it), else a throwaway self-signed one (bootstrap needs confidentiality only).
"""

from __future__ import annotations

import ssl

import trio

from peermesh.ca import channel
from peermesh.ca import channel_messages as cm
from peermesh.ca.flows.bootstrap import Bootstrap
from peermesh.ca.flows.dkg import DkgParticipant
from peermesh.ca.flows.join import JoinHelper
from peermesh.ca.flows.signing import SigningService
from peermesh.ca.node import CaNode


class BootstrapListener:
    """Serves ``ca/bootstrap/*`` and ``ca/join*`` on ``--bootstrap-listen`` (inbound + 1)."""

    def __init__(
        self,
        node: CaNode,
        bootstrap: Bootstrap,
        dkg: DkgParticipant,
        signing: SigningService,
        join: JoinHelper,
    ) -> None:
        self.node = node
        self.server = channel.BootstrapServer(
            {
                cm.BOOT_HELLO.name: channel.serve(cm.BOOT_HELLO, bootstrap.serve_hello),
                cm.BOOT_PUSHPULL.name: channel.serve(cm.BOOT_PUSHPULL, bootstrap.serve_pushpull),
                cm.BOOT_DKG_BEGIN.name: channel.serve(cm.BOOT_DKG_BEGIN, dkg.boot_begin),
                cm.BOOT_DKG_DELIVER.name: channel.serve(cm.BOOT_DKG_DELIVER, dkg.deliver),
                cm.BOOT_DKG_FINISH.name: channel.serve(cm.BOOT_DKG_FINISH, dkg.boot_finish),
                cm.BOOT_COMMIT.name: channel.serve(cm.BOOT_COMMIT, signing.boot_commit),
                cm.BOOT_SIGN.name: channel.serve(cm.BOOT_SIGN, signing.boot_sign),
                cm.BOOT_ROOT.name: channel.serve(cm.BOOT_ROOT, bootstrap.serve_root),
                cm.JOIN_INFO.name: channel.serve(cm.JOIN_INFO, join.serve_info),
                cm.JOIN.name: channel.serve(cm.JOIN, join.serve_join),
            },
            mac_key=node.mac_key,
            context=self._server_context,
        )
        self._tls_ctx: tuple[int, ssl.SSLContext] | None = None
        self._ephemeral_ctx: ssl.SSLContext | None = None

    async def start(self, nursery: trio.Nursery) -> None:
        node = self.node
        inbound_host, inbound_port = node.ports.listeners.inbound()
        if node.settings.bootstrap_listen is not None:
            host, port = node.settings.bootstrap_listen
        else:
            host, port = inbound_host, inbound_port + 1
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = listeners[0].socket.getsockname()
        node.bootstrap_address = (str(bound[0]), int(bound[1]))
        node.ports.listeners.publish("bootstrap", node.bootstrap_address)
        nursery.start_soon(trio.serve_listeners, self.server.serve_connection, listeners)

    def _server_context(self) -> ssl.SSLContext:
        tls = self.node.ports.tls
        tls.maybe_reload()
        if tls.loaded:
            cached = self._tls_ctx
            if cached is None or cached[0] != tls.generation:
                try:
                    ctx = channel.server_context(tls.cert_path, tls.key_path)
                except (ssl.SSLError, OSError):
                    if cached is not None:
                        return cached[1]
                    raise
                self._tls_ctx = (tls.generation, ctx)
            assert self._tls_ctx is not None
            return self._tls_ctx[1]
        if self._ephemeral_ctx is None:
            self._ephemeral_ctx = channel.ephemeral_server_context(self.node.name)
        return self._ephemeral_ctx
