"""The commit each task costs on SQLite, beatq's and SqliteHuey's, side by side.

    bench/.venv/bin/python bench/profile/sqlite_floor.py [--n 4000] [--repeat 5]

Every way below runs on a fresh file in WAL mode at synchronous=NORMAL (the like-for-like
setting of bench/sqlite.py), in this one process, the order of the ways alternating run by
run. CPU µs per task (user + system of this process), medians [min-max], and WAL frames
per commit (the WAL's bytes over its frame size, written with checkpoints off in a run of
its own). Enqueue: one message per commit. Drain: the statements that take a task off its
queue before it runs.

- beatq store: `Backend.send` of one message; `take` of 4 that acknowledges the first and
  one `settle` a claim for the other three (what `worker -P solo` calls per task).
- beatq SQL: the same statements on a bare connection, no Python of beatq's around them.
- beatq SQL, one commit for 4: the claim deletes its 4 messages at once. Not a way beatq
  may work: acknowledged together, 3 tasks that had not started would be lost with a
  worker killed meanwhile (SPEC §6: nothing is lost when a worker dies). It says what
  that promise costs.
- Huey storage: SqliteHuey's storage `enqueue` and `dequeue` (Huey 3.5), its own code.

The difference between a way's CPU and its frames is SQLite's work and the kernel's
(two `pwrite`s a frame, about six `fcntl` locks a commit: strace -c).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import struct
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from beatq.brokers.records import Outgoing  # noqa: E402
from beatq.brokers.roles import Finish, Take  # noqa: E402
from beatq.brokers.sqlite import ACK, NEXT_TIMES, PUT, SqliteBackend  # noqa: E402
from beatq.brokers.sqlite_db import SCHEMA  # noqa: E402

# a no-op's body as `delay()` stores it (250 bytes); its id is the row's own
BODY = (
    b'{"id":"%s","sent":1796655328.1064203,"task":"app.noop","eta":null,"expires":null,'
    b'"retries":0,"parent":null,"root":null,"group":null,"queue":"celery","priority":null,'
    b'"v":1,"ct":"application/json","ce":null}\n[[],{},{}]'
)
TAKE = (
    "SELECT n, id, body, flags, seq FROM messages WHERE state = 0 AND queue = ? "
    "ORDER BY seq, n LIMIT ?"
)


def _bare(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def _beatq_sql(path: Path) -> sqlite3.Connection:
    conn = _bare(path)
    conn.execute("PRAGMA cache_size = -8000")
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    return conn


def _outgoing(n: int) -> list[Outgoing]:
    ids = [str(uuid.uuid4()) for _ in range(n)]
    return [Outgoing("celery", id_, BODY % id_.encode(), ack_at_claim=True) for id_ in ids]


# -- enqueue: one message a commit ------------------------------------------------------------
def send_store(path: Path, n: int) -> Callable[[], int]:
    store = SqliteBackend(f"sqlite:///{path}")
    store.send(_outgoing(1))
    messages = _outgoing(n)

    def run() -> int:
        for m in messages:
            store.send([m])
        return n

    return run


def send_sql(path: Path, n: int) -> Callable[[], int]:
    conn = _beatq_sql(path)
    rows = [(m.id, m.queue, 0, 1, None, 1, m.body) for m in _outgoing(n)]

    def run() -> int:
        for row in rows:
            conn.execute(PUT, row)
        return n

    return run


def _huey(path: Path):
    from huey.storage import SqliteStorage

    class Normal(SqliteStorage):
        def _create_connection(self):
            conn = super()._create_connection()
            conn.execute("PRAGMA synchronous = NORMAL")
            return conn

    return Normal("floor", filename=str(path))


def send_huey(path: Path, n: int) -> Callable[[], int]:
    storage = _huey(path)
    data = [BODY % str(uuid.uuid4()).encode() for _ in range(n)]

    def run() -> int:
        for item in data:
            storage.enqueue(item)
        return n

    return run


# -- drain: the commits that take a task off its queue before it runs -----------------------------
def take_store(path: Path, n: int) -> Callable[[], int]:
    store = SqliteBackend(f"sqlite:///{path}")
    store.send(_outgoing(n))

    def run() -> int:
        done = 0
        while claims := store.take(Take(["celery"], 4, 60.0, True, 0.0)).claims:
            for claim in claims[1:]:
                store.settle(Finish(ack=[claim]))
            done += len(claims)
        return done

    return run


def _filled(path: Path, n: int) -> sqlite3.Connection:
    conn = _beatq_sql(path)
    conn.executemany(PUT, [(m.id, m.queue, 0, 1, None, 1, m.body) for m in _outgoing(n)])
    return conn


def take_sql(path: Path, n: int) -> Callable[[], int]:
    conn = _filled(path, n)

    def run() -> int:
        done = 0
        while True:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(NEXT_TIMES).fetchone()
            rows = conn.execute(TAKE, ("celery", 4)).fetchall()
            if rows:
                conn.execute("DELETE FROM messages WHERE n = ?", (rows[0][0],))
                deadline = time.time() + 60
                conn.executemany(
                    "UPDATE messages SET state = 2, at = ?, token = ? WHERE n = ?",
                    [(deadline, "t", row[0]) for row in rows[1:]],
                )
            conn.execute("COMMIT")
            if not rows:
                return done
            for row in rows[1:]:
                conn.execute(ACK, (row[0], "t"))
            done += len(rows)

    return run


def take_sql_4(path: Path, n: int) -> Callable[[], int]:
    conn = _filled(path, n)

    def run() -> int:
        done = 0
        while True:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(NEXT_TIMES).fetchone()
            rows = conn.execute(TAKE, ("celery", 4)).fetchall()
            conn.executemany("DELETE FROM messages WHERE n = ?", [(row[0],) for row in rows])
            conn.execute("COMMIT")
            if not rows:
                return done
            done += len(rows)

    return run


def take_huey(path: Path, n: int) -> Callable[[], int]:
    storage = _huey(path)
    for _ in range(n):
        storage.enqueue(BODY % str(uuid.uuid4()).encode())

    def run() -> int:
        done = 0
        while storage.dequeue() is not None:
            done += 1
        return done

    return run


WAYS: dict[str, list[tuple[str, Callable[[Path, int], Callable[[], int]]]]] = {
    "enqueue": [
        ("beatq store", send_store),
        ("beatq SQL", send_sql),
        ("Huey storage", send_huey),
    ],
    "drain": [
        ("beatq store", take_store),
        ("beatq SQL", take_sql),
        ("beatq SQL, one commit for 4", take_sql_4),
        ("Huey storage", take_huey),
    ],
}


def measure(make: Callable[[Path, int], Callable[[], int]], n: int, tmp: Path) -> float:
    """CPU µs per task of one run on a fresh file."""
    folder = Path(tempfile.mkdtemp(dir=tmp))
    run = make(folder / "floor.db", n)
    start = time.process_time()
    done = run()
    return (time.process_time() - start) / done * 1e6


def frames(make: Callable[[Path, int], Callable[[], int]], n: int, tmp: Path) -> dict[str, float]:
    """WAL frames per commit of one run, by the table or index each frame is a page of (the
    frames' page numbers read from the WAL, named by the `dbstat` table before the run, or
    after it for a page the run added). A read transaction held meanwhile keeps every
    frame in the WAL: no checkpoint starts it over."""
    folder = Path(tempfile.mkdtemp(dir=tmp))
    path = folder / "floor.db"
    run = make(path, n)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    names = dict(conn.execute("SELECT pageno, name FROM dbstat"))
    conn.execute("BEGIN")
    conn.execute("SELECT 1 FROM sqlite_master").fetchone()
    run()
    conn.execute("COMMIT")
    # a page the run added to the file: named by what holds it at the end
    for number, name in conn.execute("SELECT pageno, name FROM dbstat"):
        names.setdefault(number, name)
    wal = Path(f"{path}-wal").read_bytes()
    page = struct.unpack(">I", wal[8:12])[0]
    counts: dict[str, int] = {}
    commits = 0
    for offset in range(32, len(wal) - 23, page + 24):
        number, size_after = struct.unpack(">II", wal[offset : offset + 8])
        name = names.get(number, "pages freed")
        counts[name] = counts.get(name, 0) + 1
        commits += size_after > 0  # a commit's last frame gives the file's size
    return {name: count / commits for name, count in counts.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=4000, help="tasks per run")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    loads = []
    with tempfile.TemporaryDirectory(prefix="sqlite-floor-") as tmp:
        for phase, ways in WAYS.items():
            cpu: dict[str, list[float]] = {label: [] for label, _ in ways}
            for run in range(args.repeat):
                loads.append(os.getloadavg()[0])
                for label, make in ways if run % 2 == 0 else ways[::-1]:
                    cpu[label].append(measure(make, args.n, Path(tmp)))
            print(f"{phase}: CPU µs per task, median [min-max] of {args.repeat} runs")
            for label, _ in ways:
                values = cpu[label]
                print(
                    f"  {label:30s} {statistics.median(values):6.1f} "
                    f"[{min(values):.1f}-{max(values):.1f}]"
                )
            for label, make in ways:
                if make in (send_store, take_store):
                    continue  # the same statements as beatq SQL
                counts = frames(make, args.n, Path(tmp))
                shown = ", ".join(f"{name} {count:.2f}" for name, count in counts.items())
                print(f"  WAL frames a commit, {label}: {sum(counts.values()):.2f} ({shown})")
    print(f"load average (1 min) {min(loads):.1f}-{max(loads):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
