"""Run-time schedules at scale: 10,000 entries added to the store at once, against the same
10,000 in a YAML file (issue 23).

One `beatq beat` (bench/apps/beat_beatq.py: the 1-s entry "tick" in code, nothing else)
runs on a private redis-server, or on a SQLite file, in an empty working directory.

  store  the beat leads; then `app.schedules.add_many` adds 10,000 daily cron entries
         from this process in one call. Figures: time to add (the call), time from the
         call until the leader has planned all of them (they are in the beat's state with
         a next run), the 1-s entry's lateness while they are added (its slots from the
         call until 1 s after all are planned) and while they wait (the 6 s after), the
         beat's RSS before, at its peak while they are added, and while they wait.
  yaml   the same 10,000 entries in schedules/bulk.yaml when the beat starts: time from
         the launch until all are planned, the 1-s entry's lateness and RSS while they
         wait (the 6 s after).
  start  the same 10,000 added to the store before the beat starts (a restart): as yaml.

Lateness is the beat's own stamp (its run history: sent at - slot); the beat sends a run
10 ms ahead of its slot with the slot as its eta (Beat.early), so a run on time shows
about -10 ms, and anything above 0 is late. The entries' hour is 12 h from now, so none
falls due during a run. Figures: median [min-max] over the runs; lateness percentiles
over every run's slots pooled (few slots fall in the adding window of one run).

    .venv/bin/python bench/sched_store.py [--repeat 3] [--backends redis,sqlite]
        [--modes store,yaml,start] [--n 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import yaml  # noqa: E402

from bench.core import BenchError, own_redis, process_tree, wait_for  # noqa: E402

RESULTS = BENCH / "results"
BIN = Path(sys.executable).parent
WAIT_WINDOW = 6.0  # seconds of "while they wait" after all are planned
BASELINE = 3.0  # seconds the beat leads before the batch is added


def entries(n: int) -> dict[str, dict]:
    """n daily cron entries at an hour 12 h from now (none falls due during a run)."""
    hour = (time.gmtime().tm_hour + 12) % 24
    return {
        f"bulk-{i:05d}": {"task": "bench.noop", "cron": f"{i % 60} {hour} * * *", "args": [i]}
        for i in range(n)
    }


class Beat:
    """`beatq beat` in its own process group, logging to a file."""

    def __init__(self, url: str, workdir: Path, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BENCH_", "BEATQ_"))}
        env |= {"BENCH_REDIS_URL": url, "PYTHONPATH": str(ROOT)}
        self.log = log
        self.started = time.time()
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [str(BIN / "beatq"), "-A", "bench.apps.beat_beatq", "beat", "-l", "warning"],
                cwd=workdir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def check(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise BenchError(f"the beat exited with {self.proc.returncode}: {tail}")

    def rss_mib(self) -> float:
        total = 0
        for pid in process_tree(self.proc.pid):
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total / 1024

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class Store:
    """The store under test: its URL, a client app on it, and how many entries are planned."""

    def __init__(self, kind: str, redis_url: str, folder: Path) -> None:
        self.kind = kind
        if kind == "redis":
            self.url = redis_url
            redis.Redis.from_url(redis_url).flushdb()  # the private server's db 0
        else:
            path = folder / "beatq.sqlite3"
            path.unlink(missing_ok=True)
            self.url, self.path = f"sqlite:///{path}", path
        os.environ["BENCH_REDIS_URL"] = self.url
        from bench.apps import beat_beatq

        self.app = beat_beatq.app
        self.app.close()
        self.app.conf.broker_url = self.url

    def planned(self) -> int:
        """Entries with a next run in the beat's state (the tick included)."""
        if self.kind == "redis":
            return int(redis.Redis.from_url(self.url).zcard("beatq:beat:next"))
        try:
            with sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5) as db:
                row = db.execute(
                    "SELECT count(*) FROM beat_entries WHERE next_run IS NOT NULL"
                ).fetchone()
        except sqlite3.OperationalError:
            return 0  # not created yet
        return int(row[0])

    def ticks(self, lo: float, hi: float) -> list[float]:
        """The 1-s entry's lateness (ms, sent at - slot) for its slots in [lo, hi)."""
        found = self.app.schedules.history("tick", 1000)
        return sorted(
            (r.sent_at - r.slot) * 1000
            for r in found
            if r.sent_at is not None and lo <= r.slot < hi and r.kind == "schedule"
        )


def leading(store: Store, beat: Beat, timeout: float = 60.0) -> None:
    wait_for(lambda: store.ticks(0, time.time() + 1), timeout, "the first tick", beat.check, 0.05)


def store_run(store: Store, n: int, workdir: Path, log: Path) -> dict:
    beat = Beat(store.url, workdir, log)
    try:
        leading(store, beat)
        time.sleep(BASELINE)
        out = {"rss before": beat.rss_mib()}
        specs = entries(n)
        peak = [0.0]
        t0 = time.time()
        store.app.schedules.add_many(specs)
        out["add s"] = time.time() - t0

        def all_planned() -> bool:
            peak[0] = max(peak[0], beat.rss_mib())
            return store.planned() >= n + 1

        wait_for(all_planned, 120, f"{n:,} entries planned", beat.check, 0.02)
        done = time.time()
        out["planned s"] = done - t0
        while time.time() < done + 1.0:
            peak[0] = max(peak[0], beat.rss_mib())
            time.sleep(0.02)
        out["rss peak adding"] = peak[0]
        out["late adding"] = store.ticks(t0, done + 1.0)
        time.sleep(WAIT_WINDOW)
        out["rss waiting"] = beat.rss_mib()
        out["late waiting"] = store.ticks(done + 1.0, done + 1.0 + WAIT_WINDOW)
        return out
    finally:
        beat.stop()


def yaml_run(store: Store, n: int, workdir: Path, log: Path) -> dict:
    (workdir / "schedules").mkdir(exist_ok=True)
    path = workdir / "schedules" / "bulk.yaml"
    path.write_text(yaml.safe_dump({"schedules": entries(n)}, sort_keys=False))
    beat = Beat(store.url, workdir, log)
    try:
        wait_for(lambda: store.planned() >= n + 1, 120, f"{n:,} planned", beat.check, 0.02)
        done = time.time()
        out = {"planned s": done - beat.started}
        time.sleep(1.0)
        out["rss waiting"] = beat.rss_mib()
        time.sleep(WAIT_WINDOW)
        out["late waiting"] = store.ticks(done + 1.0, done + 1.0 + WAIT_WINDOW)
        return out
    finally:
        beat.stop()
        path.unlink()


def start_run(store: Store, n: int, workdir: Path, log: Path) -> dict:
    """The 10,000 in the store before the beat starts (a restart): as yaml_run."""
    t0 = time.time()
    store.app.schedules.add_many(entries(n))
    out = {"add s": time.time() - t0}
    beat = Beat(store.url, workdir, log)
    try:
        wait_for(lambda: store.planned() >= n + 1, 120, f"{n:,} planned", beat.check, 0.02)
        done = time.time()
        out["planned s"] = done - beat.started
        time.sleep(1.0)
        out["rss waiting"] = beat.rss_mib()
        time.sleep(WAIT_WINDOW)
        out["late waiting"] = store.ticks(done + 1.0, done + 1.0 + WAIT_WINDOW)
        return out
    finally:
        beat.stop()


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.3g} [{min(values):.3g}-{max(values):.3g}]"


def pct(values: list[float], p: int) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.quantiles(values, n=100, method='inclusive')[p - 1]:.2f}"


def summary(runs: list[dict]) -> list[str]:
    lines = []
    for key in ("add s", "planned s", "rss before", "rss peak adding", "rss waiting"):
        values = [r[key] for r in runs if key in r]
        if values:
            lines.append(f"    {key:<18} {spread(values)}")
    for key in ("late adding", "late waiting"):
        pooled = [x for r in runs for x in r.get(key, [])]
        if pooled:
            lines.append(
                f"    {key + ' ms':<18} p50 {pct(pooled, 50)}  p99 {pct(pooled, 99)}  "
                f"max {max(pooled):.2f}  ({len(pooled)} slots over {len(runs)} runs; "
                f"above 0: {sum(1 for x in pooled if x > 0)})"
            )
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--backends", default="redis,sqlite")
    ap.add_argument("--modes", default="store,yaml,start")
    args = ap.parse_args()
    RESULTS.mkdir(exist_ok=True)
    logs = RESULTS / "logs"
    logs.mkdir(exist_ok=True)
    samples: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-sched-store-") as tmp:
        folder = Path(tmp)
        with own_redis() as redis_url:
            for rep in range(args.repeat):
                for backend in args.backends.split(","):
                    for mode in args.modes.split(","):
                        workdir = folder / f"{backend}-{mode}-{rep}"
                        workdir.mkdir()
                        store = Store(backend, redis_url, folder)
                        log = logs / f"sched-store-{backend}-{mode}-{rep}.log"
                        run = {"store": store_run, "yaml": yaml_run, "start": start_run}[mode]
                        out = run(store, args.n, workdir, log)
                        out["load 1m"] = os.getloadavg()[0]
                        samples.setdefault(f"{backend} {mode}", []).append(out)
                        shown = {
                            k: round(v, 3) if isinstance(v, float) else v
                            for k, v in out.items()
                            if not k.startswith("late")
                        }
                        late = {k: max(v, default=None) for k, v in out.items() if "late" in k}
                        print(f"[rep {rep}] {backend} {mode}: {shown} late max ms {late}")
                        store.app.close()
    print(f"\n{args.n:,} entries, median [min-max] of {args.repeat} runs (s, MiB):")
    for key, runs in samples.items():
        print(f"  {key}")
        print("\n".join(summary(runs)))
    (RESULTS / "sched_store.json").write_text(json.dumps(samples, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
