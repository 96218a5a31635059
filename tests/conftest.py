"""Fixtures: a real redis-server, a key prefix per test, real worker processes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition: Callable[[], object], timeout: float = 10.0, what: str = "condition"):
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


class RedisServer:
    """A redis-server process of our own on a free port (nothing kept on disk)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.exit("redis-server is not installed (apt-get install redis-server)", 1)
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_for(up, 10, f"redis-server on port {self.port}")
        client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("BEATQ_TEST_REDIS_URL")
    if url:
        yield url
        return
    server = RedisServer()
    server.start()
    yield server.url
    server.stop()


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys (and only them) are deleted afterwards."""
    value = f"bqt-{uuid.uuid4().hex[:12]}"
    yield value
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{value}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def env(redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for this test: the test app's broker and prefix, here and in children."""
    values = {
        "BEATQ_BROKER_URL": redis_url,
        "BEATQ_TEST_PREFIX": prefix,
        "PYTHONPATH": str(ROOT),
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, **values}


@pytest.fixture
def app(env: dict[str, str]):
    """The tests' app (tests.proj), pointed at this test's keys."""
    from tests.proj import app as proj_app

    proj_app.conf.broker_transport_options = {
        **proj_app.conf.broker_transport_options,
        "global_keyprefix": env["BEATQ_TEST_PREFIX"],
        "visibility_timeout": float(env.get("BEATQ_TEST_VISIBILITY", "60")),
    }
    proj_app.conf.broker_url = env["BEATQ_BROKER_URL"]
    proj_app.conf.task_always_eager = False
    proj_app.close()
    import tests.proj.tasks  # noqa: F401  (registers the tasks)

    yield proj_app
    proj_app.close()


class WorkerProcess:
    """A `beatq worker` started through the CLI, as a user would."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args = args
        self.log_path = log
        self.log_file = open(log, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "beatq", *args],
            env=env,
            cwd=ROOT,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        self.log_file.flush()
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 10.0) -> int:
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()


@pytest.fixture
def start_worker(
    app, env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `beatq -A tests.proj worker ARGS...` and wait until it is ready (heartbeat seen)."""
    started: list[WorkerProcess] = []

    def start(
        *args: str, ready: bool = True, extra_env: dict[str, str] | None = None
    ) -> WorkerProcess:
        name = f"w{len(started)}-{uuid.uuid4().hex[:6]}"
        argv = ["-A", "tests.proj", "worker", "-n", name, *args]
        worker = WorkerProcess(argv, {**env, **(extra_env or {})}, tmp_path / f"{name}.log")
        started.append(worker)
        if ready:
            wait_for(
                lambda: name in app.broker.workers() or worker.process.poll() is not None,
                15,
                f"worker {name} to start",
            )
            assert worker.process.poll() is None, worker.log()
        worker.name = name  # type: ignore[attr-defined]
        return worker

    yield start
    for worker in started:
        worker.stop()
