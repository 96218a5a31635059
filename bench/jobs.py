"""Figures 1-3 and 5 of the suite for one system (bench/peers.py adapter): enqueue, drain,
round trip and ETA at scale. Each function is one run and returns plain numbers.

Workers are started through each system's own CLI, in their own process group, with
BENCH_REDIS_URL set to the system's database; they are stopped with SIGTERM, then SIGKILL of
the group. Drain: the queue is loaded, the sentinel task ``done`` goes in last; the clock
starts when the worker takes its first message and stops at the sentinel's own stamp.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import time
from pathlib import Path

from bench.core import ROOT, BenchError, process_tree, vm_hwm_mib, wait_for
from bench.peers import Peer, Setting

START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


class Workers:
    """The processes of one worker setting (arq's 2-process setting has two)."""

    def __init__(self, peer: Peer, setting: Setting, log: Path, cwd: Path = ROOT):
        self.label = f"{peer.name} worker {setting.label}"
        self.log = log
        path = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)]))
        env = {**os.environ, "BENCH_REDIS_URL": peer.url, "PYTHONPATH": path, **setting.env}
        self.procs = []
        with open(log, "wb") as out:
            for argv in setting.argv():
                self.procs.append(
                    subprocess.Popen(
                        argv,
                        cwd=cwd,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )

    def check_alive(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2500:]
                raise BenchError(f"{self.label} exited with {p.returncode}; log tail:\n{tail}")

    def pids(self) -> list[int]:
        return [pid for p in self.procs for pid in process_tree(p.pid)]

    def peak_mib(self) -> float:
        return vm_hwm_mib(self.pids())

    def rss_mib(self) -> float:
        return rss_mib(self.pids())

    def stop(self) -> None:
        for p in self.procs:
            self._signal(p, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            self._signal(p, signal.SIGKILL)
            p.wait()

    @staticmethod
    def _signal(p: subprocess.Popen, sig: int) -> None:
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def load(peer: Peer, n: int, batch: bool) -> tuple[float, int]:
    """Flush the system's db, send a warm-up and n no-ops (timed), then the sentinel.

    Returns (tasks per second, messages queued). Batch: the system's batch API, one call.
    """
    peer.flush()
    peer.enqueue(1)  # warm-up: connections, scripts, queue declaration
    t0 = time.perf_counter()
    if batch:
        peer.enqueue_batch(n)
    else:
        peer.enqueue(n)
    rate = n / (time.perf_counter() - t0)
    peer.sentinel()
    full = n + 2
    wait_for(lambda: peer.depth() >= full, 30, f"{full} messages in {peer.queue_key}")
    return rate, full


def drain(peer: Peer, setting: Setting, full: int, cap: float, log: Path) -> dict:
    """Start a worker on a loaded queue: drain rate (partial after ``cap`` s), peak MiB."""
    with Workers(peer, setting, log) as w:
        t0 = wait_for(
            lambda: peer.depth() < full, START_TIMEOUT, f"{w.label} to take a task", w.check_alive
        )
        w0 = time.time() - (time.perf_counter() - t0)
        deadline = time.perf_counter() + cap
        stamp = None
        while time.perf_counter() < deadline:
            if (raw := peer.r.get("bench:done")) is not None:
                stamp = float(raw)
                break
            w.check_alive()
            time.sleep(0.005)
        if stamp is not None:
            out = {"rate": (full - 1) / (stamp - w0), "done": full - 1}
        else:
            done = full - peer.depth()
            out = {"rate": done / (time.perf_counter() - t0), "done": done}
        out["mem"] = w.peak_mib()
        return out


def roundtrips(peer: Peer, setting: Setting, best: bool, k: int, cap: float, log: Path) -> dict:
    """k sequential round trips (or as many as fit in ``cap`` s, at least 20): ms list."""
    peer.flush()
    with Workers(peer, setting, log) as w:
        lat: list[float] = []
        deadline = time.perf_counter() + START_TIMEOUT
        while True:  # first round trip: the worker is up
            try:
                peer.roundtrip(best)
                break
            except Exception as e:  # each system has its own timeout error
                w.check_alive()
                if time.perf_counter() > deadline:
                    raise BenchError(
                        f"{w.label}: no round trip in {START_TIMEOUT:.0f}s: {e}"
                    ) from e
        for _ in range(5):
            peer.roundtrip(best)
        stop = time.perf_counter() + cap
        while len(lat) < k and (len(lat) < 20 or time.perf_counter() < stop):
            t0 = time.perf_counter()
            peer.roundtrip(best)
            lat.append((time.perf_counter() - t0) * 1000)
        return {**percentiles(lat), "n": len(lat)}


def percentiles(values: list[float]) -> dict[str, float]:
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": q[49], "p95": q[94], "p99": q[98], "max": max(values)}


def eta(peer: Peer, n: int, chunk: int, cap: float, log: Path) -> dict:
    """n ETA tasks with countdowns spread evenly over 10-20 s from their send, in chunks.

    Worker RSS is read when all are sent (or just before the first falls due, if that is
    later); lateness (run - eta) is recorded by each task; the run ends when all have run
    or ``cap`` s after the last ETA.
    """
    peer.flush()
    with Workers(peer, peer.eta_setting(), log) as w:
        wait_for(lambda: w.pids() and w.rss_mib() > 5, START_TIMEOUT, w.label, w.check_alive)
        time.sleep(1.0)  # let it import and connect
        w.check_alive()
        idle = w.rss_mib()
        steps = max(1, n // chunk)
        t0 = time.time()
        first = t0 + 10
        sent = 0
        chunks_sent: list[float] = []
        for i in range(steps):
            k = chunk if i < steps - 1 else n - sent
            due = time.time() + 10 + 10 * i / steps
            peer.send_eta([(due, k)])
            chunks_sent.append(due)
            sent += k
        t_sent = time.time()
        first = chunks_sent[0]
        last = max(chunks_sent)
        if t_sent < first - 0.5:
            time.sleep(first - 0.5 - t_sent)
        w.check_alive()
        waiting = w.rss_mib()
        end = last + cap
        while time.time() < end and peer.r.llen("bench:late") < n:
            w.check_alive()
            time.sleep(0.05)
        time.sleep(0.1)  # the last flush of the recording buffers
        ran = peer.r.llen("bench:late")
        late = [float(x) * 1000 for x in peer.r.lrange("bench:late", 0, -1)]
        out = {
            "send s": t_sent - t0,
            "rss idle": idle,
            "rss waiting": waiting,
            "peak": w.peak_mib(),
            "ran": ran,
            "sent": n,
        }
        if late:
            out |= {f"late {k}": v for k, v in percentiles(late + late[:1]).items()}
        return out
