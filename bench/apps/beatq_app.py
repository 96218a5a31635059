"""beatq app for the benchmark: default settings, broker on BENCH_REDIS_URL."""

import os

from beatq import Beatq

app = Beatq("bench_beatq", broker=os.environ["BENCH_REDIS_URL"])


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
