"""``python -m chaos run SCENARIO.yaml``: a timed list of steps against a fresh lab.

Scenario format (YAML)::

    name: ci-2-1
    hosts: 3
    services: [web, orders, orders]      # optional, one per host
    duration: 70                         # seconds of faults and traffic
    limits: {convergence_s: 60, detect_s: 12, availability_min: 0.95}
    traffic:                             # one load generator per entry, in the source host
      - {from: h1, to: orders, rate: 10}
    steps:                               # 'at' = seconds after traffic starts
      - {at: 5, policy: {host: h1, name: before}}
      - {at: 10, partition: "h1,h2 / h3"}       # oneway: true for asymmetric
      - {at: 14, ca: {host: h3}}                # token create: a t-of-n operation
      - {at: 30, heal: true}
      - {at: 40, kill: h3}
      - {at: 55, restart: h3}
    # also: loss: {percent: 10, hosts: [h1]}, flaky: {groups: "h1 / h2,h3",
    #       duration: 30, on: 5, off: 5}, delay: {service: orders, ms: 50},
    #       undelay: true, stop: h2, cont: h2,
    #       clock-skew: {host: h2, offset: 30s}   (offset 0 restores; so does heal)

After the last step the runner heals everything (network, delay routes, stopped and
killed agents), samples membership and policy digests every second until they agree,
stops the traffic, reads every agent's policy and hands the history to the checker.

A scenario with ``clock-skew`` steps also asks every agent's ``/v1/mesh/check`` every
2 s whom its "clock skew" check names, and keeps the traffic running until the mesh
has had ``skew_detect_s`` (+ a few answers) to see the last restored clock.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from chaos import actions, lab
from chaos.checker import check
from chaos.clockskew import format_offset, parse_offset
from chaos.history import (
    CaAttempt,
    ClockCheck,
    Edit,
    History,
    Kill,
    Limits,
    Request,
    Sample,
    Verdict,
)
from chaos.report import write
from chaos.timeline import cut, down_hosts

STEP_KINDS = {
    "partition",
    "heal",
    "loss",
    "flaky",
    "delay",
    "undelay",
    "kill",
    "stop",
    "cont",
    "restart",
    "policy",
    "ca",
    "clock-skew",
}
CLOCK_CHECK_EVERY_S = 2.0
_NAMED_SKEW = re.compile(r"(\S+) ([+-]\d+(?:\.\d+)?)s")
_PEER_ERROR = re.compile(r";\s*(\d+\.\d+\.\d+\.\d+:\d+): ")


def clock_check_from_reply(
    t: float, t_end: float, host: str, status: int, reply: Any, nodes_by_address: dict[str, str]
) -> ClockCheck:
    """One ``/v1/mesh/check`` answer -> whom its "clock skew" check named, who was cut.

    The agent writes ``clock skew with node-3 -30.0s, node-2 +30.0s`` and, in "peers
    reachable", ``; 10.77.0.3:15443: <error>`` per peer that did not answer.
    """
    checks = reply.get("checks") if status == 200 and isinstance(reply, dict) else None
    if not isinstance(checks, list):
        return ClockCheck(t, t_end, host, False, detail=f"HTTP {status}")
    by_name = {c.get("name"): c for c in checks if isinstance(c, dict)}
    skew = by_name.get("clock skew")
    if skew is None:
        return ClockCheck(t, t_end, host, False, detail="no 'clock skew' check in the answer")
    detail = str(skew.get("detail", ""))
    named: tuple[tuple[str, float], ...] = ()
    if not skew.get("ok", True) and "clock skew with " in detail:
        listed = detail.split("clock skew with ", 1)[1]
        named = tuple(sorted((n, float(v)) for n, v in _NAMED_SKEW.findall(listed)))
    peers = str(by_name.get("peers reachable", {}).get("detail", ""))
    cut = tuple(sorted({nodes_by_address.get(a, a) for a in _PEER_ERROR.findall(peers)}))
    return ClockCheck(t, t_end, host, True, named, cut, detail[:200])


def load(path: str | Path) -> dict[str, Any]:
    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict) or "hosts" not in data or "steps" not in data:
        raise ValueError(f"{path}: a scenario needs 'hosts' and 'steps'")
    data.setdefault("name", Path(path).stem)
    for step in data["steps"]:
        kinds = STEP_KINDS & set(step)
        if "at" not in step or len(kinds) != 1:
            raise ValueError(f"{path}: step {step!r} needs 'at' and exactly one action")
        if "clock-skew" in step:
            spec = step["clock-skew"]
            if not isinstance(spec, dict) or "host" not in spec or "offset" not in spec:
                raise ValueError(
                    f"{path}: step {step!r}: clock-skew needs {{host: h2, offset: 30s}}"
                )
            try:
                parse_offset(spec["offset"])
            except ValueError as exc:
                raise ValueError(f"{path}: step {step!r}: {exc}") from None
    return data


class Run:
    """One scenario run: the lab, the recorder and the timeline."""

    def __init__(self, scenario: dict[str, Any], state_dir: Path, out_dir: Path, prefix: str):
        self.scenario = scenario
        self.state_dir = state_dir
        self.out_dir = out_dir
        self.prefix = prefix
        self.limits = Limits(**scenario.get("limits", {}))
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.history: History | None = None
        self.open: dict[tuple[str, str], Any] = {}
        self.flaky_stop = threading.Event()

    # -- recording -------------------------------------------------------------
    def _open(self, kind: str, key: str, **fields: Any) -> None:
        assert self.history is not None
        self.open[(kind, key)] = {"kind": kind, "start": time.time(), "end": None, **fields}

    def _close(self, kind: str, key: str | None = None) -> None:
        for k in [k for k in self.open if k[0] == kind and (key is None or k[1] == key)]:
            w = self.open.pop(k)
            w["end"] = time.time()
            self._windows.append(w)

    def _live_history(self) -> History:
        """The history so far with open windows still open (for reachability)."""
        assert self.history is not None
        h = self.history
        ws = [_window(w) for w in [*self._windows, *self.open.values()]]
        return History(h.start, h.end, h.final_heal, h.hosts, h.services, windows=ws)

    def _reachable_signers(self, host: str) -> int:
        live = self._live_history()
        now = time.time()
        down = down_hosts(live, now)
        if host in down:
            return 0
        return sum(
            1 for h in live.hosts if h not in down and (h == host or not cut(live, now, host, h))
        )

    def _spawn_thread(self, target: Any, *args: Any) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        t.start()
        self.threads.append(t)

    # -- steps -------------------------------------------------------------------
    def step(self, s: dict[str, Any]) -> None:
        labs = self.lab
        if "partition" in s:
            groups = actions.parse_groups(labs, s["partition"])
            self._close("partition")
            self._open(
                "partition",
                "p",
                groups=groups,
                label="partition " + "|".join(",".join(g) for g in groups),
            )
            actions.partition(labs, groups, oneway=bool(s.get("oneway")))
        elif "heal" in s:
            self.flaky_stop.set()
            for h in labs.hosts:  # heal restores skewed clocks: record those restarts
                if h.clock_offset:
                    self._clock_change(h.name, 0.0)
            actions.heal(labs)
            for kind in ("partition", "loss", "delay", "flaky", "clock-skew"):
                self._close(kind)
        elif "loss" in s:
            spec = s["loss"] if isinstance(s["loss"], dict) else {"percent": s["loss"]}
            names = [
                labs.by_name(n).name for n in spec.get("hosts") or [h.name for h in labs.hosts]
            ]
            self._open("loss", "l", hosts=names, label=f"loss {spec['percent']}%")
            actions.loss(labs, float(spec["percent"]), names)
        elif "flaky" in s:
            spec = s["flaky"]
            groups = actions.parse_groups(labs, spec["groups"])
            self.flaky_stop.clear()
            self._spawn_thread(
                self._flaky,
                groups,
                float(spec.get("duration", 30)),
                float(spec.get("on", 5)),
                float(spec.get("off", 5)),
            )
        elif "delay" in s:
            spec = s["delay"]
            actions.delay(labs, spec["service"], float(spec["ms"]), spec.get("via"))
            self._open("delay", spec["service"], label=f"delay {spec['ms']}ms {spec['service']}")
        elif "undelay" in s:
            actions.undelay(labs)
            self._close("delay")
        elif "kill" in s:
            name = labs.by_name(s["kill"]).name
            self._open("kill", name, hosts=[name], label=f"kill {name}")
            t = time.time()
            actions.kill(labs, name)
            self._spawn_thread(self._watch_removal, name, t)
        elif "stop" in s:
            name = labs.by_name(s["stop"]).name
            self._open("stop", name, hosts=[name], label=f"SIGSTOP {name}")
            actions.stop(labs, name)
        elif "cont" in s:
            name = labs.by_name(s["cont"]).name
            actions.cont(labs, name)
            self._close("stop", name)
        elif "restart" in s:
            name = labs.by_name(s["restart"]).name
            actions.restart(labs, name)
            self._close("kill", name)
            self._close("stop", name)
            self._restarted[name] = time.time()
        elif "clock-skew" in s:
            spec = s["clock-skew"]
            self._clock_change(labs.by_name(spec["host"]).name, parse_offset(spec["offset"]))
        elif "policy" in s:
            spec = s["policy"]
            self._spawn_thread(
                self._edit,
                spec["host"],
                f"chaos-edit-{spec['name']}",
                spec.get("service", labs.hosts[0].service),
            )
        elif "ca" in s:
            spec = s["ca"]
            svc = spec.get("service", labs.by_name(spec["host"]).service)
            self._spawn_thread(self._ca, spec["host"], svc)

    def _clock_change(self, name: str, seconds: float) -> None:
        """Skew (or restore) a clock: the agent restarts, so besides the clock-skew window
        a ``restart`` window marks the host down from SIGTERM until the new agent is
        ready (its own sidecar refuses connections meanwhile)."""
        h = self.lab.by_name(name)
        before = h.agent_pid
        self._open("restart", name, hosts=[name], label=f"restart {name}")
        actions.clock_skew(self.lab, name, seconds)  # returns once the new agent runs
        if h.agent_pid == before:  # unchanged offset: no restart happened
            self.open.pop(("restart", name), None)
        else:
            self._spawn_thread(self._watch_ready, name)
        self._close("clock-skew", name)
        if seconds:
            label = f"clock {name} {format_offset(seconds)}"
            self._open("clock-skew", name, hosts=[name], offset=seconds, label=label)

    def _watch_ready(self, name: str) -> None:
        h = self.lab.by_name(name)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not lab.ready(h):
            time.sleep(0.25)
        with self.lock:
            self._close("restart", name)

    def _edit(self, host: str, name: str, service: str) -> None:
        t = time.time()
        acked, detail = actions.policy_edit(self.lab, host, name, service)
        with self.lock:
            self._edits.append(Edit(t, self.lab.by_name(host).name, name, acked, detail))

    def _ca(self, host: str, service: str) -> None:
        t = time.time()
        before = self._reachable_signers(host)
        ok, message = actions.token_create(self.lab, host, service)
        after = self._reachable_signers(host)
        with self.lock:
            self._ca_attempts.append(
                CaAttempt(
                    t,
                    host,
                    ok,
                    message[:600],
                    min(before, after),
                    max(before, after),
                    self.threshold,
                )
            )

    def _flaky(self, groups: list[list[str]], duration: float, on: float, off: float) -> None:
        """Intermittent partition: ``on`` s cut, ``off`` s healed, for ``duration`` s."""
        end = time.monotonic() + duration
        label = "flaky " + "|".join(",".join(g) for g in groups)
        while time.monotonic() < end and not self.flaky_stop.is_set():
            with self.lock:
                self._open("flaky", "f", groups=groups, label=label)
            actions.partition(self.lab, groups)
            self.flaky_stop.wait(min(on, max(0.0, end - time.monotonic())))
            actions.heal(self.lab, network_only=True)
            with self.lock:
                self._close("flaky")
            self.flaky_stop.wait(min(off, max(0.0, end - time.monotonic())))

    def _watch_removal(self, name: str, t: float) -> None:
        node = self.lab.by_name(name).node
        removed: float | None = None
        deadline = time.monotonic() + max(30.0, 3 * self.limits.detect_s)
        while time.monotonic() < deadline:
            survivors = [h for h in self.lab.hosts if h.name != name and lab.alive(h.agent_pid)]
            if name in self._restarted:
                break
            if all(node not in lab.alive_members(h) for h in survivors):
                removed = time.time()
                break
            time.sleep(0.25)
        with self.lock:
            self._kills.append(Kill(name, node, t, removed, None))

    def _sample_round(self, with_policy: bool) -> list[Sample]:
        """Every host's membership view (and policy digest), fetched in parallel."""
        t = time.time()
        out: dict[str, Sample] = {}

        def one(h: lab.HostState) -> None:
            m = lab.members(h, timeout=1.5)
            states = {x["name"]: x.get("state") for x in m.get("members", [])}
            digest = (
                actions.policy_digest(h.host)
                if with_policy
                else actions.policy_content_digest(h.host)
            )
            out[h.name] = Sample(
                t,
                h.name,
                m.get("digest"),
                digest,
                tuple(sorted(n for n, st in states.items() if st == "alive")),
                tuple(sorted(n for n, st in states.items() if st == "suspect")),
            )

        threads = [threading.Thread(target=one, args=(h,), daemon=True) for h in self.lab.hosts]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=10)
        return [out[h.name] for h in self.lab.hosts if h.name in out]

    def _sampler(self, stop: threading.Event) -> None:
        while not stop.is_set():
            t = time.monotonic()
            samples = self._sample_round(with_policy=False)
            with self.lock:
                self._samples += samples
            stop.wait(max(0.0, 0.5 - (time.monotonic() - t)))

    def _clock_sampler(self, stop: threading.Event) -> None:
        """Every agent's ``/v1/mesh/check`` (a fan-out to its peers) every 2 s."""
        by_address = {f"{h.address}:15443": h.node for h in self.lab.hosts}

        def one(h: lab.HostState) -> None:
            t = time.time()
            status, reply = lab.admin_status(h.host, "GET", "/v1/mesh/check", timeout=8)
            c = clock_check_from_reply(t, time.time(), h.name, status, reply, by_address)
            with self.lock:
                self._clock_checks.append(c)

        while not stop.is_set():
            t = time.monotonic()
            threads = [threading.Thread(target=one, args=(h,), daemon=True) for h in self.lab.hosts]
            for th in threads:
                th.start()
            for th in threads:
                th.join(timeout=12)
            stop.wait(max(0.0, CLOCK_CHECK_EVERY_S - (time.monotonic() - t)))

    # -- the run -------------------------------------------------------------------
    def execute(self) -> tuple[bool, str, list[Verdict]]:
        sc = self.scenario
        self._windows: list[dict[str, Any]] = []
        self._edits: list[Edit] = []
        self._ca_attempts: list[CaAttempt] = []
        self._kills: list[Kill] = []
        self._restarted: dict[str, float] = {}
        self._clock_checks: list[ClockCheck] = []
        print(f"[chaos] lab up: {sc['hosts']} hosts (prefix {self.prefix})", flush=True)
        self.lab = lab.up(
            int(sc["hosts"]),
            prefix=self.prefix,
            state_dir=self.state_dir,
            services=sc.get("services"),
        )
        ca = lab.admin(self.lab.hosts[0].host, "GET", "/v1/ca/status")
        self.threshold = int(ca.get("threshold") or len(self.lab.hosts) // 2 + 1)
        pids = self.state_dir / "pids"
        pids.mkdir(exist_ok=True)
        (pids / "runner.pid").write_text(str(__import__("os").getpid()))
        traffic_dir = self.state_dir / "traffic"
        traffic_dir.mkdir(exist_ok=True)
        loadgens = []
        for i, tr in enumerate(sc.get("traffic", [])):
            src = self.lab.by_name(tr["from"])
            out = traffic_dir / f"{i}-{src.name}-{tr['to']}.jsonl"
            argv = [
                __import__("sys").executable,
                "-m",
                "chaos.loadgen",
                "--source",
                src.name,
                "--service",
                tr["to"],
                "--rate",
                str(tr.get("rate", 10)),
                "--timeout",
                str(tr.get("timeout", 10)),
                "--out",
                str(out),
            ]
            pid = lab._spawn(src.host, argv, self.lab.log(f"loadgen-{i}.log"))
            (pids / f"loadgen-{i}.pid").write_text(str(pid))
            loadgens.append(pid)
        start = time.time()
        self.history = History(
            start,
            start,
            start,
            {h.name: h.node for h in self.lab.hosts},
            {h.name: h.service for h in self.lab.hosts},
            limits=self.limits,
        )
        actions.log(self.lab, "run-start", scenario=sc["name"])
        self._samples: list[Sample] = []
        sampler_stop = threading.Event()
        sampler = threading.Thread(target=self._sampler, args=(sampler_stop,), daemon=True)
        sampler.start()
        clock_stop = threading.Event()
        clock_sampler: threading.Thread | None = None
        if any("clock-skew" in s for s in sc["steps"]):
            clock_sampler = threading.Thread(
                target=self._clock_sampler, args=(clock_stop,), daemon=True
            )
            clock_sampler.start()
        for s in sorted(sc["steps"], key=lambda s: float(s["at"])):
            time.sleep(max(0.0, start + float(s["at"]) - time.time()))
            print(f"[chaos] t={time.time() - start:5.1f}s {json.dumps(s)}", flush=True)
            with self.lock:
                self.step(s)
        time.sleep(max(0.0, start + float(sc.get("duration", 0)) - time.time()))
        # Final heal: network, delay routes, paused and dead agents.
        print(f"[chaos] t={time.time() - start:5.1f}s final heal", flush=True)
        with self.lock:
            self.step({"at": 0, "heal": True})
            for kind, key in list(self.open):
                if kind == "stop":
                    actions.cont(self.lab, key)
                    self._close("stop", key)
                elif kind == "kill":
                    actions.restart(self.lab, key)
                    self._close("kill", key)
                    self._restarted[key] = time.time()
        final_heal = time.time()
        sampler_stop.set()
        sampler.join(timeout=10)
        samples: list[Sample] = list(self._samples)
        everyone = set(self.history.hosts.values())
        agreed_rounds = 0
        deadline = time.monotonic() + self.limits.convergence_s + 10
        while time.monotonic() < deadline and agreed_rounds < 3:
            t = time.monotonic()
            round_ = self._sample_round(with_policy=True)
            samples += round_
            policy = {
                x.policy_digest
                if x.policy_digest is None or self.limits.state_vector_must_agree
                else x.policy_digest.split("/")[0]
                for x in round_
            }
            same = (
                len(round_) == len(self.lab.hosts)
                and len({x.members_digest for x in round_}) == 1
                and len(policy) == 1
                and None not in policy
                and all(set(x.alive) == everyone for x in round_)
            )
            agreed_rounds = agreed_rounds + 1 if same else 0
            time.sleep(max(0.0, t + 1.0 - time.monotonic()))
        time.sleep(2)  # a little post-heal traffic
        if clock_sampler is not None:
            # the mesh gets skew_detect_s after the last clock restore, then a few answers
            skews = [w for w in self._windows if w["kind"] == "clock-skew"]
            last = max((w["end"] for w in skews), default=final_heal)
            time.sleep(max(0.0, last + self.limits.skew_detect_s + 3 * CLOCK_CHECK_EVERY_S
                            - time.time()))  # fmt: skip
            clock_stop.set()
            clock_sampler.join(timeout=15)
        for pid in loadgens:
            lab.signal_pid(pid)
        for thread in self.threads:
            thread.join(timeout=70)
        end = time.time()
        final_policy = {h.name: actions.policy_names(h.host) for h in self.lab.hosts}
        requests = []
        for f in sorted(traffic_dir.glob("*.jsonl")):
            for line in f.read_text().splitlines():
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                requests.append(
                    Request(r["t"], r["lat"], r["status"], r["src"], r["svc"], r.get("error", ""))
                )
        kills = [
            Kill(k.host, k.node, k.t, k.removed_at, self._restarted.get(k.host))
            for k in self._kills
        ]
        windows = [_window(w) for w in self._windows]
        history = History(
            start,
            end,
            final_heal,
            self.history.hosts,
            self.history.services,
            requests=sorted(requests, key=lambda r: r.t),
            edits=self._edits,
            ca=self._ca_attempts,
            windows=windows,
            samples=samples,
            final_policy=final_policy,
            kills=kills,
            limits=self.limits,
            clock_checks=sorted(self._clock_checks, key=lambda c: c.t),
        )
        verdicts = check(history)
        json_path, png_path, text = write(self.out_dir, sc["name"], history, verdicts)
        actions.log(
            self.lab, "run-end", scenario=sc["name"], passed=all(v.passed for v in verdicts)
        )
        return (
            all(v.passed for v in verdicts),
            text + f"\n  report: {json_path}\n  plot:   {png_path}",
            verdicts,
        )


def _window(w: dict[str, Any]) -> Any:
    from chaos.history import Window

    return Window(
        kind=w["kind"],
        start=w["start"],
        end=w["end"],
        hosts=tuple(w.get("hosts", ())),
        groups=tuple(tuple(g) for g in w.get("groups", ())),
        label=w.get("label", ""),
        offset=float(w.get("offset", 0.0)),
    )


def run_scenario(
    path: str | Path,
    *,
    state_dir: str | Path = "chaos-lab",
    out_dir: str | Path = "chaos-report",
    prefix: str = "pmchaos",
    keep: bool = False,
) -> tuple[bool, str]:
    scenario = load(path)
    state = Path(state_dir).resolve()
    r = Run(scenario, state, Path(out_dir).resolve(), prefix)
    try:
        passed, text, _ = r.execute()
    finally:
        if not keep:
            lab.down(prefix=prefix, state_dir=state)
    return passed, text
