"""Where a SQLite no-op task's CPU goes: the store's calls alone, and the whole worker.

    python bench/profile/sqlite_store.py --trees /old/tree,/new/tree [--n 5000] [--repeat 5]

For each tree in turn (the order alternating run by run), on a fresh file: `n` delay()s
from one process (CPU µs per call: the message built and sent); then the same process
makes the store calls a `worker -P solo` makes to drain them (claims of 4 with ack_first,
the other three acknowledged one by one, as the finish before each does): CPU µs per task
of the store alone; then `n` more are drained by a real `worker -P solo` (its CPU per task
from /proc, a client waiting on the last one's result). Whole minus store: what the
worker's own code costs (message decode, the run, the loop). Medians [min-max] and the
ratio of each tree's figure to the first tree's, run by run; the load average per run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ONE = r"""
import json, os, signal, subprocess, sys, time
sys.path.insert(0, os.environ["STORE_DIR"])
import beatq
assert beatq.__file__.startswith(os.environ["PYTHONPATH"]), beatq.__file__
from beatq.brokers.roles import Finish, Take
import store_app as m

n = int(os.environ["STORE_N"])
m.noop.delay()
t0 = time.process_time()
for _ in range(n):
    m.noop.delay()
send = (time.process_time() - t0) / n * 1e6
broker = m.app.broker
t0, done = time.process_time(), 0
while True:
    claimed = broker.take(Take(["celery"], 4, 60.0, True, 0.0))
    if not claimed.claims:
        break
    for claim in claimed.claims[1:] if claimed.acked else claimed.claims:
        broker.settle(Finish(ack=[claim]))
    done += len(claimed.claims)
store = (time.process_time() - t0) / done * 1e6
for _ in range(n):
    m.noop.delay()
last = m.ping.delay()
env = {**os.environ, "PYTHONPATH": os.environ["PYTHONPATH"] + ":" + os.environ["STORE_DIR"]}
worker = subprocess.Popen(
    [sys.executable, "-m", "beatq", "-A", "store_app", "worker", "-P", "solo", "-l", "warning"],
    cwd=os.environ["STORE_DIR"], env=env,
)
def cpu():
    fields = open(f"/proc/{worker.pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
while broker.queue_length("celery") > n:
    time.sleep(0.002)
c0 = cpu()
assert last.get(timeout=300) == 1
whole = (cpu() - c0) / n * 1e6
worker.send_signal(signal.SIGINT)
worker.wait(30)
print(json.dumps({"send": send, "store": store, "worker": whole, "load": os.getloadavg()[0]}))
"""

APP = """
import os
from beatq import Beatq

app = Beatq("store_bench", broker="sqlite:///" + os.environ["STORE_FILE"])


@app.task(ignore_result=True)
def noop():
    return None


@app.task
def ping():
    return 1
"""

FIGURES = ("send", "store", "worker")


def one(tree: str, n: int, tmp: Path, run: int) -> dict[str, float]:
    folder = tmp / f"run{run}-{Path(tree).name}"
    folder.mkdir()
    (folder / "store_app.py").write_text(APP)
    env = {
        **os.environ,
        "PYTHONPATH": tree,
        "STORE_DIR": str(folder),
        "STORE_FILE": str(folder / "store.db"),
        "STORE_N": str(n),
    }
    out = subprocess.run(
        [sys.executable, "-c", ONE], env=env, cwd=folder, capture_output=True, check=True
    )
    return json.loads(out.stdout.decode().strip().splitlines()[-1])


def spread(values: list[float], fmt: str) -> str:
    return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}-{max(values):{fmt}}]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trees", required=True, help="comma-separated checkouts, the first the base")
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    trees = [str(Path(t).resolve()) for t in args.trees.split(",")]
    runs: list[dict[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="sqlite-store-") as tmp:
        for run in range(args.repeat):
            order = trees if run % 2 == 0 else trees[::-1]
            runs.append({tree: one(tree, args.n, Path(tmp), run) for tree in order})
            print(json.dumps(runs[-1]), flush=True)
    loads = [r[t]["load"] for r in runs for t in trees]
    print(f"\n{args.repeat} runs, n={args.n}, load average {min(loads):.1f}-{max(loads):.1f}")
    for key in FIGURES:
        print(f"CPU us per task, {key}:")
        for tree in trees:
            values = [r[tree][key] for r in runs]
            ratios = [r[tree][key] / r[trees[0]][key] for r in runs]
            print(f"  {tree}: {spread(values, '.1f')}  x{spread(ratios, '.2f')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
