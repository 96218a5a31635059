"""What the dashboard's timeline (beatq/timeline.py) costs a worker: CPU per task, on and off.

    python bench/profile/timeline_cost.py [--n 20000] [--repeat 7] [--pool solo]

One process, no broker server: a memory:// store, N `ignore_result` no-ops queued, then a
worker of this tree run in a thread (`-P solo`, or `threads -c 4`) until it has finished
them all; CPU is this process's (every thread: the worker's loop, its heartbeat) over the
drain, per task. Off (`timeline_interval = 0`) and on (10 s, the default) alternate within
each repetition, the order rotating, and the ratio on/off is taken run by run. Without a
server and its round trips the worker's own cost is the whole figure, so a share of it
here is an upper bound of the share on Redis or SQLite. It first times the counting
itself (`WorkerTimeline.done`), the floor of what the timeline adds per task.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from beatq import Beatq  # noqa: E402
from beatq.timeline import WorkerTimeline  # noqa: E402
from beatq.worker import Worker  # noqa: E402


def counting() -> float:
    """µs of one `WorkerTimeline.done`, what the worker adds per task: the best of 7
    rounds of 500,000 calls (the floor, without the machine's noise)."""
    timeline = WorkerTimeline("cost", ["celery"], 10.0, 3600.0)
    rounds = timeit.repeat(lambda: timeline.done("SUCCESS", 0.0001), number=500_000, repeat=7)
    return min(rounds) / 500_000 * 1e6


def drain(n: int, pool: str, concurrency: int, interval: float) -> float:
    """CPU µs per task of a worker draining `n` no-ops with the timeline at `interval`."""
    app = Beatq("timelinecost", broker="memory://")
    app.conf.update(timeline_interval=interval, task_ignore_result=True)

    @app.task(ignore_result=True)
    def noop() -> None:
        return None

    for _ in range(n // 1000):
        noop.apply_many([()] * 1000)
    worker = Worker(app, pool=pool, concurrency=concurrency, hostname="cost", idle_wait=0.1)
    begun = time.process_time()
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    while worker.processed < n:
        time.sleep(0.005)
    spent = time.process_time() - begun
    worker.stop()
    thread.join(10)
    app.close()
    return spent / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--pool", default="solo", choices=["solo", "threads"])
    ap.add_argument("-c", "--concurrency", type=int, default=4)
    opts = ap.parse_args()
    print(f"counting a task (WorkerTimeline.done): {counting():.2f} µs", flush=True)
    runs: dict[str, list[float]] = {"off": [], "on": []}
    ratios = []
    for r in range(opts.repeat):
        order = ["off", "on"] if r % 2 == 0 else ["on", "off"]
        got = {}
        for mode in order:
            got[mode] = drain(opts.n, opts.pool, opts.concurrency, 10.0 if mode == "on" else 0)
            runs[mode].append(got[mode])
        ratios.append(got["on"] / got["off"])
        print(f"run {r}: off {got['off']:.1f} µs/task, on {got['on']:.1f}", flush=True)

    def show(values: list[float], fmt: str = ".1f") -> str:
        return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}–{max(values):{fmt}}]"

    print(f"\n-P {opts.pool}, {opts.n} no-ops, CPU µs/task, median [min–max]:")
    print(f"off {show(runs['off'])}   on {show(runs['on'])}   on/off {show(ratios, '.3f')}")


if __name__ == "__main__":
    main()
