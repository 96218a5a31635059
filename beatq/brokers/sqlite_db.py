"""The SQLite file under the sqlite backend: schema, connections, transactions, waiting.

Connections. One per thread and per process: a connection must never cross a fork
(SQLite keeps per-process lock bookkeeping, and a child that used or even closed an
inherited handle could corrupt the file). Every use of a connection happens inside
`_Gate.enter()` and `leave()`; before a fork the gate waits for uses in flight, closes every
connection of the process and holds new uses back until the fork is done; each thread
then opens a fresh connection on its next use, in the parent as in the child.

Transactions. Every change is one `BEGIN IMMEDIATE` transaction (the write lock is
taken at once, so two writers never both read and then fail to upgrade), or a single
statement in autocommit mode where one statement does it all (a `delay()`, an ack);
readers are never blocked (WAL). Each thread writes through a connection of its own
that waits for the write lock in short steps (see `_locking`). `synchronous=NORMAL`: a
commit survives the process being killed; a power cut may lose the last commits but
never corrupts the file.

Waiting. SQLite cannot notify another process: a commit wakes the waiters of every
process through the file's wake file (sqlite_wake: a futex in a shared page, Linux), and
`poll` runs the real query only when `PRAGMA data_version` (it changes whenever another
connection commits) says the file changed, or a due time came. Past its first quarter
second a wait looks at most every 5 ms however busy the file is; a look every 20 ms
stays as a bound on a missed wake-up. Where there are no futexes (or no slot is free)
`poll` checks data_version every 1 ms for the first quarter second of a wait, every 20
ms after that; commits in the same process wake local waiters at once. An idle waiter
spends well under 1% of a CPU either way.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

from ..exceptions import BrokerError, ConfigurationError
from . import sqlite_wake

T = TypeVar("T")

SCHEMA_VERSION = 12  # every statement is IF NOT EXISTS: a newer version only adds,
# except version 12's new `messages` (see _set_old_messages_aside).
# Columns added to the messages table of versions before 12, put in before it is copied.
OLD_COLUMNS = [
    ("token", "TEXT"),  # version 3
    ("ack_at_claim", "INTEGER NOT NULL DEFAULT 0"),  # version 5
    ("redelivered", "INTEGER NOT NULL DEFAULT 0"),  # version 8
]
# The states of a message, and the bits of its `flags`.
READY, DELAYED, CLAIMED = 0, 1, 2
ACK_AT_CLAIM = 1  # the sender's word: see records.Outgoing
REDELIVERED = 2  # put back as its claim expired: see records.Claim
# A ready message's `seq` orders its queue, lowest first, in three bands: the due lane
# (delayed messages that fell due, earliest eta first; why: claim.lua) from DUE_LANE up,
# then the head (messages put back: expired claims, releases) down from 0, then the tail
# (messages sent) all at 1, in the order of their row number `n`.
DUE_LANE = -(2**40)
HEAD_BAND = -(2**39)  # the lowest a head reaches (a message released 2**39 times at once)
# Priorities. The three bands of a message of priority p lie PRIORITY_STEP * p lower (its
# `offset`): a claim's ORDER BY seq takes a higher priority first with no column, index or
# query of its own, and a queue never sent a priority numbers its messages as before. A
# priority's numbers span [offset + DUE_LANE, offset + TAIL_END); a claimed or delayed
# message keeps its offset in `seq`, so it goes back to its priority's bands.
PRIORITY_STEP = 2**42
TAIL_END = 2**41


def offset_of(priority: int) -> int:
    return -priority * PRIORITY_STEP


def priority_of(seq: int) -> int:
    """The priority whose numbers hold `seq`."""
    return -((seq - DUE_LANE) // PRIORITY_STEP)


def tail_of(seq: int) -> int:
    """The tail's number of `seq`'s priority: where a message sent at that priority goes."""
    return offset_of(priority_of(seq)) + 1


SCHEMA = """
-- version 12: the row number orders a queue's tail (a send is one INSERT that reads
-- nothing), states and flags are small integers, one time column
CREATE TABLE IF NOT EXISTS messages (
    n      INTEGER PRIMARY KEY,     -- the rowid: a new message's is above every stored one
    id     TEXT NOT NULL UNIQUE,
    queue  TEXT NOT NULL,
    state  INTEGER NOT NULL,        -- READY, DELAYED or CLAIMED
    seq    INTEGER NOT NULL,        -- place in the queue while ready: (seq, n), lowest first
    at     REAL,                    -- the eta while delayed, the deadline while claimed
    token  TEXT,                    -- while claimed: the delivery's token
    flags  INTEGER NOT NULL DEFAULT 0,  -- ACK_AT_CLAIM | REDELIVERED
    body   BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_ready ON messages (queue, seq) WHERE state = 0;
CREATE INDEX IF NOT EXISTS messages_delayed ON messages (at) WHERE state = 1;
CREATE INDEX IF NOT EXISTS messages_claimed ON messages (at) WHERE state = 2;

CREATE TABLE IF NOT EXISTS results (   -- final states (SUCCESS, FAILURE, REVOKED)
    task_id TEXT PRIMARY KEY,
    meta    BLOB NOT NULL,
    expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS results_expires ON results (expires);
CREATE TABLE IF NOT EXISTS states (    -- the latest non-final state (STARTED, RETRY)
    task_id TEXT PRIMARY KEY,
    meta    BLOB NOT NULL,
    expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS states_expires ON states (expires);

CREATE TABLE IF NOT EXISTS chords (
    grp     TEXT PRIMARY KEY,
    fired   INTEGER NOT NULL DEFAULT 0,   -- the unlock message was sent
    expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS chords_expires ON chords (expires);
CREATE TABLE IF NOT EXISTS chord_members (
    grp    TEXT NOT NULL,
    member TEXT NOT NULL,
    PRIMARY KEY (grp, member)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS finish_tokens (  -- finishes done: a retried one does nothing
    token   TEXT PRIMARY KEY,
    expires REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS dead_letters (
    id     TEXT PRIMARY KEY,
    queue  TEXT NOT NULL,
    body   BLOB NOT NULL,
    reason TEXT NOT NULL,
    time   REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_time ON dead_letters (time);

CREATE TABLE IF NOT EXISTS leases (
    name    TEXT PRIMARY KEY,
    holder  TEXT,                 -- NULL once released
    token   INTEGER NOT NULL,     -- the last fencing token handed out, never lower
    expires REAL,
    since   REAL                  -- when the holder acquired it
);

CREATE TABLE IF NOT EXISTS beat_entries (
    name     TEXT PRIMARY KEY,
    settled  REAL,                -- runs at or before this instant are done
    next_run REAL,
    info     BLOB                 -- the beat's own JSON record
);
CREATE TABLE IF NOT EXISTS beat_paused (name TEXT PRIMARY KEY);

CREATE TABLE IF NOT EXISTS workers (
    name    TEXT PRIMARY KEY,
    info    BLOB NOT NULL,
    expires REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS events (   -- the event stream, capped to the newest rows
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS revoked (
    task_id   TEXT PRIMARY KEY,
    time      REAL NOT NULL,
    terminate INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS revoked_time ON revoked (time);

-- app.schedules (version 6): entries added at run time, requests to run them out of
-- turn, and each entry's run history
CREATE TABLE IF NOT EXISTS schedule_specs (name TEXT PRIMARY KEY, spec BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS schedule_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS schedule_requests (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    id     TEXT NOT NULL UNIQUE,
    body   BLOB NOT NULL,
    cursor REAL,                  -- the last slot sent for it
    done   REAL                   -- when it was done
);
CREATE TABLE IF NOT EXISTS schedule_history (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS schedule_history_name ON schedule_history (name, seq);
-- version 9: which entry changed (or went) at which version, for the leader
CREATE TABLE IF NOT EXISTS schedule_log (
    name    TEXT PRIMARY KEY,
    version INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS schedule_log_version ON schedule_log (version);

-- the control channel (version 7)
CREATE TABLE IF NOT EXISTS control (  -- the control channel, capped to the newest rows
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS replies (  -- workers' replies to control commands
    command TEXT NOT NULL,
    worker  TEXT NOT NULL,
    data    BLOB NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (command, worker)
) WITHOUT ROWID;

-- the timeline (version 10): workers' and the beat's samples, one per writer and interval
CREATE TABLE IF NOT EXISTS timeline (at REAL NOT NULL, data BLOB NOT NULL UNIQUE);
CREATE INDEX IF NOT EXISTS timeline_at ON timeline (at);

-- live beats (version 11): what `beatq status` shows of each, as workers' heartbeats
CREATE TABLE IF NOT EXISTS beats (
    name    TEXT PRIMARY KEY,
    info    BLOB NOT NULL,
    expires REAL NOT NULL
);
"""

POLL_FAST = 0.001  # seconds between data_version checks early in a wait
POLL_SLOW = 0.02  # ... once it lasted FAST_FOR seconds: a sleep costs ~40 us of CPU
FAST_FOR = 0.25
WAKE_GAP = 0.005  # seconds between looks of a wait past FAST_FOR woken by commits
BEGIN_RETRY_FIRST = 0.0002  # seconds between attempts to take the write lock, doubling
BEGIN_RETRY_MAX = 0.002  # ... up to this


def path_of(url: str) -> str:
    """The file of `sqlite:///relative.db` or `sqlite:////absolute.db`, made absolute."""
    parts = urlsplit(url)
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if parts.netloc or not path or path == ":memory:":
        raise ConfigurationError(
            f"broker URL {url!r} names no file: use sqlite:///relative/file.db or "
            "sqlite:////absolute/file.db (memory:// for one process)"
        )
    return os.path.abspath(path)


def is_relative(url: str) -> bool:
    """Whether the file of a sqlite URL is relative to the working directory."""
    return not urlsplit(url).path.startswith("//")


class _Gate:
    """Every connection of the process, and the fork guard described above."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.active = 0  # connection uses in flight
        self.closing = False  # a fork (or close) waits: new uses wait
        self.generation = 0  # bumped when every connection was closed
        self.handles: weakref.WeakSet[_Handle] = weakref.WeakSet()

    def enter(self) -> None:
        """A use of a connection begins (it waits while a fork or close is under way)."""
        with self.lock:
            while self.closing:
                self.cond.wait()
            self.active += 1

    def leave(self) -> None:
        with self.lock:
            self.active -= 1
            if self.closing and self.active <= 0:  # a fork or close waits for this one
                self.cond.notify_all()

    def _close(self, only: Callable[[_Handle], bool]) -> None:
        # with `cond` held: hold new uses back, wait for those in flight, close
        self.closing = True
        while self.active > 0:
            self.cond.wait()
        for handle in list(self.handles):
            if only(handle):
                handle.close()

    def close_all(self, only: Callable[[_Handle], bool]) -> None:
        with self.cond:
            self._close(only)
            self.closing = False
            self.cond.notify_all()

    def before_fork(self) -> None:
        with self.cond:
            self._close(lambda handle: True)
            self.generation += 1
        # `closing` stays set (and other threads wait) until the fork is done

    def after_fork_in_parent(self) -> None:
        with self.cond:
            self.closing = False
            self.cond.notify_all()


_gate = _Gate()


def _after_fork_in_child() -> None:
    global _gate, _changes, _changes_lock
    # the parent's threads are gone and its locks may be held: start afresh
    generation = _gate.generation
    _gate = _Gate()
    _gate.generation = generation + 1
    _changes, _changes_lock = {}, threading.Lock()


os.register_at_fork(
    before=lambda: _gate.before_fork(),
    after_in_parent=lambda: _gate.after_fork_in_parent(),
    after_in_child=_after_fork_in_child,
)


class _Handle:
    """One thread's connections to one file: one to read, whose locks wait in SQLite's
    busy handler, and one to write, which waits for the write lock in `Database._locking`
    (two, as switching one connection's busy timeout costs two statements a write)."""

    def __init__(self, db: Database, conn: sqlite3.Connection) -> None:
        self.db = db
        self.conn = conn
        self.writer: sqlite3.Connection | None = None  # opened at the first write
        self.pid = os.getpid()
        self.generation = _gate.generation
        self.closed = False

    def usable(self) -> bool:
        return not self.closed and self.pid == os.getpid() and self.generation == _gate.generation

    def close(self) -> None:
        if not self.closed and self.pid == os.getpid():
            self.closed = True
            self.conn.close()
            if self.writer is not None:
                self.writer.close()


class _Changes:
    """Commits made in this process to one file: local waiters wake without polling."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.count = 0
        self.waiters = 0  # threads in `wait`: with none, a commit notifies no one

    def committed(self) -> None:
        with self.lock:  # the lock itself: Condition's own methods cost ~1 us a commit
            self.count += 1
            if self.waiters:
                self.cond.notify_all()

    def wait(self, seen: int, timeout: float) -> None:
        with self.lock:
            if self.count == seen:
                self.waiters += 1
                try:
                    self.cond.wait(timeout)
                finally:
                    self.waiters -= 1


_changes: dict[str, _Changes] = {}
_changes_lock = threading.Lock()


def _changes_of(path: str) -> _Changes:
    with _changes_lock:
        found = _changes.get(path)
        if found is None:
            found = _changes[path] = _Changes()
        return found


# Connections a fork without hooks left behind: kept, since closing a handle of the
# parent's in a child would touch the parent's locks.
_abandoned: list[_Handle] = []


def _unavailable(path: str, exc: sqlite3.DatabaseError) -> BrokerError | None:
    """The BrokerError a failed use raises in place of `exc`: for locked past
    busy_timeout, I/O error, cannot open, not a database; None for the other kinds
    (IntegrityError, ProgrammingError...), which are bugs and stay what they are."""
    if type(exc) not in (sqlite3.OperationalError, sqlite3.DatabaseError):
        return None
    return BrokerError(f"SQLite database {path} is unavailable: {exc}")


class _Use:
    """One use of this thread's connection (`Database.read` and `write`): inside the
    gate, SQLite's errors told as `_unavailable`; a write is one BEGIN IMMEDIATE
    transaction, committed at the end (rolled back if the block raised). A class, not a
    generator: the broker's every call goes through it."""

    __slots__ = ("db", "writes", "gate", "conn")

    def __init__(self, db: Database, writes: bool) -> None:
        self.db = db
        self.writes = writes

    def __enter__(self) -> sqlite3.Connection:
        self.gate = gate = _gate
        gate.enter()
        try:
            self.conn = conn = self.db._connection(self.writes)
            if self.writes:
                self.db._locking(conn, "BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as exc:
            gate.leave()
            if (error := _unavailable(self.db.path, exc)) is None:
                raise
            raise error from exc
        except BaseException:
            gate.leave()
            raise
        return conn

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        try:
            if self.writes:
                conn = self.conn
                try:
                    if kind is None:
                        conn.execute("COMMIT")
                finally:  # the block raised, or the commit failed: the write lock goes
                    if conn.in_transaction:
                        conn.rollback()
        except sqlite3.DatabaseError as failed:
            if (error := _unavailable(self.db.path, failed)) is None:
                raise
            raise error from failed
        finally:
            self.gate.leave()
        if isinstance(exc, sqlite3.DatabaseError):
            if (error := _unavailable(self.db.path, exc)) is not None:
                raise error from exc
            return
        if self.writes and kind is None:
            self.db.committed()


def _set_old_messages_aside(conn: sqlite3.Connection) -> bool:
    """Rename the messages table of a file of a version before 12 to `messages_old`,
    with the columns later versions added and without its indexes (their names are the
    new table's); True if there was one."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(messages)")}
    if not columns or "n" in columns:
        return False
    for column, kind in OLD_COLUMNS:
        if column not in columns:
            conn.execute(f"ALTER TABLE messages ADD COLUMN {column} {kind}")
    for index in ("messages_ready", "messages_delayed", "messages_claimed"):
        conn.execute(f"DROP INDEX IF EXISTS {index}")
    conn.execute("ALTER TABLE messages RENAME TO messages_old")
    return True


_OLD_STATES = {"ready": READY, "delayed": DELAYED, "claimed": CLAIMED}


def _copy_old_messages(conn: sqlite3.Connection) -> None:
    """Every message of `messages_old` into the new table, as it was: its state, its
    time, its token and flags; a message of a tail (numbered from 1 up then) at its
    tail's number, the row numbers given in the old order."""

    def rows() -> Iterator[tuple[Any, ...]]:
        for id_, queue, body, state, seq, eta, deadline, token, ack, again in conn.execute(
            "SELECT id, queue, body, state, seq, eta, deadline, token, ack_at_claim, "
            "redelivered FROM messages_old ORDER BY seq, rowid"
        ):
            state = _OLD_STATES[state]
            if state != DELAYED and seq >= tail_of(seq):
                seq = tail_of(seq)
            at = eta if state == DELAYED else deadline if state == CLAIMED else None
            flags = (ACK_AT_CLAIM if ack else 0) | (REDELIVERED if again else 0)
            yield id_, queue, state, seq, at, token, flags, body

    conn.executemany(
        "INSERT INTO messages (id, queue, state, seq, at, token, flags, body) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        rows(),
    )
    conn.execute("DROP TABLE messages_old")


class Database:
    """One SQLite file, used from any thread and any process."""

    def __init__(self, path: str, busy_timeout: float = 5.0) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.local = threading.local()
        self._changes: tuple[dict[str, _Changes], _Changes] | None = None
        self._wake: tuple[object, sqlite_wake.Wake | None] | None = None

    @property
    def changes(self) -> _Changes:
        # per process: a fork starts a new registry (`_changes`), looked up once in each
        known = self._changes
        if known is None or known[0] is not _changes:
            known = self._changes = (_changes, _changes_of(self.path))
        return known[1]

    @property
    def wake(self) -> sqlite_wake.Wake | None:
        """This process's wake-ups for the file (None: waits poll); see sqlite_wake."""
        known = self._wake
        if known is None or known[0] is not sqlite_wake.registry():
            known = self._wake = (sqlite_wake.registry(), sqlite_wake.wake_of(self.path))
        return known[1]

    def committed(self) -> None:
        """After a commit: wake this file's waiters, in this process and in others (a
        process with a wake slot waits only on that; one without waits on `changes`)."""
        wake = self.wake
        if wake is None:
            self.changes.committed()
            return
        if wake.slot is None:
            self.changes.committed()
        wake.changed()

    def _handle(self) -> _Handle:
        try:
            handle: _Handle | None = self.local.handle
        except AttributeError:
            handle = None
        if handle is None or not handle.usable():
            if handle is not None and not handle.closed and handle.pid != os.getpid():
                _abandoned.append(handle)
            handle = _Handle(self, self._open())
            self.local.handle = handle
            with _gate.lock:
                _gate.handles.add(handle)
        return handle

    def _connection(self, write: bool = False) -> sqlite3.Connection:
        handle = self._handle()
        if not write:
            conn = handle.conn
        elif handle.writer is None:
            conn = handle.writer = self._open()
            conn.execute("PRAGMA busy_timeout = 0")  # see _locking
        else:
            conn = handle.writer
        if conn.in_transaction:  # left open by an exception raised mid-way (a signal)
            conn.rollback()
        return conn

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout,
            isolation_level=None,  # we say BEGIN and COMMIT ourselves
            check_same_thread=False,  # only its thread uses it; a fork closes it from another
        )
        try:
            conn.execute("PRAGMA synchronous = NORMAL")
            # 8 MB of page cache (SQLite's default is 2): a backlog's indexes stay in it
            conn.execute("PRAGMA cache_size = -8000")
            self._setup(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _setup(self, conn: sqlite3.Connection) -> None:
        if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return
        # Switching a fresh file to WAL can report "locked" at once, without the busy
        # handler, when several processes start together: retry until busy_timeout.
        end = time.monotonic() + self.busy_timeout
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.OperationalError as exc:
                mode = str(exc)
            if mode == "wal":
                break
            if time.monotonic() > end:
                raise sqlite3.OperationalError(f"cannot switch to WAL mode: {mode}")
            time.sleep(0.01)
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                old = _set_old_messages_aside(conn)
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                if old:
                    _copy_old_messages(conn)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.rollback()
            raise

    def read(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A connection in autocommit mode: each statement sees one consistent state."""
        return _Use(self, False)

    def _locking(self, conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()):
        """Execute `sql`, which takes the write lock, waiting for the lock here rather than
        in SQLite's busy handler (the writer has none): that one sleeps up to 100 ms
        between attempts, so under steady writes a waiting writer would lag that long
        (and lose the lock to the busy one again). A statement refused the lock did
        nothing, so it is simply tried again."""
        end = None
        pause = BEGIN_RETRY_FIRST
        while True:
            try:
                return conn.execute(sql, params)
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc):
                    raise
                now = time.monotonic()
                end = end or now + self.busy_timeout
                if now >= end:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, BEGIN_RETRY_MAX)

    def write(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A connection inside one BEGIN IMMEDIATE transaction, committed at the end."""
        return _Use(self, True)

    def write_one(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One statement as its own transaction (autocommit: a third of the statements of
        BEGIN, statement, COMMIT); the number of rows it changed."""
        gate = _gate
        gate.enter()
        try:
            changed = self._locking(self._connection(write=True), sql, params).rowcount
        except sqlite3.DatabaseError as exc:
            if (error := _unavailable(self.path, exc)) is None:
                raise
            raise error from exc
        finally:
            gate.leave()
        self.committed()
        return changed

    def poll(
        self,
        probe: Callable[[sqlite3.Connection, float], tuple[T | None, float | None]],
        timeout: float | None,
    ) -> T | None:
        """Run `probe(conn, now)` until it returns a value; None after `timeout` seconds.

        `probe` also returns when to run it again though nothing changed (a due time, as
        POSIX seconds), or None. It runs again at once whenever the file changed.
        """
        end = None if timeout is None else time.monotonic() + timeout
        seen_version = None
        due: float | None = None
        started = time.monotonic()
        changes = self.changes
        wake = self.wake
        if wake is not None and not wake.waits():
            wake = None  # no slot free: this process polls
        if wake is not None:
            wake.begin()
        try:
            while True:
                local = changes.count
                seen = 0 if wake is None else wake.value()
                looked = False
                with self.read() as conn:
                    version = conn.execute("PRAGMA data_version").fetchone()[0]
                    now = time.time()
                    if version != seen_version or (due is not None and now >= due):
                        seen_version, looked = version, True
                        value, due = probe(conn, now)
                        if value is not None:
                            return value
                mono = time.monotonic()
                if end is not None and mono >= end:
                    return None
                if wake is None:
                    # every commit anywhere (heartbeats too) changes data_version: only
                    # the start of a wait, when an answer is most likely, is polled fast
                    pause = POLL_FAST if mono - started < FAST_FOR else POLL_SLOW
                elif looked and mono - started >= FAST_FOR:
                    # a long wait looks at most every WAKE_GAP, however busy the file; its
                    # mark is off meanwhile (committers skip the wake): after the gap the
                    # loop checks the file again before it sleeps
                    wake.end()
                    try:
                        time.sleep(WAKE_GAP if end is None else min(WAKE_GAP, end - mono))
                    finally:
                        wake.begin()
                    continue
                else:
                    pause = POLL_SLOW  # woken by a commit; this only bounds a missed one
                if end is not None:
                    pause = min(pause, max(end - mono, 0.0))
                if due is not None:
                    pause = min(pause, max(due - time.time(), 0.0))
                if wake is None:
                    changes.wait(local, pause)
                else:
                    wake.sleep(seen, pause)
        finally:
            if wake is not None:
                wake.end()

    def close(self) -> None:
        """Close this file's connections in every thread; later uses open new ones."""
        _gate.close_all(lambda handle: handle.db is self)
