"""Drain rate and worker CPU of two beatq trees side by side, Redis and SQLite, each pool.

    python bench/profile/drain_vs.py --old /path/to/old/tree --new . [--n 20000]
        [--repeat 3] [--stores redis,sqlite] [--pools "prefork -c 2;threads -c 4;solo"]
        [--limited 1000/s] [--results]

Each run: a fresh store (a private redis-server's db 1 flushed, or a new SQLite file), N
no-ops queued with apply_many and a sentinel with a result last, then a worker started
through the CLI of the tree measured (PYTHONPATH). The clock starts when the queue first
shrinks and stops when the sentinel's result is there; CPU is the worker's processes'
(parent and children, from /proc: Linux only) over that span, per task. OLD and NEW
alternate within each repetition, the order rotating, and the ratio new/old is taken run
by run, so a noisy minute hits both sides. Trees: copy them first (`git archive REV |
tar -x -C DIR`) so edits during the run do not leak in.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.core import own_redis, with_db  # noqa: E402

APP = """
import os
from beatq import Beatq
app = Beatq("drainbench", broker=os.environ["DRAIN_URL"])

@app.task(ignore_result=not os.environ.get("DRAIN_RESULTS"))
def noop():
    return None

@app.task
def sentinel():
    return 1

if os.environ.get("DRAIN_LIMIT"):  # --limited: one task of the app is rate-limited, never sent
    @app.task(ignore_result=True, rate_limit=os.environ["DRAIN_LIMIT"])
    def limited():
        return None
"""

ONE = r"""
import os, sys, time, subprocess, signal, json
sys.path.insert(0, os.environ["DRAIN_APPDIR"])
import drainapp
app = drainapp.app
n = int(os.environ["DRAIN_N"])
for _ in range(n // 1000):
    drainapp.noop.apply_many([()] * 1000)
last = drainapp.sentinel.delay()
full = app.broker.queue_length("celery")
cmd = [sys.executable, "-m", "beatq", "-A", "drainapp", "worker", "-l", "warning",
       *os.environ["DRAIN_ARGS"].split()]
proc = subprocess.Popen(cmd, cwd=os.environ["DRAIN_APPDIR"], env=os.environ,
                        start_new_session=True)
try:
    deadline = time.monotonic() + 60
    while app.broker.queue_length("celery") >= full:
        if time.monotonic() > deadline:
            raise SystemExit("worker never started")
        time.sleep(0.0005)
    from pathlib import Path
    tick = os.sysconf("SC_CLK_TCK")

    def tree(pid):
        found = [pid]
        for path in Path(f"/proc/{pid}/task").glob("*/children"):
            found += [int(c) for c in path.read_text().split()]
        return found

    def cpu(pids):
        total = 0
        for pid in pids:
            try:
                f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(f[11]) + int(f[12])
            except FileNotFoundError:
                pass
        return total / tick

    pids = tree(proc.pid)
    kids = [pid for pid in pids if pid != proc.pid]
    c0, k0 = cpu(pids), cpu(kids)
    t0 = time.perf_counter()
    last.get(timeout=300)
    took = time.perf_counter() - t0
    c1, k1 = cpu(pids), cpu(kids)
    per = 1e6 / (full - 1)
    print(json.dumps({
        "rate": (full - 1) / took,
        "cpu": (c1 - c0) * per,
        "parent": ((c1 - c0) - (k1 - k0)) * per,
        "children": (k1 - k0) * per,
    }))
finally:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
"""


def one(
    tree: Path, url: str, args: str, n: int, appdir: str, limit: str = "", results: bool = False
) -> dict:
    env = {
        **os.environ,
        "DRAIN_LIMIT": limit,
        "DRAIN_RESULTS": "1" if results else "",
        "PYTHONPATH": f"{tree}:{appdir}",
        "DRAIN_URL": url,
        "DRAIN_APPDIR": appdir,
        "DRAIN_N": str(n),
        "DRAIN_ARGS": args,
    }
    done = subprocess.run(
        [sys.executable, "-c", ONE],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=appdir,
    )
    if done.returncode:
        raise SystemExit(f"run failed ({tree}, {url}, {args}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--old", type=Path, required=True)
    ap.add_argument("--new", type=Path, required=True)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--stores", default="redis,sqlite")
    ap.add_argument("--pools", default="prefork -c 2;threads -c 4;solo")
    ap.add_argument(
        "--limited",
        default="",
        metavar="RATE",
        help="give the app a task with this rate limit (never sent): a worker with a "
        "rate-limited task (trees from issue 22 on)",
    )
    ap.add_argument("--results", action="store_true", help="the no-ops store their results")
    a = ap.parse_args()
    appdir = tempfile.mkdtemp(prefix="drainapp-")
    Path(appdir, "drainapp.py").write_text(APP)
    stack = contextlib.ExitStack()
    redis_url = with_db(stack.enter_context(own_redis()), 1)
    client = redis.Redis.from_url(redis_url)
    trees = {"old": a.old.resolve(), "new": a.new.resolve()}
    rows = []
    try:
        for store in a.stores.split(","):
            for pool in a.pools.split(";"):
                rates: dict[str, list[float]] = {"old": [], "new": []}
                cpus: dict[str, list[float]] = {"old": [], "new": []}
                split: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
                ratios, cpu_ratios = [], []
                for i in range(a.repeat):
                    order = ["old", "new"] if i % 2 == 0 else ["new", "old"]
                    got = {}
                    for side in order:
                        if store == "redis":
                            client.flushdb()
                            url = redis_url
                        else:
                            db = Path(appdir, f"q-{side}-{i}.db")
                            for suffix in ("", "-wal", "-shm"):
                                Path(str(db) + suffix).unlink(missing_ok=True)
                            url = f"sqlite:///{db}"
                        out = one(trees[side], url, f"-P {pool}", a.n, appdir, a.limited, a.results)
                        got[side] = out["rate"]
                        rates[side].append(out["rate"])
                        cpus[side].append(out["cpu"])
                        split[side].append((out["parent"], out["children"]))
                    ratios.append(got["new"] / got["old"])
                    cpu_ratios.append(cpus["new"][-1] / cpus["old"][-1])
                    print(
                        store,
                        pool,
                        i,
                        {k: round(v) for k, v in got.items()},
                        {k: round(v[-1]) for k, v in cpus.items()},
                        {k: tuple(round(x) for x in v[-1]) for k, v in split.items()},
                        flush=True,
                    )
                row = (store, pool, rates, ratios, cpus, cpu_ratios, split)
                rows.append(row)
    finally:
        stack.close()

    def cell(v: list[float], fmt: str = ",.0f") -> str:
        return f"{statistics.median(v):{fmt}} [{min(v):{fmt}}–{max(v):{fmt}}]"

    print()
    print(
        "| store | worker | old tasks/s | new tasks/s | new/old (run by run) "
        "| old CPU µs/task | new CPU µs/task | new/old CPU (run by run) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for store, pool, rates, ratios, cpus, cpu_ratios, _ in rows:
        print(
            f"| {store} | -P {pool} | {cell(rates['old'])} | {cell(rates['new'])} | "
            f"{cell(ratios, '.3f')} | {cell(cpus['old'])} | {cell(cpus['new'])} | "
            f"{cell(cpu_ratios, '.3f')} |"
        )
    print("\nCPU µs/task, the worker's parent process and its children:")
    print("| store | worker | old parent | new parent | old children | new children |")
    print("|---|---|---|---|---|---|")
    for store, pool, _, _, _, _, split in rows:
        old_p, old_c = ([x[i] for x in split["old"]] for i in (0, 1))
        new_p, new_c = ([x[i] for x in split["new"]] for i in (0, 1))
        print(
            f"| {store} | -P {pool} | {cell(old_p)} | {cell(new_p)} | "
            f"{cell(old_c)} | {cell(new_c)} |"
        )


if __name__ == "__main__":
    main()
