"""Async tasks beside arq and taskiq: one worker process each, on one private redis-server.

    bench/.venv/bin/python bench/async_peers.py [--repeat 3] [--quick] [--systems beatq,arq,taskiq]

Needs bench/.venv (bench/setup.sh: arq, taskiq and taskiq-redis live only there).

Scenarios, the same rules for every system:
- drain: 20,000 no-op `async def` tasks queued first, then one worker drains them. The
  rate is (N - 1) / (last finish - first finish), read from the tasks' own results (each
  returns the instant it finished), so the worker's start-up is not in it. beatq's sync
  `-P solo` drain of plain-def no-ops runs beside them (the issue's goal: async at least
  70 % of it).
- sleepers: N tasks that each `await asyncio.sleep(S)`, sent to a running worker (ready
  once it has run one warm-up task) with each system's batch API (beatq `apply_many`;
  arq and taskiq have none: their sends run 100 at a time with asyncio.gather). Wall time
  from the first send to the last finish, tasks/s, p50/p99 latency from the first send to
  each finish. 1,000 x 0.1 s and 10,000 x 0.05 s.

Workers (concurrency C: 100 for the drain, 1,000 for the sleepers):
- beatq: `beatq worker -P asyncio -c C` (and `-P solo` for the sync drain).
- arq: `arq bench.apps.async_arq.WorkerSettings`, its defaults (poll_delay 0.5 s) with
  max_jobs = C.
- taskiq: `taskiq worker bench.apps.async_taskiq:broker --workers 1 --max-async-tasks C`
  (one child doing the work under taskiq's supervising parent), RedisStreamBroker and
  RedisAsyncResultBackend with their defaults (acknowledged when the result is saved).

Each repeat runs every system once, the order rotated from repeat to repeat; Redis is
flushed before each run (the server is ours). The figures are medians of the repeats and
the ratios beatq/peer are taken within each repeat; the 1-minute load average is recorded
before every run. The end prints a markdown table (README's "Async tasks" section) and
the JSON of every run.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import redis

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))

from bench.core import BenchError, own_redis, wait_for  # noqa: E402

TIMEOUT = 300.0
GATHER = 100  # arq and taskiq sends in flight at once


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, SIGKILL after 15 s; then SIGKILL whatever of its session is left (taskiq's
    child outlives its parent's exit for a while, and would eat CPU in the next run)."""
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class System:
    """One system's client and worker: send tasks, start a worker, read the finish stamps."""

    name = ""

    def __init__(self, url: str):
        self.url = url

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_REDIS_URL": self.url}

    def worker(self, concurrency: int) -> subprocess.Popen[bytes]:
        raise NotImplementedError

    def label(self, concurrency: int) -> str:
        raise NotImplementedError

    def send(self, task: str, args: list[tuple]) -> list:
        raise NotImplementedError

    def finishes(self, handles: list) -> list[float | None]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def spawn(self, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            argv,
            env=env or self.env(),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=None,
            start_new_session=True,
        )


class Beatq(System):
    name = "beatq"

    def __init__(self, url: str, pool: str = "asyncio"):
        super().__init__(url)
        self.pool = pool
        if pool == "solo":
            self.name = "beatq solo"
        os.environ["BENCH_BROKER_URL"] = url
        import bench.apps.async_app as module

        self.module = importlib.reload(module)
        self.app = self.module.app

    def label(self, concurrency: int) -> str:
        return "-P solo" if self.pool == "solo" else f"-P asyncio -c {concurrency}"

    def worker(self, concurrency: int) -> subprocess.Popen[bytes]:
        argv = [str(BIN / "beatq"), "-A", "bench.apps.async_app", "worker", "-l", "warning"]
        argv += ["-P", "solo"] if self.pool == "solo" else ["-P", "asyncio", "-c", str(concurrency)]
        return self.spawn(argv, {**self.env(), "BENCH_BROKER_URL": self.url})

    def send(self, task: str, args: list[tuple]) -> list:
        if self.pool == "solo" and task == "anoop":
            task = "noop"  # the sync drain: plain-def no-ops
        fn = getattr(self.module, task)
        out: list = []
        for i in range(0, len(args), 1000):
            out += fn.apply_many(args[i : i + 1000])
        return out

    def finishes(self, handles: list) -> list[float | None]:
        raws = self.app.result_store.get_results([r.id for r in handles])
        return [None if raw is None else r._decode(raw)["result"] for r, raw in zip(handles, raws)]

    def close(self) -> None:
        self.app.close()


class Arq(System):
    name = "arq"

    def __init__(self, url: str):
        super().__init__(url)
        from arq import create_pool
        from arq.connections import RedisSettings

        self.loop = asyncio.new_event_loop()
        self.pool = self.loop.run_until_complete(create_pool(RedisSettings.from_dsn(url)))

    def label(self, concurrency: int) -> str:
        return f"defaults, max_jobs {concurrency}"

    def worker(self, concurrency: int) -> subprocess.Popen[bytes]:
        env = {**self.env(), "BENCH_ARQ_JOBS": str(concurrency)}
        return self.spawn([str(BIN / "arq"), "bench.apps.async_arq.WorkerSettings"], env)

    def send(self, task: str, args: list[tuple]) -> list:
        async def go() -> list:
            out: list = []
            for i in range(0, len(args), GATHER):
                chunk = args[i : i + GATHER]
                jobs = await asyncio.gather(*(self.pool.enqueue_job(task, *a) for a in chunk))
                out += [j.job_id for j in jobs]
            return out

        return self.loop.run_until_complete(go())

    def finishes(self, handles: list) -> list[float | None]:
        from arq.jobs import deserialize_result

        raws = self.loop.run_until_complete(self.pool.mget([f"arq:result:{h}" for h in handles]))
        return [None if raw is None else deserialize_result(raw).result for raw in raws]

    def close(self) -> None:
        self.loop.run_until_complete(self.pool.aclose())
        self.loop.close()


class Taskiq(System):
    name = "taskiq"

    def __init__(self, url: str):
        super().__init__(url)
        os.environ["BENCH_REDIS_URL"] = url
        import bench.apps.async_taskiq as module

        self.module = importlib.reload(module)
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.module.broker.startup())
        self.r = redis.Redis.from_url(url)

    def label(self, concurrency: int) -> str:
        return f"--workers 1 --max-async-tasks {concurrency}"

    def worker(self, concurrency: int) -> subprocess.Popen[bytes]:
        argv = [str(BIN / "taskiq"), "worker", "bench.apps.async_taskiq:broker", "--workers", "1"]
        argv += ["--max-async-tasks", str(concurrency), "--log-level", "WARNING"]
        return self.spawn(argv)

    def send(self, task: str, args: list[tuple]) -> list:
        fn = getattr(self.module, task)

        async def go() -> list:
            out: list = []
            for i in range(0, len(args), GATHER):
                sent = await asyncio.gather(*(fn.kiq(*a) for a in args[i : i + GATHER]))
                out += [s.task_id for s in sent]
            return out

        return self.loop.run_until_complete(go())

    def finishes(self, handles: list) -> list[float | None]:
        loads = self.module.broker.result_backend.serializer.loadb
        raws = self.r.mget(handles)
        return [None if raw is None else loads(raw)["return_value"] for raw in raws]

    def close(self) -> None:
        self.loop.run_until_complete(self.module.broker.shutdown())
        self.loop.close()
        self.r.close()


def make(name: str, url: str) -> System:
    if name == "beatq":
        return Beatq(url)
    if name == "beatq solo":
        return Beatq(url, pool="solo")
    return {"arq": Arq, "taskiq": Taskiq}[name](url)


def read_all(system: System, handles: list, worker: subprocess.Popen[bytes]) -> list[float]:
    """Until every task has its finish stamp: the newest 200 first (looked at every 50 ms),
    then all of them; in batches of 1,000."""

    def alive() -> None:
        if worker.poll() is not None:
            raise BenchError(f"{system.name}: the worker exited with {worker.returncode}")

    tail = handles[-200:]
    wait_for(lambda: None not in system.finishes(tail), TIMEOUT, "the last tasks", alive, 0.05)
    out: list[float] = []
    for i in range(0, len(handles), 1000):
        chunk = handles[i : i + 1000]
        got: list[float | None] = []

        def complete(chunk: list = chunk) -> bool:
            nonlocal got
            got = system.finishes(chunk)
            return None not in got

        wait_for(complete, TIMEOUT, "every task", alive, 0.05)
        out += got  # type: ignore[arg-type]
    return out


def drain(system: System, n: int, concurrency: int) -> dict[str, float]:
    handles = system.send("anoop", [()] * n)
    worker = system.worker(concurrency)
    try:
        done = read_all(system, handles, worker)
    finally:
        stop(worker)
    return {"tasks_per_s": (n - 1) / (max(done) - min(done))}


def sleepers(system: System, n: int, seconds: float, concurrency: int) -> dict[str, float]:
    worker = system.worker(concurrency)
    try:
        read_all(system, system.send("anoop", [()]), worker)  # ready: it ran one task
        began = time.time()
        handles = system.send("asleep", [(seconds,)] * n)
        done = read_all(system, handles, worker)
    finally:
        stop(worker)
    lat = sorted(d - began for d in done)
    wall = max(done) - began
    return {
        "tasks_per_s": n / wall,
        "wall_s": wall,
        "p50_ms": lat[len(lat) // 2] * 1000,
        "p99_ms": lat[int(len(lat) * 0.99) - 1] * 1000,
    }


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a tenth of the tasks")
    parser.add_argument("--systems", default="beatq,arq,taskiq")
    parser.add_argument("--only", choices=["drain", "sleepers"], help="one scenario")
    opts = parser.parse_args()
    scale = 10 if opts.quick else 1
    peers = [s for s in opts.systems.split(",") if s != "beatq"]
    scenarios: list[tuple[str, list[str], object]] = []
    if opts.only != "sleepers":
        n = 20_000 // scale
        scenarios.append(
            (f"drain {n:,} no-op async tasks", ["beatq", "beatq solo", *peers], ("drain", n, 100))
        )
    if opts.only != "drain":
        for n, s in ((1000 // scale, 0.1), (10_000 // scale, 0.05)):
            name = f"{n:,} x `await asyncio.sleep({s})`"
            scenarios.append((name, ["beatq", *peers], ("sleepers", n, s, 1000)))

    runs: list[dict] = []
    with own_redis() as url:
        client = redis.Redis.from_url(url)
        for rep in range(opts.repeat):
            for scenario, systems, spec in scenarios:
                k = rep % len(systems)
                for name in systems[k:] + systems[:k]:
                    client.flushall()  # our own server
                    load = os.getloadavg()[0]
                    system = make(name, url)
                    try:
                        if spec[0] == "drain":
                            conc = spec[2]
                            got = drain(system, spec[1], conc)
                        else:
                            conc = spec[3]
                            got = sleepers(system, spec[1], spec[2], conc)
                        label = system.label(conc)
                    finally:
                        system.close()
                    run = {"scenario": scenario, "system": name, "repeat": rep, "load1": load}
                    run |= {"setting": label, **{k: round(v, 3) for k, v in got.items()}}
                    runs.append(run)
                    print(json.dumps(run), flush=True)
    print(table(scenarios, peers, runs))
    print(json.dumps(runs))


def table(scenarios: list, peers: list[str], runs: list[dict]) -> str:
    def pick(scenario: str, system: str) -> list[dict]:
        return sorted(
            (r for r in runs if r["scenario"] == scenario and r["system"] == system),
            key=lambda r: r["repeat"],
        )

    def med(rs: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in rs)

    def ratios(a: list[dict], b: list[dict], key: str, invert: bool = False) -> str:
        per = [(y[key] / x[key]) if invert else (x[key] / y[key]) for x, y in zip(a, b)]
        each = ", ".join(f"{p:.2f}" for p in per)
        return f"**{statistics.median(per):.2f}x** ({each})"

    head = ["", "beatq", *peers] + [f"beatq ahead of {p} (median; per run)" for p in peers]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    settings = {}
    for scenario, systems, spec in scenarios:
        b = pick(scenario, "beatq")
        for s in systems:
            if pick(scenario, s):
                settings.setdefault(s, []).append(pick(scenario, s)[0]["setting"])
        if spec[0] == "drain":
            cells = [fmt_rate(med(pick(scenario, s), "tasks_per_s")) for s in ["beatq", *peers]]
            cells += [ratios(b, pick(scenario, p), "tasks_per_s") for p in peers]
            lines.append(f"| {scenario}: tasks/s | " + " | ".join(cells) + " |")
            continue
        for key, what, invert in (("tasks_per_s", "tasks/s", False), ("p99_ms", "p99", True)):
            if key == "tasks_per_s":
                cells = [fmt_rate(med(pick(scenario, s), key)) for s in ["beatq", *peers]]
            else:
                cells = [f"{med(pick(scenario, s), key) / 1000:.2f} s" for s in ["beatq", *peers]]
            cells += [ratios(b, pick(scenario, p), key, invert) for p in peers]
            lines.append(f"| {scenario}: {what} | " + " | ".join(cells) + " |")
    out = "\n".join(lines)
    drain_name = next((s for s, _, spec in scenarios if spec[0] == "drain"), None)
    if drain_name:
        a, s = pick(drain_name, "beatq"), pick(drain_name, "beatq solo")
        out += (
            f"\n\nbeatq sync `-P solo` drain: {fmt_rate(med(s, 'tasks_per_s'))}; "
            f"async `-P asyncio` / sync solo: {ratios(a, s, 'tasks_per_s')}"
        )
    loads = [r["load1"] for r in runs]
    out += f"\n\nload average (1 min) before each run: {min(loads):.1f}-{max(loads):.1f}, "
    out += f"median {statistics.median(loads):.1f}, over {len(runs)} runs"
    for s, labels in settings.items():
        out += f"\n{s}: " + "; ".join(dict.fromkeys(labels))
    return out


if __name__ == "__main__":
    main()
