"""Core benchmark: beatq against Celery 5.7 on one Redis server, in one run.

Measures enqueue rate, drain rate (one worker process, and the best setting on 2 cores),
sequential round trip latency and the workers' peak memory. Run it with the bench venv
(made by bench/setup.sh), from anywhere:

    bench/.venv/bin/python bench/core.py [--quick] [--repeat N] [--systems beatq,celery]

By default it starts its own redis-server on a free port and flushes only db 1 (beatq) and
db 2 (celery) of that server. With --redis-url it never flushes unless --flush is given.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))

START_TIMEOUT = 60.0  # worker start until it takes its first task
STOP_TIMEOUT = 15.0  # SIGTERM until SIGKILL
RT_TIMEOUT = 10.0  # one round trip


class BenchError(RuntimeError):
    pass


@dataclass(frozen=True)
class System:
    name: str  # also the name of its console script in the venv
    module: str
    db: int
    queue_key: str
    two_core: tuple[tuple[str, int], ...]  # (pool, concurrency) settings to try on 2 cores


SYSTEMS = {
    "beatq": System(
        "beatq", "bench.apps.beatq_app", 1, "beatq:q:celery", (("prefork", 2), ("threads", 4))
    ),
    "celery": System("celery", "bench.apps.celery_app", 2, "celery", (("prefork", 2),)),
}


def wait_for(pred, timeout: float, what: str, check=None, interval: float = 0.001) -> float:
    """Poll ``pred`` until true; return the perf_counter at that moment or raise on timeout."""
    deadline = time.perf_counter() + timeout
    while True:
        if pred():
            return time.perf_counter()
        if check:
            check()
        if time.perf_counter() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@contextmanager
def own_redis():
    """Start a private redis-server on a free loopback port; yield its URL; kill it at the end."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
    cmd += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}"
    try:
        client = redis.Redis.from_url(url)

        def up() -> bool:
            if proc.poll() is not None:
                raise BenchError(f"redis-server exited with {proc.returncode}")
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_for(up, 10, "redis-server to answer PING", interval=0.02)
        client.close()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def frozen_beatq():
    """Import beatq, client and workers, from a copy of its source taken now.

    beatq is installed editable from a tree others may be editing: without the copy, one
    run could mix versions (or catch a half-saved file). PYTHONPATH beats the editable finder.
    """
    with tempfile.TemporaryDirectory(prefix="bench-beatq-") as tmp:
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(ROOT / "beatq", Path(tmp) / "beatq", ignore=ignore)
        sys.path.insert(0, tmp)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            filter(None, [tmp, os.environ.get("PYTHONPATH")])
        )
        yield


def with_db(url: str, db: int) -> str:
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, f"/{db}", p.query, p.fragment))


def run_window(
    commands: list[list[str]], env: dict, cwd: str, seconds: float, warmup: float = 3.0
) -> float:
    """Start `commands`, let them warm up for `warmup` s, run `seconds` more, stop them
    (SIGTERM, then wait); the time.time() at which the measured window began."""
    procs = [subprocess.Popen(cmd, env=env, cwd=cwd) for cmd in commands]
    start = time.time() + warmup
    time.sleep(warmup + seconds)
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(10)
    return start


def process_tree(root: int) -> list[int]:
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    tree = [root]
    for pid in tree:
        tree += [child for child, ppid in parent.items() if ppid == pid]
    return tree


def vm_hwm_mib(pids: list[int]) -> float:
    total_kib = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total_kib += int(line.split()[1])
        except OSError:
            pass
    return total_kib / 1024


class Worker:
    """A worker started through its system's CLI, in its own process group."""

    def __init__(self, system: System, url: str, pool: str, conc: int, log: Path):
        self.label = f"{system.name} worker -P {pool} -c {conc}"
        self.log = log
        cmd = [str(BIN / system.name), "-A", system.module, "worker"]
        cmd += ["-P", pool, "-c", str(conc), "-l", "warning"]
        path = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)]))
        env = {**os.environ, "BENCH_REDIS_URL": url, "PYTHONPATH": path}
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise BenchError(f"{self.label} exited with {self.proc.returncode}; log tail:\n{tail}")

    def peak_mib(self) -> float:
        self.check_alive()
        return vm_hwm_mib(process_tree(self.proc.pid))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                print(
                    f"  ! {self.label} ignored SIGTERM for {STOP_TIMEOUT:.0f}s; SIGKILL", flush=True
                )
        self._signal(signal.SIGKILL)  # whatever is left of the group (pool children)
        self.proc.wait()

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class Runner:
    """Client side of one system: its app module imported with its own db as BENCH_REDIS_URL."""

    def __init__(self, system: System, base_url: str, flush: bool):
        self.system, self.flush = system, flush
        self.url = with_db(base_url, system.db)
        self.redis = redis.Redis.from_url(self.url)  # separate connection for LLEN polling
        os.environ["BENCH_REDIS_URL"] = self.url
        try:
            self.app = importlib.import_module(system.module)
        finally:
            del os.environ["BENCH_REDIS_URL"]

    def qlen(self) -> int:
        return self.redis.llen(self.system.queue_key)

    def load(self, n: int):
        """Enqueue a warm-up and n timed no-ops, then the sentinel: (rate, queue length, result)."""
        if self.flush:
            self.redis.flushdb()
        elif self.qlen():
            raise BenchError(
                f"{self.url} key {self.system.queue_key!r} is not empty; "
                "empty it or pass --flush to let the benchmark flush this db"
            )
        noop = self.app.noop
        noop.delay()  # warm-up: connection, queue declaration
        t0 = time.perf_counter()
        for _ in range(n):
            noop.delay()
        rate = n / (time.perf_counter() - t0)
        sentinel = self.app.noop_result.delay()
        full = n + 2
        wait_for(lambda: self.qlen() == full, 10, f"{full} messages in {self.system.queue_key!r}")
        return rate, full, sentinel

    def drain(self, pool: str, conc: int, full: int, sentinel, log: Path, roundtrips: int = 0):
        """Start a worker on a loaded queue. Return (drain rate, round trip ms list, peak MiB)."""
        with Worker(self.system, self.url, pool, conc, log) as w:
            t0 = wait_for(
                lambda: self.qlen() < full,
                START_TIMEOUT,
                f"{w.label} to take a task",
                w.check_alive,
            )
            timeout = 30 + full // 500
            try:
                sentinel.get(timeout=timeout)
            except Exception as e:  # each system raises its own TimeoutError
                w.check_alive()
                left, secs = self.qlen(), time.perf_counter() - t0
                raise BenchError(
                    f"{w.label}: sentinel not done {secs:.0f}s after the first take "
                    f"({type(e).__name__}: {e}); {left:,} of {full:,} messages still queued, "
                    f"~{(full - left) / secs:,.0f} tasks/s"
                ) from e
            rate = (full - 1) / (time.perf_counter() - t0)  # n + warm-up; not the sentinel
            if left := self.qlen():  # the sentinel went in last: it must come out last
                raise BenchError(f"{w.label}: sentinel done with {left:,} messages still queued")
            lat = self.roundtrips(roundtrips) if roundtrips else []
            return rate, lat, w.peak_mib()

    def roundtrips(self, k: int, warmup: int = 5) -> list[float]:
        task, lat = self.app.noop_result, []
        for i in range(warmup + k):
            t0 = time.perf_counter()
            task.delay().get(timeout=RT_TIMEOUT)
            if i >= warmup:
                lat.append((time.perf_counter() - t0) * 1000)
        return lat


def percentiles(ms: list[float]) -> dict[str, float]:
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {"p50": q[49], "p95": q[94], "p99": q[98]}


def one_rep(runner: Runner, n: int, k: int, logs: Path, rep: int, failures: list) -> dict:
    """One repetition of every measurement for one system: a flat dict of figures.

    A 2-core setting that fails is recorded as None (and in ``failures``), not fatal.
    """
    name, out = runner.system.name, {"load 1m": os.getloadavg()[0]}
    print(f"[rep {rep}] {name}: enqueue {n} + drain with -P solo + {k} round trips", flush=True)
    out["enqueue"], full, sentinel = runner.load(n)
    log = logs / f"{name}-solo-{rep}.log"
    out["drain solo"], lat, out["mem solo"] = runner.drain("solo", 1, full, sentinel, log, k)
    for p, v in percentiles(lat).items():
        out[f"rt {p}"] = v
    for pool, conc in runner.system.two_core:
        print(f"[rep {rep}] {name}: drain with -P {pool} -c {conc}", flush=True)
        _, full, sentinel = runner.load(n)
        log = logs / f"{name}-{pool}{conc}-{rep}.log"
        try:
            rate, _, mem = runner.drain(pool, conc, full, sentinel, log)
        except BenchError as e:
            print(f"  ! {e}", flush=True)
            setting = f"{pool} -c {conc}"
            failures.append({"system": name, "rep": rep, "setting": setting, "error": str(e)})
            rate = mem = None
        out[f"drain {pool} -c {conc}"], out[f"mem {pool} -c {conc}"] = rate, mem
    print(f"  {json.dumps({key: v and round(v, 1) for key, v in out.items()})}", flush=True)
    return out


def two_core_settings(system: System) -> list[str]:
    return [f"{pool} -c {conc}" for pool, conc in system.two_core]


ROWS = [  # (label, figure key, unit, format)
    ("enqueue", "enqueue", "tasks/s", ",.0f"),
    ("drain, 1 process (-P solo)", "drain solo", "tasks/s", ",.0f"),
    ("drain, best on 2 cores", "drain best", "tasks/s", ",.0f"),
    ("round trip p50", "rt p50", "ms", ".2f"),
    ("round trip p95", "rt p95", "ms", ".2f"),
    ("round trip p99", "rt p99", "ms", ".2f"),
    ("peak memory, solo worker", "mem solo", "MiB", ".1f"),
    ("peak memory, best 2-core worker", "mem best", "MiB", ".1f"),
]


def spread(values: list) -> dict[str, float] | None:
    """Median, min and max over the runs that did not fail (None); None if all failed."""
    ok = [v for v in values if v is not None]
    if not ok:
        return None
    return {"median": statistics.median(ok), "min": min(ok), "max": max(ok), "runs": len(ok)}


def summarise(samples: dict[str, list[dict]]) -> dict:
    """Median/min/max per figure and system, and the median of the run-by-run ratios."""
    tried = {
        name: {
            s: spread([run[f"drain {s}"] for run in runs]) for s in two_core_settings(SYSTEMS[name])
        }
        for name, runs in samples.items()
    }
    best = {
        name: max((s for s in t if t[s]), key=lambda s, t=t: t[s]["median"], default=None)
        for name, t in tried.items()
    }
    series = {
        name: {
            key: [run.get(key.replace("best", str(best[name]))) for run in runs]
            for _, key, _, _ in ROWS
        }
        for name, runs in samples.items()
    }
    summary = {"best 2-core setting": best, "2-core drain by setting": tried, "figures": {}}
    for label, key, unit, _ in ROWS:
        fig = {"unit": unit} | {name: spread(s[key]) for name, s in series.items()}
        if {"beatq", "celery"} <= series.keys():
            pairs = zip(series["beatq"][key], series["celery"][key], strict=True)
            fig["beatq/celery"] = spread([b / c if b and c else None for b, c in pairs])
        summary["figures"][label] = fig
    return summary


def table(summary: dict, names: list[str], runs: int) -> str:
    def cell(f: dict | None, spec: str) -> str:
        if not f:
            return "failed"
        text = f"{f['median']:{spec}} [{f['min']:{spec}}–{f['max']:{spec}}]"
        return text + (f" ({f['runs']}/{runs} runs)" if f["runs"] < runs else "")

    cols = names + (["beatq/celery"] if len(names) == 2 else [])
    rows = [["figure: median [min–max]", "unit", *cols]]
    for label, _, unit, fmt in ROWS:
        figs = summary["figures"][label]
        rows.append([label, unit, *(cell(figs[c], ".2f" if "/" in c else fmt) for c in cols)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    rule = "-" * len(lines[0])
    notes = []
    for name in names:
        best = summary["best 2-core setting"][name]
        tried = [
            f"{s} {cell(f, ',.0f')}" + (" <- best" if s == best else "")
            for s, f in summary["2-core drain by setting"][name].items()
        ]
        notes.append(f"2-core drain (tasks/s), {name}: " + "; ".join(tried))
    return "\n".join([lines[0], rule, *lines[1:], rule, *notes])


def source_digest(package: str) -> str:
    """Digest of a package's source files, to tell which version was measured."""
    h = hashlib.sha256()
    for path in sorted(Path(importlib.import_module(package).__file__).parent.rglob("*")):
        if path.suffix in (".py", ".lua"):
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def environment(base_url: str, names: list[str]) -> dict:
    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True).stdout

    return {
        "versions": {n: getattr(importlib.import_module(n), "__version__", "?") for n in names},
        "source_digest": {n: source_digest(n) for n in names},
        "redis_server": redis.Redis.from_url(base_url).info("server")["redis_version"],
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "git_commit": git("rev-parse", "HEAD").strip() or None,
        "beatq_tree_dirty": bool(git("status", "--porcelain", "--", "beatq").strip()),
        "loadavg": os.getloadavg(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="repetitions of every figure (3)")
    ap.add_argument("--quick", action="store_true", help="2,000 tasks / 100 round trips")
    ap.add_argument("--systems", default="beatq,celery", help="comma list of beatq, celery")
    ap.add_argument("--redis-url", help="use this server instead of starting one")
    ap.add_argument("--flush", action="store_true", help="allow FLUSHDB of dbs 1, 2 at --redis-url")
    args = ap.parse_args()
    names = [s.strip() for s in args.systems.split(",") if s.strip()]
    if not names or set(names) - SYSTEMS.keys() or args.repeat < 1:
        ap.error(f"--systems must name some of {', '.join(SYSTEMS)}; --repeat must be >= 1")
    missing = [name for name in names if not (BIN / name).exists()]
    if missing or not shutil.which("redis-server") and not args.redis_url:
        ap.error(
            f"run under bench/.venv (see bench/setup.sh); missing: {missing or 'redis-server'}"
        )
    n, k = (2_000, 100) if args.quick else (20_000, 500)
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    if os.getloadavg()[0] > 0.5:
        print(f"! load average {os.getloadavg()[0]:.2f} before start: figures will be noisy")
    freeze = "beatq" in names and (ROOT / "beatq").is_dir()
    try:
        with (
            frozen_beatq() if freeze else nullcontext(),
            nullcontext(args.redis_url) if args.redis_url else own_redis() as base_url,
        ):
            flush = args.flush or not args.redis_url
            runners = {name: Runner(SYSTEMS[name], base_url, flush) for name in names}
            env = environment(base_url, names)
            samples: dict[str, list[dict]] = {name: [] for name in names}
            failures: list[dict] = []
            for rep in range(1, args.repeat + 1):
                order = names[rep % len(names) :] + names[: rep % len(names)]  # alternate
                for name in order:
                    samples[name].append(one_rep(runners[name], n, k, logs, rep, failures))
    except BenchError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    env["loadavg after"] = os.getloadavg()

    summary = summarise(samples)
    result = {
        "params": {"tasks": n, "roundtrips": k, "repeat": args.repeat, "systems": names},
        "environment": env,
        "summary": summary,
        "samples": samples,
        "failures": failures,
    }
    out = RESULTS / ("core-quick.json" if args.quick else "core.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(table(summary, names, args.repeat))
    if failures:
        print(f"\n{len(failures)} run(s) failed; see 'failures' in the JSON")
    print(f"\n{n:,} tasks, {k} round trips, {args.repeat} runs; ratios are run by run. -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
