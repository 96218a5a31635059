"""SQLite benchmark: beatq's embedded sqlite:// backend beside Huey's SqliteHuey, in one run.

For each system, in each repetition, on a fresh file of its own: enqueue N no-op tasks
from this process, drain them with one worker process (beatq `worker -P solo`, Huey's
consumer with one worker thread), then time K sequential round trips (send a task, wait
for its result) against that worker. Medians of the repetitions with [min-max], and the
ratio beatq/Huey computed run by run. Run it with the bench venv (bench/setup.sh):

    bench/.venv/bin/python bench/sqlite.py [--quick] [--repeat 3] [-n 10000] [-k 200] \
        [--json bench/results/sqlite.json] [--readme README.md]
    bench/.venv/bin/python bench/sqlite.py --from bench/results/sqlite.json --readme README.md

--readme replaces what stands between `<!-- sqlite-bench:begin -->` and
`<!-- sqlite-bench:end -->` in the file with the table of this run (or of the JSON given
with --from), so README's figures are never typed.

Huey polls its SQLite queue (consumer) and its result store (`Result.get`); both are
tuned to 1 ms here (its defaults start at 100 ms and 50 ms), a setting in its favour.
beatq runs with its defaults (a commit wakes its waiters in every process: see
beatq/brokers/sqlite_wake.py). SqliteHuey runs twice: with SQLite's default
synchronous=FULL (an fsync per commit, as Huey ships), and with synchronous=NORMAL,
beatq's setting (a commit survives a crash of the process; a power cut may lose the
last ones but never corrupts the file): the second is the like-for-like comparison.

This file is also the app module both systems' workers import (BENCH_SQLITE_FILE set).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
BIN = Path(sys.executable).parent
FILE = os.environ.get("BENCH_SQLITE_FILE")  # set: this module is the workers' app
POLL = 0.001  # Huey's polling, consumer and results (seconds)

if FILE:
    from huey import SqliteHuey
    from huey.storage import SqliteStorage

    from beatq import Beatq

    app = Beatq("bench_sqlite", broker=f"sqlite:///{FILE}.beatq.sqlite3")

    @app.task(ignore_result=True)
    def noop() -> None:
        return None

    @app.task
    def ping() -> int:
        return 1

    huey = SqliteHuey("bench", filename=f"{FILE}.huey.db")

    @huey.task()
    def huey_noop() -> None:
        return None

    @huey.task()
    def huey_ping() -> int:
        return 1

    class NormalSyncStorage(SqliteStorage):
        """SqliteHuey's storage with beatq's durability: synchronous=NORMAL in WAL mode
        (a commit survives a crash of the process, not always a power cut)."""

        def _create_connection(self):
            conn = super()._create_connection()
            conn.execute("PRAGMA synchronous = NORMAL")
            return conn

    class NormalSyncHuey(SqliteHuey):
        storage_class = NormalSyncStorage

    huey_normal = NormalSyncHuey("bench", filename=f"{FILE}.huey-normal.db")

    @huey_normal.task(name="huey_noop")
    def huey_normal_noop() -> None:
        return None

    @huey_normal.task(name="huey_ping")
    def huey_normal_ping() -> int:
        return 1


class BenchError(RuntimeError):
    pass


def wait_for(pred: Callable[[], bool], timeout: float, what: str, check=None) -> float:
    """Poll `pred` every 2 ms until true; the perf_counter then, or BenchError."""
    deadline = time.perf_counter() + timeout
    while not pred():
        if check:
            check()
        if time.perf_counter() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.002)
    return time.perf_counter()


class Worker:
    """One worker process of a system, started through its own command line."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def cpu(self) -> float:
        """CPU seconds the worker process has used so far (user + system)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def check(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise BenchError(f"worker exited with {self.proc.returncode}:\n{tail}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class System:
    """What differs between beatq and Huey: sending, waiting, counting, the worker."""

    name: str

    def __init__(self, mod) -> None:
        self.mod = mod

    def send_noop(self) -> None: ...
    def send_ping(self): ...
    def get(self, result, timeout: float) -> object: ...
    def pending(self) -> int: ...
    def worker_argv(self) -> list[str]: ...


class BeatqSystem(System):
    name = "beatq"

    def send_noop(self) -> None:
        self.mod.noop.delay()

    def send_ping(self):
        return self.mod.ping.delay()

    def get(self, result, timeout: float) -> object:
        return result.get(timeout=timeout)

    def pending(self) -> int:
        return self.mod.app.broker.queue_length("celery")

    def worker_argv(self) -> list[str]:
        return [str(BIN / "beatq"), "-A", "bench.sqlite", "worker", "-P", "solo", "-l", "warning"]


class HueySystem(System):
    name = "huey"
    attr = "huey"  # the Huey instance in this module

    def send_noop(self) -> None:
        getattr(self.mod, f"{self.attr}_noop")()

    def send_ping(self):
        return getattr(self.mod, f"{self.attr}_ping")()

    def get(self, result, timeout: float) -> object:
        return result.get(blocking=True, timeout=timeout, max_delay=POLL)

    def pending(self) -> int:
        return getattr(self.mod, self.attr).pending_count()

    def worker_argv(self) -> list[str]:
        consumer = [str(BIN / "huey_consumer"), f"bench.sqlite.{self.attr}", "-w", "1"]
        return [*consumer, "-k", "thread", "-n", "-q", "-d", str(POLL), "-m", str(POLL), "-b", "1"]


class HueyNormalSystem(HueySystem):
    name = "huey-normal"
    attr = "huey_normal"


def one_run(system: System, n: int, k: int, env: dict[str, str], log: Path) -> dict[str, float]:
    """Enqueue n, drain them with one worker, then k round trips: the figures of one run."""
    system.send_noop()  # warm-up: the file, its tables, the connection
    t0 = time.perf_counter()
    for _ in range(n):
        system.send_noop()
    enqueue = n / (time.perf_counter() - t0)
    sentinel = system.send_ping()
    full = n + 2
    if system.pending() != full:
        raise BenchError(f"{system.name}: {system.pending()} queued, expected {full}")

    worker = Worker(system.worker_argv(), env, log)
    try:
        first = wait_for(lambda: system.pending() < full, 60, "the first take", worker.check)
        cpu = worker.cpu()
        if system.get(sentinel, 60 + n / 200) != 1:
            raise BenchError(f"{system.name}: wrong sentinel result")
        drain = (full - 1) / (time.perf_counter() - first)
        cpu_per_task = (worker.cpu() - cpu) / (full - 1) * 1e6
        if left := system.pending():
            raise BenchError(f"{system.name}: sentinel done with {left} still queued")
        latencies = []
        for i in range(5 + k):  # five to warm up
            t0 = time.perf_counter()
            if system.get(system.send_ping(), 10) != 1:
                raise BenchError(f"{system.name}: wrong round trip result")
            if i >= 5:
                latencies.append((time.perf_counter() - t0) * 1000)
        worker.check()
    finally:
        worker.stop()
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "enqueue": enqueue,
        "drain": drain,
        "drain cpu": cpu_per_task,
        "rt p50": q[49],
        "rt p99": q[98],
    }


ROWS = [
    ("enqueue (tasks/s)", "enqueue", ",.0f"),
    ("drain, one worker process (tasks/s)", "drain", ",.0f"),
    ("worker CPU per task while draining (µs)", "drain cpu", ",.0f"),
    ("round trip p50 (ms)", "rt p50", ".2f"),
    ("round trip p99 (ms)", "rt p99", ".2f"),
]


def spread(values: list[float], fmt: str) -> str:
    return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}–{max(values):{fmt}}]"


def report(runs: list[dict[str, dict[str, float]]], loads: list[float]) -> str:
    lines = [
        f"{len(runs)} runs; load average (1 min) at each run: "
        + ", ".join(f"{x:.1f}" for x in loads),
        "",
        "| figure | beatq sqlite:// | SqliteHuey, synchronous=NORMAL | beatq/Huey per run "
        "| SqliteHuey, defaults (FULL) | beatq/Huey per run |",
        "|---|---|---|---|---|---|",
    ]
    for label, key, fmt in ROWS:
        ours = [r["beatq"][key] for r in runs]
        cells = [label, spread(ours, fmt)]
        for peer in ("huey-normal", "huey"):
            theirs = [r[peer][key] for r in runs]
            ratios = [a / b for a, b in zip(ours, theirs)]
            cells += [spread(theirs, fmt), f"{spread(ratios, '.2f')}×"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def crowd_run(mod, n: int, env: dict[str, str], tmp: Path, rep: int) -> dict[str, float]:
    """beatq alone, several processes on one file: 2 `worker -P solo` and a beat (a no-op
    every 0.2 s) running while this process enqueues n; enqueue rate, drain rate (first
    send to the last task done) and the lines of their logs that say the file was locked."""
    beatq = str(BIN / "beatq")
    argvs = [[beatq, "-A", "bench.sqlite", "worker", "-P", "solo", "-l", "warning"]] * 2
    schedule = tmp / f"crowd-{rep}.yaml"  # the beat's own file (not the repository's example)
    tick = '{task: bench.sqlite.noop, every: "0.2s"}'
    schedule.write_text(f"timezone: UTC\nschedules:\n  tick: {tick}\n")
    argvs.append([beatq, "-A", "bench.sqlite", "beat", "-s", str(schedule), "-l", "warning"])
    procs = [Worker(argv, env, tmp / f"crowd-{rep}-{i}.log") for i, argv in enumerate(argvs)]
    try:
        mod.ping.delay().get(timeout=60)  # the workers are up
        t0 = time.perf_counter()
        for _ in range(n):
            mod.noop.delay()
        enqueue = n / (time.perf_counter() - t0)
        if mod.ping.delay().get(timeout=60 + n / 200) != 1:
            raise BenchError("crowd: wrong sentinel result")
        drain = n / (time.perf_counter() - t0)
        for proc in procs:
            proc.check()
    finally:
        for proc in procs:
            proc.stop()
    locked = sum(p.log.read_text(errors="replace").count("locked") for p in procs)
    return {"enqueue": enqueue, "drain": drain, "locked": float(locked)}


def update_readme(readme: Path, text: str, source: str) -> None:
    body = readme.read_text()
    pattern = re.compile(r"(<!-- sqlite-bench:begin -->\n).*?(<!-- sqlite-bench:end -->)", re.S)
    if not pattern.search(body):
        raise SystemExit(
            f"{readme}: no <!-- sqlite-bench:begin --> ... <!-- sqlite-bench:end --> markers"
        )
    note = f"<!-- generated by bench/sqlite.py from {source}; do not edit by hand -->\n"
    readme.write_text(pattern.sub(lambda m: m.group(1) + note + text + "\n" + m.group(2), body))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=10_000, help="tasks to enqueue and drain")
    parser.add_argument("-k", type=int, default=200, help="sequential round trips")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="n=1000, k=50, one run")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--from", dest="source", type=Path, help="no run: the table of this JSON")
    parser.add_argument("--readme", type=Path, help="replace the marked block of this file")
    parser.add_argument(
        "--crowd", action="store_true", help="only beatq: 2 workers + a beat + this client"
    )
    args = parser.parse_args()
    if args.source:
        saved = json.loads(args.source.read_text())
        text = report(saved["runs"], saved["loads"])
        print(text)
        if args.readme:
            update_readme(args.readme, text, args.source.name)
        return 0
    if args.quick:
        args.n, args.k, args.repeat = 1000, 50, 1
    sys.path.insert(0, str(ROOT))
    if args.crowd:
        return crowd(args.n, args.repeat)
    runs: list[dict[str, dict[str, float]]] = []
    loads = []
    with tempfile.TemporaryDirectory(prefix="bench-sqlite-") as tmp:
        for rep in range(args.repeat):
            loads.append(os.getloadavg()[0])
            runs.append({})
            for kind in (BeatqSystem, HueyNormalSystem, HueySystem):
                # a fresh pair of files each run, named to the workers by the environment
                os.environ["BENCH_SQLITE_FILE"] = str(Path(tmp) / f"run{rep}")
                sys.modules.pop("bench.sqlite", None)
                mod = importlib.import_module("bench.sqlite")
                env = {**os.environ, "PYTHONPATH": str(ROOT)}
                system = kind(mod)
                print(
                    f"[run {rep + 1}] {system.name}: enqueue {args.n:,}, drain, "
                    f"{args.k} round trips",
                    flush=True,
                )
                log = Path(tmp) / f"{system.name}-{rep}.log"
                figures = one_run(system, args.n, args.k, env, log)
                runs[-1][system.name] = figures
                print("  " + json.dumps({k: round(v, 2) for k, v in figures.items()}), flush=True)
                if system.name == "beatq":
                    mod.app.close()
    text = report(runs, loads)
    print("\n" + text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"runs": runs, "loads": loads}, indent=1))
    if args.readme:
        update_readme(args.readme, text, args.json.name if args.json else "a run")
    return 0


def crowd(n: int, repeat: int) -> int:
    figures: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-sqlite-crowd-") as tmp:
        for rep in range(repeat):
            os.environ["BENCH_SQLITE_FILE"] = str(Path(tmp) / f"crowd{rep}")
            sys.modules.pop("bench.sqlite", None)
            mod = importlib.import_module("bench.sqlite")
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            load = os.getloadavg()[0]
            figures.append({**crowd_run(mod, n, env, Path(tmp), rep), "load": load})
            print(json.dumps({k: round(v, 2) for k, v in figures[-1].items()}), flush=True)
            mod.app.close()
    for key, fmt in (("enqueue", ",.0f"), ("drain", ",.0f"), ("locked", ".0f")):
        print(f"{key}: {spread([f[key] for f in figures], fmt)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
