"""What Celery's signals and task hooks cost: enqueue and drain of one tree, with and without
receivers connected, or two trees side by side.

    python bench/profile/signals_cost.py --tree . [--old /path/to/old/tree] [--n 20000]
        [--repeat 3] [--store redis|sqlite]

Each run: a fresh store (a private redis-server's db 1 flushed, or a new SQLite file).
Enqueue: N `noop.delay()` from one client, timed after 200 warm-up calls. Drain: those no-ops
and a sentinel last, run by `beatq worker -P solo` started through the tree's CLI; the clock
starts when the queue first shrinks and stops at the sentinel's result.
Variants: `old` (the --old tree, no receivers), `none` (the tree, no receivers), `receivers`
(the tree, a no-op receiver on each publish and task signal, the app's tasks on a base class
with no-op hooks). They alternate within each repetition, the order rotating.
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

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.core import own_redis, with_db  # noqa: E402

APP = """
import os
from beatq import Beatq, Task
app = Beatq("sigbench", broker=os.environ["SIG_URL"])
Base = Task
if os.environ.get("SIG_RECEIVERS"):
    from beatq import signals

    def nothing(sender=None, **kwargs):
        return None

    for name in ("before_task_publish", "after_task_publish", "task_received", "task_prerun",
                 "task_postrun", "task_success"):
        getattr(signals, name).connect(nothing)

    class Base(Task):
        def before_start(self, task_id, args, kwargs):
            pass

        def on_success(self, retval, task_id, args, kwargs):
            pass

        def after_return(self, status, retval, task_id, args, kwargs, einfo):
            pass

@app.task(ignore_result=True, base=Base)
def noop():
    return None

@app.task
def sentinel():
    return 1
"""

ONE = r"""
import os, sys, time, subprocess, signal, json
sys.path.insert(0, os.environ["SIG_APPDIR"])
import sigapp
app, n = sigapp.app, int(os.environ["SIG_N"])
for _ in range(200):
    sigapp.noop.delay()
began = time.perf_counter()
for _ in range(n):
    sigapp.noop.delay()
enqueue = n / (time.perf_counter() - began)
last = sigapp.sentinel.delay()  # the drain: what was enqueued, this last
full = app.broker.queue_length("celery")
cmd = [sys.executable, "-m", "beatq", "-A", "sigapp", "worker", "-l", "warning", "-P", "solo"]
proc = subprocess.Popen(cmd, cwd=os.environ["SIG_APPDIR"], env=os.environ, start_new_session=True)
try:
    deadline = time.monotonic() + 120
    while app.broker.queue_length("celery") >= full:
        if time.monotonic() > deadline:
            raise SystemExit("the worker never started")
        time.sleep(0.0005)
    start = time.perf_counter()
    last.get(timeout=300)
    drain = full / (time.perf_counter() - start)
finally:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(30)
print(json.dumps({"enqueue": enqueue, "drain": drain}))
"""


def run_one(tree: Path, url: str, n: int, receivers: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="sigbench-") as tmp:
        (Path(tmp) / "sigapp.py").write_text(APP)
        env = {**os.environ, "PYTHONPATH": f"{tree}:{tmp}", "SIG_URL": url}
        env.update({"SIG_APPDIR": tmp, "SIG_N": str(n)})
        env.pop("BEATQ_BROKER_URL", None)
        if receivers:
            env["SIG_RECEIVERS"] = "1"
        if url.startswith("sqlite"):
            env["SIG_URL"] = f"sqlite:///{tmp}/bench.sqlite3"
        out = subprocess.run(
            [sys.executable, "-c", ONE], env=env, capture_output=True, text=True, timeout=900
        )
        if out.returncode:
            raise RuntimeError(out.stderr[-2000:])
        return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", type=Path, default=Path("."))
    ap.add_argument("--old", type=Path)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--store", default="redis", choices=("redis", "sqlite"))
    args = ap.parse_args()
    variants = [("none", args.tree.resolve(), False), ("receivers", args.tree.resolve(), True)]
    if args.old:
        variants.insert(0, ("old", args.old.resolve(), False))
    figures: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in variants}
    with own_redis() as base:
        url = with_db(base, 1)
        client = redis.Redis.from_url(url)
        for rep in range(args.repeat):
            order = variants[rep % len(variants) :] + variants[: rep % len(variants)]
            for name, tree, receivers in order:
                client.flushdb()
                got = run_one(tree, url if args.store == "redis" else "sqlite", args.n, receivers)
                figures[name].append(got)
                print(f"[rep {rep + 1}] {name}: {json.dumps(got)}", flush=True)
    print(f"\n{args.n} tasks, {args.repeat} runs, store {args.store}: median [min-max] tasks/s")
    for name, runs in figures.items():
        cells = []
        for key in ("enqueue", "drain"):
            values = [r[key] for r in runs]
            cells.append(
                f"{key} {statistics.median(values):,.0f} [{min(values):,.0f}-{max(values):,.0f}]"
            )
        print(f"  {name:10} " + "; ".join(cells))


if __name__ == "__main__":
    main()
