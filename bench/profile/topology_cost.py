"""What showing the topology costs: one `Store.topology()` read (what `beatq status` makes
once and the dashboard every 2 s) and one beat heartbeat (`Presence.beat`, every 2 s per
beat), wall and CPU time per call.

    python bench/profile/topology_cost.py [--n 200] [--repeat 5]

On one Redis, behind Sentinel (a master, two replicas, three sentinels: tests/sentinels.py)
and on a SQLite file, all started here on loopback ports and stopped at the end. Prints the
median [min-max] over the repetitions, each the mean of `--n` calls, and the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from beatq import Beatq  # noqa: E402
from beatq.beat.beat import Beat  # noqa: E402
from beatq.brokers import connect  # noqa: E402
from tests.conftest import RedisServer  # noqa: E402
from tests.sentinels import Topology  # noqa: E402
from tests.test_sentinel import SENTINEL_OPTIONS  # noqa: E402


def timed(call: Callable[[], object], n: int, repeat: int) -> str:
    call()  # connected, warm
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(n):
            call()
        walls.append((time.perf_counter() - wall) / n * 1e3)
        cpus.append((time.process_time() - cpu) / n * 1e3)

    def spread(values: list[float]) -> str:
        return f"{statistics.median(values):.3f} ms [{min(values):.3f}-{max(values):.3f}]"

    return f"wall {spread(walls)}, CPU {spread(cpus)}"


def heartbeat(url: str, options: dict) -> Callable[[], None]:
    app = Beatq("topology-cost", broker=url)
    app.conf.broker_transport_options = options
    beat = Beat(app, files=[])
    beat.started_at = time.time()
    return beat.presence.beat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="calls per repetition")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    folder = Path(tempfile.mkdtemp(prefix="topology-cost-"))
    sqlite = f"sqlite:///{folder / 'broker.db'}"
    store = connect(sqlite)
    print(f"sqlite    topology():  {timed(store.topology, args.n, args.repeat)}")
    print(f"sqlite    heartbeat:   {timed(heartbeat(sqlite, {}), args.n, args.repeat)}")
    store.close()
    server = RedisServer()
    server.start()
    try:
        store = connect(server.url, {"global_keyprefix": "topology-cost"})
        print(f"redis     topology():  {timed(store.topology, args.n, args.repeat)}")
        beat = heartbeat(server.url, {"global_keyprefix": "topology-cost"})
        print(f"redis     heartbeat:   {timed(beat, args.n, args.repeat)}")
        store.close()
    finally:
        server.stop()
    sentinels = Topology(folder)
    sentinels.start()
    try:
        store = connect(sentinels.url(), SENTINEL_OPTIONS)
        print(f"sentinel  topology():  {timed(store.topology, args.n, args.repeat)}")
        store.close()
    finally:
        sentinels.stop()
    print(f"load average at end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
