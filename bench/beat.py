"""Beat benchmark: beatq's beat against Celery beat and celery-redbeat on one Redis, in one run.

Three phases (bench/README.md explains how to read them):

  precision  one entry every 1 s for --duration s (60): lateness, interval error, drift,
             missed and doubled runs
  failover   two beats, kill -9 the leader: time from the kill to the next message
  scale      10,000 and 100,000 entries every 60 s (+ the 1-s entry): memory, idle CPU,
             dispatch rate when all fall due at once, the 1-s entry's lateness meanwhile

Every system runs with its defaults (the tuned redbeat failover run aside). No worker runs:
messages stay in Redis. A small observer process holds its own connection, subscribed to
Redis keyspace notifications of the 1-s entry's queue list, and stamps each LPUSH with
time.time() as it arrives (the same way for all three systems); the big batches are
watched by polling LLEN every 5 ms. beatq messages also carry their slot and send time,
read back afterwards.

    bench/.venv/bin/python bench/beat.py [--quick] [--repeat N] [--phases precision,failover,scale]

It starts its own redis-server on a free port (db 1 beatq, db 2 Celery beat, db 3 redbeat,
each flushed before every run) with keyspace notifications for lists enabled.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from bench.core import (  # noqa: E402
    BenchError,
    environment,
    frozen_beatq,
    own_redis,
    process_tree,
    spread,
    with_db,
)

RESULTS = BENCH / "results"
CALIBRATE = "0:bench:observer-calibration"  # db:key the observer's delay is measured on
BIN = Path(sys.executable).parent

START_TIMEOUT = 60.0  # beat launch until its first message (small schedules)
STOP_TIMEOUT = 15.0  # SIGTERM until SIGKILL
POLL = 0.005  # harness polling of the observer's file and of LLEN
STANDBY_SETTLE = 3.0  # seconds both beats run together before the kill
AFTER_TAKEOVER = 3.0  # seconds the new leader runs after its first message
IDLE_WINDOW = 10.0  # seconds of the idle CPU / tick measurement
TWO_BEATS_WINDOW = 10.0  # two default Celery beats side by side
SLOW_BURST = 60.0  # a batch slower than this (slot -> last message) is not repeated
SHORT_BURST = 60.0  # and at larger sizes it is run once, given up after this


@dataclass(frozen=True)
class System:
    name: str
    label: str
    db: int
    tick_key: str  # Redis list the 1-s entry's messages are pushed on
    bulk_key: str  # Redis list of the scale phase's 60-s entries
    cmd: tuple[str, ...]  # after the console script; "{dir}" = the run's working directory
    script: str = "celery"

    def command(self, workdir: Path, loglevel: str) -> list[str]:
        args = [a.replace("{dir}", str(workdir)) for a in self.cmd]
        return [str(BIN / self.script), *args, "-l", loglevel]


SYSTEMS = {
    "beatq": System(
        "beatq",
        "beatq",
        1,
        "beatq:q:tick",
        "beatq:q:celery",
        ("-A", "bench.apps.beat_beatq", "beat"),
        script="beatq",
    ),
    "celery": System(
        "celery",
        "celery beat",
        2,
        "tick",
        "celery",
        ("-A", "bench.apps.beat_celery", "beat", "-s", "{dir}/celerybeat-schedule"),
    ),
    "redbeat": System(
        "redbeat",
        "redbeat",
        3,
        "tick",
        "celery",
        ("-A", "bench.apps.beat_celery", "beat", "-S", "redbeat.RedBeatScheduler"),
    ),
}
REDBEAT_TUNED = {"BENCH_REDBEAT_LOCK_TIMEOUT": "5", "BENCH_BEAT_MAX_LOOP": "1"}
SETTINGS = {
    "beatq": "defaults: lease 4 s (renewed every 1.33 s, a standby tries every 0.5 s); "
    "no schedule files (empty working directory)",
    "celery": "celery beat, default PersistentScheduler, beat_max_loop_interval default "
    "(0 -> 300 s), no tuning; schedule file in a fresh temp dir per run",
    "redbeat": "celery beat -S redbeat.RedBeatScheduler, defaults: beat_max_loop_interval "
    "300 s, redbeat_lock_timeout 5 x 300 = 1500 s (a standby retries the lock every 300 s)",
    "redbeat tuned": "failover only: redbeat_lock_timeout = 5 s, beat_max_loop_interval = 1 s",
}

LIVE: set[Beat] = set()  # every process started here, stopped on any exit


def ms(seconds: float) -> float:
    return seconds * 1000.0


def pct(values: list[float], p: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def sleep_until(t: float, check=None) -> None:
    while (left := t - time.time()) > 0:
        if check:
            check()
        time.sleep(min(left, 0.05))


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a beat: ours without BENCH_/BEATQ_/CELERY_ overrides, plus extra."""
    drop = ("BENCH_", "BEATQ_", "CELERY_", "REDBEAT_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)]))
    return env | extra


# -- processes -------------------------------------------------------------------------------
class Beat:
    """One beat process, started through its system's CLI in its own process group."""

    def __init__(self, system: System, url: str, workdir: Path, log: Path, loglevel: str, **env):
        self.system, self.log, self.label = system, log, f"{system.label} beat ({log.name})"
        workdir.mkdir(parents=True, exist_ok=True)
        env = clean_env(BENCH_REDIS_URL=with_db(url, system.db), **env)
        self.started = time.time()
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                system.command(workdir, loglevel),
                cwd=workdir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        LIVE.add(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise BenchError(f"{self.label} exited with {self.proc.returncode}; {self.tail()}")

    def tail(self, n: int = 2500) -> str:
        try:
            return "log tail:\n" + self.log.read_text(errors="replace")[-n:]
        except OSError:
            return "no log"

    def log_has(self, text: str) -> bool:
        try:
            return text in self.log.read_text(errors="replace")
        except OSError:
            return False

    def crash(self) -> None:
        """kill -9 of the beat process itself, as a crash would."""
        os.kill(self.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        if self.alive():
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"  ! {self.label} ignored SIGTERM for {timeout:.0f}s; SIGKILL", flush=True)
        self._signal(signal.SIGKILL)  # anything left in its group
        self.proc.wait()
        LIVE.discard(self)

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    # /proc figures of the process and its children
    def rss_mib(self, field_name: str = "VmRSS:") -> float:
        total = 0
        for pid in process_tree(self.pid):
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith(field_name):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total / 1024

    def cpu_seconds(self) -> float:
        ticks = 0
        for pid in process_tree(self.pid):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks += int(fields[11]) + int(fields[12])  # utime + stime
        return ticks / os.sysconf("SC_CLK_TCK")


def stop_all() -> None:
    for beat in list(LIVE):
        beat.stop(timeout=5)


# -- the observer --------------------------------------------------------------------------
def observe(url: str, out: str, channels: list[str]) -> int:
    """Observer process: one line "db:key time" per LPUSH/RPUSH on each db:key, until SIGTERM."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    names = {}
    for channel in channels:
        db, key = channel.split(":", 1)
        names[f"__keyspace@{db}__:{key}".encode()] = channel
    client = redis.Redis.from_url(url)
    pubsub = client.pubsub()
    pubsub.subscribe(*names)
    confirmed = 0
    with open(out, "w") as f:
        while confirmed < len(names):
            msg = pubsub.get_message(timeout=1.0)
            if msg and msg["type"] == "subscribe":
                confirmed += 1
        f.write("ready\n")
        f.flush()
        while not stop:
            msg = pubsub.get_message(timeout=0.1)
            if msg is None:
                continue
            now = time.time()
            if msg["type"] == "message" and msg["data"] in (b"lpush", b"rpush"):
                f.write(f"{names[msg['channel']]} {now:.6f}\n")
            # write out at once unless more are already waiting
            if not pubsub.connection.can_read(timeout=0):
                f.flush()
    return 0


class Observer:
    """The harness side: starts the observer process and reads its stamps."""

    def __init__(self, url: str, channels: list[str], path: Path):
        self.path, self.offset, self.partial = path, 0, b""
        self.events: dict[str, list[float]] = {c: [] for c in channels}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--observe", url, str(path)]
        self.proc = subprocess.Popen(cmd + channels, env=clean_env(), start_new_session=True)
        deadline = time.time() + 10
        while not (path.exists() and path.read_bytes().startswith(b"ready\n")):
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                raise BenchError("the observer process did not start")
            time.sleep(0.01)
        self.offset = len(b"ready\n")

    def poll(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(f"the observer process exited with {self.proc.returncode}")
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        data = self.partial + data
        *lines, self.partial = data.split(b"\n")
        for line in lines:
            channel, stamp = line.decode().rsplit(" ", 1)
            self.events[channel].append(float(stamp))

    def times(self, channel: str) -> list[float]:
        self.poll()
        return list(self.events[channel])

    def clear(self, channel: str) -> None:
        self.poll()
        self.events[channel] = []

    def next_after(self, channel: str, after: float, timeout: float, check=None) -> float | None:
        """The first stamp on channel later than `after`, waiting up to `timeout` s; or None."""
        deadline = time.time() + timeout
        while True:
            self.poll()
            later = [t for t in self.events[channel][-50:] if t > after]
            if later:
                return later[0]
            if time.time() > deadline:
                return None
            if check:
                check()
            time.sleep(POLL)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- reading results back ----------------------------------------------------------------------
def beatq_messages(client: redis.Redis, key: str) -> list[dict]:
    """beatq messages on queue list `key`, oldest first: {"slot", "sent", "entry"}."""
    ids = client.lrange(key, 0, -1)[::-1]  # LPUSHed: the oldest is at the right
    out = []
    for stored in client.hmget("beatq:msg", ids) if ids else []:
        _, body = stored.split(b"\n", 1)
        head, payload = body.split(b"\n", 1)
        header, options = json.loads(head), json.loads(payload)[2]
        beat = options.get("beat", {})
        out.append({"slot": beat.get("slot"), "sent": header["sent"], "entry": beat.get("entry")})
    return out


def tick_analysis(system: System, client: redis.Redis, stamps: list[float], lo: float, hi: float):
    """Figures of the 1-s entry's messages stamped in (lo, hi].

    Lateness is measured against the instant the scheduler itself aims at: for beatq the
    run's slot (a whole second, carried in the message); Celery and redbeat count an
    interval from the previous run, so theirs is the previous message's arrival + 1 s (a
    lower bound: they stamp the previous run just before sending it).
    """
    idx = [i for i, t in enumerate(stamps) if lo < t <= hi]
    gaps = [stamps[i] - stamps[i - 1] for i in idx if i > 0]
    res: dict = {"runs": len(idx), "problems": []}
    if system.name == "beatq":
        msgs = beatq_messages(client, system.tick_key)
        if len(msgs) != len(stamps):
            res["problems"].append(
                f"observer saw {len(stamps)} pushes but {len(msgs)} messages are queued; "
                "lateness from the beat's own send stamps"
            )
            late = [m["sent"] - m["slot"] for m in msgs if lo < m["sent"] <= hi]
            window = [m for m in msgs if lo < m["sent"] <= hi]
        else:
            late = [stamps[i] - msgs[i]["slot"] for i in idx]
            window = [msgs[i] for i in idx]
        res["own"] = [m["sent"] - m["slot"] for m in window]  # the beat's own send stamp
        # runs missed: slots absent between the run before the window and the window's last
        slots = sorted(round(m["slot"]) for m in msgs)
        span = [round(m["slot"]) for m in window]
        if span:
            before = [x for x in slots if x < min(span)]
            start = before[-1] + 1 if before else min(span)
            inside = [x for x in slots if start <= x <= max(span)]
            res["missed"] = max(span) - start + 1 - len(set(inside))
            res["doubled"] = len(inside) - len(set(inside))
        else:
            res["missed"] = res["doubled"] = None
    else:
        late = [stamps[i] - (stamps[i - 1] + 1.0) for i in idx if i > 0]
        res["missed"] = sum(max(round(g) - 1, 0) for g in gaps if g >= 1.5)
        res["doubled"] = sum(1 for g in gaps if g < 0.5)
    res["late"] = late
    res["gap_err"] = [abs(g - 1.0) for g in gaps]
    if len(idx) >= 2:
        first, last = stamps[idx[0]], stamps[idx[-1]]
        res["drift"] = (last - first) - (len(idx) - 1) * 1.0
    else:
        res["drift"] = None
    return res


def calibrate(url: str, observer: Observer, n: int = 200) -> dict:
    """How long after a push its stamp is taken: the harness pushes n times, stamping itself."""
    client = redis.Redis.from_url(with_db(url, 0))
    observer.clear(CALIBRATE)
    pushes = []
    for _ in range(n):
        t0 = time.time()
        client.lpush(CALIBRATE.split(":", 1)[1], 1)
        pushes.append((t0, time.time()))
        time.sleep(0.01)
    deadline = time.time() + 5
    while len(observer.times(CALIBRATE)) < n and time.time() < deadline:
        time.sleep(POLL)
    client.delete(CALIBRATE.split(":", 1)[1])
    stamps = observer.times(CALIBRATE)
    if len(stamps) != n:
        raise BenchError(f"the observer saw {len(stamps)} of {n} calibration pushes")
    delay = [ms(s - (t0 + t1) / 2) for s, (t0, t1) in zip(stamps, pushes, strict=True)]
    rtt = [ms(t1 - t0) for t0, t1 in pushes]
    return {
        "delay p50 ms": pct(delay, 50),
        "delay p99 ms": pct(delay, 99),
        "push round trip p50 ms": pct(rtt, 50),
    }


# -- context -------------------------------------------------------------------------------
@dataclass
class Ctx:
    url: str
    observer: Observer
    tmp: Path
    logs: Path
    failures: list = field(default_factory=list)
    loads: list = field(default_factory=list)

    def client(self, system: System) -> redis.Redis:
        return redis.Redis.from_url(with_db(self.url, system.db))

    def fresh(self, system: System) -> redis.Redis:
        """Flush the system's db and forget the observer's stamps of its lists."""
        client = self.client(system)
        client.flushdb()
        for key in (system.tick_key, system.bulk_key):
            self.observer.clear(f"{system.db}:{key}")
        self.loads.append(os.getloadavg()[0])
        return client

    def beat(self, system: System, tag: str, loglevel: str = "info", **env) -> Beat:
        return Beat(
            system, self.url, self.tmp / tag, self.logs / f"beat-{tag}.log", loglevel, **env
        )

    def fail(self, phase: str, who: str, rep: int, error: str) -> None:
        print(f"  ! {who}: {error}", flush=True)
        self.failures.append({"phase": phase, "system": who, "rep": rep, "error": error})


def tick_channel(system: System) -> str:
    return f"{system.db}:{system.tick_key}"


# -- 1. precision --------------------------------------------------------------------------
def precision_run(ctx: Ctx, system: System, rep: int, duration: float) -> dict:
    client = ctx.fresh(system)
    ch = tick_channel(system)
    beat = ctx.beat(system, f"precision-{system.name}-{rep}")
    try:
        first = ctx.observer.next_after(ch, beat.started, START_TIMEOUT, beat.check_alive)
        if first is None:
            raise BenchError(f"{beat.label}: no message within {START_TIMEOUT:.0f}s; {beat.tail()}")
        lo, hi = first + 0.5, first + 0.5 + duration  # the first run is a warm-up
        sleep_until(hi + 0.3, beat.check_alive)
    finally:
        beat.stop()
    stamps = ctx.observer.times(ch)
    if len(stamps) != client.llen(system.tick_key):
        ctx.fail("precision", system.name, rep, "observer and queue length disagree")
    a = tick_analysis(system, client, stamps, lo, hi)
    for p in a["problems"]:
        ctx.fail("precision", system.name, rep, p)
    late, err = [ms(x) for x in a["late"]], [ms(x) for x in a["gap_err"]]
    out = {
        "load 1m": os.getloadavg()[0],
        "late p50": pct(late, 50),
        "late p99": pct(late, 99),
        "late max": max(late, default=None),
        "gap p50": pct(err, 50),
        "gap p99": pct(err, 99),
        "gap max": max(err, default=None),
        "drift": a["drift"] and ms(a["drift"]),
        "runs": a["runs"],
        "missed": a["missed"],
        "doubled": a["doubled"],
    }
    if system.name == "beatq":
        own = [ms(x) for x in a["own"]]
        out["own p50"], out["own max"] = pct(own, 50), max(own, default=None)
    print(f"  {system.name:8} {json.dumps({k: v and round(v, 2) for k, v in out.items()})}")
    return out


# -- 2. failover ---------------------------------------------------------------------------
def failover_run(ctx: Ctx, variant: str, rep: int, cap: float) -> dict:
    system = SYSTEMS["beatq" if variant == "beatq" else "redbeat"]
    env = REDBEAT_TUNED if variant == "redbeat tuned" else {}
    client = ctx.fresh(system)
    ch = tick_channel(system)
    tag = f"failover-{variant.replace(' ', '-')}-{rep}"
    a = ctx.beat(system, tag + "-a", **env)
    b = None
    out: dict = {"load 1m": os.getloadavg()[0]}
    try:
        if ctx.observer.next_after(ch, a.started, START_TIMEOUT, a.check_alive) is None:
            raise BenchError(f"{a.label}: no message within {START_TIMEOUT:.0f}s; {a.tail()}")
        b = ctx.beat(system, tag + "-b", **env)
        started = "beat: Starting..." if system.name != "beatq" else " starting: "
        deadline = time.time() + START_TIMEOUT
        while not b.log_has(started):
            b.check_alive()
            if time.time() > deadline:
                raise BenchError(f"{b.label} did not start; {b.tail()}")
            time.sleep(0.05)
        sleep_until(time.time() + STANDBY_SETTLE, lambda: (a.check_alive(), b.check_alive()))
        if system.name == "beatq":
            value = client.get("beatq:lease:beat")
            if value is None:
                raise BenchError("no beatq beat holds the lease")
            pid = int(value.decode().split("|")[0].rsplit(":", 2)[1])
            leader, standby = (a, b) if pid == a.pid else (b, a)
            if pid not in (a.pid, b.pid):
                raise BenchError(f"lease holder {value!r} is neither beat")
            lock_key = "beatq:lease:beat"
        else:
            if b.log_has("Acquired lock"):
                raise BenchError("both redbeat beats say they acquired the lock")
            leader, standby, lock_key = a, b, "redbeat::lock"
        # kill 0.3 s after a run, the same phase every time
        tick = ctx.observer.next_after(ch, time.time(), 5, leader.check_alive)
        if tick is None:
            raise BenchError(f"{leader.label} stopped sending; {leader.tail()}")
        sleep_until(tick + 0.3)
        out["lock ttl at kill"] = client.pttl(lock_key) / 1000
        killed = time.time()
        leader.crash()
        took = ctx.observer.next_after(ch, killed, cap, standby.check_alive)
        out["takeover"] = None if took is None else took - killed
        out["timed out"] = took is None
        if took is not None:
            sleep_until(took + AFTER_TAKEOVER, standby.check_alive)
            if system.name == "beatq":
                value = client.get("beatq:lease:beat") or b""
                if f":{standby.pid}:" not in value.decode():
                    ctx.fail("failover", variant, rep, f"lease now held by {value!r}")
    finally:
        a.stop()
        if b:
            b.stop()
    stamps = ctx.observer.times(ch)
    an = tick_analysis(system, client, stamps, 0, math.inf)
    out["doubled"], out["missed"] = an["doubled"], an["missed"]
    if system.name == "beatq" and took is not None:
        msgs = beatq_messages(client, system.tick_key)
        after = [i for i, t in enumerate(stamps) if t >= took]
        if after and len(msgs) == len(stamps):
            out["takeover late"] = stamps[after[0]] - msgs[after[0]]["slot"]
            out["late after"] = (
                max(stamps[i] - msgs[i]["slot"] for i in after[1:]) if len(after) > 1 else None
            )
    shown = {k: v if not isinstance(v, float) else round(v, 3) for k, v in out.items()}
    print(f"  {variant:14} {json.dumps(shown)}", flush=True)
    return out


def two_beats_run(ctx: Ctx, rep: int) -> dict:
    """Two default Celery beats side by side: Celery has no lock, so both send."""
    system = SYSTEMS["celery"]
    client = ctx.fresh(system)
    ch = tick_channel(system)
    a = ctx.beat(system, f"twobeats-{rep}-a")
    b = ctx.beat(system, f"twobeats-{rep}-b")
    try:
        deadline = time.time() + START_TIMEOUT
        while not (a.log_has("Sending due task") and b.log_has("Sending due task")):
            a.check_alive(), b.check_alive()
            if time.time() > deadline:
                raise BenchError(f"two Celery beats did not both send; {a.tail()}")
            time.sleep(0.05)
        lo = time.time() + 0.5
        hi = lo + TWO_BEATS_WINDOW
        sleep_until(hi + 0.3, lambda: (a.check_alive(), b.check_alive()))
    finally:
        a.stop()
        b.stop()
    stamps = [t for t in ctx.observer.times(ch) if lo < t <= hi]
    client.close()
    out = {
        "messages": len(stamps),
        "expected": TWO_BEATS_WINDOW,
        "doubled": len(stamps) - TWO_BEATS_WINDOW,
    }
    print(f"  celery x2      {json.dumps(out)}", flush=True)
    return out


# -- 3. scale ------------------------------------------------------------------------------
class Llen:
    """Polls the length of a list every POLL s; remembers when it first grew and when it hit n."""

    def __init__(self, client: redis.Redis, key: str):
        self.client, self.key = client, key

    def wait(self, n: int, deadline: float, cap: float, check):
        """(first, last, length): wait for a first element until `deadline`, then for n of them
        until `cap` s after the first."""
        first = last = None
        length = 0
        while time.time() < deadline:
            length = self.client.llen(self.key)
            now = time.time()
            if length and first is None:
                first = now
                deadline = first + cap
            if length >= n:
                last = now
                break
            check()
            time.sleep(POLL)
        return first, last, length


def measure_idle(ctx: Ctx, system: System, beat: Beat, client: redis.Redis) -> dict:
    bulk_before = client.llen(system.bulk_key)
    c0, t0 = beat.cpu_seconds(), time.time()
    sleep_until(t0 + IDLE_WINDOW, beat.check_alive)
    c1, t1 = beat.cpu_seconds(), time.time()
    quiet = client.llen(system.bulk_key) == bulk_before
    stamps = ctx.observer.times(tick_channel(system))
    a = tick_analysis(system, client, stamps, t0, t1)
    late = [ms(x) for x in a["late"]]
    return {
        "cpu": (c1 - c0) / (t1 - t0),
        "idle late p50": pct(late, 50),
        "idle late max": max(late, default=None),
        "idle quiet": quiet,
    }


def scale_run(ctx: Ctx, system: System, n: int, rep: int, caps: dict) -> dict:
    client = ctx.fresh(system)
    ch = tick_channel(system)
    out: dict = {"load 1m": os.getloadavg()[0], "entries": n}
    env = {"BENCH_BEAT_N": str(n)}
    interval = system.name != "beatq" and caps.get("celery bulk") == "interval"
    if interval:
        env["BENCH_BEAT_BULK"] = "interval"
    beat = ctx.beat(system, f"scale-{system.name}-{n}-{rep}", "warning", **env)
    try:
        ready = ctx.observer.next_after(ch, beat.started, caps["startup"], beat.check_alive)
        if ready is None:
            out["error"] = f"no message within {caps['startup']:.0f} s of the launch"
            return out
        out["startup"] = ready - beat.started
        sleep_until(ready + 1, beat.check_alive)
        out["rss"] = beat.rss_mib()
        if client.llen(system.bulk_key):
            out["rss taken during the batch"] = True
        # the batch falls due at each whole minute (beatq every 60s; Celery/redbeat crontab)
        due = math.ceil(time.time() / 60) * 60
        if interval:  # timedelta entries: 60 s after the beat created them
            due = beat.started + 60
        idle_done = False
        if time.time() + IDLE_WINDOW + 2 < due and not client.llen(system.bulk_key):
            out.update(measure_idle(ctx, system, beat, client))
            idle_done = out["idle quiet"]
        llen = Llen(client, system.bulk_key)
        first, last, length = llen.wait(
            n, max(due, time.time()) + caps["burst"], caps["burst"], beat.check_alive
        )
        if first is None:
            out["error"] = f"no batch message within {caps['burst']:.0f} s of its due time"
            return out
        # the slot: the whole minute (with --celery-bulk interval the peers have none: the
        # first message stands in for it)
        slot = first if interval else math.floor(first / 60) * 60
        out["burst first late"] = first - slot
        if system.name == "beatq":  # check: the slot the beat itself gave the first message
            stored = client.hget("beatq:msg", client.lindex(system.bulk_key, -1))
            payload = stored.split(b"\n", 2)[2]
            if json.loads(payload)[2]["beat"]["slot"] != slot:
                ctx.fail("scale", system.name, rep, "batch slot is not the minute expected")
        if last is None:
            out["error"] = (
                f"{length:,} of {n:,} batch messages after {time.time() - first:.0f} s "
                f"(~{length / (time.time() - first):,.0f}/s); gave up"
            )
            out["partial rate"] = length / (time.time() - first)
            return out
        out["burst first-last"] = last - first
        out["rate"] = n / (last - first) if last > first else None
        out["burst slot-last"] = last - slot
        out["rate slot"] = n / (last - slot)
        # the 1-s entry over the burst, up to its first message after the burst (which shows
        # how late it came back, and the gap over the runs that never came)
        back = ctx.observer.next_after(ch, last, 5, beat.check_alive)
        stamps = ctx.observer.times(ch)
        a = tick_analysis(system, client, stamps, first, back or last + 1.0)
        late = [ms(x) for x in a["late"]]
        out["burst tick late max"] = max(late, default=None)
        out["burst tick missed"] = a["missed"]
        if not idle_done:  # measure after the burst if the next one leaves room
            for key in ("cpu", "idle late p50", "idle late max", "idle quiet"):
                out.pop(key, None)  # a window the batch fell into is no idle figure
            next_due = slot + 60
            if time.time() + 2 + IDLE_WINDOW + 1 < next_due:
                sleep_until(time.time() + 2, beat.check_alive)
                out.update(measure_idle(ctx, system, beat, client))
                out["idle after burst"] = True
            else:
                out["idle"] = "not measured: no 12 s without a batch before or after it"
        out["hwm"] = beat.rss_mib("VmHWM:")
        return out
    finally:
        beat.stop()
        client.flushdb()  # the batch messages take memory
        shown = {k: v if not isinstance(v, float) else round(v, 3) for k, v in out.items()}
        print(f"  {system.name:8} {n:>7,} {json.dumps(shown)}", flush=True)


# -- summary and table ---------------------------------------------------------------------
PEERS = ["celery", "redbeat"]
# (section, label, unit, format, sample group, figure key, ratio?)
PRECISION_ROWS = [
    ("lateness p50 (vs own target, see notes)", "ms", ".2f", "late p50", False),
    ("lateness p99", "ms", ".2f", "late p99", False),
    ("lateness max", "ms", ".2f", "late max", False),
    ("interval error |gap - 1 s| p50", "ms", ".2f", "gap p50", True),
    ("interval error p99", "ms", ".2f", "gap p99", True),
    ("interval error max", "ms", ".2f", "gap max", True),
    ("drift: last - first - (runs - 1) s", "ms", ".1f", "drift", False),
    ("runs in the window", "count", ".0f", "runs", False),
    ("missed runs", "count", ".0f", "missed", False),
    ("doubled runs", "count", ".0f", "doubled", False),
    ("beatq: send stamp - slot, p50 (no observer)", "ms", ".2f", "own p50", False),
]
SCALE_ROWS = [
    ("startup: launch -> first message (see notes)", "s", ".2f", "startup", False),
    ("RSS after load (VmRSS)", "MiB", ".1f", "rss", True),
    ("CPU while idle (1-s entry only)", "cpu-s/s", ".4f", "cpu", True),
    ("1-s entry lateness while idle, p50", "ms", ".2f", "idle late p50", False),
    ("1-s entry lateness while idle, max", "ms", ".2f", "idle late max", False),
    ("burst: slot -> last message", "s", ".2f", "burst slot-last", True),
    ("burst: first -> last message", "s", ".2f", "burst first-last", True),
    ("burst: first message late (vs slot)", "ms", ".1f", "burst first late ms", False),
    ("dispatch rate, N / (first -> last)", "msg/s", ",.0f", "rate", True),
    ("dispatch rate, N / (slot -> last)", "msg/s", ",.0f", "rate slot", True),
    ("1-s entry lateness max during burst", "ms", ",.0f", "burst tick late max", False),
    ("1-s entry runs missed during burst", "count", ".0f", "burst tick missed", False),
    ("peak RSS (VmHWM)", "MiB", ".1f", "hwm", True),
]


def summarise_group(runs: dict[str, list[dict]], keys: list[str], ratio_keys: list[str]) -> dict:
    fig: dict = {}
    for key in keys:
        fig[key] = {name: spread([r.get(key) for r in rs]) for name, rs in runs.items()}
        if key in ratio_keys and "beatq" in runs:
            for peer in PEERS:
                if peer not in runs:
                    continue
                pairs = zip(runs[peer], runs["beatq"], strict=False)
                fig[key][f"{peer}/beatq"] = spread(
                    [
                        p.get(key) / b[key] if p.get(key) is not None and b.get(key) else None
                        for p, b in pairs
                    ]
                )
    return fig


def summarise(samples: dict) -> dict:
    summary: dict = {}
    if "precision" in samples:
        keys = [r[3] for r in PRECISION_ROWS]
        summary["precision"] = summarise_group(
            samples["precision"], keys, [r[3] for r in PRECISION_ROWS if r[4]]
        )
    if "failover" in samples:
        fo = samples["failover"]
        summary["failover"] = {
            v: {
                "takeover": spread([r.get("takeover") for r in runs]),
                "timed out": sum(1 for r in runs if r.get("timed out")),
                "runs": len(runs),
                "missed": spread([r.get("missed") for r in runs]),
                "doubled": spread([r.get("doubled") for r in runs]),
                "lock ttl at kill": spread([r.get("lock ttl at kill") for r in runs]),
                "takeover late": spread([r.get("takeover late") for r in runs]),
            }
            for v, runs in fo.items()
            if v != "celery x2"
        }
        if "celery x2" in fo:
            summary["failover"]["celery x2"] = {
                "doubled": spread([r["doubled"] for r in fo["celery x2"]]),
                "runs": len(fo["celery x2"]),
            }
    if "scale" in samples:
        summary["scale"] = {}
        for n, runs in samples["scale"].items():
            for rs in runs.values():
                for r in rs:
                    if r.get("burst first late") is not None:
                        r["burst first late ms"] = ms(r["burst first late"])
            keys = [r[3] for r in SCALE_ROWS]
            summary["scale"][n] = summarise_group(runs, keys, [r[3] for r in SCALE_ROWS if r[4]])
            summary["scale"][n]["errors"] = {
                name: [r["error"] for r in rs if r.get("error")] for name, rs in runs.items()
            }
    return summary


def cell(f: dict | None, spec: str, runs: int | None = None) -> str:
    if not f:
        return "-"
    text = f"{f['median']:{spec}} [{f['min']:{spec}}–{f['max']:{spec}}]"
    if f["min"] == f["max"]:
        text = f"{f['median']:{spec}}"
    if runs and f["runs"] < runs:
        text += f" ({f['runs']}/{runs})"
    return text


def table(summary: dict, names: list[str], samples: dict, caps: dict, repeat: int) -> str:
    cols = names + [f"{p}/beatq" for p in PEERS if p in names and "beatq" in names]
    head = [
        "figure: median [min–max]",
        "unit",
        *[SYSTEMS[n].label for n in names],
        *cols[len(names) :],
    ]
    rows: list[list[str] | str] = []

    def group_rows(title, spec_rows, fig, runs_of):
        rows.append(title)
        for label, unit, fmt, key, _ in spec_rows:
            vals = fig.get(key, {})
            if not any(vals.get(c) for c in cols):
                continue
            line = [f"  {label}", unit]
            for c in cols:
                if "/" in c:
                    line.append(cell(vals.get(c), ".2f"))
                else:
                    line.append(cell(vals.get(c), fmt, runs_of(c)))
            rows.append(line)

    if "precision" in summary:
        group_rows(
            "precision: one entry every 1 s", PRECISION_ROWS, summary["precision"], lambda c: repeat
        )
    if "failover" in summary:
        fo = summary["failover"]
        rows.append("failover: two beats, kill -9 the leader (the same phase, 0.3 s after a run)")

        def take(v):
            f = fo.get(v)
            if not f:
                return "-"
            if f["timed out"] == f["runs"]:
                return f"> {caps['failover']:.0f} s ({f['runs']}/{f['runs']} runs)"
            text = cell(f["takeover"], ".2f", f["runs"])
            return text + (
                f", {f['timed out']} > {caps['failover']:.0f} s" if f["timed out"] else ""
            )

        def col(mapping):
            return [mapping.get(n, "-") for n in names] + ["" for _ in cols[len(names) :]]

        rows.append(
            [
                "  kill -> next message, defaults",
                "s",
                *col(
                    {
                        "beatq": take("beatq"),
                        "celery": "no failover (no lock)",
                        "redbeat": take("redbeat"),
                    }
                ),
            ]
        )
        rows.append(
            [
                "  kill -> next message, redbeat lock 5 s, loop 1 s",
                "s",
                *col({"redbeat": take("redbeat tuned")}),
            ]
        )
        rows.append(
            [
                "  remaining lock/lease TTL at the kill",
                "s",
                *col(
                    {
                        "beatq": cell(fo.get("beatq", {}).get("lock ttl at kill"), ".2f"),
                        "redbeat": cell(fo.get("redbeat", {}).get("lock ttl at kill"), ",.0f")
                        + " / tuned "
                        + cell(fo.get("redbeat tuned", {}).get("lock ttl at kill"), ".2f"),
                    }
                ),
            ]
        )
        rows.append(
            [
                "  runs skipped over the failover",
                "count",
                *col(
                    {
                        "beatq": cell(fo.get("beatq", {}).get("missed"), ".0f"),
                        "redbeat": "tuned "
                        + cell(fo.get("redbeat tuned", {}).get("missed"), ".0f"),
                    }
                ),
            ]
        )
        rows.append(
            [
                "  doubled runs (two beats running)",
                "count",
                *col(
                    {
                        "beatq": cell(fo.get("beatq", {}).get("doubled"), ".0f"),
                        "celery": cell(fo.get("celery x2", {}).get("doubled"), ".0f")
                        + f" in {TWO_BEATS_WINDOW:.0f} s (2 beats)",
                        "redbeat": cell(fo.get("redbeat tuned", {}).get("doubled"), ".0f"),
                    }
                ),
            ]
        )
    if "scale" in summary:
        for n, fig in summary["scale"].items():
            group_rows(
                f"scale: {int(n):,} entries every 60 s (all due at once) + the 1-s entry",
                SCALE_ROWS,
                fig,
                lambda c: repeat,
            )
            for name, errs in fig["errors"].items():
                if errs:
                    rows.append(
                        f"  ! {SYSTEMS[name].label}: {errs[0]}"
                        + (f" ({len(errs)} runs)" if len(errs) > 1 else "")
                    )
    grid = [head] + [r for r in rows if isinstance(r, list)]
    widths = [max(len(r[i]) for r in grid) for i in range(len(head))]
    fmt_row = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()  # noqa: E731
    lines = [fmt_row(head), "-" * sum(w + 2 for w in widths)]
    for r in rows:
        lines.append(r if isinstance(r, str) else fmt_row(r))
    return "\n".join(lines)


NOTES = [
    "Lateness: time the message is in Redis (observer stamp) minus the instant the scheduler "
    "aims at. beatq: the run's slot, the whole second. Celery beat and redbeat count an "
    "interval from the previous run (no grid): their target is the previous message's arrival "
    "+ 1 s, a lower bound of their real lateness. Interval error and drift compare all three "
    "on the same footing (drift: how far the last run is from the first + whole seconds).",
    "Celery beat runs with its defaults (beat_max_loop_interval 0 -> 300 s; no tuning): the "
    "1-s entry's own due time drives its sleep, so the loop interval does not limit precision.",
    "Failover: beatq and redbeat run a leader and a standby; Celery beat's PersistentScheduler "
    "has no lock, so it has no failover and two beats send every run twice.",
    "Scale: beatq's entries are timedelta(seconds=60) (its `every` runs on a grid: all due at "
    "each whole minute); Celery beat's and redbeat's are crontab(minute=\"*\"), due at the "
    "same instants (their timedelta counts from each entry's creation and would spread the "
    "batch). Startup runs from the launch to the 1-s entry's first message, so it includes the "
    "wait for that run (beatq: up to 1 s, the next whole second; Celery beat and redbeat: the "
    "entry's first 1-s interval). CPU is read from /proc in clock ticks: 0.001 cpu-s/s is one "
    "tick in the 10 s window. A system whose batch takes over 60 s is not repeated, and at "
    "larger sizes runs once with the batch given up after 60 s.",
    "Ratios are peer / beatq, computed run by run (median [min–max]); > 1 is larger for the peer; "
    "none for lateness, whose targets differ (beatq: the slot; the peers: the previous run + 1 s).",
]


def print_notes(env: dict, settings: dict, failures: list) -> None:
    for note in NOTES:
        print(f"* {note}")
    for name, text in settings.items():
        print(f"* {name}: {text}")
    loads = env["loadavg 1m per run"]
    print(
        f"* load average (1 min) at run starts: {loads['min']:.2f}-{loads['max']:.2f} "
        f"on {env['cpus']} cores"
    )
    for when in ("start", "end"):
        d = env.get(f"observer delay, {when}")
        if d:
            print(
                f"* observer delay at the {when}: a push is stamped {d['delay p50 ms']:.2f} ms "
                f"(p50; p99 {d['delay p99 ms']:.2f}) after it is made. It is part of beatq's "
                "absolute lateness and cancels out of Celery's and redbeat's (two stamps)."
            )
    if failures:
        print(f"\n{len(failures)} problem(s); see 'failures' in the JSON")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--observe":
        return observe(sys.argv[2], sys.argv[3], sys.argv[4:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=60, help="precision window, s (60)")
    ap.add_argument("--quick", action="store_true", help="15 s precision; 1,000 and 10,000 entries")
    ap.add_argument("--repeat", type=int, default=3, help="runs of every figure (3)")
    ap.add_argument("--phases", default="precision,failover,scale")
    ap.add_argument("--systems", default="beatq,celery,redbeat")
    ap.add_argument("--scale-sizes", help="comma list of entry counts (10000,100000)")
    ap.add_argument("--scale-systems", help="systems in the scale phase (default --systems)")
    ap.add_argument(
        "--failover-cap", type=float, default=60, help="give up a takeover after s (60)"
    )
    ap.add_argument("--burst-cap", type=float, default=300, help="give up a batch after s (300)")
    ap.add_argument("--startup-cap", type=float, default=300, help="give up a big start after s")
    ap.add_argument(
        "--celery-bulk",
        choices=("cron", "interval"),
        default="cron",
        help="the peers' batch entries: crontab(minute='*') (default) or timedelta(seconds=60)",
    )
    ap.add_argument("--redis-url", help="use this server (sets notify-keyspace-events)")
    ap.add_argument("--flush", action="store_true", help="allow FLUSHDB of dbs 1-3 at --redis-url")
    ap.add_argument("--out", help="JSON file (default bench/results/beat[-quick].json)")
    ap.add_argument("--table", metavar="JSON", help="only print the table of a results file")
    args = ap.parse_args()
    if args.table:
        saved = json.loads(Path(args.table).read_text())
        print(
            table(
                summarise(saved["samples"]),
                saved["params"]["systems"],
                saved["samples"],
                saved["params"]["caps"],
                saved["params"]["repeat"],
            )
        )
        print_notes(saved["environment"], saved["settings"], saved["failures"])
        return 0
    names = [s for s in args.systems.split(",") if s]
    phases = [p for p in args.phases.split(",") if p]
    if set(names) - SYSTEMS.keys() or set(phases) - {"precision", "failover", "scale"}:
        ap.error("--systems: beatq,celery,redbeat; --phases: precision,failover,scale")
    if args.redis_url and not args.flush:
        ap.error("the benchmark flushes dbs 1-3 before every run: pass --flush with --redis-url")
    duration = 15.0 if args.quick and args.duration == 60 else args.duration
    sizes = [
        int(s)
        for s in (args.scale_sizes or ("1000,10000" if args.quick else "10000,100000")).split(",")
    ]
    scale_names = [s for s in (args.scale_systems or ",".join(names)).split(",") if s]
    caps = {
        "failover": args.failover_cap,
        "burst": args.burst_cap,
        "startup": args.startup_cap,
        "celery bulk": args.celery_bulk,
    }
    missing = [p for p in ("beatq", "celery") if not (BIN / p).exists()]
    try:
        import redbeat  # noqa: F401
    except ImportError:
        missing.append("celery-redbeat")
    if missing:
        ap.error(f"run under bench/.venv (see bench/setup.sh); missing: {missing}")
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    out_path = (
        Path(args.out) if args.out else RESULTS / ("beat-quick.json" if args.quick else "beat.json")
    )

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    load0 = os.getloadavg()
    if load0[0] > 0.5:
        print(f"! load average {load0[0]:.2f} before start: figures will be noisy", flush=True)
    samples: dict = {}
    try:
        with ExitStack() as stack:
            stack.enter_context(frozen_beatq())
            base = stack.enter_context(
                nullcontext(args.redis_url) if args.redis_url else own_redis()
            )
            admin = redis.Redis.from_url(base)
            admin.config_set("notify-keyspace-events", "Kl")
            admin.config_set("client-output-buffer-limit", "pubsub 0 0 0")
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-beat-")))
            channels = [f"{s.db}:{s.tick_key}" for s in SYSTEMS.values()] + [CALIBRATE]
            observer = Observer(base, channels, tmp / "observer.txt")
            stack.callback(observer.stop)
            stack.callback(stop_all)
            ctx = Ctx(base, observer, tmp, logs)
            env = environment(base, ["beatq", "celery", "redbeat"])
            env["versions"]["redbeat"] = importlib.metadata.version("celery-redbeat")
            env["observer delay, start"] = calibrate(base, observer)

            if "precision" in phases:
                samples["precision"] = {n: [] for n in names}
                for rep in range(1, args.repeat + 1):
                    print(f"[precision rep {rep}] every 1 s for {duration:.0f} s", flush=True)
                    order = names[rep % len(names) :] + names[: rep % len(names)]
                    for name in order:
                        try:
                            samples["precision"][name].append(
                                precision_run(ctx, SYSTEMS[name], rep, duration)
                            )
                        except BenchError as e:
                            ctx.fail("precision", name, rep, str(e))
            if "failover" in phases:
                variants = ([] if "beatq" not in names else ["beatq"]) + (
                    ["redbeat", "redbeat tuned"] if "redbeat" in names else []
                )
                samples["failover"] = {v: [] for v in variants}
                if "celery" in names:
                    samples["failover"]["celery x2"] = []
                for rep in range(1, args.repeat + 1):
                    print(f"[failover rep {rep}]", flush=True)
                    for v in variants:
                        try:
                            samples["failover"][v].append(
                                failover_run(ctx, v, rep, caps["failover"])
                            )
                        except BenchError as e:
                            ctx.fail("failover", v, rep, str(e))
                    if "celery" in names:
                        try:
                            samples["failover"]["celery x2"].append(two_beats_run(ctx, rep))
                        except BenchError as e:
                            ctx.fail("failover", "celery x2", rep, str(e))
            if "scale" in phases:
                samples["scale"] = {}
                slow: dict[str, int] = {}  # system -> the entry count at which it was too slow
                for n in sizes:
                    samples["scale"][str(n)] = {s: [] for s in scale_names}
                    for rep in range(1, args.repeat + 1):
                        print(f"[scale {n:,} rep {rep}]", flush=True)
                        for name in scale_names:
                            if name in slow and (rep > 1 or slow[name] == n):
                                continue  # too slow: one run per size, burst capped short
                            run_caps = caps if name not in slow else caps | {"burst": SHORT_BURST}
                            try:
                                r = scale_run(ctx, SYSTEMS[name], n, rep, run_caps)
                            except BenchError as e:
                                ctx.fail("scale", name, rep, str(e))
                                continue
                            samples["scale"][str(n)][name].append(r)
                            if r.get("error"):
                                ctx.fail("scale", name, rep, f"{n:,} entries: {r['error']}")
                            if r.get("error") or (r.get("burst slot-last") or 0) > SLOW_BURST:
                                if name not in slow:
                                    slow[name] = n
                                    print(
                                        f"  ! {name}: too slow ({n:,} entries); not repeated; "
                                        f"larger sizes once, batch capped at {SHORT_BURST:.0f} s",
                                        flush=True,
                                    )
            env["observer delay, end"] = calibrate(base, observer)
    except BenchError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; every beat stopped", file=sys.stderr)
        return 130
    env["loadavg before"] = load0
    env["loadavg after"] = os.getloadavg()
    env["loadavg 1m per run"] = {
        "min": min(ctx.loads, default=None),
        "max": max(ctx.loads, default=None),
    }
    summary = summarise(samples)
    result = {
        "params": {
            "duration": duration,
            "repeat": args.repeat,
            "systems": names,
            "phases": phases,
            "scale sizes": sizes,
            "scale systems": scale_names,
            "caps": caps,
        },
        "settings": SETTINGS,
        "notes": NOTES,
        "environment": env,
        "summary": summary,
        "samples": samples,
        "failures": ctx.failures,
    }
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(table(summary, names, samples, caps, args.repeat))
    print()
    print_notes(env, SETTINGS, ctx.failures)
    print(f"\n{args.repeat} runs, precision window {duration:.0f} s -> {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
