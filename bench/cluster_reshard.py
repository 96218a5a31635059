"""A live `redis-cli --cluster reshard` under beatq: every slot of one master moved to
another while a worker drains a queue on that master and this process sends to it.

A 3-master cluster with replicas (tests/clusters.py) on free ports; `beatq -A tests.proj
worker -P threads -c 4 -Q rs` (the test app, its journal in a temporary folder); a thread
here sends the journaling task to the queue, a third of them due up to a second later, as
fast as it can. After --warmup seconds, redis-cli moves all the slots of the queue's master
to another master (`--cluster-from`, `--cluster-to`, `--cluster-slots` all of them,
`--cluster-yes`); --after seconds later the sends stop. Printed per run: the reshard's
time and slots, the tasks sent and run (twice, never), the longest gap between two runs
of the queue while the reshard ran, how many times the nodes were asked for the map of
slots meanwhile (CLUSTER SLOTS: the worker's and this process's clients), and the lines
of the worker's log that say ERROR or Traceback; then medians [min-max] over the runs.

    .venv/bin/python bench/cluster_reshard.py [--repeat 3] [--warmup 2] [--after 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.clusters import Cluster  # noqa: E402

QUEUE = "rs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--after", type=float, default=2.0)
    opts = parser.parse_args()
    results = [one_run(opts.warmup, opts.after) for _ in range(opts.repeat)]
    for name in ("reshard_s", "gap_s", "sent", "map_reads"):
        values = [r[name] for r in results]
        print(f"{name}: median {statistics.median(values):.3f} [{min(values)}-{max(values)}]")


def map_reads(cluster: Cluster) -> int:
    """How many times the nodes were asked for the map of slots (CLUSTER SLOTS)."""
    total = 0
    for port, process in cluster.servers.items():
        if process.poll() is None:
            with cluster.client(port) as node:
                stats = node.info("commandstats").get("cmdstat_cluster|slots", {})
                total += int(stats.get("calls", 0))
    return total


def one_run(warmup: float, after: float) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix="beatq-reshard-"))
    cluster = Cluster(folder / "cluster")
    cluster.start()
    worker = None
    try:
        env = {
            **os.environ,
            "BEATQ_BROKER_URL": cluster.url(),
            "BEATQ_TEST_PREFIX": "reshard",
            "BEATQ_TEST_JOURNAL": str(folder),
            "PYTHONPATH": str(ROOT),
        }
        os.environ.update(env)
        from tests.conftest import point_app
        from tests.journal import journal
        from tests.proj.tasks import cl_stamp

        app = point_app(cluster.url(), "reshard")
        log = open(folder / "worker.log", "wb")  # noqa: SIM115 (closed below)
        argv = ["-A", "tests.proj", "worker", "-P", "threads", "-c", "4", "-Q", QUEUE]
        worker = subprocess.Popen(
            [sys.executable, "-m", "beatq", *argv, "-l", "info"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        sent: list[str] = []
        stop = threading.Event()

        def send() -> None:
            i = 0
            while not stop.is_set():
                countdown = (i % 10) / 10 if i % 3 == 0 else None
                cl_stamp.apply_async((f"{QUEUE}:{i}",), queue=QUEUE, countdown=countdown)
                sent.append(f"{QUEUE}:{i}")
                i += 1

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        time.sleep(warmup)
        source = cluster.master_of(app.broker.unit(QUEUE).msgs)
        target = next(p for p in sorted(cluster.masters()) if p != source)
        with cluster.client(source) as node:
            count = sum(
                end - start + 1
                for start, end, master, *_ in node.execute_command("CLUSTER", "SLOTS")
                if int(master[1]) == source
            )
        reads = map_reads(cluster)
        began = time.time()
        done = subprocess.run(
            [
                *("redis-cli", "--cluster", "reshard", f"127.0.0.1:{source}"),
                *("--cluster-from", cluster._id(source), "--cluster-to", cluster._id(target)),
                *("--cluster-slots", str(count), "--cluster-yes"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=600,
        )
        ended = time.time()
        reads = map_reads(cluster) - reads
        if done.returncode != 0:
            raise SystemExit(f"redis-cli failed:\n{done.stdout.decode()[-2000:]}")
        time.sleep(after)
        stop.set()
        sender.join(60)
        deadline = time.monotonic() + 60
        while not set(sent) <= {tag for tag, _ in journal("cl")} and time.monotonic() < deadline:
            time.sleep(0.2)
        runs = journal("cl")
        counts = Counter(tag for tag, _ in runs)
        during = sorted(at for _, at in runs if began - 1 <= at <= ended + 1)
        gap = max((b - a for a, b in zip(during, during[1:])), default=float("nan"))
        log.flush()
        troubles = [
            line
            for line in (folder / "worker.log").read_text(errors="replace").splitlines()
            if " ERROR/" in line or "Traceback" in line
        ]
        moved_to = cluster.master_of(app.broker.unit(QUEUE).msgs)
        result = {
            "reshard_s": round(ended - began, 3),
            "slots": count,
            "sent": len(sent),
            "ran": len(counts),
            "twice": sum(1 for n in counts.values() if n > 1),
            "lost": len(set(sent) - set(counts)),
            "gap_s": round(gap, 3),
            "map_reads": reads,
            "troubles": len(troubles),
            "moved": moved_to == target,
        }
        print(result, *troubles[:5], sep="\n  ")
        app.close()
        return result
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        cluster.stop()


if __name__ == "__main__":
    main()
