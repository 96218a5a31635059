"""What is particular to one store: memory:// names, SQLite files shared by several processes
(killed mid-way, forked while in use)."""

from __future__ import annotations

import gzip
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from beatq.brokers import (
    Outgoing,
    ResultWrite,
    connect,
)
from beatq.exceptions import BrokerError, ConfigurationError
from tests.conftest import ROOT, scaled, wait_for
from tests.contract.conftest import out


# -- memory:// only -------------------------------------------------------------------------------
def test_memory_stores_are_named_by_url() -> None:
    name = uuid.uuid4().hex
    urls = (f"memory://{name}", f"memory://{name}/", f"memory://{name}-other")
    first, same, other = (connect(u) for u in urls)
    first.send([out("m")])
    assert same.queue_length("q") == 1
    assert other.queue_length("q") == 0


# -- sqlite:// only -------------------------------------------------------------------------------
def test_sqlite_urls_name_a_file_relative_or_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    relative = connect("sqlite:///rel/broker.db")
    with pytest.raises(BrokerError, match="rel/broker.db"):
        relative.ping()  # its folder does not exist: unreachable, as a server would be
    (tmp_path / "rel").mkdir()
    relative.ping()
    absolute = connect(f"sqlite:///{tmp_path}/rel/broker.db")  # four slashes
    relative.send([out("m")])
    assert absolute.queue_length("q") == 1
    with sqlite3.connect(tmp_path / "rel" / "broker.db") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()
    for bad in ("sqlite://", "sqlite:///", "sqlite:///:memory:", "sqlite://host/x.db"):
        with pytest.raises(ConfigurationError):
            connect(bad)
    relative.close()
    absolute.close()


def _drain(url: str, start: object, results: object) -> None:
    """A process of its own: claim and acknowledge until the queue is empty."""
    backend = connect(url)
    backend.ping()
    results.put("ready")  # type: ignore[attr-defined]
    start.wait(10)  # type: ignore[attr-defined]
    got: list[str] = []
    while True:
        claims = backend.claim(["q"], 3, 30).claims
        if not claims:
            if backend.queue_length("q") == 0:
                break
            continue
        got += [c.id for c in claims]
        time.sleep(0.001)  # running the tasks: the other process gets its turns
        backend.finish(ack=claims, results=[ResultWrite(c.id, b"ok", 60) for c in claims])
    results.put((os.getpid(), got))  # type: ignore[attr-defined]
    backend.close()


def test_sqlite_two_processes_never_claim_the_same_message(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    backend = connect(url)
    sent = [f"m{i:05d}" for i in range(1500)]
    backend.send([out(i) for i in sent])
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_drain, args=(url, start, results)) for _ in range(2)]
    for p in procs:
        p.start()
    assert [results.get(timeout=scaled(30)) for _ in procs] == ["ready", "ready"]
    start.set()  # both at once: neither drains the queue before the other has started
    got = [results.get(timeout=scaled(30)) for _ in procs]
    for p in procs:
        p.join(10)
    taken = [m for _, batch in got for m in batch]
    assert len(taken) == len(set(taken)), "a message was claimed twice"
    assert sorted(taken) == sent
    assert all(batch for _, batch in got), "both processes took some"
    assert backend.get_results(sent[:3] + sent[-3:]) == [b"ok"] * 6
    backend.close()


def _reap(pid: int, timeout: float = 10.0) -> int:
    """The exit code of child `pid`; kill -9 it and fail if it hangs (a deadlock after fork)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"the forked child {pid} hung")


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_sqlite_forking_while_threads_use_the_file_is_safe(tmp_path: Path) -> None:
    """The prefork pool forks while the worker's threads use the file: the connections
    are closed around the fork, and parent and children each open their own."""
    path = tmp_path / "forked.db"
    backend = connect(f"sqlite:///{path}")
    stop = threading.Event()

    def hammer(k: int) -> None:
        n = 0
        while not stop.is_set():
            backend.send([out(f"p{k}-{n}")])
            n += 1
            for c in backend.claim(["q"], 2, 30).claims:
                backend.finish(ack=[c], results=[ResultWrite(c.id, b"ok", 60)])

    threads = [threading.Thread(target=hammer, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(10):
            pid = os.fork()
            if pid == 0:  # the child: use the inherited backend object, then leave at once
                code = 1
                try:
                    backend.send([out(f"c{i}-{n}") for n in range(20)])
                    for c in backend.claim(["q"], 5, 30).claims:
                        backend.finish(ack=[c], results=[ResultWrite(c.id, b"ok", 60)])
                    code = 0
                finally:
                    os._exit(code)
            assert _reap(pid) == 0
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    kept = {r[0] for r in raw.execute("SELECT id FROM messages")}
    kept |= {r[0] for r in raw.execute("SELECT task_id FROM results")}
    raw.close()
    assert {f"c{i}-{n}" for i in range(10) for n in range(20)} <= kept
    backend.send([out("after")])  # the parent's threads reopened their connections
    assert backend.queue_length("q") >= 1
    backend.close()


_WRITER = """
import sys
from beatq.brokers import Outgoing, ResultWrite, connect

backend = connect(sys.argv[1])
backend.ping()  # the file and its tables exist before the test starts its clock
tag, n = sys.argv[2], 0
print("ready", flush=True)
while True:
    backend.send([Outgoing("q", f"{tag}{n + i:07d}", b"x" * 200) for i in range(5)])
    n += 5
    for c in backend.claim(["q"], 3, 0.2).claims:
        backend.finish(
            ack=[c],
            results=[ResultWrite(c.id, b"done", 600)],
            send=[Outgoing("followups", "f-" + c.id, b"y")],
        )
"""


def test_sqlite_kill9_mid_way_leaves_the_file_consistent(tmp_path: Path) -> None:
    path = tmp_path / "killed.db"
    url = f"sqlite:///{path}"
    for round_, delay in enumerate((0.05, 0.2, 0.4)):
        tag = f"r{round_}-"
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, url, tag],
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        time.sleep(delay)  # somewhere in the middle of its work
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        proc.stdout.close()

        raw = sqlite3.connect(path)
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {r[0] for r in raw.execute("SELECT id FROM messages WHERE queue = 'q'")}
        stored = {i for i in stored if i.startswith(tag)}
        done = {r[0] for r in raw.execute("SELECT task_id FROM results")}
        done = {i for i in done if i.startswith(tag)}
        followups = {r[0] for r in raw.execute("SELECT id FROM messages WHERE queue = 'followups'")}
        raw.close()
        assert not stored & done, "acknowledged and still stored"
        numbers = sorted(int(i[len(tag) :]) for i in stored | done)
        assert numbers and numbers == list(range(len(numbers))), "a message was lost"
        assert len(numbers) % 5 == 0, "a send was cut in half"
        assert {"f-" + i for i in done} <= followups, "a finish was cut in half"

    # the killed writers' locks are gone: another process works on the file
    backend = connect(url)
    wait_for(lambda: backend.claim(["q"], 10_000, 30).claims, 3, "the abandoned claims")
    backend.close()


def _await_result(url: str, ready: object, results: object, how: str = "wake") -> None:
    from beatq.brokers import sqlite_db, sqlite_wake

    if how == "poll":  # as on a system without futexes: the waiter polls the file
        sqlite_wake._futex = None
    elif how == "wake-only":  # polls once a minute: only a wake-up can end the wait in time
        sqlite_db.FAST_FOR = 0.0
        sqlite_db.POLL_SLOW = 60.0
    backend = connect(url)
    backend.ping()
    ready.set()  # type: ignore[attr-defined]
    value = backend.wait_result("cross", 30)
    results.put((value, time.time()))  # type: ignore[attr-defined]
    backend.close()


@pytest.mark.parametrize("how", ["wake", "poll"])
@pytest.mark.parametrize("idle", [0.1, 1.0], ids=["busy", "idle"])
def test_sqlite_wait_result_across_processes_wakes_within_the_poll_interval(
    tmp_path: Path, idle: float, how: str
) -> None:
    url = f"sqlite:///{tmp_path / 'latency.db'}"
    backend = connect(url)
    backend.ping()
    ctx = multiprocessing.get_context("spawn")
    ready, results = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_await_result, args=(url, ready, results, how))
    proc.start()
    assert ready.wait(60)  # a spawned interpreter importing beatq: seconds on a loaded machine
    time.sleep(idle)  # after a second of nothing the waiter polls at its slow pace
    finished = time.time()
    backend.finish(results=[ResultWrite("cross", b"SUCCESS", 60)])
    value, woke = results.get(timeout=scaled(10))
    proc.join(5)
    assert value == b"SUCCESS"
    assert woke - finished < 0.1
    backend.close()


def test_sqlite_a_waiter_without_futexes_is_woken_by_a_commit_of_its_own_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where waits poll (no futex), a commit of another thread of the process wakes the
    waiter at once (sqlite_db._Changes), however slow its poll: here once a minute."""
    from beatq.brokers import sqlite_db, sqlite_wake

    monkeypatch.setattr(sqlite_wake, "_futex", None)
    monkeypatch.setattr(sqlite_db, "FAST_FOR", 0.0)
    monkeypatch.setattr(sqlite_db, "POLL_SLOW", 60.0)
    backend = connect(f"sqlite:///{tmp_path / 'local.db'}")
    backend.ping()
    woke: list[tuple[bytes | None, float]] = []
    waiter = threading.Thread(
        target=lambda: woke.append((backend.wait_result("local", 30), time.time()))
    )
    waiter.start()
    try:
        wait_for(lambda: backend.db.changes.waiters, 10, "the waiter asleep")
        finished = time.time()
        backend.finish(results=[ResultWrite("local", b"SUCCESS", 60)])
        waiter.join(scaled(5))
        assert woke and woke[0][0] == b"SUCCESS"
        assert woke[0][1] - finished < scaled(1.0), "woken by a poll, not by the commit"
    finally:
        waiter.join(40)
        backend.close()


@pytest.mark.parametrize("named", ["same", "link"])
def test_sqlite_a_waiter_in_another_process_is_woken_by_the_commit_not_its_poll(
    tmp_path: Path, named: str
) -> None:
    """The waiter polls once a minute here: it returns in time only if the commit wakes it
    (sqlite_wake), and a waiter killed with its slot marked leaves nothing stuck. `link`:
    the waiter names the file through a symbolic link (SQLite follows it)."""
    url = f"sqlite:///{tmp_path / 'wake.db'}"
    waiter_url = url
    if named == "link":
        (tmp_path / "link.db").symlink_to(tmp_path / "wake.db")
        waiter_url = f"sqlite:///{tmp_path / 'link.db'}"
    backend = connect(url)
    backend.ping()
    ctx = multiprocessing.get_context("spawn")
    ready, results = ctx.Event(), ctx.Queue()
    killed_ready, killed_results = ctx.Event(), ctx.Queue()  # kept till the child reads them
    killed = ctx.Process(target=_await_result, args=(url, killed_ready, killed_results))
    killed.start()
    assert killed_ready.wait(60)
    from beatq.brokers.sqlite_wake import FLAGS, SLOTS

    wake_file = tmp_path / "wake.db-wake"
    marked = lambda: wake_file.exists() and 1 in wake_file.read_bytes()[FLAGS : FLAGS + SLOTS]  # noqa: E731
    wait_for(marked, 30, "the first waiter's mark")
    proc = ctx.Process(target=_await_result, args=(waiter_url, ready, results, "wake-only"))
    proc.start()
    assert ready.wait(60)
    os.kill(killed.pid, signal.SIGKILL)  # its slot's mark stays set: committers wake for nothing
    killed.join(10)
    time.sleep(0.5)  # the waiter is asleep, well past its first look
    finished = time.time()
    backend.finish(results=[ResultWrite("cross", b"SUCCESS", 60)])
    value, woke = results.get(timeout=scaled(10))
    proc.join(5)
    assert value == b"SUCCESS"
    assert woke - finished < scaled(1.0), "woken by a poll, not by the commit"
    backend.close()


def test_sqlite_a_file_of_schema_4_is_migrated_in_place(tmp_path: Path) -> None:
    """A file written before messages carried their delivery property (schema version 4):
    its messages are kept, claimed as acknowledged by their worker, and new ones carry it."""
    from beatq.brokers import sqlite_db

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as raw:
        raw.executescript(
            """
            CREATE TABLE messages (
                id TEXT PRIMARY KEY, queue TEXT NOT NULL, body BLOB NOT NULL,
                state TEXT NOT NULL CHECK (state IN ('ready', 'delayed', 'claimed')),
                seq INTEGER NOT NULL DEFAULT 0, eta REAL, deadline REAL, token TEXT
            );
            CREATE INDEX messages_ready ON messages (queue, seq) WHERE state = 'ready';
            CREATE INDEX messages_delayed ON messages (eta) WHERE state = 'delayed';
            CREATE INDEX messages_claimed ON messages (deadline) WHERE state = 'claimed';
            INSERT INTO messages (id, queue, body, state, seq)
                VALUES ('old', 'q', x'7b7d', 'ready', 1);
            PRAGMA user_version = 4;
            """
        )
    raw.close()
    backend = connect(f"sqlite:///{path}")
    try:
        claimed = backend.claim(["q"], 1, 30, ack_first=True)
        assert not claimed.acked and [(c.id, c.body) for c in claimed.claims] == [("old", b"{}")]
        backend.send([Outgoing("q", "new", b"{}", ack_at_claim=True)])
        assert backend.claim(["q"], 1, 30, ack_first=True).acked
    finally:
        backend.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == sqlite_db.SCHEMA_VERSION
    raw.close()


def test_sqlite_a_file_of_schema_11_is_upgraded_with_every_message_kept(tmp_path: Path) -> None:
    """A real schema-11 file (tests/data/sqlite_v11.py made it with the code of then):
    in q, p1 (priority 5, acknowledged at claim), h1 (put back to the head), then r1, r2,
    r3 as sent; in w, w1 claimed for years and w2 whose claim expired; in d, d1 delayed
    for years and d2 due; x1 a dead letter; t1's result. Each comes out as it went in, in
    its order, and a message sent after the upgrade goes behind them."""
    from beatq.brokers import sqlite_db

    path = tmp_path / "v11.db"
    path.write_bytes(gzip.decompress((ROOT / "tests/data/sqlite_v11.db.gz").read_bytes()))
    backend = connect(f"sqlite:///{path}")
    try:
        backend.send([Outgoing("q", "r4", b'{"r": 4}')])
        assert backend.queue_length("q") == 6
        claimed = backend.claim(["q"], 10, 30, ack_first=True)
        assert [c.id for c in claimed.claims] == ["p1", "h1", "r1", "r2", "r3", "r4"]
        assert claimed.acked and claimed.claims[0].priority == 5
        assert claimed.claims[3].body == b'{"r": 2}'
        backend.finish(ack=claimed.claims[1:])
        assert backend.queue_length("q") == 0 and backend.claim(["q"], 1, 30).claims == []

        again = backend.claim(["w"], 10, 30)
        assert [(c.id, c.redelivered) for c in again.claims] == [("w2", True)]
        [(eta, delayed)] = backend.scheduled()
        assert delayed.id == "d1" and eta > time.time() + 10**7
        assert [c.id for c in backend.claim(["d"], 10, 30).claims] == ["d2"]
        assert [(d.id, d.reason) for d in backend.dead_letters()] == [("x1", "bad body")]
        assert backend.get_result("t1") == b'{"status": "SUCCESS"}'
        assert backend.requeue_dead() == ["x1"]
        assert [c.body for c in backend.claim(["x"], 1, 30).claims] == [b"not json"]
    finally:
        backend.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == sqlite_db.SCHEMA_VERSION
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        left = raw.execute("SELECT id, state FROM messages ORDER BY id").fetchall()
        assert left == [("d1", 1), ("d2", 2), ("w1", 2), ("w2", 2), ("x1", 2)]
    raw.close()


def test_redis_a_message_stored_before_delivery_properties_is_read_whole(
    redis_url: str, prefix: str
) -> None:
    """Stored as "queue\\nbody" by an earlier version: claimed with its body intact, and
    acknowledged by its worker, not in the claim."""
    import redis

    backend = connect(redis_url, {"global_keyprefix": prefix})
    client = redis.Redis.from_url(redis_url)
    try:
        client.hset(f"{prefix}:msg", "old", b"q\n{}body")
        client.lpush(f"{prefix}:q:q", "old")
        claimed = backend.claim(["q"], 1, 30, ack_first=True)
        assert not claimed.acked and [(c.id, c.body) for c in claimed.claims] == [
            ("old", b"{}body")
        ]
    finally:
        client.close()
        backend.close()


def test_redis_a_batch_that_brings_an_earlier_eta_wakes_its_queue(
    redis_url: str, prefix: str
) -> None:
    """A send whose messages bring the earliest eta wakes the workers of that queue (they
    wait until the eta they knew of), also in a batch where a resend moved the earliest eta
    it started from further out (each send reads the earliest once and keeps it)."""
    backend = connect(redis_url, {"global_keyprefix": prefix})
    waiter = connect(redis_url, {"global_keyprefix": prefix})
    try:
        now = time.time()
        backend.send([out("x", queue="q1", eta=now + 100)])  # the earliest: workers wait for it
        waiter.wait(["q2"], 0.01)  # connected, the library loaded
        done: dict[str, object] = {}

        def wait() -> None:
            done["value"] = waiter.wait(["q2"], 5)
            done["at"] = time.monotonic()

        thread = threading.Thread(target=wait)
        thread.start()
        time.sleep(0.1)  # let it block
        assert thread.is_alive(), "nothing to wake it yet"
        sent = time.monotonic()
        # y is not the earliest (x is); x sent again moves out to +300; then z, of q2, is
        # the earliest of all
        backend.send(
            [
                out("y", queue="q1", eta=now + 400),
                out("x", queue="q1", eta=now + 300),
                out("z", queue="q2", eta=now + 200),
            ]
        )
        thread.join(5)
        assert done["value"] is True
        assert done["at"] - sent < 4.0, "woken by the send, not by the wait's timeout"
        assert [(c.id, when) for when, c in backend.scheduled()] == [
            ("z", pytest.approx(now + 200)),
            ("x", pytest.approx(now + 300)),
            ("y", pytest.approx(now + 400)),
        ]
    finally:
        waiter.close()
        backend.close()
