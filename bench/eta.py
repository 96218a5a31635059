"""ETA tasks on time (issue 26): beatq alone, on Redis and on SQLite, the suite's figure 5.

n [20,000] ETA tasks with countdowns spread evenly over --window [20] s from 10 s after
their send (issue 26: 20,000 due over 20 s, 1,000 a second), in chunks of --chunk [100]
sharing one eta (one `apply_many` each), on a `beatq worker` with its defaults; each task
records run - eta (bench/apps/stamps.py, to a private redis-server). Per run: lateness
p50/p99/max in ms, how many ran early (before their eta), how many ran of those sent, and
the CPU the worker's processes and the redis-server spent over the run per task (user +
system, from /proc and INFO; the SQLite run's server only takes the stamps). The table is
the median of the runs, the spread in brackets, with the load average at the start.

    python -m bench.eta [--n 20000] [--chunk 100] [--window 20] [--repeat 3]
                       [--brokers redis,sqlite] [--trace]

`--trace`: each task also records its eta, its start and its process (stamps.traced), and the
report splits the lateness: when the first task of each chunk (one eta) started, when its
last one did, and the gap between two starts in one process within a chunk (what one task
costs a pool process while the chunk drains).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from bench.core import own_redis
from bench.jobs import Workers, percentiles
from bench.peers import BeatqPeer, Setting

BROKERS = ["redis", "sqlite"]


def one_run(
    base_url: str, broker: str, n: int, chunk: int, window: float, log: Path, trace: bool
) -> dict:
    peer = BeatqPeer(base_url)
    url = peer.url
    if broker == "sqlite":
        url = f"sqlite:///{log.with_suffix('.sqlite3')}"
        for suffix in ("", "-wal", "-shm"):
            Path(str(log.with_suffix(".sqlite3")) + suffix).unlink(missing_ok=True)
    os.environ["BENCH_BROKER_URL"] = url
    try:
        peer.app.app.conf.broker_url = url  # the client sends to this run's broker
        return _measure(peer, n, chunk, window, log, trace)
    finally:
        os.environ.pop("BENCH_BROKER_URL", None)


def _measure(peer: BeatqPeer, n: int, chunk: int, window: float, log: Path, trace: bool) -> dict:
    peer.flush()
    late = peer.app.late_traced if trace else peer.app.late
    with Workers(peer, peer.eta_setting(), log) as w:
        deadline = time.monotonic() + 60
        # up with its pool (prefork: one child per core, as its defaults say)
        while not (len(w.pids()) > (os.cpu_count() or 1) and w.rss_mib() > 5):
            w.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError("worker did not start")
            time.sleep(0.05)
        time.sleep(1.0)
        pids = w.pids()  # the worker's process first, then its pool's
        parent0, cpu0, server0 = cpu_s(pids[:1]), cpu_s(pids), server_cpu_s(peer.r)
        steps = max(1, n // chunk)
        t0 = time.time()
        sent = 0
        last = t0
        for i in range(steps):
            k = chunk if i < steps - 1 else n - sent
            due = time.time() + 10 + window * i / steps
            late.apply_many([(due,)] * k, eta=due)
            sent += k
            last = due
        send_s = time.time() - t0
        end = last + 10
        while time.time() < end and peer.r.llen("bench:late") < n:
            w.check_alive()
            time.sleep(0.05)
        time.sleep(0.2)
        parent, cpu = cpu_s(pids[:1]) - parent0, cpu_s(pids) - cpu0
        server = server_cpu_s(peer.r) - server0
        values = [float(x) * 1000 for x in peer.r.lrange("bench:late", 0, -1)]
        trace = [x.decode() for x in peer.r.lrange("bench:trace", 0, -1)]
    out = {"ran": len(values), "sent": n, "early": sum(v < 0 for v in values), "send s": send_s}
    out |= {"worker us/task": cpu / n * 1e6, "of which parent": parent / n * 1e6}
    out["server us/task"] = server / n * 1e6
    if values:
        out |= {f"late {k}": v for k, v in percentiles(values + values[:1]).items()}
    if trace:
        out["trace"] = _split(trace)
    return out


def waiting_run(base_url: str, n: int, chunk: int, idle_s: float, log: Path) -> dict:
    """`--waiting`: n ETA tasks sent an hour ahead in chunks of `chunk` (one `apply_many`
    and one eta each), to a worker with its defaults and a beat, both started first; the
    send's rate, then the worker's RSS and the CPU share the worker (all its processes)
    and the beat take over `idle_s` seconds while the tasks wait."""
    peer = BeatqPeer(base_url)
    peer.flush()
    beat = Setting("beat", (("beatq", "-A", peer.module, "beat", "-l", "warning"),))
    late = peer.app.late
    with (
        Workers(peer, peer.eta_setting(), log) as w,
        # run where no schedules/*.yaml is (the repository's name the examples' tasks)
        Workers(peer, beat, log.with_suffix(".beat.log"), cwd=log.parent) as b,
    ):
        deadline = time.monotonic() + 60
        while not (w.pids() and w.rss_mib() > 5 and b.pids() and b.rss_mib() > 5):
            w.check_alive()
            b.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError("worker or beat did not start")
            time.sleep(0.05)
        time.sleep(3.0)
        rss_before = w.rss_mib()
        steps = max(1, n // chunk)
        late.apply_many([(0.0,)], eta=time.time() + 7200)  # connected, the library loaded
        server0, client0 = server_cpu_s(peer.r), time.process_time()
        t0 = time.perf_counter()
        base = time.time() + 3600
        sent = 0
        for i in range(steps):
            k = chunk if i < steps - 1 else n - sent
            due = base + 600 * i / steps
            late.apply_many([(due,)] * k, eta=due)
            sent += k
        send_s = time.perf_counter() - t0
        client = time.process_time() - client0
        server = server_cpu_s(peer.r) - server0
        time.sleep(5.0)  # the worker and the beat settle into their wait
        w.check_alive()
        b.check_alive()
        wpids, bpids = w.pids(), b.pids()
        w0, b0, t1 = cpu_s(wpids), cpu_s(bpids), time.monotonic()
        time.sleep(idle_s)
        wall = time.monotonic() - t1
        worker_cpu, beat_cpu = cpu_s(wpids) - w0, cpu_s(bpids) - b0
        waiting = peer.r.zcard("beatq:delayed")
        return {
            "sent": n,
            "send s": send_s,
            "send/s": n / send_s,
            "client us/task": client / n * 1e6,
            "server us/task": server / n * 1e6,
            "delayed": waiting - 1,
            "worker rss before": rss_before,
            "worker rss waiting": w.rss_mib(),
            "worker cpu %": worker_cpu / wall * 100,
            "beat cpu %": beat_cpu / wall * 100,
        }


def cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of `pids` so far (/proc, in clock ticks)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / tick


def server_cpu_s(r) -> float:
    """The redis-server's own user + system CPU seconds so far (its main thread's too)."""
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _split(rows: list[str]) -> dict:
    """Trace rows ("eta start pid" per task) in ms: the first and the last start of each
    chunk after its eta (p50/p99 over chunks), and the gap between a process's consecutive
    starts within a chunk (p50/p99)."""
    chunks: dict[float, list[tuple[float, str]]] = defaultdict(list)
    for row in rows:
        eta, start, pid = row.split()
        chunks[float(eta)].append((float(start), pid))
    first, last, gaps = [], [], []
    for eta, starts in chunks.items():
        starts.sort()
        first.append((starts[0][0] - eta) * 1000)
        last.append((starts[-1][0] - eta) * 1000)
        by_pid: dict[str, float] = {}
        for start, pid in starts:
            if pid in by_pid:
                gaps.append((start - by_pid[pid]) * 1000)
            by_pid[pid] = start
    out = {"chunks": len(chunks)}
    for name, vals in (("first start", first), ("last start", last), ("gap", gaps)):
        if len(vals) > 1:
            q = statistics.quantiles(vals, n=100, method="inclusive")
            out[name] = {"p50": round(q[49], 3), "p99": round(q[98], 3)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.eta", description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--chunk", type=int, default=100)
    ap.add_argument("--window", type=float, default=20.0, help="seconds the etas span (20)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--brokers", default=",".join(BROKERS))
    ap.add_argument("--trace", action="store_true")
    ap.add_argument(
        "--waiting",
        type=int,
        metavar="N",
        help="instead: N ETA tasks an hour ahead (chunks of --chunk): send rate, worker RSS, "
        "worker and beat CPU while they wait (Redis)",
    )
    ap.add_argument("--idle-s", type=float, default=60.0, help="--waiting: seconds measured")
    args = ap.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="beatq-eta-"))
    load = os.getloadavg()
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; logs in {logs}")
    with own_redis() as base:
        if args.waiting:
            _waiting(base, args, logs)
            print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            return 0
        for broker in args.brokers.split(","):
            runs = []
            for rep in range(args.repeat):
                log = logs / f"{broker}-{rep}.log"
                r = one_run(base, broker, args.n, args.chunk, args.window, log, args.trace)
                runs.append(r)
                shown = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()}
                print(f"{broker} run {rep + 1}: {shown}", flush=True)
            print(f"{broker}: median of {len(runs)} runs, [min-max]")
            keys = ("late p50", "late p99", "late max", "early", "ran", "worker us/task")
            for key in (*keys, "server us/task"):
                vals = [r.get(key, float("nan")) for r in runs]
                mid = statistics.median(vals)
                print(f"  {key:9} {mid:8.2f}  [{min(vals):.2f}-{max(vals):.2f}]")
            print(f"  sent      {args.n}")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


def _waiting(base: str, args: argparse.Namespace, logs: Path) -> None:
    runs = []
    for rep in range(args.repeat):
        r = waiting_run(base, args.waiting, args.chunk, args.idle_s, logs / f"waiting-{rep}.log")
        runs.append(r)
        print(f"waiting run {rep + 1}: { ({k: round(v, 2) for k, v in r.items()}) }", flush=True)
    print(f"{args.waiting:,} ETA tasks waiting: median of {len(runs)} runs, [min-max]")
    for key in runs[0]:
        vals = [r[key] for r in runs]
        print(f"  {key:18} {statistics.median(vals):12.2f}  [{min(vals):.2f}-{max(vals):.2f}]")


if __name__ == "__main__":
    raise SystemExit(main())
