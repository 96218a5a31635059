"""What the Redis Cluster's migration guard costs the server (redis_calls.library): the
send function, guarded against unguarded, on one master of a real 3-master cluster
(tests/clusters.py, on free ports), in alternating runs; each run's time per call is
INFO commandstats' usec_per_call for FCALL, reset before it.

    .venv/bin/python bench/cluster_guard.py [--runs 15] [--calls 3000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from beatq.brokers import Outgoing, connect  # noqa: E402
from beatq.brokers.redis import _send_args  # noqa: E402
from beatq.brokers.redis_calls import library  # noqa: E402
from tests.clusters import Cluster  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--calls", type=int, default=3000)
    opts = parser.parse_args()
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="beatq-guard-")))
    cluster.start()
    try:
        measure(cluster, opts.runs, opts.calls)
    finally:
        cluster.stop()


def measure(cluster: Cluster, runs: int, calls: int) -> None:
    backend = connect(cluster.url(), {"global_keyprefix": "guard"})
    unit = backend.unit("gq")
    backend.send([Outgoing("gq", "warm", b"x")])  # loads the guarded library there
    node_calls = backend.routes.at(unit.msgs)
    plain, source = library(guarded=False)
    node_calls.command("FUNCTION", "LOAD", "REPLACE", source)
    libs = {"guarded": backend.routes.lib, "unguarded": plain}
    per_call: dict[str, list[float]] = {kind: [] for kind in libs}
    with cluster.client(cluster.master_of(unit.msgs)) as node:
        for run in range(runs):
            kinds = list(libs) if run % 2 == 0 else list(reversed(libs))
            for kind in kinds:
                node.execute_command("CONFIG", "RESETSTAT")
                for i in range(calls):
                    args = _send_args([Outgoing("gq", f"{kind}-{run}-{i}", b"body")])
                    name = f"{libs[kind]}_send"
                    keys = [unit.msgs, unit.delayed]
                    node_calls.command("FCALL", name, 2, *keys, unit.prefix, *args)
                per_call[kind].append(node.info("commandstats")["cmdstat_fcall"]["usec_per_call"])
                node.delete(unit.msgs, unit.queue("gq"), unit.wake("gq"))
    backend.close()
    for kind, values in per_call.items():
        print(
            f"{kind:>9}: {statistics.median(values):.2f} us a call "
            f"[{min(values):.2f}-{max(values):.2f}]"
        )
    ratios = [g / u for g, u in zip(per_call["guarded"], per_call["unguarded"])]
    print(
        f"guarded/unguarded, run by run: {statistics.median(ratios):.3f} "
        f"[{min(ratios):.3f}-{max(ratios):.3f}]"
    )


if __name__ == "__main__":
    main()
