"""The trio shell around the sans-IO SWIM core: UDP datagrams, timers, push-pull, endpoints.

The core (``gossip.swim.Swim``) decides; this module only moves bytes and sleeps:
datagrams in and out of one UDP socket, ``tick`` at the core's next deadline, and
full-state push-pull exchanges carried as control RPCs over the agents' mTLS HTTP/2
connections (``/peermesh.v1/gossip/pushpull``). Joining is such an exchange with a
peer's *inbound* address, so only a holder of a mesh certificate can join; the UDP
probes that follow are sealed with the mesh gossip key.

The live member table is also the proxy's endpoint table (``EndpointSource``).
"""

from __future__ import annotations

import logging
import random
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from gossip.codec import Codec, KeyfileError, Keyring, parse_keyfile
from gossip.messages import Address, Member, MemberState, NodeMeta
from gossip.profiles import Profile
from gossip.swim import (
    Event,
    MemberDead,
    MemberJoined,
    MemberLeft,
    MemberSuspect,
    MemberUpdated,
    Output,
    SendDatagram,
    StartPushPull,
    Swim,
)
from peermesh.core.durable import atomic_write
from peermesh.core.endpoint import Endpoint
from peermesh.membership.messages import PUSH_PULL, PushPullReply, PushPullRequest
from peermesh.net.rpc import ControlRequest, RpcError
from peermesh.net.rpc.client import ControlClient
from peermesh.net.rpc.router import ControlRouter

log = logging.getLogger(__name__)

MAX_DATAGRAM_READ = 65536
KEY_CHECK_INTERVAL = 5.0  # how often the gossip key file is checked for rotation


@dataclass(frozen=True)
class GossipSettings:
    """How this node takes part in gossip."""

    name: str
    bind: tuple[str, int]
    advertise: str
    inbound_port: int
    services: dict[str, dict[str, str]]
    profile: Profile
    keyring: Keyring | None
    join: tuple[tuple[str, int], ...] = ()
    key_file: Path | None = None
    #: Where the last start's epoch is kept, so a restart never goes below it.
    epoch_file: Path | None = None


#: How far above the previous life a restart starts when the clock says otherwise:
#: well past any incarnation bumps (refutations) that life made.
EPOCH_STEP = 1_000_000


def next_epoch(epoch_file: Path | None, wall_ms: int) -> int:
    """A start number above every earlier start of this node, whatever the wall clock says.

    Wall-clock milliseconds, unless the clock is behind the last start recorded in
    ``epoch_file`` (a restart with a skewed or reset clock): then the last one plus
    :data:`EPOCH_STEP`. The new value is written durably before it is used, because
    peers drop datagrams from an older epoch as replays and keep the old incarnation.
    """
    last = -1
    if epoch_file is not None and epoch_file.exists():
        try:
            last = int(epoch_file.read_text().strip())
        except ValueError:
            log.warning("%s is not a number; starting from the wall clock", epoch_file)
    epoch = wall_ms if wall_ms > last else last + EPOCH_STEP
    if epoch_file is not None:
        epoch_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(epoch_file, f"{epoch}\n".encode())
    return epoch


class Membership:
    """Runs SWIM for the agent and answers "where does service X run?"."""

    def __init__(
        self,
        settings: GossipSettings,
        control: ControlClient,
        router: ControlRouter,
        *,
        rng: random.Random | None = None,
        on_event: Callable[[Event], None] | None = None,
        on_internal_error: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.on_internal_error = on_internal_error
        self.internal_errors = 0
        self.control = control
        self.rng = rng or random.Random()
        self.on_event = on_event
        self._socket: trio.socket.SocketType | None = None
        self._raw: socket.socket
        self._wakeup = trio.Event()
        self._swim: Swim | None = None
        self._nursery: trio.Nursery | None = None
        self.bound: tuple[str, int] = settings.bind
        self.events: list[tuple[float, str, str]] = []  # (time, kind, member) recent history
        self.push_pull_failures = 0
        self.joined = trio.Event()
        #: How push-pull state reaches a peer: ``await transport((host, port), state)``
        #: returns the peer's state. Defaults to the mTLS control RPC; an agent without a
        #: certificate yet (bootstrap) can swap in a token-authenticated channel. Raise
        #: RpcError on failure.
        self.transport: Callable[[tuple[str, int], bytes], Awaitable[Any]] = self._mtls_exchange
        router.serve(PUSH_PULL, self._serve_push_pull)

    # -- setup ------------------------------------------------------------------------
    @property
    def swim(self) -> Swim:
        assert self._swim is not None, "membership is not running"
        return self._swim

    @property
    def running(self) -> bool:
        return self._swim is not None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        s = self.settings
        raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            raw.bind(s.bind)
        except OSError as exc:
            raw.close()
            raise OSError(
                exc.errno, f"cannot bind gossip UDP {s.bind[0]}:{s.bind[1]}: {exc.strerror}"
            ) from None
        raw.setblocking(False)
        # Sends are synchronous and non-blocking (a full buffer is just packet loss);
        # receives go through trio.
        self._raw = raw
        sock = trio.socket.from_stdlib_socket(raw)
        self._socket = sock
        self.bound = sock.getsockname()[:2]
        meta = NodeMeta.create(
            (s.advertise,),
            gossip_port=self.bound[1],
            inbound_port=s.inbound_port,
            services=s.services,
        )
        now = trio.current_time()
        # A restarted node must start above what the mesh remembers of its previous life
        # (incarnation) and above its old datagrams (epoch), even with its clock behind.
        epoch = next_epoch(s.epoch_file, int(time.time() * 1000))
        codec = Codec(s.name, keyring=s.keyring, insecure=s.keyring is None, epoch=epoch)
        self._swim = Swim(
            s.name, meta, codec=codec, profile=s.profile, rng=self.rng, now=now,
            incarnation=epoch,
        )  # fmt: skip
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._receive_loop)
            nursery.start_soon(self._timer_loop)
            if s.key_file is not None and s.keyring is not None:
                nursery.start_soon(self._watch_key_file, s.key_file, s.keyring)
            for address in s.join:
                nursery.start_soon(self.join_via, address)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                sock.close()

    # -- the loops ----------------------------------------------------------------------
    async def _receive_loop(self) -> None:
        assert self._socket is not None
        while True:
            try:
                data, addr = await self._socket.recvfrom(MAX_DATAGRAM_READ)
            except OSError as exc:  # e.g. ICMP port unreachable surfacing on Linux
                log.debug("gossip recv error: %s", exc)
                continue
            try:
                self._apply(self.swim.handle_datagram(trio.current_time(), addr[:2], data))
            except Exception:
                self._internal_error(f"datagram from {addr[:2]}")

    def _internal_error(self, what: str) -> None:
        """One datagram or exchange that broke a rule we did not foresee: drop it, log the
        traceback, count it; membership goes on with the next one."""
        self.internal_errors += 1
        log.exception("gossip input dropped (%s)", what)
        if self.on_internal_error is not None:
            self.on_internal_error("gossip")

    async def _timer_loop(self) -> None:
        while True:
            deadline = self.swim.next_deadline()
            with trio.move_on_at(deadline):
                await self._wakeup.wait()
            self._wakeup = trio.Event()
            # The loop recomputes the deadline itself: waking ourselves would spin.
            self._apply(self.swim.tick(trio.current_time()), wake=False)

    def _apply(self, outputs: Iterable[Output], *, wake: bool = True) -> None:
        """Carry out the core's decisions: send, start exchanges, publish events."""
        for output in outputs:
            if isinstance(output, SendDatagram):
                self._send(output.addr, output.data)
            elif isinstance(output, StartPushPull):
                if self._nursery is not None:
                    self._nursery.start_soon(self._push_pull, output)
            else:
                self._record(output)
        if wake:
            self._wakeup.set()  # news from outside may move the next deadline earlier

    def _send(self, addr: Address, data: bytes) -> None:
        try:
            self._raw.sendto(data, addr)
        except BlockingIOError:
            pass  # UDP: a full buffer is packet loss, which SWIM tolerates
        except OSError as exc:
            log.debug("gossip send to %s failed: %s", addr, exc)

    def _record(self, event: Event) -> None:
        kind = {
            MemberJoined: "joined",
            MemberSuspect: "suspect",
            MemberDead: "dead",
            MemberLeft: "left",
            MemberUpdated: "updated",
        }[type(event)]
        self.events.append((trio.current_time(), kind, event.member.name))
        del self.events[:-200]
        if kind in ("joined", "dead", "left"):
            log.info("member %s %s", event.member.name, kind)
        if not self.joined.is_set() and self.swim.num_live > 1:
            self.joined.set()
        if self.on_event is not None:
            self.on_event(event)

    async def _watch_key_file(self, path: Path, keyring: Keyring) -> None:
        """Rotate keys without a restart: the file's keys become the keyring's."""
        self.key_file_error: str | None = None
        last = _stamp(path)
        while True:
            await trio.sleep(KEY_CHECK_INTERVAL)
            stamp = _stamp(path)
            if stamp == last:
                continue
            last = stamp
            try:
                keys = parse_keyfile(await trio.Path(path).read_text(encoding="ascii"))
                sync_keyring(keyring, keys)
            except (OSError, UnicodeDecodeError, KeyfileError, ValueError) as exc:
                self.key_file_error = f"{path}: {exc}; keeping the previous keys"
                log.warning("gossip key file not reloaded: %s", self.key_file_error)
                continue
            self.key_file_error = None
            log.info("gossip keyring reloaded from %s (%d keys)", path, len(keys))

    # -- push-pull over mTLS --------------------------------------------------------------
    async def join_via(self, address: tuple[str, int], *, attempts: int = 0) -> bool:
        """Join through a peer's inbound address (``--join`` or mDNS); retries with backoff.

        ``attempts=0`` keeps trying until joined (seeds may start after us).
        """
        delay = 0.2
        tried = 0
        while not attempts or tried < attempts:
            tried += 1
            if await self._exchange(address, joining=True):
                return True
            await trio.sleep(self.rng.uniform(0, delay))
            delay = min(delay * 2, 10.0)
        return False

    async def _push_pull(self, action: StartPushPull) -> None:
        member = self.swim.member(action.node) if action.node else None
        if member is None:
            return
        host = member.meta.addresses[0] if member.meta.addresses else action.addr[0]
        await self._exchange((host, member.meta.inbound_port), joining=False)

    async def _mtls_exchange(self, address: tuple[str, int], state: bytes) -> Any:
        """The default push-pull transport: a control RPC over the mTLS connection pool."""
        endpoint = Endpoint(service="", host=address[0], port=address[1])
        reply = await self.control.call(endpoint, PUSH_PULL, PushPullRequest(state), timeout=5.0)
        return reply.state

    async def _exchange(self, address: tuple[str, int], *, joining: bool) -> bool:
        try:
            if joining:
                self._apply(self.swim.join(trio.current_time(), ()))
            reply = await self.transport(address, self.swim.push_pull_state())
        except RpcError as exc:
            self.push_pull_failures += 1
            log.debug("push-pull with %s:%d failed: %s", address[0], address[1], exc)
            return False
        if not isinstance(reply, bytes):
            self.push_pull_failures += 1
            return False
        try:
            self._apply(self.swim.merge_push_pull(trio.current_time(), reply))
        except Exception:
            self.push_pull_failures += 1
            self._internal_error(f"push-pull reply from {address[0]}:{address[1]}")
            return False
        return True

    async def _serve_push_pull(self, request: ControlRequest[PushPullRequest]) -> PushPullReply:
        return PushPullReply(self.answer_push_pull(request.body.state))

    def answer_push_pull(self, body: Any) -> bytes:
        """Merge a caller's state, then answer with ours (any transport may call this)."""
        if not self.running:
            raise RpcError(503, "gossip is not running on this agent yet")
        if not isinstance(body, bytes):
            raise RpcError(400, "push-pull body must be the msgpack state bytes")
        before = self.swim.stats.push_pull_rejected
        # Merge first, then answer: the caller learns what we know including itself.
        self._apply(self.swim.merge_push_pull(trio.current_time(), body))
        if self.swim.stats.push_pull_rejected != before:
            raise RpcError(400, "push-pull state was malformed or came from ourselves")
        return self.swim.push_pull_state()

    # -- changing ourselves ----------------------------------------------------------------
    def update_services(self, services: dict[str, dict[str, str]]) -> None:
        """Advertise new services/labels (a new incarnation, gossiped to everyone)."""
        meta = self.swim.meta.with_services(services)
        self._apply(self.swim.update_metadata(trio.current_time(), meta))

    async def leave(self, timeout: float = 2.0) -> None:
        """Tell the mesh we are leaving (not failing) and give the news time to spread."""
        if not self.running or self.swim.leaving:
            return
        self._apply(self.swim.leave(trio.current_time()))
        with trio.move_on_after(timeout):
            while not self.swim.leave_complete:
                await trio.sleep(0.05)
                self._apply(self.swim.tick(trio.current_time()))

    # -- the endpoint table ------------------------------------------------------------------
    def endpoints(self, service: str) -> Sequence[Endpoint] | None:
        """Alive members fronting ``service`` (suspects only if nobody else is left)."""
        if not self.running:
            return None
        alive: list[Endpoint] = []
        suspect: list[Endpoint] = []
        known = False
        for member in self.swim.members():
            svc = member.meta.service(service)
            if svc is None:
                continue
            known = True
            if member.state == MemberState.ALIVE:
                alive.append(_endpoint(member, service, svc.labels_dict()))
            elif member.state == MemberState.SUSPECT:
                suspect.append(_endpoint(member, service, svc.labels_dict()))
        if not known:
            return None
        return alive or suspect

    def services(self) -> Iterable[str]:
        if not self.running:
            return []
        names: set[str] = set()
        for member in self.swim.members():
            if member.state in (MemberState.ALIVE, MemberState.SUSPECT):
                names.update(s.name for s in member.meta.services)
        return sorted(names)

    def status(self) -> dict[str, Any]:
        """The JSON behind ``/v1/members``."""
        if not self.running:
            return {"running": False}
        swim = self.swim
        members = [
            {
                "name": m.name,
                "state": m.state.name.lower(),
                "incarnation": m.incarnation,
                "address": m.meta.addresses[0] if m.meta.addresses else "",
                "gossip_port": m.meta.gossip_port,
                "inbound_port": m.meta.inbound_port,
                "services": m.meta.services_map(),
                "meta_version": m.meta.version,
            }
            for m in sorted(swim.members(), key=lambda m: m.name)
        ]
        return {
            "running": True,
            "node": swim.name,
            "incarnation": swim.incarnation,
            "gossip": f"{self.bound[0]}:{self.bound[1]}",
            "profile": swim.profile.name,
            "encrypted": self.settings.keyring is not None,
            "members": members,
            "live": swim.num_live,
            "digest": membership_digest(swim.members()),
            "drops": {reason.name.lower(): n for reason, n in swim.drops.items() if n},
            "push_pull_failures": self.push_pull_failures,
            "recent_events": [
                {"at": round(t, 3), "event": kind, "member": name}
                for t, kind, name in self.events[-20:]
            ],
        }


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def sync_keyring(keyring: Keyring, keys: Sequence[bytes]) -> None:
    """Make ``keyring`` hold exactly ``keys``, the first as primary, in place."""
    if not keys:
        raise ValueError("key file has no keys; refusing to drop every key")
    for key in keys:
        if key not in keyring.keys:
            keyring.add(key)
    keyring.use(keys[0])
    for key in list(keyring.keys):
        if key not in keys:
            keyring.remove(key)


def _endpoint(member: Member, service: str, labels: dict[str, str]) -> Endpoint:
    host = member.meta.addresses[0] if member.meta.addresses else ""
    return Endpoint(
        service=service, host=host, port=member.meta.inbound_port, node=member.name, labels=labels
    )


def membership_digest(members: Iterable[Member]) -> str:
    """A short hash of who is alive, to compare views across nodes (``peermesh check``)."""
    import hashlib

    live = sorted(m.name for m in members if m.state == MemberState.ALIVE)
    return hashlib.sha256("\n".join(live).encode()).hexdigest()[:16]


def default_advertise_address(inbound_host: str) -> str:
    """The address peers should use for us: the inbound host if specific, else a guess."""
    if inbound_host not in ("0.0.0.0", "", "::"):
        return inbound_host
    try:
        import psutil

        for name, addrs in sorted(psutil.net_if_addrs().items()):
            stats = psutil.net_if_stats().get(name)
            if stats is None or not stats.isup or name == "lo":
                continue
            for addr in addrs:
                if addr.family == socket.AF_INET and not addr.address.startswith("127."):
                    return str(addr.address)
    except Exception:  # pragma: no cover - best effort
        pass
    return "127.0.0.1"
