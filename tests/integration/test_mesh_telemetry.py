"""MeshConfig ``spec.telemetry`` switches access logs and trace sampling on every agent.

Istio users set this mesh-wide (Telemetry API / meshConfig.accessLogFile); here it is
one replicated MeshConfig field, applied by each agent over its own flags, and removing
it gives each agent its own flags back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from peermesh.net.admin_guard import ADMIN_HEADERS
from peermesh.policy.model import MeshConfig, TelemetrySettings
from peermesh.policy.validate import check_object, parse_object
from tests.support.meshkit import eventually, two_agents


def _mesh(telemetry: Any) -> dict[str, Any]:
    return {"kind": "MeshConfig", "name": "default", "spec": {"telemetry": telemetry}}


def test_telemetry_settings_round_trip_and_stay_out_of_the_canonical_form_when_unset() -> None:
    obj = parse_object(
        _mesh({"accessLog": {"enabled": True}, "tracing": {"randomSamplingPercentage": 1}})
    )
    assert isinstance(obj, MeshConfig)
    assert obj.spec.telemetry == TelemetrySettings(access_log=True, random_sampling_percentage=1.0)
    assert parse_object(obj.to_dict()) == obj
    plain = parse_object({"kind": "MeshConfig", "name": "default", "spec": {}})
    assert "telemetry" not in plain.to_dict()["spec"]  # existing content hashes unchanged


@pytest.mark.parametrize(
    ("telemetry", "path", "reason"),
    [
        ({"tracing": {"randomSamplingPercentage": 150}}, "randomSamplingPercentage", "range"),
        ({"accessLog": {"enabled": "yes"}}, "accessLog.enabled", "expected true or false"),
        ({"accessLog": {"file": "/tmp/x"}}, "accessLog.file", "unknown field"),
        ({"metrics": {}}, "telemetry.metrics", "unknown field"),
    ],
)  # fmt: skip
def test_bad_telemetry_is_refused_with_the_field(telemetry: Any, path: str, reason: str) -> None:
    obj, errors = check_object(_mesh(telemetry))
    assert obj is None
    assert any(e.path.endswith(path) and reason in e.reason for e in errors), [
        (e.path, e.reason) for e in errors
    ]


async def test_mesh_config_telemetry_reaches_both_agents_and_removing_it_restores_flags(
    tmp_path: Path,
) -> None:
    async with two_agents(tmp_path) as mesh:
        agents = (mesh.client, mesh.server)
        for agent in agents:  # flags: no access log, sampling 1.0 (the default)
            assert not agent.observability.logging_requests
        host, port = mesh.client.addresses["admin"]
        url = f"http://{host}:{port}/v1/policy"
        on = _mesh({"accessLog": {"enabled": True}, "tracing": {"randomSamplingPercentage": 5}})
        async with httpx.AsyncClient() as client:
            r = await client.put(url, json={"objects": [on]}, headers=ADMIN_HEADERS)
            assert r.status_code == 200, r.text
            # Written on node-a, replicated to node-b (its static peer).
            await eventually(lambda: all(a.observability.logging_requests for a in agents))
            for agent in agents:
                assert agent.observability.tracer.sampling == pytest.approx(0.05)
            off = _mesh({"accessLog": {"enabled": False}})
            r = await client.put(url, json={"objects": [off]}, headers=ADMIN_HEADERS)
            assert r.status_code == 200, r.text
            await eventually(lambda: not any(a.observability.logging_requests for a in agents))
            for agent in agents:  # no tracing setting any more: the agent's own flag
                assert agent.observability.tracer.sampling == pytest.approx(1.0)
            await client.put(url, json={"objects": [on]}, headers=ADMIN_HEADERS)
            await eventually(lambda: all(a.observability.logging_requests for a in agents))
            r = await client.delete(url + "/MeshConfig/default", headers=ADMIN_HEADERS)
            assert r.status_code == 200, r.text
        # MeshConfig gone: each agent's own flags again (no --access-log here).
        await eventually(lambda: not any(a.observability.logging_requests for a in agents))
