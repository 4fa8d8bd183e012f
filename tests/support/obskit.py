"""Helpers for the observability tests: scrape and parse an agent's /metrics."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from peermesh.agent import Agent


async def scrape(agent: Agent) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)] from the agent's admin /metrics."""
    host, port = agent.addresses["admin"]
    async with httpx.AsyncClient() as c:
        r = await c.get(f"http://{host}:{port}/metrics")
    assert r.status_code == 200
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def value(
    samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str
) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(
        v
        for have, v in samples.get(name, [])
        if all(have.get(k) == want for k, want in labels.items())
    )
