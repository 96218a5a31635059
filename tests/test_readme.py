"""README's first command, taken from README.md itself, on a fresh copy of the repository.

Issue 5: a user with no Redis runs the command on a fresh machine and sees the example
project's periodic tasks run. The command creates its own virtual environment (a fresh
one, in a copy of the repository), installs beatq there and starts `worker -B` on the
embedded SQLite default; nothing names a broker, and no BEATQ_* variable is set.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from beatq import Beatq
from tests.conftest import ROOT, scaled, wait_for


def first_command() -> str:
    """The first shell block of README.md (under "Two commands")."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    assert blocks, "README.md has no ```sh block"
    return blocks[0].strip()


def copy_repository(target: Path) -> None:
    """The files git tracks, as they are in the working tree (no .venv, no state)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def test_readme_first_command_runs_the_example_with_no_server(tmp_path: Path) -> None:
    command = first_command()
    assert "worker -B" in command and "BEATQ_BROKER_URL" not in command, command
    repo = tmp_path / "beatq"
    copy_repository(repo)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEATQ_")}
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    log_path = tmp_path / "readme.log"
    with open(log_path, "wb") as log_file:
        shell = subprocess.Popen(
            ["bash", "-c", command],
            cwd=repo,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the whole group, as in a terminal
        )
    database = repo / "beatq.sqlite3"
    checker = Beatq("readme-check", broker=f"sqlite:///{database}")
    try:
        wait_for(
            lambda: "ready:" in log_path.read_text() or shell.poll() is not None,
            90,
            "the fresh venv to install and the worker to start",
        )
        assert shell.poll() is None, log_path.read_text()
        log = log_path.read_text()
        assert f"broker: SQLite file {database}" in log, log  # the shared file, named

        # a task sent from here runs in the example's worker
        assert checker.send_task("examples.proj.tasks.add", (4, 4)).get(timeout=scaled(10)) == 8

        def record() -> dict:
            state = checker.broker.beat_entries().get("add-every-10-seconds")
            return json.loads(state.info) if state is not None and state.info else {}

        # the every-10s entry of schedules/example.yaml: two runs, each adding 16 + 16
        wait_for(lambda: record().get("runs", 0) >= 2, 30, "two runs of add-every-10-seconds")
        last = checker.AsyncResult(record()["last_task_id"])
        assert last.get(timeout=scaled(10)) == 32 and last.state == "SUCCESS"
        assert checker.broker.get_lease("beat") is not None, "the embedded beat leads"

        stopped_at = time.monotonic()
        os.killpg(shell.pid, signal.SIGINT)
        assert shell.wait(scaled(15)) == 0, log_path.read_text()
        assert time.monotonic() - stopped_at < scaled(10)
        log = log_path.read_text()
        assert "stopped" in log and "Traceback" not in log, log
        assert checker.broker.get_lease("beat") is None, "a clean stop hands the lease back"
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
            shell.wait()
        checker.close()
