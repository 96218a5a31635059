"""What events cost: beatq's enqueue and drain with events off and on, side by side in one run.

    .venv/bin/python bench/events.py [--n 5000] [--repeat 3] [--pool prefork] [-c 2]

Events on means what a user turns on: the client sends task-sent
(`task_send_sent_event`), the worker runs with `-E` (received, started, succeeded,
worker heartbeats). The modes alternate within each repetition (off, on, then on, off)
so drift of a loaded machine falls on both. Figures are medians of the repetitions
with min and max.

- enqueue: `noop.delay()` n times, one message per call (a round trip each);
- drain, two tasks: `noop` (ignore_result: with events off its finish is the early
  acknowledgement alone) and `noop_result` (stores a result): a worker started on a
  queue of n messages; the clock runs from its first take to the sentinel task's stamp;
- in-process: one Executor runs n claimed messages of each no-op in a loop, in this
  process: the worker's own cost per task (us), without a pool's or a scheduler's noise.

Starts its own redis-server on a free port (nothing else is touched).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.core import ROOT, BenchError, frozen_beatq, own_redis, wait_for  # noqa: E402

RESULTS = ROOT / "bench" / "results"
MODES = ("off", "on")


def enqueue(app, n: int, events: bool) -> float:
    from bench.apps.beatq_app import noop

    app.conf.task_send_sent_event = events
    for _ in range(50):  # warm-up: connection, scripts
        noop.delay()
    t0 = time.perf_counter()
    for _ in range(n):
        noop.delay()
    return n / (time.perf_counter() - t0)


def drain(app, url: str, task: str, n: int, events: bool, pool: str, conc: int, log: Path) -> float:
    from bench.apps import beatq_app

    client = redis.Redis.from_url(url)
    client.flushdb()
    app.conf.task_send_sent_event = False  # the load is not what is measured here
    beatq_app.app.send_many(getattr(beatq_app, task), [((), {})] * n)
    beatq_app.done.delay()
    full = n + 1
    wait_for(lambda: app.broker.queue_length("celery") >= full, 30, f"{full} queued")
    argv = [sys.executable, "-m", "beatq", "-A", "bench.apps.beatq_app", "worker"]
    argv += ["-P", pool, "-c", str(conc), "-l", "warning", *(["-E"] if events else [])]
    env = {**os.environ, "BENCH_REDIS_URL": url}
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:

        def alive() -> None:
            if proc.poll() is not None:
                raise BenchError(f"worker exited {proc.returncode}: {log.read_text()[-2000:]}")

        t0 = wait_for(lambda: app.broker.queue_length("celery") < full, 60, "a take", alive)
        w0 = time.time() - (time.perf_counter() - t0)
        wait_for(lambda: client.get("bench:done") is not None, 300, "the sentinel", alive)
        stamp = float(client.get("bench:done"))
        if events:
            kept = client.xlen("beatq:events")
            if kept < min(n, 5000):
                raise BenchError(f"events on, but only {kept} events in the stream")
        return n / (stamp - w0)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        client.close()


def inprocess(app, url: str, task: str, n: int, events: bool) -> float:
    """Microseconds per task for one Executor running n claimed no-ops in a loop."""
    from beatq.worker.execute import Executor
    from bench.apps import beatq_app

    redis.Redis.from_url(url).flushdb()
    app.conf.task_send_sent_event = False
    app.conf.worker_send_task_events = events
    beatq_app.app.send_many(getattr(beatq_app, task), [((), {})] * n)
    claims = []
    while len(claims) < n:
        claims += app.broker.claim(["celery"], 1000, 600).claims
    try:  # a Delivery (a claim decoded once) since the worker/pool hand-over rework
        from beatq.worker.delivery import Delivery

        runs = [Delivery(claim) for claim in claims]
    except ImportError:
        runs = claims
    executor = Executor(app, "bench")
    t0 = time.perf_counter()
    for run in runs:
        executor.execute(run)
    executor.flush_events()
    app.conf.worker_send_task_events = False
    return (time.perf_counter() - t0) / n * 1e6


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="messages per enqueue and drain")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pool", default="prefork")
    parser.add_argument("-c", "--concurrency", type=int, default=2)
    parser.add_argument(
        "--figures", default="enqueue,drain,inprocess", help="which, comma separated"
    )
    args = parser.parse_args()
    figures = set(args.figures.split(","))
    RESULTS.mkdir(exist_ok=True)
    logs = RESULTS / "events-logs"
    logs.mkdir(exist_ok=True)
    samples: dict[str, dict[str, list[float]]] = {}
    with own_redis() as base, frozen_beatq():
        url = f"{base}/1"
        os.environ["BENCH_REDIS_URL"] = url
        from bench.apps.beatq_app import app

        for rep in range(args.repeat):
            order = MODES if rep % 2 == 0 else MODES[::-1]
            for mode in order:
                on = mode == "on"
                redis.Redis.from_url(url).flushdb()
                if "enqueue" in figures:
                    rate = enqueue(app, args.n, on)
                    samples.setdefault("enqueue", {}).setdefault(mode, []).append(rate)
                if "drain" in figures:
                    for task in ("noop", "noop_result"):
                        log = logs / f"{task}-{mode}-{rep}.log"
                        got = drain(app, url, task, args.n, on, args.pool, args.concurrency, log)
                        samples.setdefault(f"drain {task}", {}).setdefault(mode, []).append(got)
                if "inprocess" in figures:
                    for task in ("noop", "noop_result"):
                        us = inprocess(app, url, task, args.n, on)
                        name = f"in-process {task} us"
                        samples.setdefault(name, {}).setdefault(mode, []).append(us)
                print(
                    f"rep {rep + 1}/{args.repeat} events {mode}: "
                    + ", ".join(f"{k} {v[mode][-1]:,.0f}/s" for k, v in samples.items()),
                    flush=True,
                )
    summary = {
        name: {mode: spread(values) for mode, values in by_mode.items()}
        for name, by_mode in samples.items()
    }
    print()
    print(
        f"beatq, Redis, {args.n} messages, {args.repeat} runs, worker -P {args.pool} "
        f"-c {args.concurrency}; tasks/s (in-process: us/task), median (min-max)"
    )
    print(f"{'':<20} {'events off':>24} {'events on':>24} {'cost':>7}")
    for name, by_mode in summary.items():
        off, on = by_mode["off"], by_mode["on"]
        cost = (off["median"] - on["median"]) / off["median"] * 100
        if name.startswith("in-process"):  # a time, not a rate: more is worse
            cost = (on["median"] - off["median"]) / off["median"] * 100
        cells = [f"{m['median']:,.0f} ({m['min']:,.0f}-{m['max']:,.0f})" for m in (off, on)]
        print(f"{name:<20} {cells[0]:>24} {cells[1]:>24} {cost:>6.1f}%")
        summary[name]["cost_percent"] = cost
    out = RESULTS / f"events-{time.strftime('%Y%m%dT%H%M%S')}.json"
    meta = {"n": args.n, "repeat": args.repeat, "pool": args.pool, "c": args.concurrency}
    out.write_text(json.dumps({"settings": meta, "samples": samples, "summary": summary}, indent=1))
    print(f"\nsaved {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
