"""One measurement of the beatq importable from PYTHONPATH; prints one JSON line.

    python bench/profile/measure.py URL enqueue|batch|drain|roundtrip [--n N] [--pool solo -c 1]

URL names a database this script may flush. `drain` and `roundtrip` start a worker
through the CLI (`python -m beatq`) with the same PYTHONPATH. Used by compare.py, which
runs it for two trees in turn so a loaded machine slows both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[2]


def app_module():
    # after PYTHONPATH: beatq comes from the tree measured, bench.apps from here
    sys.path.append(str(ROOT))
    from bench.apps import beatq_app

    return beatq_app


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.001)


def worker(url, pool, conc):
    env = {**os.environ, "BENCH_REDIS_URL": url}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(ROOT)]))
    cmd = [sys.executable, "-m", "beatq", "-A", "bench.apps.beatq_app", "worker"]
    cmd += ["-P", pool, "-c", str(conc), "-l", "warning"]
    # not cwd=ROOT: `python -m` puts the working directory first on sys.path
    return subprocess.Popen(cmd, cwd=tempfile.gettempdir(), env=env, start_new_session=True)


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process `pid` and its children now alive (Linux)."""
    pids = [pid]
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        pids += [int(c) for c in path.read_text().split()]
    total = 0
    for one in pids:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def server_cpu(r) -> float:
    info = r.info("cpu")
    return info["used_cpu_user"] + info["used_cpu_sys"]


def stop(proc):
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("what", choices=["enqueue", "batch", "drain", "roundtrip"])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--pool", default="solo")
    ap.add_argument("-c", type=int, default=1)
    ap.add_argument("--task", default="noop", help="noop (ignore_result) or noop_result")
    ap.add_argument(
        "--gap",
        type=float,
        default=0.0,
        help="roundtrip: seconds between two trips (sparse traffic: the worker idles)",
    )
    a = ap.parse_args()
    os.environ["BENCH_REDIS_URL"] = a.url
    r = redis.Redis.from_url(a.url)
    r.flushdb()
    bench = app_module()
    noop = getattr(bench, a.task)
    noop.delay()  # connect, load scripts
    r.config_resetstat()
    reads0 = r.info("stats")["total_reads_processed"]
    import beatq

    out: dict = {"what": a.what, "beatq": beatq.__file__}
    if a.what == "enqueue":
        t0 = time.perf_counter()
        for _ in range(a.n):
            noop.delay()
        out["rate"] = a.n / (time.perf_counter() - t0)
    elif a.what == "batch":
        calls = [()] * a.n
        t0 = time.perf_counter()
        noop.apply_many(calls)
        out["rate"] = a.n / (time.perf_counter() - t0)
    elif a.what == "drain":
        for _ in range(a.n // 1000):
            noop.apply_many([()] * 1000)
        sentinel = bench.noop_result.delay()
        full = r.llen("beatq:q:celery")
        proc = worker(a.url, a.pool, a.c)
        try:
            wait_for(lambda: r.llen("beatq:q:celery") < full, 60, "the worker to start")
            t0 = time.perf_counter()
            sentinel.get(timeout=120)
            out["rate"] = (full - 1) / (time.perf_counter() - t0)
        finally:
            stop(proc)
    else:
        proc = worker(a.url, a.pool, a.c)
        try:
            task, lat = bench.noop_result, []
            task.delay().get(timeout=60)
            for _ in range(20):
                task.delay().get(timeout=10)
            cpu0 = (proc_cpu(proc.pid), own_cpu(), server_cpu(r))
            for _ in range(a.n):
                t0 = time.perf_counter()
                task.delay().get(timeout=10)
                lat.append((time.perf_counter() - t0) * 1000)
                if a.gap:
                    time.sleep(a.gap)
            cpu1 = (proc_cpu(proc.pid), own_cpu(), server_cpu(r))
            q = statistics.quantiles(lat, n=100, method="inclusive")
            out.update(p50=q[49], p95=q[94], p99=q[98])
            # CPU µs per round trip: the worker's processes, this client, redis-server
            w, c, s = ((b - f) / a.n * 1e6 for f, b in zip(cpu0, cpu1))
            out.update(worker_us=w, client_us=c, server_us=s)
        finally:
            stop(proc)
    # socket reads by the server ~ client round trips (a pipeline is one), this script's
    # own INFO/LLEN polling included (small beside 20,000 tasks; not for drain, see NOTES)
    n = a.n
    out["reads/task"] = (r.info("stats")["total_reads_processed"] - reads0) / n
    stats = r.info("commandstats")
    out["commands/task"] = sum(v["calls"] for v in stats.values()) / n
    out["top"] = {
        k[8:]: round(v["calls"] / n, 2)
        for k, v in sorted(stats.items(), key=lambda kv: -kv[1]["calls"])[:8]
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
