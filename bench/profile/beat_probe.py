"""Beat precision, beatq alone: where the lateness of a 1-s entry goes.

    bench/.venv/bin/python bench/profile/beat_probe.py [--seconds 20] [--worker] [--tree DIR]

Starts a private redis-server, one `beatq beat` (bench/apps/beat_beatq.py, 1-s entry on queue
"tick") and with --worker one `-P solo` worker running it. Three stamps per run, each
against the run's slot (its whole second):

    own    the "sent" stamp in the message header (without --worker): since the beat makes
           a run ready before its instant (fd0f224), when the message was built, ~2 ms
           ahead; beat_chain.py has when the dispatch is written (b.send)
    push   the LPUSH of the message seen by a lean observer: a raw socket subscribed to
           the queue's keyspace notifications, time.time() taken as recv() returns
    run    the task's own time.time() when it starts (with --worker; bench/apps/stamps.py)

The observer's own delay is measured first (pushes from here, stamped both ends).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import hiredis  # noqa: E402
import redis  # noqa: E402

from bench.core import own_redis, run_window, with_db  # noqa: E402

BIN = Path(sys.executable).parent
KEY = "beatq:q:tick"


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


class Observer(threading.Thread):
    """Stamps every LPUSH/RPUSH on the given db:key channels (a raw RESP socket)."""

    def __init__(self, url: str, channels: list[str]) -> None:
        super().__init__(daemon=True)
        host, port = url.split("//")[1].split(":")
        self.sock = socket.create_connection((host, int(port.split("/")[0])))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = hiredis.Reader()
        self.stamps: dict[str, list[float]] = {c: [] for c in channels}
        names = [f"__keyspace@{c.split(':', 1)[0]}__:{c.split(':', 1)[1]}" for c in channels]
        self.names = {n.encode(): c for n, c in zip(names, channels)}
        self.sock.sendall(hiredis.pack_command((b"SUBSCRIBE", *self.names)))
        confirmed = 0
        while confirmed < len(names):
            self.reader.feed(self.sock.recv(65536))
            while (reply := self.reader.gets()) is not False:
                confirmed += reply[0] == b"subscribe"

    def run(self) -> None:
        while True:
            data = self.sock.recv(65536)
            now = time.time()
            if not data:
                return
            self.reader.feed(data)
            while (reply := self.reader.gets()) is not False:
                if reply[0] == b"message" and reply[2] in (b"lpush", b"rpush"):
                    self.stamps[self.names[reply[1]]].append(now)


def summary(name: str, values_ms: list[float]) -> dict:
    if not values_ms:
        return {name: None}
    return {
        name: {
            "n": len(values_ms),
            "p50": round(statistics.median(values_ms), 3),
            "p99": round(pct(values_ms, 99), 3),
            "max": round(max(values_ms), 3),
        }
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--tree", type=Path, default=ROOT, help="the beatq tree to run")
    ap.add_argument("--url", help="a Redis to use (db 1 is flushed) instead of a private one")
    a = ap.parse_args()
    with own_redis() if not a.url else nullcontext(a.url) as base:
        url = with_db(base, 1)
        admin = redis.Redis.from_url(url)
        admin.flushdb()
        admin.config_set("notify-keyspace-events", "Kl")
        obs = Observer(base, ["0:calibrate", f"1:{KEY}"])
        obs.start()
        # the observer's delay: pushes from here, stamped before and after
        cal = redis.Redis.from_url(base)
        sent = []
        for _ in range(200):
            t0 = time.time()
            cal.lpush("calibrate", 1)
            sent.append((t0 + time.time()) / 2)
            time.sleep(0.005)
        time.sleep(0.2)
        cal.delete("calibrate")
        delay = [(s - t) * 1000 for s, t in zip(obs.stamps["0:calibrate"], sent)]
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("BEATQ_")},
            "PYTHONPATH": f"{a.tree}{os.pathsep}{ROOT}",
            "BENCH_REDIS_URL": url,
            "BENCH_TICK_TASK": "bench.tick",
        }
        with tempfile.TemporaryDirectory() as tmp:
            beatq = [str(BIN / "beatq"), "-A", "bench.apps.beat_beatq"]
            commands = [[*beatq, "beat", "-l", "warning"]]
            if a.worker:
                commands.append([*beatq, "worker", "-Q", "tick", "-P", "solo", "-l", "warning"])
            start = run_window(commands, env, tmp, a.seconds)
        pushes = [t for t in obs.stamps[f"1:{KEY}"] if t > start]
        out = {"tree": str(a.tree), "load": os.getloadavg()[0]}
        out |= summary("observer delay", delay)
        out |= summary("push", [(t - math.floor(t)) * 1000 for t in pushes])
        if a.worker:
            runs = [float(x) for x in admin.lrange("bench:ticks", 0, -1)]
            runs = [t for t in runs if t > start]
            out |= summary("run", [(t - math.floor(t)) * 1000 for t in runs])
        else:
            ids = admin.lrange(KEY, 0, -1)
            own = []
            for stored in admin.hmget("beatq:msg", ids) if ids else []:
                _, head, payload = stored.split(b"\n", 2)
                sent, slot = json.loads(head)["sent"], json.loads(payload)[2]["beat"]["slot"]
                if sent > start:
                    own.append((sent - slot) * 1000)
            out |= summary("own", own)
        print(json.dumps(out))


if __name__ == "__main__":
    main()
