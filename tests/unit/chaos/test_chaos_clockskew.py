"""Clock skew in the chaos lab (no root): offsets, the libfaketime environment, the
refusals, the scenario step, parsing ``/v1/mesh/check``, and — when libfaketime is
installed — that a process under it really sees the offset in Python and OpenSSL and
not in its monotonic clocks."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chaos import clockskew, lab
from chaos.__main__ import main
from chaos.clockskew import (
    ClockSkewError,
    FaketimeMissing,
    faketime_env,
    find_library,
    format_offset,
    parse_offset,
)
from chaos.runner import clock_check_from_reply, load

REPO = Path(__file__).resolve().parents[3]

try:
    LIBFAKETIME = find_library()
except FaketimeMissing as exc:
    LIBFAKETIME = ""
    MISSING_REASON = str(exc)
needs_faketime = pytest.mark.skipif(
    not LIBFAKETIME, reason=f"libfaketime not installed: {'' if LIBFAKETIME else MISSING_REASON}"
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("+30s", 30.0),
        ("-45s", -45.0),
        ("0", 0.0),
        ("90", 90.0),
        ("2m", 120.0),
        ("+2min", 120.0),
        ("1h", 3600.0),
        ("500ms", 0.5),
        ("-1.5s", -1.5),
        ("1d", 86_400.0),
        ("-86400s", -86_400.0),
        (" +30S ", 30.0),
        (30, 30.0),
        (-45.0, -45.0),
    ],
)
def test_offsets_that_parse(text, seconds):
    assert parse_offset(text) == seconds


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "not a duration"),
        ("abc", "not a duration"),
        ("30x", "not a duration"),
        ("--30s", "not a duration"),
        ("+-3s", "not a duration"),
        ("1e3s", "not a duration"),
        ("nan", "not a duration"),
        ("2d", "larger than ±1 day"),
        ("-86401", "larger than ±1 day"),
        ("25h", "larger than ±1 day"),
        (float("inf"), "not a finite number"),
        (float("nan"), "not a finite number"),
        (True, "not a duration"),
    ],
)
def test_offsets_that_are_refused_say_why(text, reason):
    with pytest.raises(ClockSkewError, match=reason):
        parse_offset(text)


def test_offsets_are_written_in_libfaketimes_relative_format():
    assert format_offset(30) == "+30s"
    assert format_offset(-45.0) == "-45s"
    assert format_offset(1.5) == "+1.500s"
    assert format_offset(parse_offset("-500ms")) == "-0.500s"


def test_the_environment_offsets_the_wall_clock_and_spares_the_monotonic_one():
    env = faketime_env(30, library="/opt/libfaketimeMT.so.1")
    assert env == {
        "LD_PRELOAD": "/opt/libfaketimeMT.so.1",
        "FAKETIME": "+30s",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    assert faketime_env(-45, library="/x.so")["FAKETIME"] == "-45s"
    assert faketime_env(0) == {}  # a restored clock preloads nothing


def test_a_missing_libfaketime_is_refused_with_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(clockskew, "LIBRARY_DIRS", (str(tmp_path / "nowhere"),))
    monkeypatch.delenv(clockskew.LIBRARY_ENV, raising=False)
    with pytest.raises(FaketimeMissing, match="apt-get install faketime"):
        find_library()
    with pytest.raises(FaketimeMissing, match="does not exist"):
        find_library({clockskew.LIBRARY_ENV: str(tmp_path / "libfaketime.so.1")})
    explicit = tmp_path / "libfaketime.so.1"
    explicit.write_bytes(b"")
    assert find_library({clockskew.LIBRARY_ENV: str(explicit)}) == str(explicit)


def _one_host_lab(tmp_path: Path) -> lab.LabState:
    state = lab.LabState(prefix="pmtno", state_dir=str(tmp_path), token_file="/dev/null")
    state.hosts.append(
        lab.HostState("h2", "pmtno-h2", "10.77.0.2", "orders", "node-2", str(tmp_path / "n2"))
    )
    return state


def test_the_agent_command_runs_under_libfaketime_only_while_skewed(tmp_path, monkeypatch):
    library = tmp_path / "libfaketimeMT.so.1"
    library.write_bytes(b"")
    monkeypatch.setenv(clockskew.LIBRARY_ENV, str(library))
    state = _one_host_lab(tmp_path)
    h = state.hosts[0]
    plain = lab.agent_argv(state, h)
    assert lab.agent_command(state, h) == plain
    h.clock_offset = -30.0
    skewed = lab.agent_command(state, h)
    assert skewed[0] == "env"
    assert skewed[1:4] == [
        f"LD_PRELOAD={library}",
        "FAKETIME=-30s",
        "FAKETIME_DONT_FAKE_MONOTONIC=1",
    ]
    assert skewed[4:] == plain  # same data dir, same ports, same everything else


def test_set_clock_refuses_before_touching_the_agent_without_libfaketime(tmp_path, monkeypatch):
    monkeypatch.setattr(clockskew, "LIBRARY_DIRS", (str(tmp_path / "nowhere"),))
    monkeypatch.delenv(clockskew.LIBRARY_ENV, raising=False)
    restarts: list[str] = []
    monkeypatch.setattr(lab, "restart_agent", lambda state, name: restarts.append(name))
    state = _one_host_lab(tmp_path)
    with pytest.raises(FaketimeMissing, match="needs libfaketime"):
        lab.set_clock(state, "h2", 30)
    assert restarts == []
    assert state.hosts[0].clock_offset == 0.0
    with pytest.raises(ClockSkewError, match="larger than ±1 day"):
        lab.set_clock(state, "h2", 2 * 86_400)
    assert restarts == []


def test_a_killed_agent_keeps_its_new_offset_for_its_restart(tmp_path, monkeypatch):
    restarts: list[str] = []
    verified: list[float] = []
    monkeypatch.setattr(lab, "restart_agent", lambda state, name: restarts.append(name))
    monkeypatch.setattr(lab, "verify", verified.append)
    state = _one_host_lab(tmp_path)  # agent_pid 0: not running (killed)
    lab.set_clock(state, "h2", -45)
    assert restarts == [] and verified == [-45.0]  # still checked, but not started
    assert lab.LabState.load(tmp_path).by_name("h2").clock_offset == -45.0


def test_the_cli_refuses_a_malformed_or_huge_offset_before_anything_else(capsys):
    for bad, reason in (("2d", "larger than ±1 day"), ("soon", "not a duration")):
        with pytest.raises(SystemExit) as exited:
            main(["clock-skew", "h2", bad])
        assert exited.value.code == 2
        assert reason in capsys.readouterr().err


def test_the_cli_takes_a_negative_offset_as_the_offset(tmp_path, capsys):
    # '-45s' looks like an option to argparse; it must reach the clock-skew command.
    code = main(["--state-dir", str(tmp_path), "clock-skew", "h2", "-45s"])
    err = capsys.readouterr().err
    assert code != 0  # no lab here (or not root)
    assert "unrecognized arguments" not in err and "expected one argument" not in err
    assert ("root" in err) if os.geteuid() != 0 else ("no lab in" in err)


def test_a_scenario_step_with_a_bad_offset_is_refused_at_load(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("hosts: 2\nsteps:\n  - {at: 1, clock-skew: {host: h2, offset: 3 parsecs}}\n")
    with pytest.raises(ValueError, match="not a duration"):
        load(path)
    path.write_text("hosts: 2\nsteps:\n  - {at: 1, clock-skew: {host: h2}}\n")
    with pytest.raises(ValueError, match="needs"):
        load(path)
    path.write_text("hosts: 2\nsteps:\n  - {at: 1, clock-skew: {host: h2, offset: -2d}}\n")
    with pytest.raises(ValueError, match="±1 day"):
        load(path)


def test_the_shipped_scenario_skews_two_hosts_both_ways_and_restores_them():
    scenario = load(REPO / "chaos" / "scenarios" / "clock-skew.yaml")
    steps = [s["clock-skew"] for s in scenario["steps"] if "clock-skew" in s]
    offsets = [(s["host"], parse_offset(s["offset"])) for s in steps]
    assert ("h2", 30.0) in offsets and ("h4", -30.0) in offsets
    assert ("h2", 0.0) in offsets and ("h4", 0.0) in offsets
    assert 3 <= scenario["hosts"] <= 5
    assert any("policy" in s for s in scenario["steps"]) and scenario["traffic"]


# The shape of a real answer (a +30 s and a -30 s peer, one peer that did not answer).
REAL_ANSWER = {
    "ok": False,
    "checks": [
        {"name": "agent ready", "ok": True, "detail": "listeners up, certificate loaded"},
        {
            "name": "peers reachable",
            "ok": False,
            "detail": "2/3 peer agents answered over mTLS; 10.77.0.4:15443: connect refused",
        },
        {
            "name": "clock skew",
            "ok": False,
            "detail": "clock skew with node-3 -30.0s, node-2 +30.1s",
        },
    ],
}
ADDRESSES = {f"10.77.0.{i}:15443": f"node-{i}" for i in range(1, 6)}


def test_a_mesh_check_answer_becomes_whom_it_named_and_who_was_cut():
    c = clock_check_from_reply(1.0, 1.2, "h1", 200, REAL_ANSWER, ADDRESSES)
    assert c.answered and c.host == "h1" and (c.t, c.t_end) == (1.0, 1.2)
    assert c.skewed == (("node-2", 30.1), ("node-3", -30.0))
    assert c.unreachable == ("node-4",)
    clean = json.loads(json.dumps(REAL_ANSWER))
    clean["checks"][2] = {"name": "clock skew", "ok": True, "detail": "clocks agree within ±2s"}
    assert clock_check_from_reply(1.0, 1.2, "h1", 200, clean, ADDRESSES).skewed == ()
    down = clock_check_from_reply(1.0, 6.0, "h1", 0, {}, ADDRESSES)
    assert not down.answered and down.skewed == ()


PROBE_TLS = r"""
import datetime as dt, socket, ssl, sys, tempfile, threading
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

real = dt.datetime.fromtimestamp(float(sys.argv[1]), dt.UTC)  # the parent's clock
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "probe")])
key = ec.generate_private_key(ec.SECP256R1())
cert = (
    x509.CertificateBuilder().subject_name(name).issuer_name(name)
    .public_key(key.public_key()).serial_number(1)
    .not_valid_before(real + dt.timedelta(seconds=15))  # valid from 15 s in the future
    .not_valid_after(real + dt.timedelta(hours=1))
    .add_extension(x509.SubjectAlternativeName([x509.DNSName("probe")]), critical=False)
    .sign(key, hashes.SHA256())
)
d = tempfile.mkdtemp()
open(f"{d}/c.pem", "wb").write(cert.public_bytes(serialization.Encoding.PEM))
open(f"{d}/k.pem", "wb").write(key.private_bytes(serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
server.load_cert_chain(f"{d}/c.pem", f"{d}/k.pem")
client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
client.load_verify_locations(f"{d}/c.pem")
a, b = socket.socketpair()
def serve():
    try:
        with server.wrap_socket(a, server_side=True) as s:
            s.recv(1)
    except (ssl.SSLError, OSError):
        pass
t = threading.Thread(target=serve)
t.start()
try:
    with client.wrap_socket(b, server_hostname="probe") as c:
        c.send(b"x")
    print("verified")
except ssl.SSLCertVerificationError as exc:
    print(exc.verify_message)
t.join(5)
"""


def _tls_probe(env_extra: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-c", PROBE_TLS, repr(time.time())],
        env=dict(os.environ, **env_extra),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@needs_faketime
def test_under_libfaketime_python_sees_the_offset_and_monotonic_clocks_do_not():
    for offset in (30.0, -45.0):
        seen = clockskew.verify(offset)  # raises unless all four clocks behave
        slack = seen["startup"] + 1.0
        assert math.isclose(seen["wall"], offset, abs_tol=slack), seen
        assert math.isclose(seen["datetime"], offset, abs_tol=slack), seen
        assert abs(seen["monotonic"]) <= slack and abs(seen["perf_counter"]) <= slack, seen


@needs_faketime
def test_under_libfaketime_openssl_checks_certificates_with_the_skewed_clock():
    # A certificate valid from 15 s in the future: OpenSSL refuses it with the real
    # clock and accepts it with the clock 30 s ahead (and still refuses it 45 s behind).
    assert _tls_probe({}) == "certificate is not yet valid"
    assert _tls_probe(faketime_env(30)) == "verified"
    assert _tls_probe(faketime_env(-45)) == "certificate is not yet valid"
