"""What one claim that finds nothing costs on Redis (an idle worker's, a look for urgent work).

    python bench/profile/claim_cost.py --trees /old/tree,/new/tree [--n 20000] [--repeat 5]
        [--queues celery]

For each tree in turn (the order alternating), on a private redis-server: `n` claims of an
empty queue list through that tree's broker; the Redis commands one claim runs (the FCALL
and those inside it, from INFO commandstats: exact), the server's µs per FCALL and the
client's CPU µs per claim (both noisy on a loaded machine: compare medians).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.core import own_redis, with_db  # noqa: E402

ONE = r"""
import json, os, sys, time
import redis
from beatq import Beatq
url, n, queues = os.environ["CLAIM_URL"], int(os.environ["CLAIM_N"]), os.environ["CLAIM_Q"]
queues = queues.split(",")
r = redis.Redis.from_url(url)
r.flushdb()
import beatq
assert beatq.__file__.startswith(os.environ["PYTHONPATH"]), beatq.__file__
broker = Beatq("claimbench", broker=url).broker
broker.claim(queues, 100, 1800.0, False, 0.0)  # the function library loaded
r.config_resetstat()
t0 = time.process_time()
for _ in range(n):
    broker.claim(queues, 100, 1800.0, False, 0.0)
client = (time.process_time() - t0) / n * 1e6
stats = r.info("commandstats")
print(json.dumps({
    "commands": sum(v["calls"] for v in stats.values()) / n,
    "server_us": stats["cmdstat_fcall"]["usec_per_call"],
    "client_us": client,
}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trees", required=True, help="comma-separated beatq checkouts")
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--queues", default="celery")
    a = ap.parse_args()
    trees = [Path(t).resolve() for t in a.trees.split(",")]
    got: dict[Path, list[dict]] = {t: [] for t in trees}
    with own_redis() as base_url:
        url = with_db(base_url, 1)
        for rep in range(a.repeat):
            for tree in trees if rep % 2 == 0 else list(reversed(trees)):
                env = {
                    **os.environ,
                    "PYTHONPATH": str(tree),
                    "CLAIM_URL": url,
                    "CLAIM_N": str(a.n),
                    "CLAIM_Q": a.queues,
                }
                done = subprocess.run(  # not in a checkout: `-c` puts the cwd first
                    [sys.executable, "-c", ONE],
                    env=env,
                    capture_output=True,
                    text=True,
                    cwd=tempfile.gettempdir(),
                )
                if done.returncode:
                    raise SystemExit(f"{tree}:\n{done.stderr[-2000:]}")
                got[tree].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print("| tree | commands a claim | server µs a claim | client CPU µs a claim |")
    print("|---|---|---|---|")
    for tree, runs in got.items():
        cells = []
        for key, fmt in (("commands", ".1f"), ("server_us", ".1f"), ("client_us", ".1f")):
            v = [r[key] for r in runs]
            cells.append(f"{statistics.median(v):{fmt}} [{min(v):{fmt}}–{max(v):{fmt}}]")
        print(f"| {tree} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
