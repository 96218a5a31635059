"""Async tasks: beatq's asyncio pool against its sync pools, one worker process each.

    .venv/bin/python bench/async_tasks.py [--repeat 3] [--backends redis,sqlite] [--quick]

Scenarios (medians of --repeat runs; each run a fresh worker on a fresh store):
- drain: 20,000 no-op tasks queued first, then one worker drains them; the rate is
  (N - 1) / (last finish - first finish), read from the tasks' own results (each returns
  the instant it finished). `async -P asyncio -c 100` against `sync -P solo` (the issue's
  70 % goal) and `async -P solo`.
- sleepers: N tasks that each `await asyncio.sleep(S)`, sent in one batch to a running
  `-P asyncio -c C` worker: wall time from the send to the last finish, tasks/s, and p50/p99
  latency from the send to each finish (1,000 x 0.1 s, -c 1000; 10,000 x 0.05 s, -c 1000).

It starts its own redis-server on a free port (flushed between runs: it is ours) and uses a
fresh SQLite file per run. beatq beside arq and taskiq, on Redis: bench/async_peers.py.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from bench.core import own_redis, wait_for  # noqa: E402

TIMEOUT = 300.0


def start_worker(url: str, args: list[str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BENCH_BROKER_URL": url, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "beatq", "-A", "bench.apps.async_app", "worker", "-l", "warning"]
    return subprocess.Popen(cmd + args, env=env, cwd=ROOT, stderr=subprocess.DEVNULL)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def finishes(app, results) -> list[float]:
    """The finish instants the tasks returned, read in batches."""
    store = app.result_store
    values: list[float] = []
    for i in range(0, len(results), 1000):
        chunk = results[i : i + 1000]
        raws = store.get_results([r.id for r in chunk])
        for r, raw in zip(chunk, raws):
            values.append(r._decode(raw)["result"])
    return values


def fresh_app(url: str):
    os.environ["BENCH_BROKER_URL"] = url
    import importlib

    import bench.apps.async_app as module

    module = importlib.reload(module)
    return module.app, module


def wait_done(app, results) -> None:
    """Until every task has its result: the newest ones first (looked at every 50 ms),
    then each."""
    store = app.result_store
    tail = [r.id for r in results[-200:]]
    wait_for(lambda: None not in store.get_results(tail), TIMEOUT, "the last tasks", interval=0.05)
    for r in results:
        r.get(timeout=TIMEOUT)


def drain(url: str, task: str, pool: list[str], n: int) -> float:
    app, module = fresh_app(url)
    sent = []
    for i in range(0, n, 1000):
        sent += getattr(module, task).apply_many([() for _ in range(min(1000, n - i))])
    worker = start_worker(url, pool)
    try:
        wait_done(app, sent)
    finally:
        stop(worker)
        app.close()
    done = finishes(app, sent)
    return (n - 1) / (max(done) - min(done))


def sleepers(url: str, n: int, seconds: float, concurrency: int) -> dict[str, float]:
    app, module = fresh_app(url)
    worker = start_worker(url, ["-P", "asyncio", "-c", str(concurrency)])
    try:
        wait_for(lambda: bool(app.broker.workers()), 60, "the worker", interval=0.05)
        time.sleep(0.5)
        began = time.time()
        sent = []
        for i in range(0, n, 1000):
            sent += module.asleep.apply_many([(seconds,) for _ in range(min(1000, n - i))])
        wait_done(app, sent)
    finally:
        stop(worker)
        app.close()
    done = finishes(app, sent)
    lat = sorted(d - began for d in done)
    wall = max(done) - began
    return {
        "wall_s": wall,
        "tasks_per_s": n / wall,
        "p50_ms": lat[len(lat) // 2] * 1000,
        "p99_ms": lat[int(len(lat) * 0.99) - 1] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backends", default="redis,sqlite")
    parser.add_argument("--quick", action="store_true", help="a tenth of the tasks")
    parser.add_argument("--only", choices=["drain", "sleepers"], help="one scenario")
    opts = parser.parse_args()
    scale = 10 if opts.quick else 1
    report: dict[str, object] = {}
    with own_redis() as redis_url, tempfile.TemporaryDirectory() as tmp:
        import redis

        client = redis.Redis.from_url(redis_url)
        runs = 0

        def url_for(backend: str) -> str:
            nonlocal runs
            runs += 1
            if backend == "redis":
                client.flushall()  # our own server
                return redis_url
            return f"sqlite:///{tmp}/run{runs}.db"

        for backend in opts.backends.split(","):
            cases = {
                "drain async -P asyncio -c 100": ("anoop", ["-P", "asyncio", "-c", "100"]),
                "drain sync -P solo": ("noop", ["-P", "solo"]),
                "drain async -P solo": ("anoop", ["-P", "solo"]),
            }
            for name, (task, pool) in cases.items() if opts.only != "sleepers" else ():
                rates = [
                    drain(url_for(backend), task, pool, 20_000 // scale) for _ in range(opts.repeat)
                ]
                report[f"{backend}: {name} (tasks/s)"] = round(statistics.median(rates))
                print(backend, name, [round(r) for r in rates], flush=True)
            sleeps = ((1000, 0.1), (10_000 // scale, 0.05)) if opts.only != "drain" else ()
            for n, seconds in sleeps:
                got = [sleepers(url_for(backend), n, seconds, 1000) for _ in range(opts.repeat)]
                med = {k: round(statistics.median(g[k] for g in got), 2) for k in got[0]}
                report[f"{backend}: {n} x {seconds}s sleepers, -P asyncio -c 1000"] = med
                print(backend, n, seconds, got, flush=True)
            if opts.only != "sleepers":
                a = report[f"{backend}: drain async -P asyncio -c 100 (tasks/s)"]
                s = report[f"{backend}: drain sync -P solo (tasks/s)"]
                report[f"{backend}: async drain / sync solo drain"] = round(a / s, 2)  # type: ignore[operator]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
