"""Agent configuration from flags, PEERMESH_* environment and TOML, with clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from click.testing import CliRunner

from peermesh import cli
from peermesh.config import AgentConfig, ConfigError, ServiceSpec


def test_service_spec_parsing():
    assert ServiceSpec.parse("orders=8080") == ServiceSpec("orders", 8080, "h1", "127.0.0.1")
    assert ServiceSpec.parse("grpc=9000,proto=h2c,host=::1") == ServiceSpec(
        "grpc", 9000, "h2c", "::1"
    )
    for bad, why in [
        ("orders", "NAME=PORT"),
        ("orders=x", "not a number"),
        ("orders=70000", "outside"),
        ("orders=80,proto=h3", "h1 or h2c"),
        ("Orders=80", "lowercase"),
        ("orders=80,color=red", "unknown option"),
    ]:
        with pytest.raises(ConfigError, match=why):
            ServiceSpec.parse(bad)


def test_admin_must_be_loopback():
    with pytest.raises(ConfigError, match="loopback"):
        AgentConfig.build(
            name="a", service="s=1", data_dir="d", admin="0.0.0.0:15000", gossip="off"
        )


def test_defaults():
    config = AgentConfig.build(
        name="node-a", service="orders=8080", data_dir=None, insecure_gossip=True
    )
    assert config.gossip.listen == ("0.0.0.0", 15946)
    assert config.gossip.mdns
    assert config.proxy.outbound == ("localhost", 15001)  # both loopbacks
    assert config.proxy.inbound == ("0.0.0.0", 15443)
    assert config.admin.listen == ("127.0.0.1", 15000)
    assert config.data_dir == Path("peermesh-data/node-a")


def _captured_config(monkeypatch, args, env=None):
    seen: dict[str, AgentConfig] = {}

    def fake_run(fn, config):
        seen["config"] = config

    monkeypatch.setattr(trio, "run", fake_run)
    result = CliRunner().invoke(cli.main, ["agent", *args], env=env or {}, catch_exceptions=False)
    return result, seen.get("config")


def test_toml_env_and_flags_precedence(monkeypatch, tmp_path):
    toml = tmp_path / "agent.toml"
    toml.write_text(
        '[agent]\nname = "from-toml"\nservice = "orders=8080"\noutbound = "127.0.0.1:16001"\n'
        'gossip = "off"\n'
        'peers = ["payments=10.0.0.2:15443"]\ndrain-timeout = 3.5\n'
    )
    result, config = _captured_config(
        monkeypatch,
        ["--config", str(toml), "--outbound", "127.0.0.1:17001"],
        env={"PEERMESH_NAME": "from-env", "PEERMESH_ADMIN": "127.0.0.1:15999"},
    )
    assert result.exit_code == 0, result.output
    assert config is not None
    assert config.name == "from-env"  # env beats TOML
    assert config.proxy.outbound == ("127.0.0.1", 17001)  # flag beats TOML
    assert config.admin.listen == ("127.0.0.1", 15999)
    assert config.proxy.peers == ("payments=10.0.0.2:15443",)
    assert config.proxy.drain_timeout == 3.5


def test_cli_errors_are_clear(monkeypatch, tmp_path):
    result, _ = _captured_config(monkeypatch, ["--name", "a", "--service", "orders"])
    assert result.exit_code == 2
    assert "write NAME=PORT" in result.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[agent]\nnmae = 'typo'\n")
    result, _ = _captured_config(monkeypatch, ["--config", str(bad)])
    assert result.exit_code == 2
    assert "unknown setting 'nmae'" in result.output
    result, _ = _captured_config(
        monkeypatch, ["--name", "a", "--service", "o=1", "--peer", "orders=nohost"]
    )
    assert result.exit_code == 2
    assert "has no port" in result.output
    result, _ = _captured_config(monkeypatch, ["--name", "a", "--service", "o=1"])
    assert result.exit_code == 2
    assert "gossip needs the mesh gossip key" in result.output
    result, _ = _captured_config(
        monkeypatch, ["--name", "a", "--service", "o=1", "--insecure-gossip", "--label", "v2"]
    )
    assert "write KEY=VALUE" in result.output


def test_every_setting_is_one_option_with_its_env_and_toml_key(monkeypatch, tmp_path):
    """Flags, PEERMESH_* names and TOML keys all come from the one declaration."""
    from peermesh.cli.agent import agent
    from peermesh.config import SETTINGS

    options = {p.name: p for p in agent.params}
    for key, item in SETTINGS.items():
        assert options[key].envvar == "PEERMESH_" + key.upper()
        assert item.flag in options[key].opts
    toml = tmp_path / "agent.toml"
    toml.write_text(
        'name = "n"\nservice = "s=1"\ninsecure-gossip = true\ngossip_profile = "wan"\n'
        'cert-lifetime = "2h"\nlabels = ["version=v2"]\nmdns = false\n'
    )
    result, config = _captured_config(monkeypatch, ["--config", str(toml)])
    assert result.exit_code == 0, result.output
    assert config is not None
    assert config.gossip.profile == "wan" and not config.gossip.mdns
    assert config.ca.cert_lifetime == 7200.0
    assert config.labels == {"version": "v2"}


def test_sections_default_to_their_declared_text():
    from peermesh.config import CaConfig, GossipConfig, ProxyConfig, TelemetryConfig

    assert ProxyConfig().drain_timeout == 10.0
    assert GossipConfig().listen == ("0.0.0.0", 15946)
    assert CaConfig().cert_lifetime == 86400.0
    assert TelemetryConfig().trace_sampling == 1.0


def test_join_token_from_a_private_file_or_the_environment(monkeypatch, tmp_path):
    from peermesh.ca.tokens import JoinToken

    token = str(JoinToken.generate("ab" * 32))
    base = ["--name", "a", "--service", "o=1", "--gossip", "off", "--join", "127.0.0.1:15946"]
    secret = tmp_path / "join.token"
    secret.write_text(token + "\n")
    secret.chmod(0o600)
    result, config = _captured_config(monkeypatch, [*base, "--join-token-file", str(secret)])
    assert result.exit_code == 0, result.output
    assert config is not None and config.ca.join_token == token
    assert token not in " ".join([*base, "--join-token-file", str(secret)])  # not in argv
    # Group- or world-readable: refused, saying how to fix it.
    for mode in (0o640, 0o604):
        secret.chmod(mode)
        result, _ = _captured_config(monkeypatch, [*base, "--join-token-file", str(secret)])
        assert result.exit_code == 2
        assert f"mode {mode:04o}" in result.output and "chmod 600" in result.output
    secret.chmod(0o600)
    result, _ = _captured_config(
        monkeypatch, [*base, "--join-token-file", str(secret), "--join-token", token]
    )
    assert result.exit_code == 2 and "give the join token once" in result.output
    garbage = tmp_path / "bad.token"
    garbage.write_text("not-a-token")
    garbage.chmod(0o600)
    result, _ = _captured_config(monkeypatch, [*base, "--join-token-file", str(garbage)])
    assert result.exit_code == 2 and "join token is malformed" in result.output
    # PEERMESH_JOIN_TOKEN is read like every setting's variable.
    result, config = _captured_config(monkeypatch, base, env={"PEERMESH_JOIN_TOKEN": token})
    assert result.exit_code == 0, result.output
    assert config is not None and config.ca.join_token == token


def test_contradictory_join_token_flags_stop_at_start(tmp_path):
    from peermesh.ca.tokens import JoinToken

    token = str(JoinToken.generate("ab" * 32))
    with pytest.raises(ConfigError, match="--join-token needs --join"):
        AgentConfig.build(name="a", service="s=1", data_dir=str(tmp_path), join_token=token)
    secret = tmp_path / "bootstrap.token"
    secret.write_text("x")
    with pytest.raises(ConfigError, match="--join-token excludes --bootstrap-expect"):
        AgentConfig.build(
            name="a", service="s=1", data_dir=str(tmp_path), join_token=token,
            join=("127.0.0.1:1",), bootstrap_expect=3, bootstrap_token_file=str(secret),
        )  # fmt: skip


def test_token_joined_agent_restarts_from_the_keyring_in_its_data_dir(tmp_path):
    from gossip.codec import generate_gossip_key, save_keyring
    from peermesh.ca.settings import joined_gossip_key

    with pytest.raises(ConfigError, match="gossip needs the mesh gossip key"):
        AgentConfig.build(name="a", service="s=1", data_dir=str(tmp_path))
    joined_gossip_key(tmp_path).parent.mkdir()
    save_keyring(joined_gossip_key(tmp_path), [generate_gossip_key()])
    config = AgentConfig.build(name="a", service="s=1", data_dir=str(tmp_path))
    assert config.ca.join_token is None and config.gossip.key_file is None


def test_the_dial_timeout_is_a_duration_above_zero():
    from peermesh.config.sections import _dial_timeout

    assert _dial_timeout("0.5s") == 0.5
    assert _dial_timeout(3) == 3.0
    for bad in ("0", "off", "11m", "soon"):
        with pytest.raises(ConfigError):
            _dial_timeout(bad)


def test_the_bootstrap_listener_is_ephemeral_when_the_inbound_listener_is():
    """Inbound port + 1 means nothing after an ephemeral inbound port: that port may
    belong to any socket on the host."""
    from peermesh.agent.wiring import ca_settings

    def settings(**options):
        return ca_settings(
            AgentConfig.build(name="a", service="s=1", data_dir=None, gossip="off", **options)
        )

    assert settings(inbound="127.0.0.1:0").bootstrap_listen == ("127.0.0.1", 0)
    assert settings(inbound="127.0.0.1:16001").bootstrap_listen is None  # port + 1
    chosen = settings(inbound="127.0.0.1:0", bootstrap_listen="127.0.0.1:17000")
    assert chosen.bootstrap_listen == ("127.0.0.1", 17000)
