"""What `min_replicas` costs on enqueue: `delay()` on a master with one replica, with and
without waiting for the replica (WAIT 1 in the send's round trip), one client thread.

    python bench/profile/replica_cost.py [--n 5000] [--repeat 5]

Starts its own master and replica (loopback, free ports, nothing on disk) and kills them at
the end. Each repetition runs both variants on a fresh key prefix, the order alternating;
it prints each run's rates and their ratio, then the medians.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from beatq import Beatq  # noqa: E402
from bench.core import wait_for  # noqa: E402

WARMUP = 200


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def master_and_replica() -> Iterator[str]:
    """A master and a replica of it; yields the master's URL once the replica is online."""
    master, replica = _port(), _port()
    folder = tempfile.TemporaryDirectory(prefix="replicabench-")  # the replica's sync file
    base = ["redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    base += ["--repl-diskless-sync-delay", "0", "--dir", folder.name]
    procs = [subprocess.Popen([*base, "--port", str(master)], stdout=subprocess.DEVNULL)]
    try:
        client = redis.Redis(port=master)
        wait_for(lambda: _answers(client), 10, "the master", interval=0.02)
        argv = [*base, "--port", str(replica), "--replicaof", "127.0.0.1", str(master)]
        procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL))
        online = lambda: client.info("replication").get("slave0", {}).get("state") == "online"  # noqa: E731
        wait_for(online, 20, "the replica to sync", interval=0.05)
        client.close()
        yield f"redis://127.0.0.1:{master}/0"
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        folder.cleanup()


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def enqueue_rate(url: str, n: int, replicas: int) -> float:
    """Tasks per second `delay()` sends, one thread, `replicas` the min_replicas option."""
    app = Beatq("replicabench", broker=url)
    options = {"global_keyprefix": f"rb-{uuid.uuid4().hex[:8]}", "min_replicas": replicas}
    app.conf.broker_transport_options = options

    @app.task(ignore_result=True)
    def noop() -> None:
        return None

    for _ in range(WARMUP):
        noop.delay()
    started = time.perf_counter()
    for _ in range(n):
        noop.delay()
    took = time.perf_counter() - started
    app.close()
    return n / took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    variants = [("none", 0), ("min_replicas=1", 1)]
    rates: dict[str, list[float]] = {name: [] for name, _ in variants}
    ratios = []
    with master_and_replica() as url:
        for rep in range(args.repeat):
            order = variants if rep % 2 == 0 else variants[::-1]
            got = {name: enqueue_rate(url, args.n, replicas) for name, replicas in order}
            for name, rate in got.items():
                rates[name].append(rate)
            ratio = got["min_replicas=1"] / got["none"]
            ratios.append(ratio)
            cells = ", ".join(f"{name} {rate:,.0f}/s" for name, rate in got.items())
            print(f"[rep {rep + 1}] {cells}; ratio {ratio:.2f}", flush=True)
    print(f"\n{args.n} delay() calls, one thread, {args.repeat} runs: median [min-max] tasks/s")
    for name, values in rates.items():
        print(
            f"  {name:15} {statistics.median(values):,.0f} [{min(values):,.0f}-{max(values):,.0f}]"
        )
    print(
        f"  ratio min_replicas=1 / none: median {statistics.median(ratios):.2f} "
        f"[{min(ratios):.2f}-{max(ratios):.2f}]"
    )


if __name__ == "__main__":
    main()
