"""Redis Cluster benchmark: beatq on a 3-master redis+cluster:// beside one Redis, same machine.

In each repetition, for each store in turn (the order alternating run by run), on a fresh
server of its own: enqueue N no-ops from this process with `delay()`, then N more with
`apply_many` (batches of 100), then drain them with one worker (`-P solo`), then enqueue
N again and drain them with a worker at its defaults (prefork, one child per core);
then time sequential round trips (send a task, wait for its result) to an idle worker
consuming one queue, and one consuming three (on the cluster, one on each shard: its
idle wait is a BLPOP per queue, each in a thread).
Medians of the repetitions with [min–max], and the ratio cluster/one-Redis taken run by
run. The cluster has no replicas here (on one machine they would only take CPU from the
masters); every queue is one shard's, so one queue's drain meets one master.

    .venv/bin/python bench/cluster.py [--quick] [--repeat 3] [-n 10000]

This file is also the app module the workers import (BENCH_CLUSTER_URL set).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import signal
import socket
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
URL = os.environ.get("BENCH_CLUSTER_URL")  # set: this module is the workers' app

if URL:
    from beatq import Beatq

    app = Beatq("bench_cluster", broker=URL)

    @app.task(ignore_result=True)
    def noop() -> None:
        return None

    @app.task
    def ping() -> int:
        return 1


class BenchError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


class Servers:
    """redis-server processes of this run: one plain, or `masters` cluster masters."""

    def __init__(self, folder: Path, masters: int = 0) -> None:
        self.folder = folder
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports = [free_port() for _ in range(max(masters, 1))]
        self.cluster = masters > 0
        for port in self.ports:
            args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            if self.cluster:
                node = folder / str(port)
                node.mkdir(parents=True, exist_ok=True)
                args += ["--dir", str(node), "--cluster-enabled", "yes"]
                args += ["--cluster-port", str(free_port()), "--cluster-config-file", "nodes.conf"]
            binary = shutil.which("redis-server") or "redis-server"
            self.procs.append(subprocess.Popen([binary, *args], stdout=subprocess.DEVNULL))
        import redis

        for port in self.ports:
            wait_for(lambda p=port: self._up(redis, p), 10, f"redis-server on {port}")
        if self.cluster:
            hosts = [f"127.0.0.1:{p}" for p in self.ports]
            subprocess.run(
                ["redis-cli", "--cluster", "create", *hosts, "--cluster-yes"],
                check=True,
                stdout=subprocess.DEVNULL,
                timeout=60,
            )
            wait_for(lambda: self._ok(redis), 30, "the cluster's slots")

    @staticmethod
    def _up(redis, port: int) -> bool:
        try:
            return bool(redis.Redis(port=port).ping())
        except redis.ConnectionError:
            return False

    def _ok(self, redis) -> bool:
        for port in self.ports:
            info = redis.Redis(port=port).execute_command("CLUSTER", "INFO")
            if "cluster_state:ok" not in (info.decode() if isinstance(info, bytes) else info):
                return False
        return True

    @property
    def url(self) -> str:
        if self.cluster:
            return f"redis+cluster://127.0.0.1:{self.ports[0]}/"
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()


class Worker:
    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def cpu(self) -> float:
        """CPU seconds of the worker and its reaped children so far (user + system)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
        return ticks / os.sysconf("SC_CLK_TCK")

    def check(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise BenchError(f"worker exited with {self.proc.returncode}:\n{tail}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def drain(mod, n: int, argv: list[str], env: dict[str, str], log: Path) -> tuple[float, float]:
    """Drain the n queued no-ops and a ping sent last with a worker `argv`: tasks/s from
    the worker's first take to the ping's result, and the worker's CPU µs per task (its
    processes', children included once they exit: after the stop)."""
    sentinel = mod.ping.delay()
    full = n + 1
    pending = lambda: mod.app.broker.queue_length("celery")  # noqa: E731
    if pending() != full:
        raise BenchError(f"{pending()} queued, expected {full}")
    worker = Worker(argv, env, log)
    try:
        first = wait_for(lambda: pending() < full, 60, "the first take", worker.check)
        cpu = worker.cpu()
        if sentinel.get(timeout=60 + n / 200) != 1:
            raise BenchError("wrong sentinel result")
        rate = (full - 1) / (time.perf_counter() - first)
        used = worker.cpu() - cpu
    finally:
        worker.stop()
    return rate, used / (full - 1) * 1e6


def round_trips(mod, k: int, argv: list[str], env: dict[str, str], log: Path) -> float:
    """The median ms of k sequential round trips (send a task, wait for its result) to
    an idle worker `argv` (five more first, to warm up)."""
    worker = Worker(argv, env, log)
    try:
        wait_for(lambda: mod.ping.delay().get(timeout=60) == 1, 60, "the worker", worker.check)
        took = []
        for _ in range(5 + k):
            t0 = time.perf_counter()
            if mod.ping.delay().get(timeout=10) != 1:
                raise BenchError("wrong round trip result")
            took.append((time.perf_counter() - t0) * 1000)
        worker.check()
    finally:
        worker.stop()
    return statistics.median(took[5:])


def one_run(url: str, n: int, tmp: Path, tag: str, k: int = 200) -> dict[str, float]:
    os.environ["BENCH_CLUSTER_URL"] = url
    sys.modules.pop("bench.cluster", None)
    mod = importlib.import_module("bench.cluster")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    worker = [str(BIN / "beatq"), "-A", "bench.cluster", "worker", "-l", "warning"]
    figures = {}
    try:
        mod.noop.delay()  # warm-up: connections, the library, the map of slots
        mod.app.broker.purge(["celery"])
        t0 = time.perf_counter()
        for _ in range(n):
            mod.noop.delay()
        figures["delay"] = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _ in range(0, n, 100):
            mod.noop.apply_many([()] * 100)
        figures["apply_many"] = n / (time.perf_counter() - t0)
        mod.app.broker.purge(["celery"])
        for _ in range(0, n, 100):
            mod.noop.apply_many([()] * 100)
        solo = drain(mod, n, [*worker, "-P", "solo"], env, tmp / f"{tag}-s.log")
        figures["drain solo"], figures["solo cpu"] = solo
        for _ in range(0, n, 100):
            mod.noop.apply_many([()] * 100)
        figures["drain defaults"] = drain(mod, n, worker, env, tmp / f"{tag}-d.log")[0]
        # an idle worker woken by each task: on one queue, and on three (one each shard's
        # on the cluster: a BLPOP per queue, in threads)
        solo = [*worker, "-P", "solo"]
        figures["rt 1q"] = round_trips(mod, k, solo, env, tmp / f"{tag}-r1.log")
        three = [*solo, "-Q", "a,c,celery"]  # slots 14817, 6563, 4497: three shards
        figures["rt 3q"] = round_trips(mod, k, three, env, tmp / f"{tag}-r3.log")
    finally:
        mod.app.close()
    return figures


ROWS = [
    ("enqueue, delay() (tasks/s)", "delay", ",.0f"),
    ("enqueue, apply_many of 100 (tasks/s)", "apply_many", ",.0f"),
    ("drain, worker -P solo (tasks/s)", "drain solo", ",.0f"),
    ("worker -P solo CPU per task while draining (µs)", "solo cpu", ",.0f"),
    ("drain, worker at its defaults (tasks/s)", "drain defaults", ",.0f"),
    ("round trip to an idle -P solo worker, -Q of 1 queue (ms, median)", "rt 1q", ".2f"),
    ("round trip to an idle -P solo worker, -Q of 3 queues (ms, median)", "rt 3q", ".2f"),
]


def spread(values: list[float], fmt: str) -> str:
    return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}–{max(values):{fmt}}]"


def report(runs: list[dict[str, dict[str, float]]], loads: list[float]) -> str:
    lines = [
        f"{len(runs)} runs; load average (1 min) at each run: "
        + ", ".join(f"{x:.1f}" for x in loads),
        "",
        "| figure | one Redis | 3-master cluster | cluster/one per run |",
        "|---|---|---|---|",
    ]
    for label, key, fmt in ROWS:
        one = [r["redis"][key] for r in runs]
        many = [r["cluster"][key] for r in runs]
        ratios = [b / a for a, b in zip(one, many)]
        lines.append(
            f"| {label} | {spread(one, fmt)} | {spread(many, fmt)} | {spread(ratios, '.2f')}× |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=10_000, help="tasks per figure")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="n=1000, one run")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # servers and workers stopped
    if args.quick:
        args.n, args.repeat = 1000, 1
    sys.path.insert(0, str(ROOT))
    runs: list[dict[str, dict[str, float]]] = []
    loads = []
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as name:
        tmp = Path(name)
        for rep in range(args.repeat):
            loads.append(os.getloadavg()[0])
            runs.append({})
            order = ("redis", "cluster") if rep % 2 == 0 else ("cluster", "redis")
            for kind in order:
                servers = Servers(tmp / f"{kind}{rep}", masters=3 if kind == "cluster" else 0)
                try:
                    print(f"[run {rep + 1}] {kind}: {args.n:,} tasks a figure", flush=True)
                    figures = one_run(servers.url, args.n, tmp, f"{kind}{rep}")
                finally:
                    servers.stop()
                runs[-1][kind] = figures
                print("  " + json.dumps({k: round(v, 2) for k, v in figures.items()}), flush=True)
    text = report(runs, loads)
    print("\n" + text)
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "loads": loads}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
