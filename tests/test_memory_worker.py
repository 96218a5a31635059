"""memory:// in one process: `worker -B` runs a schedule alone; prefork is refused.

SPEC §9: memory:// serves one process (tests, `worker -B` demos). Its store cannot reach
forked pool children, so the worker picks threads by default and refuses `-P prefork`.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, WorkerProcess, scaled, wait_for
from tests.proj import journal

pytestmark = pytest.mark.backends("memory")


def test_worker_dash_b_on_memory_runs_its_schedule_in_threads_and_stops_cleanly(
    env: dict[str, str], tmp_path: Path
) -> None:
    schedule = tmp_path / "note.yaml"
    schedule.write_text(
        "schedules:\n  note:\n    task: tests.proj.tasks.cfg_note\n    every: 1s\n    args: [7]\n"
    )
    argv = ["-A", "tests.proj", "worker", "-B", "-s", str(schedule), "--lease-ttl", "1.5"]
    worker = WorkerProcess(argv, env, tmp_path / "worker.log")
    try:
        wait_for(lambda: len(journal("note")) >= 2, 10, "two runs of the entry")
        assert set(journal("note")) == {"7"}
        log = worker.log()
        assert "pool threads" in log and "is the leader now" in log, log
        signalled = time.monotonic()
        worker.signal(signal.SIGTERM)
        assert worker.wait(10) == 0, worker.log()
        assert time.monotonic() - signalled < scaled(5), "a warm stop does not hang"
        assert "stopped" in worker.log() and "Traceback" not in worker.log()
    finally:
        worker.stop()


def test_prefork_on_memory_is_refused_with_the_fix(env: dict[str, str]) -> None:
    argv = [sys.executable, "-m", "beatq", "-A", "tests.proj", "worker", "-P", "prefork"]
    proc = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=20)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert env["BEATQ_BROKER_URL"] in lines[0] and "-P threads" in lines[0], lines[0]
