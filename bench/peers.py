"""The systems of the suite (bench/suite.py): one adapter per system, the same operations for all.

Each adapter imports its system's benchmark app (bench/apps/) with its own Redis database as
BENCH_REDIS_URL and offers: enqueue n no-ops through the normal API and through the fastest
batch API the system has (None where it has none), the drain sentinel, one round trip, ETA
sends, the depth of its queue, and the worker settings it is measured with:

    one       the best one-process setting (drain in one worker process; best round trip)
    default   the worker command with no options at all, on this 2-core machine
    two       further settings tried on 2 cores; "best on 2 cores" is the best median of
              default, two (and one)
    eta       the ETA phase's worker: the defaults (RQ: plus --with-scheduler, which ETAs need)

Peers are imported only here, only in bench/.venv: beatq never imports them.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import redis

from bench.core import with_db

BIN = Path(sys.executable).parent
RT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Setting:
    label: str  # as printed in the table, e.g. "-P threads -c 4"
    procs: tuple[tuple[str, ...], ...]  # one argv per process (console script first)
    env: dict = field(default_factory=dict)

    def argv(self) -> list[list[str]]:
        return [[str(BIN / p[0]), *p[1:]] for p in self.procs]


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


class Peer:
    name = ""
    label = ""
    db = 0
    queue_key = ""
    zset = False  # the queue is a sorted set (arq), not a list
    module = ""
    batch_api: str | None = None  # name of the batch API, None if the system has none
    rt_best_note = ""  # what the "best" round trip changes, "" if it is the default

    def __init__(self, base_url: str):
        self.url = with_db(base_url, self.db)
        self.r = redis.Redis.from_url(self.url)
        os.environ["BENCH_REDIS_URL"] = self.url
        try:
            self.app = importlib.import_module(self.module)
        finally:
            del os.environ["BENCH_REDIS_URL"]

    # -- worker settings ------------------------------------------------------------------
    def settings(self) -> dict[str, Setting]:
        """ "one", "default" and the extra 2-core candidates "two:..."."""
        raise NotImplementedError

    def eta_setting(self) -> Setting:
        """The worker of the ETA phase: the system's defaults (Celery's -P solo, for one, runs
        its ETA timer badly: a third of 1,000 tasks ran in the 10 s after they fell due)."""
        return self.settings()["default"]

    def rt_settings(self) -> dict[str, Setting]:
        """Worker for the round trip with the client's defaults, and for its best options."""
        s = self.settings()
        return {"default": s["default"], "best": s["one"]}

    # -- client ---------------------------------------------------------------------------
    def depth(self) -> int:
        return self.r.zcard(self.queue_key) if self.zset else self.r.llen(self.queue_key)

    def flush(self) -> None:
        self.r.flushdb()

    def enqueue(self, n: int) -> None:
        raise NotImplementedError

    def enqueue_batch(self, n: int) -> None:
        raise NotImplementedError

    def sentinel(self) -> None:
        raise NotImplementedError

    def roundtrip(self, best: bool) -> None:
        raise NotImplementedError

    def send_eta(self, chunks: list[tuple[float, int]]) -> None:
        """Send ``k`` ETA tasks for each (eta, k): task late(eta) due at eta (time.time())."""
        raise NotImplementedError

    def describe(self) -> dict:
        """The settings as the table names them (kept in the JSON with the figures)."""
        rts = self.rt_settings()
        best = rts["best"]
        return {
            "workers": {k: s.label for k, s in self.settings().items()},
            "batch api": self.batch_api,
            "rt default": rts["default"].label,
            "rt best": self.rt_best_note or f"worker {best.label}, client defaults",
            "eta": self.eta_setting().label,
        }

    def close(self) -> None:
        self.r.close()


class BeatqPeer(Peer):
    name, label, db, queue_key = "beatq", "beatq", 1, "beatq:q:celery"
    module = "bench.apps.beatq_app"
    batch_api = "noop.apply_many(...)"

    def settings(self):
        base = ("beatq", "-A", self.module, "worker", "-l", "warning")
        return {
            "one": Setting("-P solo", (base + ("-P", "solo"),)),
            "default": Setting("defaults (prefork -c 2)", (base,)),
            "two:threads": Setting("-P threads -c 4", (base + ("-P", "threads", "-c", "4"),)),
            "two:solo2": Setting("2 processes, -P solo", (base + ("-P", "solo"),) * 2),
        }

    def enqueue(self, n):
        noop = self.app.noop
        for _ in range(n):
            noop.delay()

    def enqueue_batch(self, n):
        self.app.noop.apply_many([()] * n)

    def sentinel(self):
        self.app.done.delay()

    def roundtrip(self, best):
        self.app.noop_result.delay().get(timeout=RT_TIMEOUT)

    def send_eta(self, chunks):
        late = self.app.late
        for eta, k in chunks:
            late.apply_many([(eta,)] * k, eta=utc(eta))


class CeleryPeer(Peer):
    name, label, db, queue_key = "celery", "Celery", 2, "celery"
    module = "bench.apps.celery_app"
    batch_api = "group(noop.s() ...).apply_async()"

    def settings(self):
        base = ("celery", "-A", self.module, "worker", "-l", "warning")
        return {
            "one": Setting("-P solo", (base + ("-P", "solo"),)),
            "default": Setting("defaults (prefork -c 2)", (base,)),
            "two:solo2": Setting(
                "2 processes, -P solo",
                tuple(base + ("-P", "solo", "-n", f"solo{i}@%h") for i in (1, 2)),
            ),
        }

    def enqueue(self, n):
        noop = self.app.noop
        for _ in range(n):
            noop.delay()

    def enqueue_batch(self, n):
        from celery import group

        group(self.app.noop.s() for _ in range(n)).apply_async()

    def sentinel(self):
        self.app.done.delay()

    def roundtrip(self, best):
        self.app.noop_result.delay().get(timeout=RT_TIMEOUT)

    def send_eta(self, chunks):
        late = self.app.late
        for eta, k in chunks:
            when = utc(eta)
            for _ in range(k):
                late.apply_async((eta,), eta=when)


class HueyPeer(Peer):
    name, label, db, queue_key = "huey", "Huey", 4, "huey.redis.bench"
    module = "bench.apps.peer_huey"
    rt_best_note = "notify_result=True (BLPOP instead of polling)"

    def settings(self):
        base = ("huey_consumer", "bench.apps.peer_huey.huey", "-q")
        return {
            "one": Setting("defaults (1 thread)", (base,)),
            "default": Setting("defaults (1 thread)", (base,)),
            "two:process2": Setting("-k process -w 2", (base + ("-k", "process", "-w", "2"),)),
            "two:thread4": Setting("-k thread -w 4", (base + ("-w", "4"),)),
        }

    def rt_settings(self):
        base = ("huey_consumer", "bench.apps.peer_huey.huey", "-q")
        return {
            "default": Setting("defaults", (base,)),
            "best": Setting("notify_result=True", (base,), {"BENCH_HUEY_NOTIFY": "1"}),
        }

    def enqueue(self, n):
        noop = self.app.noop
        for _ in range(n):
            noop()

    def sentinel(self):
        self.app.done()

    def roundtrip(self, best):
        self.app.huey.storage.notify_result = best
        self.app.noop_result().get(blocking=True, timeout=RT_TIMEOUT)

    def send_eta(self, chunks):
        import time

        late = self.app.late
        for eta, k in chunks:
            for _ in range(k):
                late.schedule(args=(eta,), delay=eta - time.time())


class RQPeer(Peer):
    name, label, db, queue_key = "rq", "RQ", 5, "rq:queue:default"
    module = "bench.apps.peer_rq"
    batch_api = "Queue.enqueue_many(...)"

    def __init__(self, base_url):
        super().__init__(base_url)
        from rq import Queue

        self.q = Queue(connection=self.r)

    def settings(self):
        base = ("rq", "worker", "-u", self.url, "-q")
        simple = ("-w", "rq.worker.SimpleWorker")
        pool = ("rq", "worker-pool", "-u", self.url, "-l", "WARNING", "-n", "2") + simple
        return {
            "one": Setting("-w SimpleWorker (no fork per job)", (base + simple,)),
            "default": Setting("defaults (fork per job)", (base,)),
            "two:pool": Setting("worker-pool -n 2 -w SimpleWorker", (pool,)),
        }

    def eta_setting(self):
        base = ("rq", "worker", "-u", self.url, "-q", "--with-scheduler")  # needed for ETAs
        return Setting("defaults + --with-scheduler", (base,))

    def enqueue(self, n):
        fn = self.app.noop
        for _ in range(n):
            self.q.enqueue(fn)

    def enqueue_batch(self, n):
        from rq import Queue

        fn = self.app.noop
        self.q.enqueue_many([Queue.prepare_data(fn) for _ in range(n)])

    def sentinel(self):
        self.q.enqueue(self.app.done)

    def roundtrip(self, best):
        job = self.q.enqueue(self.app.noop_result)
        res = job.latest_result(timeout=int(RT_TIMEOUT))
        if res is None:
            raise TimeoutError("RQ: no result")

    def send_eta(self, chunks):
        fn = self.app.late
        for eta, k in chunks:
            when = utc(eta)
            for _ in range(k):
                self.q.enqueue_at(when, fn, eta)


class ArqPeer(Peer):
    name, label, db, queue_key, zset = "arq", "arq", 6, "arq:queue", True
    module = "bench.apps.peer_arq"
    rt_best_note = "poll_delay 0.01 s in worker and client (default 0.5 s)"

    def __init__(self, base_url):
        super().__init__(base_url)
        from arq import create_pool
        from arq.connections import RedisSettings

        self.loop = asyncio.new_event_loop()
        self.pool = self.loop.run_until_complete(create_pool(RedisSettings.from_dsn(self.url)))

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def settings(self):
        base = ("arq", "bench.apps.peer_arq.WorkerSettings")
        tuned = {"BENCH_ARQ_POLL": "0.01", "BENCH_ARQ_JOBS": "100"}
        return {
            "one": Setting("defaults (max_jobs 10)", (base,)),
            "default": Setting("defaults (max_jobs 10)", (base,)),
            "two:tuned": Setting("poll_delay 0.01 s, max_jobs 100", (base,), tuned),
            "two:tuned2": Setting(
                "2 processes, poll_delay 0.01 s, max_jobs 100", (base, base), tuned
            ),
        }

    def rt_settings(self):
        base = ("arq", "bench.apps.peer_arq.WorkerSettings")
        return {
            "default": Setting("defaults", (base,)),
            "best": Setting("poll_delay 0.01 s", (base,), {"BENCH_ARQ_POLL": "0.01"}),
        }

    def enqueue(self, n):
        async def go():
            for _ in range(n):
                await self.pool.enqueue_job("noop")

        self.run(go())

    def sentinel(self):
        self.run(self.pool.enqueue_job("done"))

    def roundtrip(self, best):
        async def go():
            job = await self.pool.enqueue_job("noop_result")
            await job.result(timeout=RT_TIMEOUT, poll_delay=0.01 if best else 0.5)

        self.run(go())

    def send_eta(self, chunks):
        async def go():
            for eta, k in chunks:
                when = utc(eta)
                for _ in range(k):
                    await self.pool.enqueue_job("late", eta, _defer_until=when)

        self.run(go())

    def close(self):
        self.run(self.pool.aclose())
        self.loop.close()
        super().close()


class DramatiqPeer(Peer):
    name, label, db, queue_key = "dramatiq", "Dramatiq", 7, "dramatiq:default"
    module = "bench.apps.peer_dramatiq"
    batch_api = "group(noop.message() ...).run()"

    def settings(self):
        base = ("dramatiq", self.module)
        return {
            "one": Setting("-p 1 (8 threads)", (base + ("-p", "1"),)),
            "default": Setting("defaults (-p 2 -t 8)", (base,)),
        }

    def enqueue(self, n):
        noop = self.app.noop
        for _ in range(n):
            noop.send()

    def enqueue_batch(self, n):
        from dramatiq import group

        group(self.app.noop.message() for _ in range(n)).run()

    def sentinel(self):
        self.app.done.send()

    def roundtrip(self, best):
        self.app.noop_result.send().get_result(block=True, timeout=int(RT_TIMEOUT * 1000))

    def send_eta(self, chunks):
        import time

        late = self.app.late
        for eta, k in chunks:
            for _ in range(k):
                late.send_with_options(args=(eta,), delay=max(0, int((eta - time.time()) * 1000)))


PEERS: dict[str, type[Peer]] = {
    p.name: p for p in (BeatqPeer, CeleryPeer, HueyPeer, RQPeer, ArqPeer, DramatiqPeer)
}
