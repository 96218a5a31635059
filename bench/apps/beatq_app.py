"""beatq app for the benchmark: default settings, broker on BENCH_BROKER_URL if set (bench/eta.py's
SQLite run), else BENCH_REDIS_URL, where the tasks' stamps go either way."""

import os

from beatq import Beatq
from bench.apps import stamps

app = Beatq(
    "bench_beatq", broker=os.environ.get("BENCH_BROKER_URL") or os.environ["BENCH_REDIS_URL"]
)


@app.task(ignore_result=True)
def noop():
    return None


@app.task
def noop_result():
    return None


# canvas benchmark (bench/canvas.py): chord members and body, chain links
@app.task
def add(x, y):
    return x + y


@app.task
def tsum(numbers):
    return sum(numbers)


# suite (bench/suite.py): drain sentinel, ETA lateness, beat precision tick
@app.task(name="bench.done", ignore_result=True)
def done():
    stamps.done()


@app.task(name="bench.late", ignore_result=True)
def late(eta):
    stamps.late(eta)


@app.task(name="bench.late_traced", ignore_result=True)
def late_traced(eta):
    stamps.traced(eta)


@app.task(name="bench.tick", ignore_result=True)
def tick():
    stamps.tick()
