"""What waiting for replicas costs the beat on a Redis Cluster: one dispatch (one run, one
message to a queue on another shard, the outbox sent) with beat_min_replicas 0 and 1, in
alternating runs, on a real 3-master cluster with a replica each (tests/clusters.py, on
free ports). Each run's figures are the median and the 99th percentile of its dispatches.

    .venv/bin/python bench/cluster_wait.py [--runs 7] [--dispatches 300]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from beatq.brokers import BeatDispatch, Outgoing, connect  # noqa: E402
from tests.clusters import Cluster  # noqa: E402


class Counted(logging.Handler):
    """Counts the outbox's waits for a queue's replica (said once a stretch)."""

    def __init__(self) -> None:
        super().__init__()
        self.waits = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "until" in record.getMessage() and "replica" in record.getMessage():
            self.waits += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--dispatches", type=int, default=300)
    opts = parser.parse_args()
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="beatq-wait-")))
    cluster.start()
    try:
        measure(cluster, opts.runs, opts.dispatches)
    finally:
        cluster.stop()


def one_run(url: str, need: int, n: int) -> tuple[float, float]:
    """(median, p99) in ms of `n` dispatches with beat_min_replicas=`need`."""
    prefix = f"wait-{uuid.uuid4().hex[:6]}"
    b = connect(url, {"global_keyprefix": prefix, "beat_min_replicas": need})
    token = b.acquire_lease("beat", "bench", 300)
    assert token is not None
    b.send([Outgoing("wq", "warm", b"x")])
    times = []
    for i in range(n):
        run = BeatDispatch(
            "e", 1000.0 + i, 1001.0 + i, b"{}", [Outgoing("wq", f"m{i}", b"x" * 200)]
        )
        started = time.perf_counter()
        assert b.beat_dispatch_many("beat", "bench", token, [run]) == ["sent"]
        times.append(time.perf_counter() - started)
    assert b.queue_length("wq") == n + 1
    b.purge(["wq"])
    b.close()
    times.sort()
    return statistics.median(times) * 1e3, times[int(len(times) * 0.99)] * 1e3


def measure(cluster: Cluster, runs: int, n: int) -> None:
    counted = Counted()
    logging.getLogger("beatq.broker").addHandler(counted)
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    found: dict[int, list[tuple[float, float]]] = {0: [], 1: []}
    for run in range(runs):
        for need in (0, 1) if run % 2 == 0 else (1, 0):
            found[need].append(one_run(cluster.url(), need, n))
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    for need, figures in found.items():
        medians, tails = [m for m, _ in figures], [t for _, t in figures]
        print(
            f"beat_min_replicas={need}: median {statistics.median(medians):.3f} ms "
            f"[{min(medians):.3f}-{max(medians):.3f}], p99 {statistics.median(tails):.2f} ms "
            f"[{min(tails):.2f}-{max(tails):.2f}]"
        )
    ratios = [a[0] / b[0] for a, b in zip(found[1], found[0])]
    print(
        f"median ratio 1/0, run by run: {statistics.median(ratios):.2f} "
        f"[{min(ratios):.2f}-{max(ratios):.2f}]; outbox waits past 0.1 s: {counted.waits}"
    )


if __name__ == "__main__":
    main()
