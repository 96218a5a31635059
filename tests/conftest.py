"""Fixtures: the backend of each test, a real redis-server, real worker processes.

End-to-end tests run once per backend they are marked for (`@pytest.mark.backends("redis",
"sqlite", "memory")`; unmarked: redis only), from one parametrized suite: a test asks for
`env`/`app`/`start_worker` and gets a fresh store on its backend (its own key prefix on
the test Redis, its own SQLite file, or its own memory:// store). `--backends sqlite`
runs the suite with no Redis at all. Tasks journal their side effects to files
(tests.proj.record), so the journal needs no broker either.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("redis", "sqlite", "memory", "cluster")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backends",
        default=",".join(BACKENDS),
        help="the backends end-to-end tests run on, comma separated (default: all four)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "backends(*names): the backends a test runs on (unmarked: redis only)"
    )
    unknown = set(chosen_backends(config)) - set(BACKENDS)
    if unknown:
        raise pytest.UsageError(
            f"--backends: unknown {', '.join(sorted(unknown))}; use {', '.join(BACKENDS)}"
        )


def chosen_backends(config: pytest.Config) -> list[str]:
    return [n.strip() for n in config.getoption("--backends").split(",") if n.strip()]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run a test that uses a backend once per backend it is marked for (and chosen)."""
    if "backend" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("backends")
    names = marker.args if marker else ("redis",)
    chosen = chosen_backends(metafunc.config)
    # module scope: a module's shared worker starts once per backend, not once per test
    metafunc.parametrize("backend", [n for n in names if n in chosen], scope="module")


def _time_scale() -> float:
    """How much slower than an ordinary two-core machine this one runs, at least 1.

    `BEATQ_TEST_TIME_SCALE` sets it; otherwise the best of three cold starts of the CLI
    module is timed (0.25 s counts as ordinary, 0.17 s here; a starved CI machine took 6 s). It
    stretches the deadlines and the "soon enough" bounds of the tests, never their order
    of events: a bound that tells a wake from a timeout stays below that timeout.
    """
    if os.environ.get("BEATQ_TEST_TIME_SCALE"):
        return max(1.0, float(os.environ["BEATQ_TEST_TIME_SCALE"]))
    best = float("inf")
    for _ in range(3):
        began = time.monotonic()
        subprocess.run([sys.executable, "-c", "import beatq.cli"], check=True, cwd=ROOT)
        best = min(best, time.monotonic() - began)
    return min(20.0, max(1.0, best / 0.25))


TIME_SCALE = _time_scale()


def scaled(seconds: float) -> float:
    """`seconds` stretched by how slow this machine is (see _time_scale)."""
    return seconds * TIME_SCALE


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The limit covers the test's own call only (func_only): a limit that fires while
    # pytest writes up an earlier failure aborts the whole run with an INTERNALERROR.
    # Fixtures wait with deadlines of their own.
    for item in items:
        item.add_marker(pytest.mark.timeout(scaled(90), func_only=True))


def pytest_report_header(config: pytest.Config) -> str:
    return f"beatq test time scale: {TIME_SCALE:.1f} (BEATQ_TEST_TIME_SCALE sets it)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition: Callable[[], object], timeout: float = 10.0, what: str = "condition"):
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds.

    The deadline stretches with TIME_SCALE: on a starved machine a deadline is a pause
    that never comes, not a failure."""
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def steady(read: Callable[[], object], ok: Callable[[Any], bool], quiet: float):
    """A condition for `wait_for`: true once `read()` has returned the same value for
    `quiet` seconds and `ok(value)` holds (a busy worker's looks for more urgent work, every
    URGENT_EVERY, have taken all they will)."""
    seen: dict[str, Any] = {"value": None, "since": None}

    def check() -> bool:
        value, now = read(), time.monotonic()
        if seen["since"] is None or value != seen["value"]:
            seen["value"], seen["since"] = value, now
            return False
        return ok(value) and now - seen["since"] >= quiet

    return check


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
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if "redis" not in chosen_backends(request.config):
        pytest.skip("needs Redis, which --backends leaves out")
    url = os.environ.get("BEATQ_TEST_REDIS_URL")
    if url:
        yield url
        return
    server = RedisServer()
    server.start()
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def cluster_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A redis+cluster:// URL: three masters and a replica of each (tests/clusters.py),
    started once per session and stopped by their pids."""
    if "cluster" not in chosen_backends(request.config):
        pytest.skip("needs a Redis Cluster, which --backends leaves out")
    from tests.clusters import Cluster

    try:
        cluster = Cluster(tmp_path_factory.mktemp("cluster"))
        cluster.start()
    except AssertionError:  # a free port taken meanwhile by another process: new ones
        cluster = Cluster(tmp_path_factory.mktemp("cluster"))
        cluster.start()
    request.config.stash[CLUSTER] = cluster
    yield cluster.url()
    cluster.stop()


CLUSTER = pytest.StashKey["object"]()
LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d) ")


def logged_at(line: str) -> float:
    """When a beatq log line was written (its leading timestamp), POSIX seconds."""
    stamp = LOG_TIME.match(line)
    assert stamp, line
    return datetime.fromisoformat(stamp.group(1)).timestamp()


@pytest.fixture
def cluster(request: pytest.FixtureRequest, cluster_url: str):
    """The tests.clusters.Cluster behind `cluster_url` (its nodes, to kill, pause, move slots)."""
    return request.config.stash[CLUSTER]


@pytest.fixture
def cb(cluster_url: str):
    """A ClusterBackend of its own on `cluster_url`, under a key prefix of its own."""
    from beatq.brokers import connect
    from beatq.brokers.cluster import ClusterBackend

    found = connect(cluster_url, {"global_keyprefix": f"bqc-{uuid.uuid4().hex[:12]}"})
    assert isinstance(found, ClusterBackend)
    yield found
    found.close()


def delete_keys(redis_url: str, prefix: str) -> None:
    """Delete the keys under `prefix` (a store this suite created), and only them."""
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def store_url(backend: str, request: pytest.FixtureRequest, prefix: str, folder: Path) -> str:
    """A fresh store on `backend`: keys under `prefix`, a file in `folder`, or memory."""
    if backend == "redis":
        return request.getfixturevalue("redis_url")
    if backend == "cluster":
        return request.getfixturevalue("cluster_url")
    if backend == "sqlite":
        return f"sqlite:///{folder / 'beatq.sqlite3'}"  # an absolute path: sqlite:////...
    return f"memory://{prefix}"


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    """A key prefix of this test's own; on Redis its keys (and only them) go afterwards."""
    value = f"bqt-{uuid.uuid4().hex[:12]}"
    yield value
    if "redis_url" in request.fixturenames:
        delete_keys(request.getfixturevalue("redis_url"), value)


@pytest.fixture
def broker_url(backend: str, request: pytest.FixtureRequest, prefix: str, tmp_path: Path) -> str:
    """This test's store on its backend."""
    return store_url(backend, request, prefix, tmp_path)


@pytest.fixture
def journal_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "journal"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture
def env(
    broker_url: str, prefix: str, journal_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """Environment for this test: the test app's broker, prefix and journal, here and in
    children."""
    values = {
        "BEATQ_BROKER_URL": broker_url,
        "BEATQ_TEST_PREFIX": prefix,
        "BEATQ_TEST_JOURNAL": str(journal_dir),
        "PYTHONPATH": str(ROOT),
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, **values}


def point_app(url: str, prefix: str, visibility: float = 60.0):
    """The tests' app (tests.proj), pointed at the store `url` with keys under `prefix`."""
    from tests.proj import app as proj_app
    from tests.proj import transport_options

    proj_app.close()
    # Set whole, never merged: an option a test added (min_replicas, say) must not reach
    # the tests after it in this process.
    proj_app.conf.broker_transport_options = transport_options(url, prefix, visibility)
    proj_app.conf.broker_url = url
    proj_app.conf.task_always_eager = False
    import tests.proj.tasks  # noqa: F401  (registers the tasks)

    return proj_app


@pytest.fixture
def app(env: dict[str, str]):
    """The tests' app (tests.proj), pointed at this test's store."""
    proj_app = point_app(
        env["BEATQ_BROKER_URL"],
        env["BEATQ_TEST_PREFIX"],
        float(env.get("BEATQ_TEST_VISIBILITY", "60")),
    )
    yield proj_app
    proj_app.close()


@dataclass(frozen=True)
class Stored:
    """A message as the store holds it: id, queue, state (ready, delayed, claimed), body."""

    id: str
    queue: str
    state: str
    body: bytes


def stored_messages(app) -> list[Stored]:
    """Every message `app`'s broker holds, read from the store itself (for assertions)."""
    broker = app.broker
    kind = type(broker).__name__
    if kind in ("RedisBackend", "ClusterBackend"):
        from beatq.brokers.redis import split_stored

        client = broker.client
        units = [broker.keys]  # a cluster: each queue's keys apart (cluster.py)
        if kind == "ClusterBackend":
            units = [broker.unit(q) for q in broker.queue_names()]
        found = []
        for keys in units:
            claimed = {m.decode().partition("|")[0] for m in client.zrange(keys.unacked, 0, -1)}
            delayed = {m.decode() for m in client.zrange(keys.delayed, 0, -1)}
            for id_, value in client.hgetall(keys.msgs).items():
                id_ = id_.decode()
                queue, body = split_stored(value)
                state = "claimed" if id_ in claimed else "delayed" if id_ in delayed else "ready"
                found.append(Stored(id_, queue, state, body))
        return found
    if kind == "SqliteBackend":
        with broker.db.read() as conn:
            rows = conn.execute(
                "SELECT id, queue, CASE state WHEN 0 THEN 'ready' WHEN 1 THEN 'delayed' "
                "ELSE 'claimed' END, body FROM messages"
            ).fetchall()
        return [Stored(*row) for row in rows]
    with broker.store.lock:
        return [Stored(i, m.queue, m.state, m.body) for i, m in broker.store.messages.items()]


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
        return self.process.wait(scaled(timeout))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(scaled(5))
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()


class ThreadWorker:
    """A worker of the tests' app in a thread of this process: memory:// serves one process.

    Takes the options `-P threads|solo`, `-c N` and `-Q queues` of `beatq worker`.
    """

    def __init__(self, app, args: list[str], name: str) -> None:
        from beatq.worker import Worker

        options = dict(zip(args[::2], args[1::2]))
        unknown = set(options) - {"-P", "-c", "-Q"}
        if len(args) % 2 or unknown:
            raise ValueError(f"an in-process worker takes -P, -c and -Q only, not {args}")
        self.name = name
        self.pid = os.getpid()
        self.records: list[str] = []
        self.worker = Worker(
            app,
            queues=options["-Q"].split(",") if "-Q" in options else None,
            pool=options.get("-P", "threads"),
            concurrency=int(options.get("-c", "4")),
            hostname=name,
            idle_wait=0.1,  # how soon it notices stop(): memory waits cannot be interrupted
        )
        self.thread = threading.Thread(target=self.worker.run, name=name, daemon=True)
        self.thread.start()

    def log(self) -> str:
        return "\n".join(self.records)

    def signal(self, signum: int) -> None:
        assert signum in (signal.SIGTERM, signal.SIGINT), "an in-process worker only stops"
        self.worker.stop()

    def wait(self, timeout: float = 10.0) -> int:
        self.thread.join(scaled(timeout))
        assert not self.thread.is_alive(), f"in-process worker {self.name} did not stop"
        return 0

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(scaled(10))
        assert not self.thread.is_alive(), f"in-process worker {self.name} did not stop"


def wait_ready(broker, name: str, alive: Callable[[], bool], log: Callable[[], str]) -> None:
    """Wait until worker `name` heartbeats on `broker`; fail with its log if it died first."""
    # a deadline, not a pause: generous for a machine where importing beatq takes seconds
    wait_for(lambda: name in broker.workers() or not alive(), 60, f"worker {name} to start")
    assert alive(), log()


@pytest.fixture
def start_worker(
    app, backend: str, env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `beatq -A tests.proj worker ARGS...` and wait until it is ready (heartbeat seen).

    On memory:// the worker runs in a thread of the test process (see ThreadWorker).
    """
    started: list[WorkerProcess | ThreadWorker] = []

    def start(
        *args: str, ready: bool = True, extra_env: dict[str, str] | None = None
    ) -> WorkerProcess:
        name = f"w{len(started)}-{uuid.uuid4().hex[:6]}"
        if backend == "memory":
            assert not extra_env, "an in-process worker shares the test's environment"
            thread = ThreadWorker(app, list(args), name)
            started.append(thread)
            if ready:
                wait_ready(app.broker, name, thread.thread.is_alive, thread.log)
            return thread  # type: ignore[return-value]
        argv = ["-A", "tests.proj", "worker", "-n", name, *args]
        worker = WorkerProcess(argv, {**env, **(extra_env or {})}, tmp_path / f"{name}.log")
        started.append(worker)
        if ready:
            wait_ready(app.broker, name, lambda: worker.process.poll() is None, worker.log)
        worker.name = name  # type: ignore[attr-defined]
        return worker

    yield start
    for worker in started:
        worker.stop()
