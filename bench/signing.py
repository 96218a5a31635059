"""Signed messages on and off (`security_key`, beatq/signing.py), side by side in one run.

On one private redis-server, each repetition runs beatq twice, once without a key and once
with one (set as BEATQ_SECURITY_KEY for the client here and the workers), the order
alternating between repetitions. Each side does the suite's figures 1-3 (bench/jobs.py):
enqueue N no-ops with `delay()` and drain them with a `-P solo` worker; enqueue N with
`apply_many` and drain them with the default worker (prefork -c 2); K sequential round
trips against a `-P solo` worker. The ratio signed / unsigned is taken within each
repetition; medians [min-max] over the repetitions are printed and kept in
bench/results/signing.json. On a machine shared with other work the rates swing more
than signing costs; the CPU a process spends per task moves less, and the last two rows
time signing's own steps in this process (CPU time, on and off alternating 40 times):
what a client spends to build and sign a message, what a worker spends to check and
decode one. Runs in the project's venv (no peers needed):

    .venv/bin/python -m bench.signing [--repeat 5] [-n 20000] [-k 500]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from bench.core import RESULTS, BenchError, frozen_beatq, own_redis, wait_for

KEY = "bench-signing-key-" + "0123456789abcdef" * 2
TICK = os.sysconf("SC_CLK_TCK")
FIGURES = [  # name, unit
    ("enqueue delay()", "tasks/s"),
    ("enqueue delay(): client CPU", "µs/task"),
    ("drain -P solo", "tasks/s"),
    ("drain -P solo: worker CPU", "µs/task"),
    ("enqueue apply_many", "tasks/s"),
    ("drain prefork -c 2", "tasks/s"),
    ("drain prefork -c 2: worker CPU", "µs/task"),
    ("round trip p50", "ms"),
    ("round trip p95", "ms"),
]


def one_side(peer, signed: bool, n: int, k: int, logs: Path, tag: str) -> dict[str, float]:
    from bench import jobs

    if signed:
        os.environ["BEATQ_SECURITY_KEY"] = KEY  # the workers' environment
    else:
        os.environ.pop("BEATQ_SECURITY_KEY", None)
    peer.app.app.conf.security_key = KEY if signed else None  # the client (this process)
    settings = peer.settings()
    out: dict[str, float] = {}
    cpu = time.process_time()
    out["enqueue delay()"], full = jobs.load(peer, n, batch=False)
    out["enqueue delay(): client CPU"] = (time.process_time() - cpu) / n * 1e6
    _check_signed(peer, signed)
    rate, worker_cpu = drain(peer, settings["one"], full, logs / f"{tag}-one.log")
    out["drain -P solo"], out["drain -P solo: worker CPU"] = rate, worker_cpu
    _check_none_refused(peer)
    out["enqueue apply_many"], full = jobs.load(peer, n, batch=True)
    _check_signed(peer, signed)
    rate, worker_cpu = drain(peer, settings["default"], full, logs / f"{tag}-default.log")
    out["drain prefork -c 2"], out["drain prefork -c 2: worker CPU"] = rate, worker_cpu
    _check_none_refused(peer)
    rt = jobs.roundtrips(peer, settings["one"], False, k, 30, logs / f"{tag}-rt.log")
    out["round trip p50"], out["round trip p95"] = rt["p50"], rt["p95"]
    return out


def steps(rounds: int = 40, n: int = 3000) -> dict[str, dict[str, list[float]]]:
    """CPU µs per message of building one (with `Message.encode`'s signature) and of a
    worker's check and decode (Executor._refusal, messages.decode), signing off and on."""
    from beatq import Beatq, messages, signing

    app = Beatq("bench_signing", broker="memory://")
    noop = app.task(name="noop", ignore_result=True)(lambda: None)
    signer = signing.signer_for(KEY)
    _, signed_body = app.build_message("noop", (), {}, noop)
    out: dict[str, dict[str, list[float]]] = {"build": {}, "check": {}}
    for i in range(rounds):
        for side in ("off", "on") if i % 2 else ("on", "off"):
            app.conf.security_key = KEY if side == "on" else None
            t = time.process_time()
            for _ in range(n):
                app.build_message("noop", (), {}, noop)
            out["build"].setdefault(side, []).append((time.process_time() - t) / n * 1e6)
            body = app.build_message("noop", (), {}, noop)[1]
            check = signer if side == "on" else None
            t = time.process_time()
            for _ in range(n):
                if check is not None and check.refusal(body) is not None:
                    raise BenchError("refused")
                messages.decode(body, ["json"])
            out["check"].setdefault(side, []).append((time.process_time() - t) / n * 1e6)
    return out


def drain(peer, setting, full: int, log: Path) -> tuple[float, float]:
    """jobs.drain's rate (first message taken to the sentinel's own stamp), and the CPU
    its worker processes took over that time, in µs per task (from /proc: Linux only)."""
    from bench.jobs import START_TIMEOUT, Workers

    with Workers(peer, setting, log) as w:
        wait_for(lambda: peer.depth() < full, START_TIMEOUT, w.label, w.check_alive)
        w0, cpu0 = time.time(), cpu_seconds(w.pids())
        wait_for(lambda: peer.r.get("bench:done") is not None, 120, "the sentinel", w.check_alive)
        cpu = cpu_seconds(w.pids()) - cpu0
        stamp = float(peer.r.get("bench:done"))
    return (full - 1) / (stamp - w0), cpu / (full - 1) * 1e6


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / TICK


def _check_signed(peer, signed: bool) -> None:
    from beatq.brokers.redis import split_stored

    body = split_stored(next(peer.r.hscan_iter("beatq:msg", count=10))[1])[1]
    if body.startswith(b'{"sig":') != signed:
        raise BenchError(f"messages are {'not ' if signed else ''}signed: {body[:120]!r}")


def _check_none_refused(peer) -> None:
    refused = peer.r.hlen("beatq:dead")
    if refused:
        raise BenchError(f"{refused} messages went to the dead letters")


def cell(s: dict[str, float], fmt: str) -> str:
    return f"{fmt.format(s['median'])} [{fmt.format(s['min'])}–{fmt.format(s['max'])}]"


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("-n", type=int, default=20_000, help="no-ops per drain")
    parser.add_argument("-k", type=int, default=500, help="round trips")
    args = parser.parse_args()
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, dict[str, float]]] = []
    with frozen_beatq(), own_redis() as base:
        from bench.peers import BeatqPeer

        peer = BeatqPeer(base)
        began = time.time()
        for rep in range(args.repeat):
            sides = ["off", "on"] if rep % 2 == 0 else ["on", "off"]
            run = {}
            for side in sides:
                run[side] = one_side(
                    peer, side == "on", args.n, args.k, logs, f"signing-{side}-{rep}"
                )
            runs.append(run)
            print(f"rep {rep + 1}/{args.repeat}: " + json.dumps(run))
        peer.close()
    os.environ.pop("BEATQ_SECURITY_KEY", None)
    timed = steps()
    rows = []
    summary = {}
    for name, unit in FIGURES:
        off = [r["off"][name] for r in runs]
        on = [r["on"][name] for r in runs]
        ratio = [r["on"][name] / r["off"][name] for r in runs]
        summary[name] = {"unit": unit, "off": spread(off), "on": spread(on), "ratio": spread(ratio)}
        rows.append((name, unit, spread(off), spread(on), spread(ratio)))
    for step, name in (("build", "client: build a message"), ("check", "worker: check, decode")):
        off, on = timed[step]["off"], timed[step]["on"]
        ratio = [b / a for a, b in zip(off, on)]
        summary[name] = {"unit": "µs CPU", "off": spread(off), "on": spread(on)}
        summary[name]["ratio"] = spread(ratio)
        rows.append((name, "µs CPU", spread(off), spread(on), spread(ratio)))
    load = os.getloadavg()[0]
    took = time.time() - began
    print(f"\n{args.repeat} runs, n={args.n}, k={args.k}, {took:.0f} s, load {load:.1f}")
    print("| figure | unsigned | signed | signed / unsigned |")
    print("|---|---|---|---|")
    for name, unit, off, on, ratio in rows:
        fmt = {"tasks/s": "{:,.0f}", "µs/task": "{:.1f}", "µs CPU": "{:.2f}"}.get(unit, "{:.3f}")
        print(
            f"| {name} ({unit}) | {cell(off, fmt)} | {cell(on, fmt)} | "
            f"{ratio['median']:.3f} [{ratio['min']:.3f}–{ratio['max']:.3f}] |"
        )
    out = RESULTS / "signing.json"
    record = {"args": vars(args), "load": load, "runs": runs, "steps": timed, "summary": summary}
    out.write_text(json.dumps(record, indent=1))
    print(f"\nJSON: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
