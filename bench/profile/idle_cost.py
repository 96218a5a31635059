"""What an idle worker costs: its CPU per second and the Redis commands it sends per second.

    python bench/profile/idle_cost.py --trees /old/tree,/new/tree [--seconds 20] [--repeat 2]
        [--pool solo]

For each tree in turn (the order alternating), on a private redis-server: a worker started
through the CLI of that tree runs one task, then idles `--seconds`; its processes' CPU
over that span (from /proc: Linux only, 10 ms ticks, so give it 20 s or more) and what it
sent Redis meanwhile (MONITOR, by command, FCALL by function) are printed per second.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.core import own_redis, with_db  # noqa: E402

APP = """
import os
from beatq import Beatq
app = Beatq("idlebench", broker=os.environ["IDLE_URL"])

@app.task
def noop_result():
    return None
"""

ONE = r"""
import os, sys, time, subprocess, signal, json
sys.path.insert(0, os.environ["IDLE_APPDIR"])
import idleapp
cmd = [sys.executable, "-m", "beatq", "-A", "idleapp", "worker", "-l", "warning",
       *os.environ["IDLE_ARGS"].split()]
proc = subprocess.Popen(cmd, cwd=os.environ["IDLE_APPDIR"], env=os.environ,
                        start_new_session=True)
try:
    idleapp.noop_result.delay().get(timeout=60)
    time.sleep(1.0)  # its start is over
    print("ready", proc.pid, flush=True)
    sys.stdin.readline()  # the measuring process is done
finally:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(20)
"""


def cpu_seconds(pid: int) -> float:
    """CPU (user + system) of `pid` and its children alive now."""
    pids = [pid]
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        pids += [int(c) for c in path.read_text().split()]
    total = 0
    for one in pids:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def watch(url: str, counts: collections.Counter, stop: threading.Event) -> None:
    with redis.Redis.from_url(url).monitor() as monitor:
        for cmd in monitor.listen():
            parts = cmd["command"].split()
            if not parts:
                continue
            head = parts[0].upper()
            if head == "ECHO" and stop.is_set():
                return
            if head in ("FCALL", "FCALL_RO") and len(parts) > 1:
                head += " " + parts[1].rsplit("_", 1)[-1]
            counts[head] += 1


def measure(tree: Path, url: str, args: str, seconds: float, appdir: str) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": f"{tree}:{appdir}",
        "IDLE_URL": url,
        "IDLE_APPDIR": appdir,
        "IDLE_ARGS": args,
    }
    runner = subprocess.Popen(
        [sys.executable, "-c", ONE],
        env=env,
        cwd=appdir,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert runner.stdin is not None and runner.stdout is not None
    try:
        line = runner.stdout.readline().split()
        if not line or line[0] != "ready":
            raise SystemExit(f"the worker of {tree} did not start")
        pid = int(line[1])
        counts: collections.Counter = collections.Counter()
        stop = threading.Event()
        thread = threading.Thread(target=watch, args=(url, counts, stop), daemon=True)
        thread.start()
        time.sleep(0.2)
        c0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(seconds)
        c1, took = cpu_seconds(pid), time.monotonic() - t0
        stop.set()
        redis.Redis.from_url(url).echo("done")
        thread.join(5)
    finally:
        runner.stdin.write("\n")
        runner.stdin.close()
        runner.wait(30)
    return {
        "cpu_ms_per_s": (c1 - c0) / took * 1000,
        "commands_per_s": {k: round(v / took, 2) for k, v in counts.most_common(10)},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trees", required=True, help="comma-separated beatq checkouts")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--pool", default="solo")
    a = ap.parse_args()
    trees = [Path(t).resolve() for t in a.trees.split(",")]
    appdir = tempfile.mkdtemp(prefix="idleapp-")
    Path(appdir, "idleapp.py").write_text(APP)
    with own_redis() as base_url:
        url = with_db(base_url, 1)
        for rep in range(a.repeat):
            for tree in trees if rep % 2 == 0 else list(reversed(trees)):
                redis.Redis.from_url(url).flushdb()
                got = measure(tree, url, f"-P {a.pool}", a.seconds, appdir)
                print(
                    f"{tree}: {got['cpu_ms_per_s']:.2f} ms CPU/s; {got['commands_per_s']}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
