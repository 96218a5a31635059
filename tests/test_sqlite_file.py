"""One SQLite file shared by real processes: workers, clients and a beat started through
the CLI or as scripts, killed with kill -9 at random moments (seeded), crowding the file.

What must hold: PRAGMA integrity_check says ok after every kill; every task whose send
returned runs (acks_late: a killed worker's task comes back); no process ever reports
`database is locked`.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, WorkerProcess, scaled, wait_for
from tests.proj import journal

SQLITE = pytest.mark.backends("sqlite")
VISIBILITY = {"BEATQ_TEST_VISIBILITY": "1.0"}  # a killed worker's claims come back in 1 s

# A client: sends acks_late tasks one by one, and prints each id once its send returned.
_CLIENT = """
import sys
from tests.proj.tasks import sleep_late

tag, n = sys.argv[1], 0
while True:
    result = sleep_late.delay(0.0, f"{tag}{n}")
    print(f"{tag}{n}", flush=True)
    n += 1
"""


def ended(tag_prefix: str) -> set[str]:
    """Tags of the runs that ended whose tag starts with `tag_prefix`."""
    return {r.split(":")[0] for r in journal("runs") if r.startswith(tag_prefix) and ":end:" in r}


def file_of(url: str) -> Path:
    return Path(url[len("sqlite:///") :])


def whole(path: Path) -> bool:
    raw = sqlite3.connect(path)
    try:
        return raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        raw.close()


class Client:
    """A sending process (`_CLIENT`); `sent()` the ids whose send returned."""

    def __init__(self, env: dict[str, str], tag: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _CLIENT, tag], stdout=subprocess.PIPE, env=env, cwd=ROOT
        )
        assert self.process.stdout is not None
        # sending: the kill's random moment falls in its work, not in its start-up
        self.first = self.process.stdout.readline().decode()

    def kill(self) -> list[str]:
        self.process.kill()
        self.process.wait(10)
        assert self.process.stdout is not None
        out = self.first + self.process.stdout.read().decode()
        self.process.stdout.close()
        return out.split("\n")[:-1]  # a line cut by the kill has no newline


@SQLITE
@pytest.mark.parametrize("seed", [26, 2026])
def test_kill9_of_workers_and_clients_at_random_moments_loses_nothing_sent(
    app, start_worker, env: dict[str, str], seed: int
) -> None:
    rng = random.Random(seed)
    path = file_of(env["BEATQ_BROKER_URL"])
    app.broker.ping()  # the file and its tables
    tag = f"s{seed}-"
    workers = [start_worker("-P", "solo", extra_env=VISIBILITY)]
    clients = [Client(env, f"{tag}c0-")]
    sent: list[str] = []
    for round_ in range(1, 7):
        # kill -9 one of them somewhere in its work, start another in its place
        pause, worker_killed = rng.uniform(0.05, 0.4), rng.random() < 0.5
        time.sleep(pause)  # the random moment: the processes work meanwhile
        if worker_killed:
            victim = workers.pop()
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(5)
            workers.append(start_worker("-P", "solo", ready=False, extra_env=VISIBILITY))
        else:
            sent += clients.pop().kill()
            clients.append(Client(env, f"{tag}c{round_}-"))
        assert whole(path), f"integrity_check failed after kill {round_}"
    sent += clients.pop().kill()
    assert len(sent) > 20, "the clients sent little: the test proves nothing"
    # every task whose send returned runs, on the last worker (a killed one's come back)
    wait_for(lambda: set(sent) <= ended(tag), 60, f"the {len(sent)} sent tasks to run")
    assert whole(path)
    for worker in workers:
        assert "database is locked" not in worker.log()


@SQLITE
def test_two_workers_a_beat_and_a_client_share_the_file_without_lock_errors(
    app, start_worker, env: dict[str, str], tmp_path: Path
) -> None:
    from tests.proj.tasks import add

    schedule = tmp_path / "s.yaml"
    every = {"task": "tests.proj.tasks.add", "every": "0.2s", "args": [1, 2]}
    schedule.write_text(yaml.safe_dump({"timezone": "UTC", "schedules": {"tick": every}}))
    beat = WorkerProcess(
        ["-A", "tests.proj", "beat", "-s", str(schedule), "-l", "info"], env, tmp_path / "beat.log"
    )
    try:
        workers = [start_worker("-P", "solo"), start_worker("-P", "threads", "-c", "2")]
        results = [add.delay(i, i) for i in range(1500)]  # while they drain and the beat sends
        assert [r.get(timeout=scaled(60)) for r in results] == [2 * i for i in range(1500)]
        wait_for(lambda: "for entry 'tick'" in beat.log(), 30, "the beat to send")
        logs = [w.log() for w in workers] + [beat.log()]
    finally:
        beat.stop()
    assert not [log for log in logs if "locked" in log], "a process reported a locked file"
    assert whole(file_of(env["BEATQ_BROKER_URL"]))
