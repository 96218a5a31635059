"""Before/after: run measure.py for two beatq trees in turn, in one time window.

    bench/.venv/bin/python bench/profile/compare.py --before /path/to/old/checkout \\
        [--after .] [--what enqueue,batch,drain,roundtrip] [--repeat 3] [--url redis://...]

Each tree's `beatq/` is copied first (edits during the run do not leak in). The order of
the two alternates from run to run. Prints median [min-max] per figure and the run-by-run
ratio after/before. Without --url it starts its own redis-server on a free port.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.core import own_redis, with_db  # noqa: E402

HERE = Path(__file__).resolve().parent


def snapshot(tree: Path, into: Path) -> Path:
    shutil.copytree(tree / "beatq", into / "beatq", ignore=shutil.ignore_patterns("__pycache__"))
    return into


def run(tree: Path, url: str, what: str, extra: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, str(HERE / "measure.py"), url, what, *extra]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise SystemExit(f"{what} failed for {tree}:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cell(values: list[float], fmt: str) -> str:
    return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}-{max(values):{fmt}}]"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", type=Path, required=True)
    ap.add_argument("--after", type=Path, default=Path("."))
    ap.add_argument("--what", default="enqueue,batch,drain,roundtrip")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--url")
    ap.add_argument("--pool", default="solo")
    ap.add_argument("-c", default="1")
    ap.add_argument("--rt-n", default="500", help="round trips a roundtrip run times")
    ap.add_argument("--rt-gap", default="0", help="seconds between two round trips")
    a = ap.parse_args()
    whats = a.what.split(",")
    with tempfile.TemporaryDirectory() as tmp, own_redis() if not a.url else _given(a.url) as url:
        trees = {
            "before": snapshot(a.before.resolve(), Path(tmp) / "before"),
            "after": snapshot(a.after.resolve(), Path(tmp) / "after"),
        }
        url = with_db(url, 7)
        got: dict = {(w, t): [] for w in whats for t in trees}
        for rep in range(a.repeat):
            for what in whats:
                extra = ["--pool", a.pool, "-c", a.c]
                if what == "roundtrip":
                    extra += ["--n", a.rt_n, "--gap", a.rt_gap]
                order = list(trees) if rep % 2 == 0 else list(reversed(trees))
                for name in order:
                    got[(what, name)].append(run(trees[name], url, what, extra))
                    print(what, name, got[(what, name)][-1], flush=True)
        print(f"\nload average at the end: {os.getloadavg()}")
        for what in whats:
            keys = ["rate"]
            if what == "roundtrip":  # latency (ms), then CPU µs per trip (measure.py)
                keys = ["p50", "p99", "worker_us", "client_us", "server_us"]
            for key in keys:
                b = [r[key] for r in got[(what, "before")]]
                f = [r[key] for r in got[(what, "after")]]
                fmt = ".2f" if key in ("p50", "p99") else ",.0f"
                ratio = [x / y for x, y in zip(f, b)]
                print(
                    f"{what:9} {key:9}  before {cell(b, fmt):28} after {cell(f, fmt):28}"
                    f" after/before {cell(ratio, '.2f')}"
                )


class _given:
    def __init__(self, url: str) -> None:
        self.url = url

    def __enter__(self) -> str:
        return self.url

    def __exit__(self, *exc: object) -> None:
        pass


if __name__ == "__main__":
    main()
