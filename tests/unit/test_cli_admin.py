"""The CLI's admin calls against a real loopback HTTP server: a 200 answer is the data,
any other answer a one-line error with the agent's reason (or the status)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from peermesh.agent.devmesh import free_port
from peermesh.cli.policy import policy
from peermesh.cli.tokens import token

#: path -> (status, JSON body) the fake agent answers
ANSWERS: dict[str, tuple[int, object]] = {
    "/v1/policy/JoinToken/gone": (404, {"error": "JoinToken/gone does not exist"}),
    "/v1/policy/JoinToken/odd": (502, ["not", "a", "mapping"]),
    "/v1/policy/JoinToken/kept": (200, {"deleted": "JoinToken/kept"}),
    "/v1/policy/Route/bad": (400, {"error": "invalid_policy", "errors": [
        {"kind": "Route", "name": "bad", "path": "spec.host", "reason": "required"}]}),
}  # fmt: skip


class _Agent(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        status, body = ANSWERS.get(self.path, (404, {"error": "no route"}))
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def agent_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Agent)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_refusal_says_the_agents_reason_or_its_status(agent_url: str) -> None:
    runner = CliRunner()
    gone = runner.invoke(token, ["delete", "gone", "--agent", agent_url])
    assert gone.exit_code == 1 and "Error: JoinToken/gone does not exist" in gone.output
    odd = runner.invoke(token, ["delete", "odd", "--agent", agent_url])
    assert odd.exit_code == 1 and "Error: HTTP 502" in odd.output
    kept = runner.invoke(token, ["delete", "kept", "--agent", agent_url])
    assert kept.exit_code == 0 and "deleted JoinToken/kept" in kept.output


def test_a_policy_refusal_lists_every_problem(agent_url: str) -> None:
    bad = CliRunner().invoke(policy, ["get", "Route", "bad", "--agent", agent_url])
    assert bad.exit_code == 1
    assert "policy refused (1 problem(s)):" in bad.output
    assert "Route/bad: spec.host: required" in bad.output
