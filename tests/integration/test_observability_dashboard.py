"""The /ui dashboard rendered by headless Chromium: the topology shows the services."""

from __future__ import annotations

import re
import shutil
import struct

import httpx
import pytest
import trio

from tests.integration.test_observability_meshview import NODES, admin_url, five_agents, traffic
from tests.support.cdp import CHROMIUM, chromium_args
from tests.support.meshkit import eventually


def dashboard_args(profile: str, url: str, *extra: str) -> list[str]:
    return chromium_args(
        profile, "--window-size=1200,800", "--virtual-time-budget=3000", *extra, url=url
    )


@pytest.mark.skipif(not shutil.which(CHROMIUM), reason="Debian's chromium is not installed")
async def test_dashboard_draws_services_and_edges(tmp_path):
    async with five_agents(tmp_path) as agents:
        frontend, billing = agents[0], agents[4]
        await eventually(lambda: len(frontend.endpoints.endpoints("orders") or []) == 2)
        await eventually(lambda: bool(frontend.endpoints.endpoints("reviews")))
        await traffic(frontend, "orders", 10)
        await traffic(frontend, "reviews", 5)
        url = admin_url(billing) + "/ui"
        async with httpx.AsyncClient() as c:
            page = await c.get(url)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        # Self-contained: no external scripts, styles or images (the SVG namespace is a name).
        assert not re.search(r"(src|href)=\"(https?:)?//", page.text)
        assert "https://" not in page.text

        dom = await trio.run_process(
            dashboard_args(str(tmp_path / "p1"), url, "--dump-dom"),
            capture_stdout=True,
            capture_stderr=True,
        )
        html = dom.stdout.decode()
        for service in ("frontend", "orders", "reviews"):
            assert f'data-service="{service}"' in html, html[-2000:]
        assert 'data-source="frontend" data-destination="orders"' in html
        assert "rps" in html and "100.0%" in html
        assert all(node in html for node in NODES)  # the "nodes:" line lists every agent

        png = tmp_path / "ui.png"
        await trio.run_process(
            dashboard_args(str(tmp_path / "p2"), url, f"--screenshot={png}"),
            capture_stdout=True,
            capture_stderr=True,
        )
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
        width, height = struct.unpack(">II", data[16:24])
        assert (width, height) == (1200, 800)
