"""What priorities cost: enqueue and drain of one tree with and without a priority on every
message, beside an older tree (no priorities), on Redis or SQLite.

    python bench/profile/priority_cost.py --tree . [--old /path/to/old/tree] [--n 20000]
        [--repeat 3] [--store redis|sqlite]

The run is signals_cost.py's (a fresh store each time; N `noop.delay()` timed after 200
warm-ups; a `-P solo` worker drains them and a sentinel). Variants: `old` (the --old tree),
`none` (the tree, no priority: what every user without priorities pays), `priority` (the
tree, the task declared with priority=5: every message in a band of its own). They
alternate within each repetition, the order rotating.
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

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.core import own_redis, with_db  # noqa: E402
from bench.profile.signals_cost import ONE  # noqa: E402

APP = """
import os
from beatq import Beatq
app = Beatq("sigbench", broker=os.environ["SIG_URL"])
options = {"priority": 5} if os.environ.get("SIG_PRIORITY") else {}

@app.task(ignore_result=True, **options)
def noop():
    return None

@app.task(**options)
def sentinel():
    return 1
"""


def run_one(tree: Path, url: str, n: int, priority: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="priobench-") as tmp:
        (Path(tmp) / "sigapp.py").write_text(APP)
        env = {**os.environ, "PYTHONPATH": f"{tree}:{tmp}", "SIG_URL": url}
        env.update({"SIG_APPDIR": tmp, "SIG_N": str(n)})
        env.pop("BEATQ_BROKER_URL", None)
        if priority:
            env["SIG_PRIORITY"] = "1"
        if url == "sqlite":
            env["SIG_URL"] = f"sqlite:///{tmp}/bench.sqlite3"
        out = subprocess.run(
            [sys.executable, "-c", ONE], env=env, capture_output=True, text=True, timeout=900
        )
        if out.returncode:
            raise RuntimeError(out.stderr[-2000:])
        return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", type=Path, default=Path("."))
    ap.add_argument("--old", type=Path)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--store", default="redis", choices=("redis", "sqlite"))
    args = ap.parse_args()
    variants = [("none", args.tree.resolve(), False), ("priority", args.tree.resolve(), True)]
    if args.old:
        variants.insert(0, ("old", args.old.resolve(), False))
    figures: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in variants}
    with own_redis() as base:
        url = with_db(base, 1)
        client = redis.Redis.from_url(url)
        for rep in range(args.repeat):
            order = variants[rep % len(variants) :] + variants[: rep % len(variants)]
            for name, tree, priority in order:
                client.flushdb()
                got = run_one(tree, url if args.store == "redis" else "sqlite", args.n, priority)
                figures[name].append(got)
                print(f"[rep {rep + 1}] {name}: {json.dumps(got)}", flush=True)
    print(f"\n{args.n} tasks, {args.repeat} runs, store {args.store}: median [min-max] tasks/s")
    for name, runs in figures.items():
        cells = []
        for key in ("enqueue", "drain"):
            values = [r[key] for r in runs]
            cells.append(
                f"{key} {statistics.median(values):,.0f} [{min(values):,.0f}-{max(values):,.0f}]"
            )
        print(f"  {name:10} " + "; ".join(cells))


if __name__ == "__main__":
    main()
