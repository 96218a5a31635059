"""Figure 4 of the suite: beat precision, every scheduler at once, one entry every second.

All schedulers run side by side for the same window, each in its own Redis database with a
one-process worker of its own system that runs the entry's task; the task records
``time.time()`` when it starts (bench/apps/stamps.py: ``tick``), the same way for all. So a
figure is dispatch + pickup by the worker, what a user sees.

- grid schedulers (beatq, rq-scheduler, arq cron, Huey): an entry due at whole seconds
  (Huey: whole minutes); lateness = run - its whole second; missed = seconds of the window
  with no run, doubled = seconds with more than one.
- Celery beat and celery-redbeat keep no grid: an interval counts from the previous run, so
  lateness = run - (previous run + 1 s), a bound in their favour; missed/doubled from the
  gaps (> 1.5 s: round(gap) - 1 missed; < 0.5 s: doubled).
Dramatiq has no scheduler.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import redis

from bench.core import with_db
from bench.jobs import Workers
from bench.peers import Setting

WARMUP = 8.0  # seconds between starting everything and the window


@dataclass(frozen=True)
class Scheduler:
    key: str
    label: str  # as in the table
    db: int
    grid: float | None  # 1.0 or 60.0; None: interval from the previous run
    procs: tuple[tuple[str, ...], ...]  # beat + worker (console script first); {url} {dir}
    env: dict = field(default_factory=dict)
    setting: str = "defaults"


BEATQ = ("beatq", "-A", "bench.apps.beat_beatq")
CELERY = ("celery", "-A", "bench.apps.beat_celery")
RQW = ("rq", "worker", "-u", "{url}", "-q", "-w", "rq.worker.SimpleWorker", "tick")
ARQ = ("arq", "bench.apps.peer_arq.WorkerSettings")
TICK = {"BENCH_TICK_TASK": "bench.tick", "BENCH_TICK": "1"}

SCHEDULERS = [
    Scheduler(
        "beatq",
        "beatq beat",
        1,
        1.0,
        (BEATQ + ("beat", "-l", "warning"), BEATQ + ("worker", "-Q", "tick", "-P", "solo")),
        TICK,
    ),
    Scheduler(
        "celery",
        "Celery beat",
        2,
        None,
        (
            CELERY + ("beat", "-l", "warning", "-s", "{dir}/celerybeat-schedule"),
            CELERY + ("worker", "-Q", "tick", "-P", "solo", "-l", "warning"),
        ),
        TICK,
    ),
    Scheduler(
        "redbeat",
        "celery-redbeat",
        3,
        None,
        (
            CELERY + ("beat", "-l", "warning", "-S", "redbeat.RedBeatScheduler"),
            CELERY + ("worker", "-Q", "tick", "-P", "solo", "-l", "warning"),
        ),
        TICK,
    ),
    Scheduler(
        "huey",
        "Huey periodic task",
        4,
        60.0,
        (("huey_consumer", "bench.apps.peer_huey.huey", "-q"),),
        TICK,
        "defaults; crontab(minute='*'): minute granularity, 1 run per 60-s window",
    ),
    Scheduler(
        "rq",
        "rq-scheduler",
        5,
        1.0,
        (("rqscheduler", "-u", "{url}"), RQW),
        {},
        "defaults (rqscheduler -i 60: checks every 60 s)",
    ),
    Scheduler(
        "rq tuned",
        "rq-scheduler",
        8,
        1.0,
        (("rqscheduler", "-u", "{url}", "-i", "0.1"), RQW),
        {},
        "rqscheduler -i 0.1",
    ),
    Scheduler("arq", "arq cron", 6, 1.0, (ARQ,), TICK, "defaults (poll_delay 0.5 s)"),
    Scheduler(
        "arq tuned", "arq cron", 9, 1.0, (ARQ,), TICK | {"BENCH_ARQ_POLL": "0.01"}, "poll 0.01 s"
    ),
]


class _Target:  # what Workers needs of a peer
    def __init__(self, name: str, url: str):
        self.name, self.url = name, url


def register_rq(url: str) -> None:
    """rq-scheduler's entries live in Redis: one job every 1 s from the next whole second."""
    from rq_scheduler import Scheduler as RQScheduler

    from bench.apps import peer_rq

    start = datetime.fromtimestamp(math.floor(time.time()) + 1, tz=timezone.utc)
    conn = redis.Redis.from_url(url)
    RQScheduler(connection=conn).schedule(
        scheduled_time=start.replace(tzinfo=None),  # rq-scheduler reads naive times as UTC
        func=peer_rq.tick,
        interval=1,
        repeat=None,
        queue_name="tick",
    )
    conn.close()


def analyse(s: Scheduler, stamps: list[float], lo: float, hi: float) -> dict:
    runs = sorted(t for t in stamps if lo <= t < hi)
    out: dict = {"runs": len(runs)}
    if s.grid:
        slots = [math.floor(t / s.grid) for t in runs]
        first, last = math.ceil(lo / s.grid), math.ceil(hi / s.grid) - 1  # slots in [lo, hi)
        expected = range(first, last + 1)
        counts = {k: slots.count(k) for k in expected}
        out["expected"] = len(expected)
        out["missed"] = sum(1 for c in counts.values() if c == 0)
        out["doubled"] = sum(c - 1 for c in counts.values() if c > 1)
        late = [(t - k * s.grid) * 1000 for t, k in zip(runs, slots) if k in counts]
    else:
        gaps = [b - a for a, b in zip(runs, runs[1:])]
        out["expected"] = round(hi - lo)
        out["missed"] = sum(round(g) - 1 for g in gaps if g > 1.5)
        out["doubled"] = sum(1 for g in gaps if g < 0.5)
        late = [(g - 1.0) * 1000 for g in gaps if g >= 0.5]
    if late:
        q = statistics.quantiles(late + late[:1], n=100, method="inclusive")
        out |= {"late p50": q[49], "late p99": q[98], "late max": max(late)}
    return out


def precision_run(base_url: str, duration: float, logs: Path, rep: int, keys: list[str]) -> dict:
    """One window with every scheduler in ``keys`` running at once: {key: figures}."""
    chosen = [s for s in SCHEDULERS if s.key in keys]
    started: list[Workers] = []
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-sched-") as tmp:
        try:
            for s in chosen:
                url = with_db(base_url, s.db)
                redis.Redis.from_url(url).flushdb()
                if s.key.startswith("rq"):
                    register_rq(url)
                workdir = Path(tmp) / s.key.replace(" ", "-")
                workdir.mkdir()
                procs = tuple(
                    tuple(a.replace("{url}", url).replace("{dir}", str(workdir)) for a in p)
                    for p in s.procs
                )
                log = logs / f"sched-{s.key.replace(' ', '-')}-{rep}.log"
                setting = Setting(s.setting, procs, s.env)
                # an empty working directory: beatq's beat reads ./schedules/*.yaml by default
                started.append(Workers(_Target(s.key, url), setting, log, cwd=workdir))
            lo = math.ceil(time.time() + WARMUP)
            hi = lo + duration
            while time.time() < hi + 0.5:
                for w in started:
                    w.check_alive()
                time.sleep(0.2)
        finally:
            for w in started:
                w.stop()
        for s in chosen:
            conn = redis.Redis.from_url(with_db(base_url, s.db))
            stamps = [float(x) for x in conn.lrange("bench:ticks", 0, -1)]
            conn.close()
            out[s.key] = analyse(s, stamps, lo, hi)
    return out
