"""What OpenTelemetry tracing (beatq.otel) costs: enqueue and drain with it off and on, and
with it off against the tree before it (--old).

    python bench/profile/otel_cost.py --tree . [--old /path/to/old/tree] [--n 20000]
        [--repeat 7] [--store redis|sqlite]

Each run: a fresh store (a private redis-server's db 1 flushed, or a new SQLite file).
Enqueue: N `noop.delay()` from one client, timed after 200 warm-up calls. Drain: those no-ops
and a sentinel last, run by `beatq worker -P solo` started through the tree's CLI; the clock
starts when the queue first shrinks and stops at the sentinel's result.
Variants: `old` (the --old tree), `off` (this tree, not traced), `on` (this tree, the client
and the worker traced by beatq.otel.instrument with an SDK TracerProvider, its default
BatchSpanProcessor and an exporter that drops the spans: the cost of making, propagating
and handing over the spans, not of shipping them). They alternate within each repetition,
the order rotating; each repetition's ratios (off/old, on/off) are taken within it.
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

APP = """
import os
from beatq import Beatq
app = Beatq("otelbench", broker=os.environ["OTEL_BENCH_URL"])
if os.environ.get("OTEL_BENCH_ON"):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    import beatq.otel

    beatq.otel.instrument(app, provider)

@app.task(ignore_result=True)
def noop():
    return None

@app.task
def sentinel():
    return 1
"""

ONE = r"""
import os, sys, time, subprocess, signal, json
sys.path.insert(0, os.environ["OTEL_BENCH_APPDIR"])
import otelapp
app, n = otelapp.app, int(os.environ["OTEL_BENCH_N"])
for _ in range(200):
    otelapp.noop.delay()
began = time.perf_counter()
for _ in range(n):
    otelapp.noop.delay()
enqueue = n / (time.perf_counter() - began)
last = otelapp.sentinel.delay()  # the drain: what was enqueued, this last
full = app.broker.queue_length("celery")
cmd = [sys.executable, "-m", "beatq", "-A", "otelapp", "worker", "-l", "warning", "-P", "solo"]
proc = subprocess.Popen(cmd, cwd=os.environ["OTEL_BENCH_APPDIR"], env=os.environ,
                        start_new_session=True)
try:
    deadline = time.monotonic() + 120
    while app.broker.queue_length("celery") >= full:
        if time.monotonic() > deadline:
            raise SystemExit("the worker never started")
        time.sleep(0.0005)
    start = time.perf_counter()
    last.get(timeout=300)
    drain = full / (time.perf_counter() - start)
finally:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(30)
print(json.dumps({"enqueue": enqueue, "drain": drain}))
"""

# --cpu: the same sends, then one Executor in the same process running the claimed no-ops
# in a loop (no worker process, no pool); each step's CPU seconds of this process
# (time.process_time), so other jobs on the machine weigh less than on a wall clock.
CPU = r"""
import os, sys, time, json
sys.path.insert(0, os.environ["OTEL_BENCH_APPDIR"])
import otelapp
from beatq.worker.delivery import Delivery
from beatq.worker.execute import Executor
app, n = otelapp.app, int(os.environ["OTEL_BENCH_N"])
for _ in range(200):
    otelapp.noop.delay()
began = time.process_time()
for _ in range(n):
    otelapp.noop.delay()
enqueue = (time.process_time() - began) / n * 1e6
claims = []
while len(claims) < n + 200:
    claims += app.broker.claim(["celery"], 1000, 600).claims
runs = [Delivery(claim) for claim in claims]
executor = Executor(app, "bench")
for run in runs[:200]:
    executor.execute(run)
began = time.process_time()
for run in runs[200:]:
    executor.execute(run)
executor.flush_events()
drain = (time.process_time() - began) / n * 1e6
print(json.dumps({"enqueue": enqueue, "drain": drain}))
"""

KEYS = ("enqueue", "drain")


def run_one(tree: Path, url: str, n: int, on: bool, cpu: bool = False) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="otelbench-") as tmp:
        (Path(tmp) / "otelapp.py").write_text(APP)
        env = {**os.environ, "PYTHONPATH": f"{tree}:{tmp}", "OTEL_BENCH_URL": url}
        env.update({"OTEL_BENCH_APPDIR": tmp, "OTEL_BENCH_N": str(n)})
        env.pop("BEATQ_BROKER_URL", None)
        if on:
            env["OTEL_BENCH_ON"] = "1"
        if url.startswith("sqlite"):
            env["OTEL_BENCH_URL"] = f"sqlite:///{tmp}/bench.sqlite3"
        out = subprocess.run(
            [sys.executable, "-c", CPU if cpu else ONE],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if out.returncode:
            raise RuntimeError(out.stderr[-2000:])
        return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", type=Path, default=Path("."))
    ap.add_argument("--old", type=Path)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--store", default="redis", choices=("redis", "sqlite"))
    ap.add_argument("--cpu", action="store_true", help="CPU µs per task, in one process")
    args = ap.parse_args()
    tree = args.tree.resolve()
    variants = [("off", tree, False), ("on", tree, True)]
    if args.old:
        variants.insert(0, ("old", args.old.resolve(), False))
    figures: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in variants}
    with own_redis() as base:
        url = with_db(base, 1)
        client = redis.Redis.from_url(url)
        for rep in range(args.repeat):
            order = variants[rep % len(variants) :] + variants[: rep % len(variants)]
            for name, where, on in order:
                client.flushdb()
                store = url if args.store == "redis" else "sqlite"
                got = run_one(where, store, args.n, on, args.cpu)
                figures[name].append(got)
                print(f"[rep {rep + 1}] {name}: {json.dumps(got)}", flush=True)
    unit = "CPU µs per task (less is better)" if args.cpu else "tasks/s"
    print(f"\n{args.n} tasks, {args.repeat} runs, store {args.store}: median [min-max] {unit}")
    for name, runs in figures.items():
        cells = []
        for key in KEYS:
            values = [r[key] for r in runs]
            med, low, high = statistics.median(values), min(values), max(values)
            cells.append(f"{key} {med:,.1f} [{low:,.1f}-{high:,.1f}]")
        print(f"  {name:4} " + "; ".join(cells))
    pairs = [("on", "off")] + ([("off", "old")] if args.old else [])
    print("ratios, run by run (median [min-max]):")
    for a, b in pairs:
        cells = []
        for key in KEYS:
            ratios = [x[key] / y[key] for x, y in zip(figures[a], figures[b])]
            cells.append(
                f"{key} {statistics.median(ratios):.3f} [{min(ratios):.3f}-{max(ratios):.3f}]"
            )
        print(f"  {a}/{b} " + "; ".join(cells))


if __name__ == "__main__":
    main()
