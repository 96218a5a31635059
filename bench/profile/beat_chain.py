"""Where a beat run's lateness goes, step by step, beat -> Redis -> worker.

    bench/.venv/bin/python bench/profile/beat_chain.py [--seconds 20] [--tree DIR] [--monitor]

Starts a private redis-server, a `beatq beat` (bench/apps/beat_beatq.py: a 1-s entry to
queue "tick", running bench.tick) and a `-P solo` worker, both through chain_stamps.py,
which stamps their steps. Prints each step's time after the run's slot (its whole second),
p50, p90 and max over the window, in the order a run takes them; `task.start` is the
task's own time.time() (what the suite's precision figure measures). --monitor adds
Redis's own stamps (MONITOR: r.dispatch, r.claim), which slow Redis down: read them for
order, not for size. --tree runs another checkout's beatq (PYTHONPATH).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from bench.core import own_redis, run_window, with_db  # noqa: E402

STEPS = [
    "b.ahead0", "b.ahead1", "b.prime0", "b.prime1", "b.woke", "b.pop0", "b.rundue0",
    "b.slots0", "b.slots1", "b.prep0", "b.prep1", "b.dispatch0", "b.bdm0", "b.send",
    "r.dispatch", "b.bdm1", "b.dispatch1", "r.claim", "w.claimed", "w.submit0", "w.exec",
    "w.decode0", "w.decode1", "w.hold0", "w.hold1", "w.ack0", "w.ack1", "w.request0",
    "w.request1", "w.runin0", "task.start",
]  # fmt: skip
# steps that also run at other times (w.ack: the finish after the task, too)
NEAR_THE_SLOT = {"b.pop0", "b.slots0", "b.slots1", "r.claim", "w.ack0", "w.ack1"}


def monitor(url: str, out: list[tuple[float, str]], stop: threading.Event) -> None:
    with redis.Redis.from_url(url).monitor() as m:
        for cmd in m.listen():
            if "beat_dispatch" in cmd["command"]:
                out.append((cmd["time"], "r.dispatch"))
            elif "_claim" in cmd["command"]:
                out.append((cmd["time"], "r.claim"))
            if stop.is_set():
                return


def after_slot_ms(t: float) -> float:
    """`t` against the nearest whole second (the slots), in ms: negative before it."""
    frac = t - math.floor(t)
    return (frac if frac < 0.5 else frac - 1) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--tree", type=Path, default=ROOT, help="the beatq tree to run")
    ap.add_argument("--monitor", action="store_true")
    a = ap.parse_args()
    with own_redis() as base, tempfile.TemporaryDirectory() as tmp:
        url = with_db(base, 1)
        seen: list[tuple[float, str]] = []
        stop = threading.Event()
        if a.monitor:
            threading.Thread(target=monitor, args=(base, seen, stop), daemon=True).start()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("BEATQ_")},
            "PYTHONPATH": f"{a.tree}{os.pathsep}{ROOT}",
            "BENCH_REDIS_URL": url,
            "BENCH_TICK_TASK": "bench.tick",
            "TRACE_DIR": tmp,
        }
        run = [sys.executable, str(Path(__file__).with_name("chain_stamps.py"))]
        run += ["-A", "bench.apps.beat_beatq"]
        worker = ["worker", "-Q", "tick", "-P", "solo", "-l", "warning"]
        start = run_window([[*run, "beat", "-l", "warning"], [*run, *worker]], env, tmp, a.seconds)
        stop.set()
        client = redis.Redis.from_url(url)
        client.ping()  # lets the monitor see its stop
        stamps: dict[str, list[float]] = {}
        for f in Path(tmp).glob("*.txt"):
            for line in f.read_text().splitlines():
                step, t = line.split()
                stamps.setdefault(step, []).append(float(t))
        for t, step in seen:
            stamps.setdefault(step, []).append(t)
        stamps["task.start"] = [float(x) for x in client.lrange("bench:ticks", 0, -1)]
    print(f"tree {a.tree}, load average {os.getloadavg()[0]:.2f}; ms after the slot")
    for step in STEPS:
        values = sorted(after_slot_ms(t) for t in stamps.get(step, []) if t > start)
        if step in NEAR_THE_SLOT:
            values = [v for v in values if -0.1 < v < 5]
        if values:
            p50, p90 = statistics.median(values), values[int(0.9 * (len(values) - 1))]
            top = values[-1]
            print(f"{step:12} n={len(values):3} p50 {p50:7.3f}  p90 {p90:7.3f}  max {top:7.3f}")


if __name__ == "__main__":
    main()
