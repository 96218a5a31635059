"""A drain of queued no-ops and the CPU each process took while it ran.

    bench/.venv/bin/python bench/profile/drain_cpu.py [--pool prefork -c 2] [--n 40000]
        [--repeat 3] [-- extra worker options, e.g. --prefetch-multiplier 16]

Starts its own redis-server, queues N no-op tasks (`apply_many`), starts a worker through
the CLI on them, and reports for each run the drain rate and the CPU of the worker's
parent, of each of its children and of redis-server, as a share of one core over the
drain (from /proc: Linux only). A sum near 200 % on 2 cores: the drain is bound by CPU;
well below: by waiting (round trips, wake-ups).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bench.core import own_redis, with_db  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def children(pid: int) -> list[int]:
    found: list[int] = []
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        found += [int(c) for c in path.read_text().split()]
    return sorted(found)


def server_pid(client: redis.Redis) -> int:
    return int(client.info("server")["process_id"])


def one_run(url: str, n: int, worker_args: list[str]) -> dict[str, float]:
    os.environ["BENCH_REDIS_URL"] = url
    from bench.apps import beatq_app as bench

    client = redis.Redis.from_url(url)
    client.flushdb()
    for _ in range(n // 1000):
        bench.noop.apply_many([()] * 1000)
    last = bench.noop_result.delay()  # queued last: its result ends the drain
    full = client.llen("beatq:q:celery")
    path = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)]))
    env = {**os.environ, "PYTHONPATH": path}
    cmd = [sys.executable, "-m", "beatq", "-A", "bench.apps.beatq_app", "worker", "-l", "warning"]
    worker = subprocess.Popen(
        cmd + worker_args, env=env, cwd=tempfile.gettempdir(), start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while client.llen("beatq:q:celery") >= full:
            if time.monotonic() > deadline or worker.poll() is not None:
                raise SystemExit("the worker did not start draining")
            time.sleep(0.001)
        procs = {"parent": worker.pid}
        procs.update({f"child{i}": pid for i, pid in enumerate(children(worker.pid))})
        procs["redis"] = server_pid(client)
        before = {name: cpu_seconds(pid) for name, pid in procs.items()}
        began = time.perf_counter()
        last.get(timeout=300)
        took = time.perf_counter() - began
        after = {name: cpu_seconds(pid) for name, pid in procs.items()}
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
    out = {"rate": full / took}
    out.update({name: (after[name] - before[name]) / took * 100 for name in procs})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pool", default="prefork")
    ap.add_argument("-c", default="2")
    ap.add_argument("--n", type=int, default=40_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("extra", nargs="*", help="more worker options (after --)")
    a = ap.parse_args()
    args = ["-P", a.pool, "-c", a.c, *a.extra]
    with own_redis() as url:
        runs = [one_run(with_db(url, 6), a.n, args) for _ in range(a.repeat)]
    for run in runs:
        cells = "  ".join(f"{k} {v:.0f}%" for k, v in run.items() if k != "rate")
        print(f"rate {run['rate']:,.0f}/s  {cells}")
    rates = [run["rate"] for run in runs]
    print(f"median {statistics.median(rates):,.0f}/s [{min(rates):,.0f}-{max(rates):,.0f}]")


if __name__ == "__main__":
    main()
