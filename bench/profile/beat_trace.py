"""Where one run of a 1-s entry spends its time inside the beat, in process.

    python bench/profile/beat_trace.py URL [SECONDS]     (URL: a Redis database to use)

Runs a `Beat` of a fresh app (one entry every 1 s, to queue "tick") in a thread of this
process and wraps its steps; per run it prints, against the run's slot (ms, p50 and max):
woke (the wait and spin ended), run_due, prepare (start, end), build (the message, when it
is built at the instant), dispatch (start, end of the round trip). The beatq imported is
the one first on sys.path (PYTHONPATH=<tree> to measure another checkout).
"""

import statistics
import sys
import threading
import time
from datetime import timedelta

from beatq import Beatq
from beatq.beat.beat import Beat

url = sys.argv[1]
seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 15
app = Beatq("trace", broker=url)


@app.task(name="bench.noop", ignore_result=True)
def noop():
    return None


app.conf.beat_schedule = {
    "tick": {"task": "bench.noop", "schedule": timedelta(seconds=1), "options": {"queue": "tick"}}
}
beat = Beat(app, files=[])
marks: list[dict[str, float]] = []
now: dict[str, float] = {}


def wrap(obj, name, before=None, after=None):
    inner = getattr(obj, name)

    def step(*args, **kwargs):
        if before:
            now[before] = time.time()
        out = inner(*args, **kwargs)
        if after:
            now[after] = time.time()
        return out

    setattr(obj, name, step)


inner_sleep, inner_dispatch = beat._sleep, beat._dispatch


def sleep(seconds, precise):
    inner_sleep(seconds, precise)
    now.clear()
    now["woke"] = time.time()


def dispatch(runs):
    now["dispatch0"] = time.time()
    inner_dispatch(runs)
    now["dispatch1"] = time.time()
    marks.append({k: (v - runs[0].dispatch.slot) * 1000 for k, v in now.items()})


beat._sleep, beat._dispatch = sleep, dispatch
wrap(beat, "_run_due", "run_due")
wrap(beat, "_prepare", "prepare0", "prepare1")
wrap(app, "build_message", "build0", "build1")
thread = threading.Thread(target=beat.run, daemon=True)
thread.start()
time.sleep(seconds)
beat.stop()
thread.join(5)
marks = marks[2:]  # the first runs warm up
STEPS = ["woke", "run_due", "prepare0", "build0", "build1", "prepare1", "dispatch0", "dispatch1"]
for key in STEPS:
    values = [m[key] for m in marks if key in m]
    if values:
        p50, top = statistics.median(values), max(values)
        print(f"{key:9} p50 {p50:7.3f} ms  max {top:7.3f}  n={len(values)}")
