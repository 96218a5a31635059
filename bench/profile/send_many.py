"""The client's send of ETA tasks in batches (issue 26, bench/eta.py --waiting): CPU a task.

    python bench/profile/send_many.py [--tree DIR] [--url memory://|redis://...] [--n 100000]
        [--chunk 100] [--repeat 5] [--profile] [--measure K]

N tasks of one argument each, sent with `apply_many` in chunks of --chunk sharing one eta an
hour ahead, as bench/eta.py's waiting run sends them. Prints the client's CPU µs a task
(process time of the send loop), median [min-max] of the repeats, and on Redis the send
rate and the server's CPU µs a task (INFO). Without --url: a private redis-server of its own
(never the shared one). --profile: cProfile of one repeat instead, by own time.
--measure K: send K tasks once, print K (for callgrind, as hot_cpu.py's --measure).
--distinct: each call its own arguments (due, i) instead of one tuple for all (bench/eta.py's).
--tree DIR: the beatq to measure (default this checkout), for two trees side by side.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

parser = argparse.ArgumentParser()
parser.add_argument("--tree", default=str(ROOT))
parser.add_argument("--url", default=None)
parser.add_argument("--n", type=int, default=100_000)
parser.add_argument("--chunk", type=int, default=100)
parser.add_argument("--repeat", type=int, default=5)
parser.add_argument("--profile", action="store_true")
parser.add_argument("--measure", type=int, default=None)
parser.add_argument(
    "--distinct", action="store_true", help="each call its own args (due, i), not one object"
)
opts = parser.parse_args()
sys.path.insert(0, opts.tree)
sys.path.insert(1, str(ROOT))

from beatq import Beatq  # noqa: E402
from bench.core import own_redis  # noqa: E402


def send(task, n: int, chunk: int) -> tuple[float, float, float]:
    """CPU, system CPU and wall seconds of sending n tasks in chunks of `chunk`."""
    base = time.time() + 3600
    steps = max(1, n // chunk)
    c0, t0 = time.process_time(), time.perf_counter()
    s0 = resource.getrusage(resource.RUSAGE_SELF).ru_stime
    sent = 0
    for i in range(steps):
        k = chunk if i < steps - 1 else n - sent
        due = base + 600 * i / steps
        calls = [(due, j) for j in range(k)] if opts.distinct else [(due,)] * k
        task.apply_many(calls, eta=due)
        sent += k
    sys_s = resource.getrusage(resource.RUSAGE_SELF).ru_stime - s0
    return time.process_time() - c0, sys_s, time.perf_counter() - t0


def server_s(app) -> float:
    client = getattr(app.broker, "client", None)
    if client is None:
        return 0.0
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def main(url: str) -> None:
    app = Beatq("sendmany", broker=url)

    @app.task(ignore_result=True)
    def late(eta: float, n: int = 0) -> None:
        return None

    def reset() -> None:
        client = getattr(app.broker, "client", None)
        if client is not None:
            client.flushdb()  # a private server only (see main's caller)
        else:
            app.broker.purge(["celery"])

    reset()
    send(late, 2000, opts.chunk)  # connected, the library loaded, caches warm
    if opts.measure is not None:
        send(late, opts.measure, opts.chunk)
        print(opts.measure)
        return
    if opts.profile:
        import cProfile
        import pstats

        reset()
        prof = cProfile.Profile()
        prof.enable()
        send(late, opts.n, opts.chunk)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        return
    cpu, system, rate, server = [], [], [], []
    for _ in range(opts.repeat):
        reset()
        s0 = server_s(app)
        c, sys_s, wall = send(late, opts.n, opts.chunk)
        system.append(sys_s / opts.n * 1e6)
        server.append((server_s(app) - s0) / opts.n * 1e6)
        cpu.append(c / opts.n * 1e6)
        rate.append(opts.n / wall)

    def cell(vals: list[float], fmt: str) -> str:
        return f"{statistics.median(vals):{fmt}} [{min(vals):{fmt}}-{max(vals):{fmt}}]"

    print(f"client {cell(cpu, '.2f')} µs CPU a task (system {cell(system, '.2f')}); ", end="")
    print(f"{cell(rate, ',.0f')} tasks/s", end="")
    print(f"; server {cell(server, '.2f')} µs a task" if url.startswith("redis") else "")


if opts.url:
    main(opts.url)
else:
    with own_redis() as base:
        main(base + "/0")
