"""The SQLite backend: `sqlite:///relative/file.db` or `sqlite:////absolute/file.db`.

The embedded default: no server, and several processes of one host share the file.
Tables (sqlite_db.SCHEMA): `messages` holds every message not yet acknowledged with its
state (ready, delayed until `at`, claimed until `at`), its `flags` (the delivery property
`ack_at_claim`, redelivered) and, while ready, its place (`seq`, `n`) in its queue;
`results` and `states` the final and the latest non-final task states; `chords` and
`chord_members` the chord joins; `dead_letters`; `leases` (with the last fencing token);
`beat_entries` and `beat_paused`; `workers`; `events` (the capped event stream),
`revoked`, `control` (the control channel) and `replies`.

Leases and beat entries follow the rules of rows.py, over `_Rows` (one transaction).
Every operation of the interface is one transaction, so it is atomic as a Redis script
is; times are the caller's `time.time()` (one host, one clock). `wait` and
`wait_result` sleep until a commit in any process wakes them (sqlite_wake), then look
(see sqlite_db.Database.poll).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from .records import (
    ChordJoin,
    Claim,
    Claimed,
    DeadLetter,
    EntryState,
    Outgoing,
    RunRequest,
    Topology,
)
from .roles import (
    EXPIRED_KEPT,
    NONE_STALE,
    Backend,
    Finish,
    Take,
    expired_key,
    forget_elsewhere,
    new_token,
)
from .rows import LeaseRow, RowBeatState
from .schedule_rows import RowSchedules
from .sqlite_db import (
    ACK_AT_CLAIM,
    DELAYED,
    DUE_LANE,
    HEAD_BAND,
    READY,
    REDELIVERED,
    TAIL_END,
    Database,
    is_relative,
    offset_of,
    path_of,
    priority_of,
)
from .urls import shown_url

log = logging.getLogger("beatq.broker")

SWEEP_EVERY = 5.0  # seconds between deletions of expired results, chords and workers
CHUNK = 500  # ids per statement, well under SQLite's limit on parameters
RESTORE_LIMIT = 1000  # expired claims or due messages put back per claim, as Redis does
TOKEN_TTL = 86400.0  # seconds a finish's token is remembered


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


# Every statement names a state by its number (READY 0, DELAYED 1, CLAIMED 2), as the
# partial indexes do: a parameter would keep the planner from them.
# One message as one statement, which reads nothing: ready at its priority's tail (the
# row number orders the tail), or delayed until its eta.
PUT = (
    "INSERT OR REPLACE INTO messages (id, queue, state, seq, at, flags, body) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)

# The earliest deadline of a claim and eta of a delayed message (each from its index).
NEXT_TIMES = (
    "SELECT (SELECT MIN(at) FROM messages WHERE state = 2), "
    "(SELECT MIN(at) FROM messages WHERE state = 1)"
)

# A live claim's message goes; a stale claim's (delivered again since) stays.
ACK = "DELETE FROM messages WHERE n = ? AND state = 2 AND token = ?"


def _row(m: Outgoing, now: float) -> tuple[Any, ...]:
    """The values of PUT for `m`."""
    flags = ACK_AT_CLAIM if m.ack_at_claim else 0
    offset = offset_of(m.priority) if m.priority else 0
    if m.eta is not None and m.eta > now:
        return (m.id, m.queue, DELAYED, offset, m.eta, flags, m.body)
    return (m.id, m.queue, READY, offset + 1, None, flags, m.body)


def _put(conn: sqlite3.Connection, messages: Iterable[Outgoing], now: float) -> None:
    """Store messages: delayed until their eta, or ready at the tail of their queue."""
    conn.executemany(PUT, [_row(m, now) for m in messages])


def _token(claim: Claim) -> tuple[int, str]:
    """The row number and the stored token of a claim's delivery (its `token` is both);
    a claim of no delivery (no token) matches no row."""
    n, _, token = claim.token.partition(".")
    return (int(n) if n.isdigit() else -1), token


def _stale(conn: sqlite3.Connection, missed: Sequence[Claim], now: float) -> frozenset[str]:
    """Of the claims whose acknowledgement deleted nothing, the stale ones (Store.finish):
    the message is stored still (waiting, or another worker's), or the claim expired (the
    message may be gone, run elsewhere). Neither: it was acknowledged already. A statement
    here commits or raises (no reply to lose)."""
    return frozenset(
        c.id
        for c in missed
        if conn.execute(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE id = ?) "
            "OR EXISTS (SELECT 1 FROM finish_tokens WHERE token = ? AND expires > ?)",
            (c.id, expired_key(c.id, c.token), now),
        ).fetchone()[0]
    )


def _due_lane_end(conn: sqlite3.Connection, queue: str, offset: int) -> int:
    """The last number of a priority's due lane (`offset`: that priority's), for a
    message to follow (offset + DUE_LANE when there is none)."""
    last = conn.execute(
        "SELECT MAX(seq) FROM messages WHERE state = 0 AND queue = ? AND seq >= ? AND seq < ?",
        (queue, offset + DUE_LANE, offset + HEAD_BAND),
    ).fetchone()[0]
    return offset + DUE_LANE if last is None else last


def _due(conn: sqlite3.Connection, until: float) -> list[tuple[str, str, int]]:
    """(id, queue, seq) of the delayed messages due by `until`, earliest first."""
    return conn.execute(
        "SELECT id, queue, seq FROM messages WHERE state = 1 AND at <= ? ORDER BY at LIMIT ?",
        (until, RESTORE_LIMIT),
    ).fetchall()


def _to_head(conn: sqlite3.Connection, rows: Sequence[tuple[str, str, int]]) -> None:
    """Make stored messages (id, queue, seq) ready at the head of their queue (in their
    priority's bands), first foremost."""
    _make_ready(conn, rows, due=False)


def _to_due(conn: sqlite3.Connection, rows: Sequence[tuple[str, str, int]]) -> None:
    """Make delayed messages (id, queue, seq) that fell due ready at the end of their
    queue's due lane (in their priority's bands), first foremost."""
    _make_ready(conn, rows, due=True)


def _make_ready(conn: sqlite3.Connection, rows: Sequence[tuple[str, str, int]], due: bool) -> None:
    by_queue: dict[tuple[str, int], list[str]] = {}
    for id_, queue, seq in rows:
        by_queue.setdefault((queue, priority_of(seq or 0)), []).append(id_)
    for (queue, priority), ids in by_queue.items():
        offset = offset_of(priority)
        if due:  # after the last of the due lane
            start = _due_lane_end(conn, queue, offset) + 1
        else:  # before the first of the head (or the tail, numbered 1)
            first = conn.execute(
                "SELECT MIN(seq) FROM messages WHERE state = 0 AND queue = ? "
                "AND seq >= ? AND seq < ?",
                (queue, offset + HEAD_BAND, offset + TAIL_END),
            ).fetchone()[0]
            start = offset + min(1 if first is None else first - offset, 1) - len(ids)
        conn.executemany(
            "UPDATE messages SET state = 0, seq = ?, at = NULL, token = NULL WHERE id = ?",
            [(start + i, id_) for i, id_ in enumerate(ids)],
        )


def _wake_probe(queues: Sequence[str], above: bool = False) -> str:
    """SQL: whether `queues` have ready messages, and when the next eta or claim is due.
    `above`: one more queue and a number follow the queues' parameters: that queue counts
    only with a message numbered below it (of a priority above another)."""
    marks = _marks(len(queues))
    ready = f"EXISTS (SELECT 1 FROM messages WHERE state = 0 AND queue IN ({marks}))"
    if above:
        # a search of its own: one OR inside a single EXISTS scans every ready message
        more = "EXISTS (SELECT 1 FROM messages WHERE state = 0 AND queue = ? AND seq < ?)"
        ready = f"({ready} OR {more})" if queues else more
    return (
        f"SELECT {ready}, "
        "(SELECT MIN(at) FROM messages WHERE state = 1), "
        "(SELECT MIN(at) FROM messages WHERE state = 2)"
    )


class _Rows:
    """rows.Rows over one transaction of the file."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def lease(self, name: str) -> LeaseRow | None:
        row = self.conn.execute(
            "SELECT holder, token, expires, since FROM leases WHERE name = ?", (name,)
        ).fetchone()
        return None if row is None else LeaseRow(row[0], row[1], row[2] or 0.0, row[3] or 0.0)

    def put_lease(self, name: str, row: LeaseRow) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO leases (name, holder, token, expires, since) "
            "VALUES (?, ?, ?, ?, ?)",
            (name, row.holder, row.token, row.expires, row.since),
        )

    def settled(self, entry: str) -> float | None:
        row = self.conn.execute(
            "SELECT settled FROM beat_entries WHERE name = ?", (entry,)
        ).fetchone()
        return None if row is None else row[0]

    def set_entry(
        self, entry: str, settled: float | None, next_run: float | None, info: bytes | None
    ) -> None:
        self.conn.execute(
            "INSERT INTO beat_entries (name, settled, next_run, info) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET settled = COALESCE(excluded.settled, settled), "
            "next_run = excluded.next_run, info = COALESCE(excluded.info, info)",
            (entry, settled, next_run, info),
        )

    def remove_entries(self, entries: Sequence[str]) -> None:
        self.conn.executemany("DELETE FROM beat_entries WHERE name = ?", [(n,) for n in entries])
        self.conn.executemany("DELETE FROM beat_paused WHERE name = ?", [(n,) for n in entries])

    def paused(self, entry: str) -> bool:
        found = self.conn.execute("SELECT 1 FROM beat_paused WHERE name = ?", (entry,))
        return found.fetchone() is not None

    def stored(self, message_id: str) -> bool:
        found = self.conn.execute("SELECT 1 FROM messages WHERE id = ?", (message_id,))
        return found.fetchone() is not None

    def send(self, messages: Sequence[Outgoing], now: float) -> None:
        _put(self.conn, messages, now)


class _ScheduleRows(_Rows):
    """schedule_rows.ScheduleRows over one transaction of the file."""

    def version(self) -> int:
        row = self.conn.execute("SELECT version FROM schedule_version WHERE id = 1").fetchone()
        return 0 if row is None else int(row[0])

    def bump(self) -> None:
        self.conn.execute(
            "INSERT INTO schedule_version (id, version) VALUES (1, 1) "
            "ON CONFLICT (id) DO UPDATE SET version = version + 1"
        )

    def specs(self) -> dict[str, bytes]:
        rows = self.conn.execute("SELECT name, spec FROM schedule_specs ORDER BY name")
        return {name: bytes(spec) for name, spec in rows}

    def has_spec(self, name: str) -> bool:
        found = self.conn.execute("SELECT 1 FROM schedule_specs WHERE name = ?", (name,))
        return found.fetchone() is not None

    def put_spec(self, name: str, spec: bytes) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO schedule_specs (name, spec) VALUES (?, ?)", (name, spec)
        )

    def delete_spec(self, name: str) -> bool:
        gone = self.conn.execute("DELETE FROM schedule_specs WHERE name = ?", (name,))
        return gone.rowcount > 0

    def log_change(self, name: str, version: int) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO schedule_log (name, version) VALUES (?, ?)", (name, version)
        )

    def changes(self, since: int) -> dict[str, bytes | None]:
        rows = self.conn.execute(
            "SELECT l.name, s.spec FROM schedule_log l LEFT JOIN schedule_specs s "
            "ON s.name = l.name WHERE l.version > ? ORDER BY l.name",
            (since,),
        )
        return {name: None if spec is None else bytes(spec) for name, spec in rows}

    def request(self, request_id: str) -> RunRequest | None:
        row = self.conn.execute(
            "SELECT id, body, cursor, done FROM schedule_requests WHERE id = ?", (request_id,)
        ).fetchone()
        return None if row is None else RunRequest(row[0], bytes(row[1]), row[2], row[3])

    def requests(self) -> list[RunRequest]:
        rows = self.conn.execute(
            "SELECT id, body, cursor, done FROM schedule_requests ORDER BY seq"
        )
        return [RunRequest(i, bytes(b), c, d) for i, b, c, d in rows]

    def add_request(self, request_id: str, body: bytes) -> None:
        self.conn.execute(
            "INSERT INTO schedule_requests (id, body) VALUES (?, ?)", (request_id, body)
        )

    def move_request(self, request_id: str, cursor: float, done: float | None) -> None:
        self.conn.execute(
            "UPDATE schedule_requests SET cursor = ?, done = ? WHERE id = ?",
            (cursor, done, request_id),
        )

    def forget_done(self, before: float) -> None:
        self.conn.execute("DELETE FROM schedule_requests WHERE done < ?", (before,))

    def add_history(self, name: str, record: bytes, maxlen: int) -> None:
        self.conn.execute("INSERT INTO schedule_history (name, data) VALUES (?, ?)", (name, record))
        # keep the newest `maxlen`: delete below the maxlen-th newest
        self.conn.execute(
            "DELETE FROM schedule_history WHERE name = ?1 AND seq <= (SELECT seq FROM "
            "schedule_history WHERE name = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
            (name, maxlen),
        )

    def history(self, name: str, limit: int) -> list[bytes]:
        rows = self.conn.execute(
            "SELECT data FROM schedule_history WHERE name = ? ORDER BY seq DESC LIMIT ?",
            (name, limit),
        )
        return [bytes(data) for (data,) in rows]


class SqliteBackend(RowBeatState, RowSchedules, Backend):
    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        options = options or {}
        self.url = url
        self.db = Database(path_of(url), float(options.get("busy_timeout", 5.0)))
        # Say which file is shared: a relative URL means another file in each directory.
        if is_relative(url):
            log.info(
                "broker: SQLite file %s (the relative %s, from the working directory; "
                "processes started elsewhere must name it as sqlite:///%s)",
                self.db.path,
                url,
                self.db.path,
            )
        else:
            log.info("broker: SQLite file %s", self.db.path)
        self.swept = 0.0  # monotonic time of the last sweep of expired rows
        self.busy = False  # the last claim found all it asked for (see take)

    # -- queue ---------------------------------------------------------------------------
    def send(self, messages: Sequence[Outgoing], events: Sequence[bytes] = ()) -> None:
        if len(messages) == 1 and not events:  # delay(): one statement, no transaction
            self.db.write_one(PUT, _row(messages[0], time.time()))
        elif messages or events:
            with self.db.write() as conn:
                _put(conn, messages, time.time())
                self._add_events(conn, events, None)

    def _workable(
        self,
        conn: sqlite3.Connection,
        queues: Sequence[str],
        now: float,
        ahead: float = 0.0,
        above: int | None = None,
    ) -> tuple[bool, float | None, float | None]:
        """Ready messages in `queues` (of the last, above priority `above` if given) or
        something due (a delayed message `ahead` of its eta); the next eta; the next due
        time."""
        if above is None:
            probe = conn.execute(_wake_probe(queues), list(queues))
        else:  # a busy worker's look for more urgent work: usually none, and no write
            params = [*queues[:-1], queues[-1], offset_of(above) + DUE_LANE]
            probe = conn.execute(_wake_probe(queues[:-1], above=True), params)
        ready, eta, deadline = probe.fetchone()
        early = None if eta is None else eta - ahead
        due = min((t for t in (early, deadline) if t is not None), default=None)
        return bool(ready) or (due is not None and due <= now), eta, due

    def take(self, ask: Take) -> Claimed:
        # Look first without the write lock: an idle worker's claim then costs no write.
        # Not after a claim that found all it asked for (a busy worker draining a backlog:
        # more is likely there, and the look would be a read for nothing).
        if not (self.busy and ask.above is None):
            with self.db.read() as conn:
                workable, eta, _ = self._workable(
                    conn, queues=ask.queues, now=time.time(), ahead=ask.ahead, above=ask.above
                )
            if not workable:
                return Claimed([], eta)
        return self._claim(ask)

    def wait_take(self, ask: Take, timeout: float) -> Claimed:
        if self.wait(ask.queues, timeout, ask.ahead):
            return self._claim(ask)  # woken: `take`'s look was just made
        return self.take(ask)

    def _claim(self, ask: Take) -> Claimed:
        queues, count, ahead = ask.queues, ask.count, ask.ahead
        with self.db.write() as conn:
            now = time.time()
            # The earliest claim deadline and eta, from their indexes: the expired claims
            # and due messages are looked for only when there are some.
            first_deadline, next_eta = conn.execute(NEXT_TIMES).fetchone()
            if first_deadline is not None and first_deadline <= now:
                rows = conn.execute(
                    "SELECT id, queue, seq, n, token FROM messages WHERE state = 2 AND at <= ? "
                    "ORDER BY at LIMIT ?",
                    (now, RESTORE_LIMIT),
                ).fetchall()
                # Expired claims go back to the head, marked delivered before; due messages
                # (earliest first) to the due lane.
                conn.executemany(
                    f"UPDATE messages SET flags = flags | {REDELIVERED} WHERE id = ?",
                    [(row[0],) for row in rows],
                )
                # each expired claim remembered a day: its late acknowledgement is stale
                # (see `settle`), beside the finish tokens (a key that expires)
                conn.executemany(
                    "INSERT OR IGNORE INTO finish_tokens (token, expires) VALUES (?, ?)",
                    [
                        (expired_key(id_, f"{n}.{token}"), now + EXPIRED_KEPT)
                        for id_, _, _, n, token in rows
                    ],
                )
                _to_head(conn, [row[:3] for row in rows])
            moved = next_eta is not None and next_eta <= now  # delayed messages made ready
            if moved:
                _to_due(conn, _due(conn, now))
            claims: list[Claim] = []
            deadline = now + ask.visibility
            token = new_token()
            acked = False
            for early in (False, True):
                if early:  # nothing due: what falls due within `ahead` (see Backend.claim)
                    if claims or ahead <= 0 or next_eta is None or next_eta > now + ahead:
                        break
                    soon = _due(conn, now + ahead)
                    moved = True
                    # held by their worker until their eta (see Delivery.claim)
                    conn.executemany(
                        f"UPDATE messages SET flags = flags & ~{ACK_AT_CLAIM} "
                        "WHERE id = ? AND at > ?",
                        [(row[0], now) for row in soon],
                    )
                    _to_due(conn, soon)
                for place, queue in enumerate(queues, 1):
                    if len(claims) >= count:
                        break
                    if ask.above is not None and place == len(queues):
                        # only priorities above `above`: numbers below its due lane
                        rows = conn.execute(
                            "SELECT n, id, body, flags, seq FROM messages "
                            "WHERE state = 0 AND queue = ? AND seq < ? ORDER BY seq, n LIMIT ?",
                            (queue, offset_of(ask.above) + DUE_LANE, count - len(claims)),
                        ).fetchall()
                    else:
                        rows = conn.execute(
                            "SELECT n, id, body, flags, seq FROM messages "
                            "WHERE state = 0 AND queue = ? ORDER BY seq, n LIMIT ?",
                            (queue, count - len(claims)),
                        ).fetchall()
                    held = rows
                    if rows and not claims and ask.ack_first and rows[0][3] & ACK_AT_CLAIM:
                        conn.execute("DELETE FROM messages WHERE n = ?", (rows[0][0],))
                        acked, held = True, rows[1:]
                    if held:
                        conn.executemany(
                            "UPDATE messages SET state = 2, at = ?, token = ? WHERE n = ?",
                            [(deadline, token, row[0]) for row in held],
                        )
                    claims += [
                        Claim(
                            id_,
                            queue,
                            body,
                            f"{n}.{token}",  # see _token
                            bool(flags & REDELIVERED),
                            priority_of(seq) if seq < DUE_LANE else 0,
                        )
                        for n, id_, body, flags, seq in rows
                    ]
            if moved:  # the next eta of those still delayed
                next_eta = conn.execute("SELECT MIN(at) FROM messages WHERE state = 1").fetchone()[
                    0
                ]
        if ask.above is None:
            self.busy = len(claims) >= count
        return Claimed(claims, next_eta, acked)

    def wait(self, queues: Sequence[str], timeout: float, ahead: float = 0.0) -> bool:
        def probe(conn: sqlite3.Connection, now: float) -> tuple[bool | None, float | None]:
            workable, _, due = self._workable(conn, queues, now, ahead)
            return (True if workable else None), due

        return bool(self.db.poll(probe, timeout))

    def renew(self, claims: Sequence[Claim], visibility: float) -> None:
        if claims:
            with self.db.write() as conn:
                deadline = time.time() + visibility
                conn.executemany(
                    "UPDATE messages SET at = ? WHERE n = ? AND state = 2 AND token = ?",
                    [(deadline, *_token(c)) for c in claims],
                )

    def release(self, claims: Sequence[Claim]) -> None:
        if claims:
            with self.db.write() as conn:
                back = []
                for c in claims:
                    row = conn.execute(
                        "SELECT n = ? AND state = 2 AND token IS ? FROM messages WHERE id = ?",
                        (*_token(c), c.id),
                    ).fetchone()
                    # put back, it is acknowledged by its worker (see Delivery.release)
                    if row is None:  # acknowledged already: stored again, body and all
                        conn.execute(
                            "INSERT INTO messages (id, queue, body, state, seq) "
                            "VALUES (?, ?, ?, 2, 0)",
                            (c.id, c.queue, c.body),
                        )
                    elif not row[0]:
                        continue  # delivered again meanwhile: its new holder has it
                    back.append((c.id, c.queue, offset_of(c.priority)))
                conn.executemany(
                    f"UPDATE messages SET flags = flags & ~{ACK_AT_CLAIM} WHERE id = ?",
                    [(b[0],) for b in back],
                )
                _to_head(conn, back)

    def _select(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """The rows of one query, read without the write lock."""
        with self.db.read() as conn:
            return conn.execute(sql, params).fetchall()

    def queue_length(self, queue: str) -> int:
        with self.db.read() as conn:
            return conn.execute(
                "SELECT COUNT(*) FROM messages WHERE state = 0 AND queue = ?", (queue,)
            ).fetchone()[0]

    def purge(self, queues: Sequence[str]) -> int:
        names = list(dict.fromkeys(queues))
        if not names:
            return 0
        with self.db.write() as conn:
            cursor = conn.execute(
                f"DELETE FROM messages WHERE state = 0 AND queue IN ({_marks(len(names))})",
                names,
            )
            return cursor.rowcount

    def scheduled(self, limit: int = 100) -> list[tuple[float, Claim]]:
        rows = self._select(
            "SELECT at, id, queue, body FROM messages WHERE state = 1 ORDER BY at, id LIMIT ?",
            (limit,),
        )
        return [(eta, Claim(id_, queue, body)) for eta, id_, queue, body in rows]

    # -- finishing -------------------------------------------------------------------------
    def settle(self, step: Finish) -> frozenset[str]:
        ack, join = step.ack, step.join
        alone = not (step.results or step.send or join or step.events)
        if len(ack) == 1 and step.token is None and alone:  # an early ack: one statement
            if self.db.write_one(ACK, _token(ack[0])):
                return NONE_STALE
            with self.db.read() as conn:
                return _stale(conn, ack, time.time())
        with self.db.write() as conn:
            now = time.time()
            if step.token is not None:
                done = conn.execute(
                    "INSERT OR IGNORE INTO finish_tokens (token, expires) VALUES (?, ?)",
                    (step.token, now + TOKEN_TTL),
                )
                if done.rowcount == 0:
                    return NONE_STALE
            missed = [c for c in ack if not conn.execute(ACK, _token(c)).rowcount]
            stale = _stale(conn, missed, now) if missed else NONE_STALE
            for r in step.results:
                if r.final:
                    conn.execute("DELETE FROM states WHERE task_id = ?", (r.task_id,))
                table = "results" if r.final else "states"
                conn.execute(
                    f"INSERT OR REPLACE INTO {table} (task_id, meta, expires) VALUES (?, ?, ?)",
                    (r.task_id, r.meta, now + r.ttl),
                )
            if join is not None and self._join(conn, join, now):
                _put(conn, [join.unlock], now)
            # not a message sent in a stale one's stead (see lua/finish.lua)
            _put(conn, [m for m in step.send if m.id not in stale] if stale else step.send, now)
            self._add_events(conn, step.events, None)
            self._sweep(conn, now)
        return stale

    def _join(self, conn: sqlite3.Connection, join: ChordJoin, now: float) -> bool:
        """Count the member; True for the one call that completes the chord."""
        row = conn.execute(
            "SELECT fired, expires FROM chords WHERE grp = ?", (join.group,)
        ).fetchone()
        if row is not None and row[1] <= now:  # expired: as if it never was
            conn.execute("DELETE FROM chord_members WHERE grp = ?", (join.group,))
            row = None
        fired = bool(row[0]) if row is not None else False
        conn.execute(
            "INSERT OR IGNORE INTO chord_members (grp, member) VALUES (?, ?)",
            (join.group, join.member),
        )
        counted = conn.execute(
            "SELECT COUNT(*) FROM chord_members WHERE grp = ?", (join.group,)
        ).fetchone()[0]
        fires = not fired and counted >= join.size
        conn.execute(
            "INSERT OR REPLACE INTO chords (grp, fired, expires) VALUES (?, ?, ?)",
            (join.group, int(fired or fires), now + join.ttl),
        )
        return fires

    def _sweep(self, conn: sqlite3.Connection, now: float) -> None:
        if time.monotonic() - self.swept < SWEEP_EVERY:
            return
        self.swept = time.monotonic()
        conn.execute("DELETE FROM results WHERE expires <= ?", (now,))
        conn.execute("DELETE FROM states WHERE expires <= ?", (now,))
        conn.execute(
            "DELETE FROM chord_members WHERE grp IN (SELECT grp FROM chords WHERE expires <= ?)",
            (now,),
        )
        conn.execute("DELETE FROM chords WHERE expires <= ?", (now,))
        conn.execute("DELETE FROM workers WHERE expires <= ?", (now,))
        conn.execute("DELETE FROM finish_tokens WHERE expires <= ?", (now,))

    # -- results ---------------------------------------------------------------------------
    def _final(self, conn: sqlite3.Connection, task_id: str, now: float) -> bytes | None:
        row = conn.execute(
            "SELECT meta FROM results WHERE task_id = ? AND expires > ?", (task_id, now)
        ).fetchone()
        return None if row is None else row[0]

    def get_result(self, task_id: str) -> bytes | None:
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT meta FROM ("
                "SELECT meta, 0 AS final FROM results WHERE task_id = ?1 AND expires > ?2 "
                "UNION ALL SELECT meta, 1 FROM states WHERE task_id = ?1 AND expires > ?2"
                ") ORDER BY final LIMIT 1",
                (task_id, time.time()),
            ).fetchone()
        return None if row is None else row[0]

    def get_results(self, task_ids: Sequence[str]) -> list[bytes | None]:
        found: dict[str, bytes] = {}
        with self.db.read() as conn:
            now = time.time()
            for chunk in _chunks(list(dict.fromkeys(task_ids))):
                found.update(
                    conn.execute(
                        "SELECT task_id, meta FROM results "
                        f"WHERE task_id IN ({_marks(len(chunk))}) AND expires > ?",
                        (*chunk, now),
                    ).fetchall()
                )
        return [found.get(t) for t in task_ids]

    def wait_result(self, task_id: str, timeout: float | None) -> bytes | None:
        return self.db.poll(lambda conn, now: (self._final(conn, task_id, now), None), timeout)

    def forget(self, task_id: str) -> None:
        with self.db.write() as conn:
            conn.execute("DELETE FROM results WHERE task_id = ?", (task_id,))
            conn.execute("DELETE FROM states WHERE task_id = ?", (task_id,))

    # -- dead letters ----------------------------------------------------------------------
    def dead_letter(self, claim: Claim, reason: str) -> None:
        with self.db.write() as conn:
            held = conn.execute(ACK, _token(claim))
            if (
                held.rowcount != 1
                and conn.execute("SELECT 1 FROM messages WHERE id = ?", (claim.id,)).fetchone()
            ):
                return
            conn.execute(
                "INSERT OR REPLACE INTO dead_letters (id, queue, body, reason, time) "
                "VALUES (?, ?, ?, ?, ?)",
                (claim.id, claim.queue, claim.body, reason, time.time()),
            )

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        rows = self._select(
            "SELECT id, queue, reason, time, body FROM dead_letters ORDER BY time, rowid LIMIT ?",
            (limit,),
        )
        return [DeadLetter(*row) for row in rows]

    def requeue_dead(self, ids: Sequence[str] | None = None) -> list[str]:
        with self.db.write() as conn:
            if ids is None:
                rows = conn.execute(
                    "SELECT id, queue, body FROM dead_letters ORDER BY time, rowid"
                ).fetchall()
            else:
                rows = []
                for id_ in dict.fromkeys(ids):
                    row = conn.execute(
                        "SELECT id, queue, body FROM dead_letters WHERE id = ?", (id_,)
                    ).fetchone()
                    if row is not None:
                        rows.append(row)
            _put(conn, [Outgoing(queue, id_, body) for id_, queue, body in rows], time.time())
            moved = [(r[0],) for r in rows]
            conn.executemany("DELETE FROM dead_letters WHERE id = ?", moved)
            if self._results is None:  # the FAILURE stored as it died: a waiter waits anew
                conn.executemany("DELETE FROM results WHERE task_id = ?", moved)
                conn.executemany("DELETE FROM states WHERE task_id = ?", moved)
        if self._results is not None:
            forget_elsewhere(self.results, [r[0] for r in rows])
        return [r[0] for r in rows]

    # -- beat state (leases and dispatch: RowBeatState) ------------------------------------
    @contextlib.contextmanager
    def rows(self, write: bool = True) -> Iterator[_Rows]:
        with self.db.write() if write else self.db.read() as conn:
            yield _Rows(conn)

    @contextlib.contextmanager
    def schedule_rows(self, write: bool = True) -> Iterator[_ScheduleRows]:
        with self.db.write() if write else self.db.read() as conn:
            yield _ScheduleRows(conn)

    def beat_entries(self) -> dict[str, EntryState]:
        rows = self._select(
            "SELECT e.name, e.settled, e.next_run, p.name IS NOT NULL, e.info "
            "FROM beat_entries e LEFT JOIN beat_paused p ON p.name = e.name "
            "ORDER BY e.name"
        )
        return {
            name: EntryState(name, settled, next_run, bool(paused), info)
            for name, settled, next_run, paused, info in rows
        }

    def beat_entry(self, name: str) -> EntryState | None:
        rows = self._select(
            "SELECT e.name, e.settled, e.next_run, p.name IS NOT NULL, e.info "
            "FROM beat_entries e LEFT JOIN beat_paused p ON p.name = e.name WHERE e.name = ?",
            (name,),
        )
        for found, settled, next_run, paused, info in rows:
            return EntryState(found, settled, next_run, bool(paused), info)
        return None

    def beat_pause(self, entry: str, paused: bool) -> None:
        with self.db.write() as conn:
            if paused:
                conn.execute("INSERT OR IGNORE INTO beat_paused (name) VALUES (?)", (entry,))
            else:
                conn.execute("DELETE FROM beat_paused WHERE name = ?", (entry,))

    # -- workers ---------------------------------------------------------------------------
    def heartbeat(self, worker: str, info: bytes, ttl: float) -> None:
        with self.db.write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO workers (name, info, expires) VALUES (?, ?, ?)",
                (worker, info, time.time() + ttl),
            )

    def unregister(self, worker: str) -> None:
        with self.db.write() as conn:
            conn.execute("DELETE FROM workers WHERE name = ?", (worker,))

    def workers(self) -> dict[str, bytes]:
        rows = self._select(
            "SELECT name, info FROM workers WHERE expires > ? ORDER BY expires",
            (time.time(),),
        )
        return dict(rows)

    def beat_heartbeat(self, holder: str, info: bytes, ttl: float) -> None:
        now = time.time()
        with self.db.write() as conn:
            conn.execute("DELETE FROM beats WHERE expires <= ?", (now,))  # a few rows at most
            conn.execute(
                "INSERT OR REPLACE INTO beats (name, info, expires) VALUES (?, ?, ?)",
                (holder, info, now + ttl),
            )

    def beat_unregister(self, holder: str) -> None:
        with self.db.write() as conn:
            conn.execute("DELETE FROM beats WHERE name = ?", (holder,))

    def beats(self) -> dict[str, bytes]:
        rows = self._select("SELECT name, info FROM beats WHERE expires > ?", (time.time(),))
        return dict(rows)

    # -- events ----------------------------------------------------------------------------
    def _add_events(
        self, conn: sqlite3.Connection, items: Sequence[bytes], maxlen: int | None
    ) -> None:
        if not items:
            return
        conn.executemany("INSERT INTO events (data) VALUES (?)", [(i,) for i in items])
        cap = self.event_max_len if maxlen is None else maxlen
        # rows are numbered without gaps (AUTOINCREMENT, never reused): the cut is arithmetic
        last = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        conn.execute("DELETE FROM events WHERE seq <= ?", (last[0] - cap,))

    def add_events(self, items: Sequence[bytes], maxlen: int | None = None) -> None:
        if items:
            with self.db.write() as conn:
                self._add_events(conn, items, maxlen)

    def read_events(
        self, after: str | None = None, count: int = 100, timeout: float | None = None
    ) -> list[tuple[str, bytes]]:
        last = int(after) if after else 0

        def probe(
            conn: sqlite3.Connection, now: float
        ) -> tuple[list[tuple[str, bytes]] | None, float | None]:
            rows = conn.execute(
                "SELECT seq, data FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (last, count)
            ).fetchall()
            return ([(str(n), data) for n, data in rows] or None), None

        return self.db.poll(probe, timeout or 0.0) or []

    def recent_events(self, count: int = 100) -> list[tuple[str, bytes]]:
        rows = self._select("SELECT seq, data FROM events ORDER BY seq DESC LIMIT ?", (count,))
        return [(str(n), data) for n, data in reversed(rows)]

    # -- timeline --------------------------------------------------------------------------
    def add_samples(self, samples: Sequence[tuple[float, bytes]], keep: float, maxlen: int) -> None:
        with self.db.write() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO timeline (at, data) VALUES (?, ?)",
                [(at, data) for at, data in samples],
            )
            conn.execute("DELETE FROM timeline WHERE at < ?", (time.time() - keep,))
            # rows are numbered as they come (a writer's samples in order): the newest
            # `maxlen` numbers, found in the index, not by counting every row
            conn.execute(
                "DELETE FROM timeline WHERE rowid <= (SELECT MAX(rowid) FROM timeline) - ?",
                (max(maxlen, 0),),
            )

    def samples(self, since: float) -> list[tuple[float, bytes]]:
        rows = self._select("SELECT at, data FROM timeline WHERE at >= ? ORDER BY at", (since,))
        return [(at, bytes(data)) for at, data in rows]

    # -- revoked tasks ----------------------------------------------------------------------
    def revoke(self, task_ids: Sequence[str], terminate: bool, ttl: float) -> None:
        if task_ids:
            with self.db.write() as conn:
                now = time.time()
                conn.execute("DELETE FROM revoked WHERE time <= ?", (now - ttl,))
                conn.executemany(
                    "INSERT INTO revoked (task_id, time, terminate) VALUES (?, ?, ?) "
                    "ON CONFLICT (task_id) DO UPDATE SET time = excluded.time, "
                    "terminate = MAX(terminate, excluded.terminate)",
                    [(id_, now, int(terminate)) for id_ in task_ids],
                )

    def revoked(self, after: float = 0.0) -> list[tuple[str, float, bool]]:
        rows = self._select(
            "SELECT task_id, time, terminate FROM revoked WHERE time >= ? ORDER BY time",
            (after,),
        )
        return [(id_, when, bool(term)) for id_, when, term in rows]

    # -- control channel -------------------------------------------------------------------
    def send_command(self, command: bytes) -> None:
        with self.db.write() as conn:
            conn.execute("INSERT INTO control (data) VALUES (?)", (command,))
            last = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'control'").fetchone()
            conn.execute("DELETE FROM control WHERE seq <= ?", (last[0] - self.control_max_len,))

    def commands(self, after: str | None) -> tuple[str, list[bytes]]:
        if after is None:
            rows = self._select("SELECT seq FROM sqlite_sequence WHERE name = 'control'")
            return str(rows[0][0] if rows else 0), []
        rows = self._select(
            "SELECT seq, data FROM control WHERE seq > ? ORDER BY seq", (int(after),)
        )
        return (str(rows[-1][0]) if rows else after), [data for _, data in rows]

    def reply(self, command_id: str, worker: str, data: bytes, ttl: float) -> None:
        with self.db.write() as conn:
            now = time.time()
            conn.execute("DELETE FROM replies WHERE expires <= ?", (now,))
            conn.execute(
                "INSERT OR REPLACE INTO replies (command, worker, data, expires) "
                "VALUES (?, ?, ?, ?)",
                (command_id, worker, data, now + ttl),
            )

    def replies(self, command_id: str) -> dict[str, bytes]:
        rows = self._select(
            "SELECT worker, data FROM replies WHERE command = ? AND expires > ?",
            (command_id, time.time()),
        )
        return dict(rows)

    # -- lifecycle -------------------------------------------------------------------------
    def ping(self) -> None:
        with self.db.read() as conn:
            conn.execute("SELECT 1").fetchone()

    def topology(self) -> Topology:
        with self.db.read() as conn:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        path, size = self.db.path, 0
        for name in (path, f"{path}-wal"):
            with contextlib.suppress(OSError):  # no WAL file, or one removed meanwhile
                size += os.path.getsize(name)
        return Topology("sqlite", shown_url(self.url), path=path, journal_mode=mode, size=size)

    def disconnect(self) -> None:
        self.db.close()
