"""``python -m chaos``: the lab, its faults, and scenario runs.

python -m chaos lab up --hosts 5 [--services web,orders,...] [--prefix P] [--state-dir D]
python -m chaos lab status | lab down
python -m chaos partition h1,h2 / h3,h4,h5 [--oneway]     python -m chaos heal
python -m chaos loss 10% [--hosts h1,h2]                    python -m chaos flaky h1 / h2,h3
python -m chaos delay orders 50ms      python -m chaos undelay
python -m chaos kill h2 | stop h2 | cont h2 | restart h2
python -m chaos clock-skew h2 30s | clock-skew h2 -45s | clock-skew h2 0
    (restarts h2's agent under libfaketime: its wall clock, OpenSSL's included, is
    offset, its monotonic clock is not; 0 or 'heal' restores it; at most ±1 day)
python -m chaos run chaos/scenarios/ci.yaml [--out DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from chaos import actions, lab
from chaos.clockskew import ClockSkewError, parse_offset
from chaos.netns import LabError, require_root


def _offset(text: str) -> float:
    """argparse type: a clock offset, refused with the reason when malformed or too big."""
    try:
        return parse_offset(text)
    except ClockSkewError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _duration_ms(text: str) -> float:
    text = text.strip().lower()
    if text.endswith("ms"):
        return float(text[:-2])
    if text.endswith("s"):
        return float(text[:-1]) * 1000
    return float(text)


def _negative_offset_is_positional(argv: list[str]) -> list[str]:
    """``clock-skew h2 -45s``: argparse would take ``-45s`` for an option; mark it."""
    if "clock-skew" not in argv:
        return argv
    i = argv.index("clock-skew")
    rest = argv[i + 1 :]
    if "--" in rest:
        return argv
    for j, arg in enumerate(rest):
        if len(arg) > 1 and arg[0] == "-" and (arg[1].isdigit() or arg[1] == "."):
            return argv[: i + 1] + rest[:j] + ["--"] + rest[j:]
    return argv


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m chaos", description="peermesh chaos lab")
    p.add_argument("--prefix", default="pmchaos", help="name prefix of namespaces and links")
    p.add_argument("--state-dir", default="chaos-lab", help="lab.json, logs, traffic, chaos.log")
    sub = p.add_subparsers(dest="cmd", required=True)
    lab_p = sub.add_parser("lab")
    lab_sub = lab_p.add_subparsers(dest="lab_cmd", required=True)
    up_p = lab_sub.add_parser("up")
    up_p.add_argument("--hosts", type=int, default=5)
    up_p.add_argument("--services", default="", help="comma-separated, one per host")
    lab_sub.add_parser("status").add_argument("--json", action="store_true")
    lab_sub.add_parser("down")
    part = sub.add_parser("partition")
    part.add_argument("groups", nargs="+", help="h1,h2 / h3,h4")
    part.add_argument("--oneway", action="store_true")
    sub.add_parser("heal")
    loss_p = sub.add_parser("loss")
    loss_p.add_argument("percent")
    loss_p.add_argument("--hosts", default="")
    flaky_p = sub.add_parser("flaky")
    flaky_p.add_argument("groups", nargs="+")
    flaky_p.add_argument("--duration", type=float, default=30)
    flaky_p.add_argument("--on", type=float, default=5)
    flaky_p.add_argument("--off", type=float, default=5)
    delay_p = sub.add_parser("delay")
    delay_p.add_argument("service")
    delay_p.add_argument("amount", help="e.g. 50ms")
    sub.add_parser("undelay")
    for name in ("kill", "stop", "cont", "restart"):
        sub.add_parser(name).add_argument("host")
    skew = sub.add_parser(
        "clock-skew",
        help="restart a host's agent with its wall clock offset (libfaketime)",
        description="Restart HOST's agent (same data dir and ports) under libfaketime with "
        "its wall clock (time.time, datetime, OpenSSL certificate checks) offset by OFFSET "
        "and its monotonic clock untouched. 0 restores the real clock, as does 'heal'.",
    )
    skew.add_argument("host")
    skew.add_argument("offset", type=_offset, help="e.g. 30s, -45s, +2m, 0 (at most ±1 day)")
    run_p = sub.add_parser("run")
    run_p.add_argument("scenario")
    run_p.add_argument("--out", default="chaos-report")
    run_p.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    args = p.parse_args(_negative_offset_is_positional(sys.argv[1:] if argv is None else argv))

    try:
        require_root()
    except LabError as exc:
        print(f"chaos: {exc}", file=sys.stderr)
        return 1
    try:
        if args.cmd == "run":
            from chaos.runner import run_scenario

            passed, text = run_scenario(
                args.scenario,
                state_dir=args.state_dir,
                out_dir=args.out,
                prefix=args.prefix,
                keep=args.keep,
            )
            print(text)
            return 0 if passed else 3
        if args.cmd == "lab" and args.lab_cmd == "up":
            services = [s for s in args.services.split(",") if s] or None
            t = time.monotonic()
            state = lab.up(args.hosts, prefix=args.prefix, state_dir=args.state_dir,
                           services=services)  # fmt: skip
            print(f"lab up: {len(state.hosts)} hosts ready in {time.monotonic() - t:.1f} s")
            _print_status(state)
            return 0
        if args.cmd == "lab" and args.lab_cmd == "down":
            removed = lab.down(prefix=args.prefix, state_dir=args.state_dir)
            left = lab.leftovers(args.prefix)
            print(f"lab down: removed {len(removed)} items; left: {left}")
            return 0 if not any(left.values()) else 1
        state = lab.LabState.load(args.state_dir)
    except FileNotFoundError:
        print(f"chaos: no lab in {args.state_dir} (run 'python -m chaos lab up')", file=sys.stderr)
        return 1
    except (LabError, ValueError, KeyError, RuntimeError, TimeoutError) as exc:
        print(f"chaos: {exc}", file=sys.stderr)
        return 1
    try:
        if args.cmd == "lab":
            _print_status(state, getattr(args, "json", False))
        elif args.cmd == "partition":
            actions.partition(
                state, actions.parse_groups(state, " ".join(args.groups)), args.oneway
            )
        elif args.cmd == "heal":
            actions.heal(state)
        elif args.cmd == "loss":
            hosts = [h for h in args.hosts.split(",") if h] or None
            actions.loss(state, float(args.percent.rstrip("%")), hosts)
        elif args.cmd == "flaky":
            groups = actions.parse_groups(state, " ".join(args.groups))
            end = time.monotonic() + args.duration
            actions.log(state, "flaky-start", groups=groups)
            while time.monotonic() < end:
                actions.partition(state, groups)
                time.sleep(args.on)
                actions.heal(state, network_only=True)
                time.sleep(args.off)
        elif args.cmd == "delay":
            actions.delay(state, args.service, _duration_ms(args.amount))
        elif args.cmd == "undelay":
            actions.undelay(state)
        elif args.cmd in ("kill", "stop", "cont", "restart"):
            getattr(actions, args.cmd)(state, args.host)
        elif args.cmd == "clock-skew":
            actions.clock_skew(state, args.host, args.offset)
        if args.cmd != "lab":
            print(f"{args.cmd}: done (logged to {state.state_dir}/chaos.log)")
        return 0
    except ClockSkewError as exc:
        print(f"chaos: clock-skew refused: {exc}", file=sys.stderr)
        return 2
    except (ValueError, KeyError, RuntimeError) as exc:
        print(f"chaos: {exc}", file=sys.stderr)
        return 1


def _print_status(state: lab.LabState, as_json: bool = False) -> None:
    rows = lab.status(state)
    print(f"{'host':5} {'node':8} {'address':10} {'service':8} {'agent':>7} {'app':>7} "
          f"{'ready':5} members-digest   alive  clock")  # fmt: skip
    for r in rows:
        print(
            f"{r['host']:5} {r['node']:8} {r['address']:10} {r['service']:8} "
            f"{r['agent_pid']:>6}{'' if r['agent_alive'] else '✗'} "
            f"{r['app_pid']:>6}{'' if r['app_alive'] else '✗'} "
            f"{'yes' if r['ready'] else 'no':5} {r['members_digest']!s:16} "
            f"{len(r['alive_members'])}/{len(rows)}"
            + (f"    {r['clock_offset']:+g}s" if r.get("clock_offset") else "")
        )
    if as_json:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    sys.exit(main())
