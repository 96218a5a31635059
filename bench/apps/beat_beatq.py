"""beatq app for the beat benchmark (bench/beat.py): default settings, broker on BENCH_REDIS_URL.

Its beat_schedule, built from the environment:

    tick                            bench.noop every 1 s, to queue "tick" (unless BENCH_BEAT_TICK=0)
                                    (bench.tick, which records when it runs, with
                                    BENCH_TICK_TASK=bench.tick: the suite's precision phase)
    bulk-00000 ... (BENCH_BEAT_N)   bench.noop every 60 s, to the default queue "celery"

beatq's `every` runs on a fixed grid from the epoch, so all bulk entries fall due together
at each whole minute, and the tick at each whole second. No schedule files are read: the
benchmark starts the beat in an empty working directory.
"""

import os
from datetime import timedelta

from beatq import Beatq
from bench.apps import stamps

app = Beatq("bench_beat_beatq", broker=os.environ["BENCH_REDIS_URL"])


@app.task(name="bench.noop", ignore_result=True)
def noop():
    return None


@app.task(name="bench.tick", ignore_result=True)
def tick():
    stamps.tick()


schedule = {}
if os.environ.get("BENCH_BEAT_TICK", "1") == "1":
    schedule["tick"] = {
        "task": os.environ.get("BENCH_TICK_TASK", "bench.noop"),
        "schedule": timedelta(seconds=1),
        "options": {"queue": "tick"},
    }
for i in range(int(os.environ.get("BENCH_BEAT_N", "0"))):
    schedule[f"bulk-{i:06d}"] = {"task": "bench.noop", "schedule": timedelta(seconds=60)}
app.conf.beat_schedule = schedule
