"""A small Chrome DevTools Protocol client: headless Chromium driven over one websocket
(wsproto on a trio socket), pages attached as flat sessions.

Every call and every wait is bounded (``trio.fail_after``); the browser process is
ended when the block ends, whatever happened inside it.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CALL_TIMEOUT = 20.0  # a loaded CI machine may take seconds for one evaluate
START_TIMEOUT = 60.0
MAX_MESSAGE = 64 << 20

Event = dict[str, Any]


class CdpError(Exception):
    """A CDP command answered with an error, or a page expression threw."""


class Browser:
    """One DevTools websocket: commands by id, events kept for ``wait_event``."""

    def __init__(self, stream: trio.SocketStream, ws: WSConnection) -> None:
        self.stream = stream
        self.ws = ws
        self.events: list[Event] = []
        self._ids = itertools.count(1)
        self._replies: dict[int, Event] = {}
        self._arrived = trio.Event()
        self._send_lock = trio.Lock()
        self._closed = False

    async def _send(self, data: bytes) -> None:
        async with self._send_lock:
            await self.stream.send_all(data)

    async def read_loop(self) -> None:
        text: list[str] = []
        size = 0
        while True:
            data = await self.stream.receive_some(1 << 16)
            if not data:
                break
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, TextMessage):
                    size += len(event.data)
                    if size > MAX_MESSAGE:
                        raise CdpError(f"DevTools message over {MAX_MESSAGE} bytes")
                    text.append(event.data)
                    if event.message_finished:
                        self._deliver(json.loads("".join(text)))
                        text, size = [], 0
                elif isinstance(event, Ping):
                    await self._send(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    self._closed = True
        self._closed = True
        self._wake()

    def _deliver(self, message: Event) -> None:
        if "id" in message:
            self._replies[message["id"]] = message
        else:
            self.events.append(message)
        self._wake()

    def _wake(self) -> None:
        self._arrived.set()
        self._arrived = trio.Event()

    async def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: str | None = None,
        timeout: float = CALL_TIMEOUT,
    ) -> dict[str, Any]:
        """Send one command and wait for its answer's ``result``."""
        ident = next(self._ids)
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        with trio.fail_after(timeout):
            await self._send(self.ws.send(TextMessage(json.dumps(message))))
            while ident not in self._replies:
                if self._closed:
                    raise CdpError(f"DevTools connection closed during {method}")
                await self._arrived.wait()
        reply = self._replies.pop(ident)
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def wait_event(
        self, method: str, match: Callable[[Event], bool] = lambda e: True, *, timeout: float
    ) -> Event:
        """The first event named ``method`` (already seen or still to come) that matches."""
        with trio.fail_after(timeout):
            while True:
                for event in self.events:
                    if event.get("method") == method and match(event):
                        return event
                if self._closed:
                    raise CdpError(f"DevTools connection closed waiting for {method}")
                await self._arrived.wait()

    async def new_page(self) -> Page:
        target = await self.call("Target.createTarget", {"url": "about:blank"})
        attached = await self.call(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        return Page(self, attached["sessionId"])

    async def close(self) -> None:
        if not self._closed:
            try:
                with trio.move_on_after(2):
                    await self._send(self.ws.send(CloseConnection(code=1000)))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        await self.stream.aclose()


class Page:
    """One tab, spoken to through its flat session on the browser's websocket."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.browser.call(method, params, session=self.session)

    def events(self, method: str) -> list[Event]:
        return [
            e
            for e in self.browser.events
            if e.get("method") == method and e.get("sessionId") == self.session
        ]

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of ``expression`` in the page (promises awaited)."""
        reply = await self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in reply:
            details = reply["exceptionDetails"]
            raise CdpError(f"{expression[:80]!r} threw: {details.get('exception', details)}")
        return reply["result"].get("value")

    async def wait_for(self, expression: str, *, timeout: float = CALL_TIMEOUT) -> Any:
        """Poll ``expression`` until it is truthy; its value."""
        with trio.fail_after(timeout):
            while True:
                value = await self.evaluate(expression)
                if value:
                    return value
                await trio.sleep(0.05)

    async def set_viewport(self, width: int, height: int) -> None:
        await self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    async def click(self, x: float, y: float) -> None:
        """A real left click at page coordinates: press and release, as a mouse does."""
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            params: dict[str, Any] = {"type": kind, "x": x, "y": y}
            if kind != "mouseMoved":
                params |= {"button": "left", "clickCount": 1}
            await self.call("Input.dispatchMouseEvent", params)


def chromium_args(profile: Path | str, *extra: str, url: str = "about:blank") -> list[str]:
    """Headless Chromium with a throw-away profile and nothing running in the background."""
    return [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-extensions",
        "--disable-sync",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        *extra,
        url,
    ]


async def _devtools_address(profile: Path, process: trio.Process) -> tuple[int, str]:
    """Port and browser websocket path, from the ``DevToolsActivePort`` file Chromium
    writes into its profile once it listens."""
    marker = trio.Path(profile / "DevToolsActivePort")
    with trio.fail_after(START_TIMEOUT):
        while True:
            if process.returncode is not None:
                raise CdpError(f"chromium exited with {process.returncode} before listening")
            lines = (await marker.read_text()).split("\n") if await marker.exists() else []
            if len(lines) >= 2 and lines[0].strip().isdigit() and lines[1].startswith("/"):
                return int(lines[0]), lines[1].strip()
            await trio.sleep(0.05)


@asynccontextmanager
async def chromium(profile: Path, *extra: str) -> AsyncIterator[Browser]:
    """Headless Chromium with a fresh profile, its DevTools websocket connected."""
    await trio.Path(profile).mkdir(parents=True, exist_ok=True)
    # Chromium's own output, kept next to the profile for when a test fails.
    with (profile.parent / f"{profile.name}.log").open("wb") as log:
        process = await trio.lowlevel.open_process(
            chromium_args(profile, "--remote-debugging-port=0", *extra), stdout=log, stderr=log
        )
        try:
            port, path = await _devtools_address(profile, process)
            with trio.fail_after(START_TIMEOUT):
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                ws = WSConnection(ConnectionType.CLIENT)
                await stream.send_all(ws.send(Request(host=f"127.0.0.1:{port}", target=path)))
                accepted = False
                while not accepted:
                    data = await stream.receive_some(1 << 16)
                    if not data:
                        raise CdpError("DevTools closed the websocket handshake")
                    ws.receive_data(data)
                    for event in ws.events():
                        if isinstance(event, RejectConnection):
                            raise CdpError(f"DevTools refused the websocket: {event.status_code}")
                        accepted = accepted or isinstance(event, AcceptConnection)
            browser = Browser(stream, ws)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(browser.read_loop)
                    try:
                        yield browser
                    finally:
                        nursery.cancel_scope.cancel()
            finally:
                with trio.CancelScope(shield=True):
                    await browser.close()
        finally:
            with trio.CancelScope(shield=True):
                if process.returncode is None:
                    process.terminate()
                    with trio.move_on_after(10):
                        await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
