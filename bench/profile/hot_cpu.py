"""The CPU a `delay()` and a worker's task run cost in beatq's own Python, the store left
out (memory://, in one process): the share every backend pays.

    python bench/profile/hot_cpu.py send|run [--tree DIR] [--n 20000] [--repeat 5]
        [--task noop|noop_result] [--measure K]

`send`: K `noop.delay()` (after 200 warm-up calls). `run`: N messages are queued with
`apply_many` and claimed four at a time; each is run by the worker's `Executor.execute`
as a solo worker runs it (the next claim given as `then`, so its acknowledgement rides on
the finish). Prints CPU µs per call, median [min-max] of the repeats (process time of the
measured loop alone).

`--measure K` measures K calls once and prints nothing but their count: for instruction
counts, run it under callgrind twice, with K and with 0, and divide the difference of
the totals by K (setup, imports and the queued messages are the same in both):

    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p \
        python bench/profile/hot_cpu.py run --n 2000 --measure 2000

`--tree DIR`: the beatq to measure (default: this checkout), for two trees side by side.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

parser = argparse.ArgumentParser()
parser.add_argument("what", choices=("send", "run"))
parser.add_argument("--tree", default=str(ROOT))
parser.add_argument("--n", type=int, default=20000)
parser.add_argument("--repeat", type=int, default=5)
parser.add_argument("--task", default="noop", choices=("noop", "noop_result"))
parser.add_argument("--measure", type=int, default=None)
opts = parser.parse_args()
sys.path.insert(0, opts.tree)

from beatq import Beatq  # noqa: E402
from beatq.brokers.roles import Take  # noqa: E402
from beatq.worker.delivery import Delivery  # noqa: E402
from beatq.worker.execute import Executor  # noqa: E402

app = Beatq("hotcpu", broker="memory://hotcpu")


@app.task(ignore_result=True)
def noop():
    return None


@app.task
def noop_result():
    return None


task = {"noop": noop, "noop_result": noop_result}[opts.task]


def send(k: int) -> float:
    delay = task.delay
    t0 = time.process_time()
    for _ in range(k):
        delay()
    return time.process_time() - t0


def queued(n: int) -> list[list[Delivery]]:
    """N messages queued, then claimed in batches of four, as a solo worker takes them."""
    app.broker.purge(["celery"])
    task.apply_many([()] * n)
    batches = []
    ask = Take(["celery"], 4, 3600.0)
    while True:
        claimed = app.broker.take(ask)
        if not claimed.claims:
            return batches
        batches.append([Delivery(c) for c in claimed.claims])


def run(batches: list[list[Delivery]], k: int, executor: Executor) -> float:
    done = 0
    t0 = time.process_time()
    for batch in batches:
        for i, delivery in enumerate(batch):
            if done == k:
                return time.process_time() - t0
            then = batch[i + 1] if i + 1 < len(batch) else None
            outcome = executor.execute(delivery, then)
            if then is not None and outcome.then_acked:
                then.acked = True
            done += 1
    return time.process_time() - t0


executor = Executor(app, "hotcpu@host")
send(200)
if opts.what == "run":
    run(queued(200), 200, executor)

if opts.measure is not None:
    if opts.what == "send":
        send(opts.measure)
    else:
        run(queued(opts.n), opts.measure, executor)
    print(opts.measure)
    sys.exit(0)

per_call = []
for _ in range(opts.repeat):
    if opts.what == "send":
        app.broker.purge(["celery"])
        seconds = send(opts.n)
    else:
        seconds = run(queued(opts.n), opts.n, executor)
    per_call.append(seconds / opts.n * 1e6)
print(
    f"{opts.what} {opts.task}: {statistics.median(per_call):.2f} µs CPU a call "
    f"[{min(per_call):.2f}-{max(per_call):.2f}], {opts.repeat} x {opts.n}"
)
