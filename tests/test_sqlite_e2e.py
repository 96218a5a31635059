"""End to end on sqlite://: real worker and beat processes sharing one file, no Redis.

SPEC §9 and issue 5: with only a file path configured, `beatq -A examples.proj worker -B`
runs the example's schedule; several workers and beats on one host share the file, one
beat leads and another takes over when it dies, a killed worker's claims come back.
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from beatq import AsyncResult
from beatq.brokers import Backend, connect
from tests.conftest import ROOT, WorkerProcess, wait_for


@pytest.fixture
def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite file; apps of this process use it too (BEATQ_BROKER_URL wins)."""
    value = f"sqlite:///{tmp_path / 'beatq.db'}"
    monkeypatch.setenv("BEATQ_BROKER_URL", value)
    return value


@pytest.fixture
def store(url: str) -> Iterator[Backend]:
    backend = connect(url)
    yield backend
    backend.close()


@pytest.fixture
def start(url: str, store: Backend, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `python -m beatq ARGS` on the file and wait until its worker heartbeats."""
    started: list[WorkerProcess] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEATQ_TEST_")}
    env.update(BEATQ_BROKER_URL=url, PYTHONPATH=str(ROOT))

    def run(*args: str, name: str | None = None, extra_env: dict[str, str] | None = None):
        name = name or f"sq-{uuid.uuid4().hex[:6]}"
        argv = [*args, "-n", name]
        worker = WorkerProcess(argv, {**env, **(extra_env or {})}, tmp_path / f"{name}.log")
        started.append(worker)
        wait_for(
            lambda: name in store.workers() or worker.process.poll() is not None,
            20,
            f"worker {name} to start",
        )
        assert worker.process.poll() is None, worker.log()
        worker.name = name  # type: ignore[attr-defined]
        return worker

    yield run
    for worker in started:
        worker.stop()


def beat_record(store: Backend, entry: str) -> dict[str, Any]:
    state = store.beat_entries().get(entry)
    return json.loads(state.info) if state is not None and state.info else {}


def kill9(worker: WorkerProcess) -> None:
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(5)


def test_readme_first_command_runs_the_example_schedule(start, store: Backend) -> None:
    from examples.proj.tasks import add

    app = add.app
    app.close()  # drop backends of other tests: this one reads BEATQ_BROKER_URL
    worker = start("-A", "examples.proj", "worker", "-B", "-l", "info")
    assert app.conf.broker_url.startswith("sqlite:///")

    assert add.delay(4, 4).get(timeout=10) == 8
    record = wait_for(
        lambda: (
            beat_record(store, "add-every-10-seconds").get("runs", 0) >= 1
            and beat_record(store, "add-every-10-seconds")
        ),
        25,
        "the every-10s entry to run",
    )
    result = AsyncResult(record["last_task_id"], app=app)
    assert result.get(timeout=10) == 32 and result.state == "SUCCESS"
    lease = store.get_lease("beat")
    assert lease is not None and f":{worker.pid}:" in lease.holder
    assert "succeeded" in worker.log() and "Traceback" not in worker.log()
    app.close()


def test_two_workers_and_two_beats_share_one_file(start, store: Backend, tmp_path: Path) -> None:
    from tests.proj.tasks import sq_host

    app = sq_host.app
    app.close()
    schedule = tmp_path / "tick.yaml"
    schedule.write_text("schedules:\n  tick:\n    task: tests.proj.tasks.sq_host\n    every: 1s\n")
    args = ["-A", "tests.proj", "worker", "-B", "-s", str(schedule), "--lease-ttl", "1.5"]
    args += ["-P", "threads", "-c", "2", "--prefetch-multiplier", "1"]
    workers = [start(*args), start(*args)]
    by_pid = {w.pid: w for w in workers}

    def leader() -> WorkerProcess | None:
        lease = store.get_lease("beat")
        return by_pid.get(int(lease.holder.split(":")[1])) if lease else None

    first = wait_for(leader, 10, "a leader")
    wait_for(lambda: beat_record(store, "tick").get("runs", 0) >= 2, 10, "two ticks")
    leading = [w for w in workers if "is the leader now" in w.log()]
    assert leading == [first], "exactly one beat leads"

    results = [sq_host.delay(0.2) for _ in range(12)]
    ran_on = {r.get(timeout=15) for r in results}
    assert ran_on == {w.name for w in workers}, "both workers took tasks"  # type: ignore[attr-defined]
    tick = AsyncResult(beat_record(store, "tick")["last_task_id"], app=app)
    assert tick.get(timeout=10) in ran_on

    # the leader dies: the other beat takes over within the lease ttl, and ticks go on
    runs = beat_record(store, "tick")["runs"]
    kill9(first)
    survivor = next(w for w in workers if w is not first)
    wait_for(lambda: leader() is survivor, 10, "the standby beat to take over")
    wait_for(lambda: beat_record(store, "tick")["runs"] >= runs + 2, 10, "ticks after takeover")
    tick = AsyncResult(beat_record(store, "tick")["last_task_id"], app=app)
    assert tick.get(timeout=10) == survivor.name  # type: ignore[attr-defined]
    app.close()


def test_a_killed_workers_claims_come_back_after_the_visibility_timeout(
    start, store: Backend
) -> None:
    from tests.proj.tasks import sq_host

    app = sq_host.app
    app.close()
    visibility = {"BEATQ_TEST_VISIBILITY": "1"}
    # Sent before the worker starts, so its first claim takes a full batch (solo: 4).
    busy = sq_host.delay(30)
    waiting = [sq_host.delay(0) for _ in range(3)]
    later = sq_host.apply_async((0,), countdown=1.5)
    first = start("-A", "tests.proj", "worker", "-P", "solo", extra_env=visibility)

    def running_busy() -> bool:
        info = json.loads(store.workers().get(first.name, b"{}"))  # type: ignore[attr-defined]
        return any(a["id"] == busy.id for a in info.get("active", []))

    wait_for(running_busy, 10, "the first worker to run the long task")
    assert store.queue_length("celery") == 0, "the others are claimed, not started"
    kill9(first)

    second = start("-A", "tests.proj", "worker", "-P", "solo", extra_env=visibility)
    assert [r.get(timeout=10) for r in waiting] == [second.name] * 3  # type: ignore[attr-defined]
    assert later.get(timeout=10) == second.name  # type: ignore[attr-defined]
    app.close()
