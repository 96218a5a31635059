"""The in-memory backend: `memory://` or `memory://name`, for one process (tests, demos).

Every backend of the process that names the same URL shares one store, so several app
objects see the same queues. One lock guards a store; two conditions on that lock wake
`wait` (messages may be ready) and `wait_result` (a final result was stored): waiters
are notified, never polled. This is the plainest reading of the contracts in roles.py,
and the model the other backends are checked against. Leases and beat entries follow
the rules of rows.py, which the store applies to itself (`_Store` is its own `Rows`).

Ordering. A ready message has a sequence number: sending appends after every number
handed out so far, putting back (release, expired claim, due eta) goes before every
one. A queue is a heap on (minus the message's priority, that number): a higher priority
first, then in order; entries of messages that moved on are skipped when they surface
(lazy deletion), and so are those of the delayed and claimed heaps.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..exceptions import BrokerError
from .records import ChordJoin, Claim, Claimed, DeadLetter, EntryState, Outgoing
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
from .schedule_rows import RowSchedules, ScheduleTables, TableRows

READY, DELAYED, CLAIMED = "ready", "delayed", "claimed"
TOKEN_TTL = 86400.0  # seconds a finish's token is remembered
# Sequence numbers of the due lane start here: below any a queue's head reaches (one less
# per message released), so due messages are taken first (as on Redis and SQLite).
DUE_LANE = -(2**40)


@dataclass(slots=True)
class _Message:
    queue: str
    body: bytes
    state: str
    seq: int = 0  # place in its queue while ready
    eta: float = 0.0  # while delayed
    deadline: float = 0.0  # while claimed
    token: str = ""  # while claimed: the delivery's token
    ack_at_claim: bool = False  # the sender's word (see Outgoing)
    redelivered: bool = False  # put back as its claim expired (see Claim)
    priority: int = 0  # the sender's too


@dataclass(slots=True)
class _Expiring:
    value: Any
    expires: float


@dataclass(slots=True)
class _Chord:
    members: set[str]
    fired: bool
    expires: float


@dataclass(slots=True)
class _Entry:
    settled: float | None = None
    next_run: float | None = None
    info: bytes | None = None


class _Store:
    """Everything one memory URL holds. Touch only with `lock` held."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.work = threading.Condition(self.lock)  # messages may have become ready
        self.finals = threading.Condition(self.lock)  # a final result was stored
        self.messages: dict[str, _Message] = {}
        # (-priority, seq, id)
        self.queues: defaultdict[str, list[tuple[int, int, str]]] = defaultdict(list)
        self.ready_count: Counter[str] = Counter()
        self.delayed: list[tuple[float, str]] = []  # (eta, id)
        self.claimed: list[tuple[float, str]] = []  # (deadline, id)
        self.head = 0  # the lowest sequence number handed out
        self.tail = 0  # the highest
        # The due lane (delayed messages that fell due, see claim.lua) comes before both.
        self.due = DUE_LANE
        self.results: dict[str, _Expiring] = {}
        self.states: dict[str, _Expiring] = {}
        self.chords: dict[str, _Chord] = {}
        self.tokens: dict[str, _Expiring] = {}  # finishes done, by token
        self.workers: dict[str, _Expiring] = {}
        self.beats: dict[str, _Expiring] = {}
        self.expiring: list[tuple[float, str, str]] = []  # (when, table, key)
        self.dead: dict[str, DeadLetter] = {}  # in order of death
        self.leases: dict[str, LeaseRow] = {}
        self.entries: dict[str, _Entry] = {}
        self.paused_entries: set[str] = set()
        self.events: deque[tuple[int, bytes]] = deque()  # (number, data), oldest first
        self.event_seq = 0
        self.new_event = threading.Condition(self.lock)
        self.revocations: dict[str, tuple[float, bool]] = {}  # id -> (when, terminate)
        self.schedule_tables = ScheduleTables()  # app.schedules' entries, requests, histories
        self.commands: deque[tuple[int, bytes]] = deque()  # the control channel, oldest first
        self.command_seq = 0
        self.replies: dict[str, _Expiring] = {}  # command id -> {worker: reply}
        self.samples: dict[bytes, float] = {}  # the timeline: data -> interval start

    def add_events(self, items: Sequence[bytes], maxlen: int) -> None:
        for item in items:
            self.event_seq += 1
            self.events.append((self.event_seq, item))
        while len(self.events) > maxlen:
            self.events.popleft()
        if items:
            self.new_event.notify_all()

    # -- messages ------------------------------------------------------------------------
    def drop(self, id_: str) -> _Message | None:
        msg = self.messages.pop(id_, None)
        if msg is not None and msg.state == READY:
            self.ready_count[msg.queue] -= 1
        return msg

    def make_ready(self, id_: str, msg: _Message, head: bool = False, due: bool = False) -> None:
        if self.messages.get(id_) is not msg:
            self.drop(id_)
        elif msg.state == READY:
            self.ready_count[msg.queue] -= 1
        msg.token = ""
        if due:
            self.due += 1
            msg.seq = self.due
        elif head:
            self.head -= 1
            msg.seq = self.head
        else:
            self.tail += 1
            msg.seq = self.tail
        msg.state = READY
        self.messages[id_] = msg
        heapq.heappush(self.queues[msg.queue], (-msg.priority, msg.seq, id_))
        self.ready_count[msg.queue] += 1

    def put(self, m: Outgoing, now: float) -> None:
        """Store one message: delayed until its eta, or ready at the tail of its queue."""
        msg = _Message(m.queue, m.body, DELAYED, ack_at_claim=m.ack_at_claim, priority=m.priority)
        if m.eta is not None and m.eta > now:
            self.drop(m.id)
            msg.eta = m.eta
            self.messages[m.id] = msg
            heapq.heappush(self.delayed, (m.eta, m.id))
        else:
            self.make_ready(m.id, msg)

    def take(self, queue: str, above: int | None = None) -> tuple[str, _Message] | None:
        """The next ready message of `queue` (of a priority above `above` only, if given)."""
        heap = self.queues.get(queue)
        while heap:
            rank, seq, id_ = heap[0]
            msg = self.messages.get(id_)
            if msg is not None and msg.state == READY and msg.seq == seq and msg.queue == queue:
                if above is not None and -rank <= above:
                    return None
                heapq.heappop(heap)
                self.ready_count[queue] -= 1
                return id_, msg
            heapq.heappop(heap)
        return None

    def claim(self, id_: str, msg: _Message, deadline: float) -> None:
        msg.state, msg.deadline = CLAIMED, deadline
        heapq.heappush(self.claimed, (deadline, id_))

    def held(self, c: Claim) -> _Message | None:
        """The message of claim `c` if it is still claimed with `c`'s token."""
        msg = self.messages.get(c.id)
        if msg is not None and msg.state == CLAIMED and msg.token == c.token:
            return msg
        return None

    def top(self, heap: list[tuple[float, str]], state: str) -> float | None:
        """The earliest live key of the delayed or claimed heap, dropping stale entries."""
        while heap:
            key, id_ = heap[0]
            msg = self.messages.get(id_)
            if msg is not None and msg.state == state:
                if key == (msg.eta if state == DELAYED else msg.deadline):
                    return key
            heapq.heappop(heap)
        return None

    def _due(self, heap: list[tuple[float, str]], state: str, now: float) -> list[str]:
        due = []
        while (key := self.top(heap, state)) is not None and key <= now:
            due.append(heapq.heappop(heap)[1])
        return due

    def restore(self, now: float, ahead: float = 0.0) -> bool:
        """Expired claims back to the head of their queue; delayed messages due by `now` +
        `ahead` to its due lane, earliest first (why: claim.lua)."""
        expired = self._due(self.claimed, CLAIMED, now)
        due = self._due(self.delayed, DELAYED, now + ahead)
        for id_ in reversed(expired):
            msg = self.messages[id_]
            msg.redelivered = True
            # remembered a day: its late acknowledgement is stale (see settle)
            self.keep("tokens", expired_key(id_, msg.token), _Expiring(b"", now + EXPIRED_KEPT))
            self.make_ready(id_, msg, head=True)
        for id_ in due:
            msg = self.messages[id_]
            if msg.eta > now:  # held by its worker until then (see Delivery.claim)
                msg.ack_at_claim = False
            self.make_ready(id_, msg, due=True)
        return bool(expired or due)

    def next_due(self, ahead: float = 0.0) -> float | None:
        """When the next claim comes due, or the next delayed message (`ahead` of its eta)."""
        eta = self.top(self.delayed, DELAYED)
        keys = [None if eta is None else eta - ahead, self.top(self.claimed, CLAIMED)]
        return min((k for k in keys if k is not None), default=None)

    # -- expiring values -----------------------------------------------------------------
    def keep(self, table: str, key: str, stored: _Expiring | _Chord) -> None:
        getattr(self, table)[key] = stored
        heapq.heappush(self.expiring, (stored.expires, table, key))

    def alive(self, table: str, key: str, now: float) -> Any:
        stored = getattr(self, table).get(key)
        return stored if stored is not None and stored.expires > now else None

    def sweep(self, now: float) -> None:
        while self.expiring and self.expiring[0][0] <= now:
            _, table, key = heapq.heappop(self.expiring)
            values = getattr(self, table)
            stored = values.get(key)
            if stored is not None and stored.expires <= now:
                del values[key]

    # -- chords, leases, beat -------------------------------------------------------------
    def join(self, j: ChordJoin, now: float) -> bool:
        """Count the member; True for the one call that completes the chord."""
        chord = self.alive("chords", j.group, now) or _Chord(set(), False, 0.0)
        chord.members.add(j.member)
        chord.expires = now + j.ttl
        self.keep("chords", j.group, chord)
        if chord.fired or len(chord.members) < j.size:
            return False
        chord.fired = True
        return True

    # -- rows.Rows: leases and beat entries -------------------------------------------------
    def lease(self, name: str) -> LeaseRow | None:
        return self.leases.get(name)

    def put_lease(self, name: str, row: LeaseRow) -> None:
        self.leases[name] = row

    def settled(self, entry: str) -> float | None:
        found = self.entries.get(entry)
        return None if found is None else found.settled

    def set_entry(
        self, entry: str, settled: float | None, next_run: float | None, info: bytes | None
    ) -> None:
        state = self.entries.setdefault(entry, _Entry())
        if settled is not None:
            state.settled = settled
        if info is not None:
            state.info = info
        state.next_run = next_run

    def remove_entries(self, entries: Sequence[str]) -> None:
        for name in entries:
            self.entries.pop(name, None)
            self.paused_entries.discard(name)

    def paused(self, entry: str) -> bool:
        return entry in self.paused_entries

    def stored(self, message_id: str) -> bool:
        return message_id in self.messages

    def send(self, messages: Sequence[Outgoing], now: float) -> None:
        for m in messages:
            self.put(m, now)
        if messages:
            self.work.notify_all()


_STORES: dict[str, _Store] = {}
_STORES_LOCK = threading.Lock()


def _store_for(url: str) -> _Store:
    parts = urlsplit(url)
    key = (parts.netloc + parts.path).rstrip("/")
    with _STORES_LOCK:
        # A forked child finds its parent's store here and is refused by `_locked`: a copy
        # of the queues must not pass for the shared ones.
        if key not in _STORES:
            _STORES[key] = _Store()
        return _STORES[key]


class MemoryBackend(RowBeatState, RowSchedules, Backend):
    shared_between_processes = False

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        self.url = url
        self.store = _store_for(url)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[_Store]:
        s = self.store
        if s.pid != os.getpid():
            raise BrokerError(
                f"{self.url} lives in process {s.pid} only; this is process {os.getpid()}. "
                "Use the threads or solo pool, or sqlite:// to share between processes"
            )
        with s.lock:
            yield s

    def rows(self, write: bool = True) -> contextlib.AbstractContextManager[_Store]:
        return self._locked()

    @contextlib.contextmanager
    def schedule_rows(self, write: bool = True) -> Iterator[TableRows]:
        with self._locked() as s:
            yield TableRows(s.schedule_tables, s)

    # -- queue ---------------------------------------------------------------------------
    def send(self, messages: Sequence[Outgoing], events: Sequence[bytes] = ()) -> None:
        with self._locked() as s:
            now = time.time()
            for m in messages:
                s.put(m, now)
            s.work.notify_all()
            s.add_events(events, self.event_max_len)

    def take(self, ask: Take) -> Claimed:
        with self._locked() as s:
            now = time.time()
            changed = s.restore(now)
            claims: list[Claim] = []
            acked = self._take(s, ask, now, claims)
            if not claims and ask.ahead > 0:  # what falls due within `ahead` (Delivery.claim)
                changed = s.restore(now, ask.ahead) or changed
                acked = self._take(s, ask, now, claims)
            if changed or claims:
                s.work.notify_all()  # work left behind, or a new earliest deadline
            return Claimed(claims, s.top(s.delayed, DELAYED), acked)

    @staticmethod
    def _take(s: _Store, ask: Take, now: float, claims: list[Claim]) -> bool:
        """Claim ready messages into `claims`, up to `ask.count`; whether the first one was
        acknowledged in the claim."""
        token = new_token()
        acked = False
        last = len(ask.queues) - 1
        for place, queue in enumerate(ask.queues):
            above = ask.above if place == last else None
            while len(claims) < ask.count and (item := s.take(queue, above)) is not None:
                id_, msg = item
                if not claims and ask.ack_first and msg.ack_at_claim:
                    del s.messages[id_]  # taken off its queue: gone for good
                    acked = True
                else:
                    s.claim(id_, msg, now + ask.visibility)
                    msg.token = token
                claims.append(Claim(id_, queue, msg.body, token, msg.redelivered, msg.priority))
        return acked

    def wait(self, queues: Sequence[str], timeout: float, ahead: float = 0.0) -> bool:
        end = time.monotonic() + timeout
        with self._locked() as s:
            while True:
                if any(s.ready_count[q] > 0 for q in queues):
                    return True
                due = s.next_due(ahead)
                now = time.time()
                if due is not None and due <= now:
                    return True  # a claim restores it
                left = end - time.monotonic()
                if left <= 0:
                    return False
                s.work.wait(left if due is None else min(left, due - now))

    def renew(self, claims: Sequence[Claim], visibility: float) -> None:
        with self._locked() as s:
            deadline = time.time() + visibility
            for c in claims:
                msg = s.held(c)
                if msg is not None:
                    s.claim(c.id, msg, deadline)

    def release(self, claims: Sequence[Claim]) -> None:
        with self._locked() as s:
            for c in reversed(claims):
                if c.id not in s.messages or s.held(c) is not None:
                    again = _Message(c.queue, c.body, READY, redelivered=c.redelivered)
                    again.priority = c.priority
                    s.make_ready(c.id, again, head=True)
            s.work.notify_all()

    def queue_length(self, queue: str) -> int:
        with self._locked() as s:
            return s.ready_count[queue]

    def purge(self, queues: Sequence[str]) -> int:
        count = 0
        with self._locked() as s:
            for queue in dict.fromkeys(queues):
                while (taken := s.take(queue)) is not None:
                    del s.messages[taken[0]]
                    count += 1
        return count

    def scheduled(self, limit: int = 100) -> list[tuple[float, Claim]]:
        with self._locked() as s:
            delayed = [(m.eta, i, m) for i, m in s.messages.items() if m.state == DELAYED]
            first = heapq.nsmallest(limit, delayed, key=lambda e: (e[0], e[1]))
            return [(eta, Claim(id_, m.queue, m.body)) for eta, id_, m in first]

    # -- finishing -------------------------------------------------------------------------
    def settle(self, step: Finish) -> frozenset[str]:
        with self._locked() as s:
            now = time.time()
            s.sweep(now)
            if step.token is not None:
                if s.alive("tokens", step.token, now):
                    return NONE_STALE
                s.keep("tokens", step.token, _Expiring(b"", now + TOKEN_TTL))
            stale = NONE_STALE
            for c in step.ack:
                if s.held(c) is not None:
                    s.drop(c.id)
                elif c.id in s.messages or s.alive("tokens", expired_key(c.id, c.token), now):
                    stale = stale | {c.id}  # delivered again (else acknowledged already)
            results = step.results
            for r in results:
                if r.final:
                    s.states.pop(r.task_id, None)
                    s.keep("results", r.task_id, _Expiring(r.meta, now + r.ttl))
                else:
                    s.keep("states", r.task_id, _Expiring(r.meta, now + r.ttl))
            if step.join is not None and s.join(step.join, now):
                s.put(step.join.unlock, now)
            for m in step.send:
                if m.id in stale:  # sent in a stale one's stead (see lua/finish.lua)
                    continue
                s.put(m, now)
            if any(r.final for r in results):
                s.finals.notify_all()
            s.work.notify_all()
            s.add_events(step.events, self.event_max_len)
            return stale

    # -- results ---------------------------------------------------------------------------
    def get_result(self, task_id: str) -> bytes | None:
        with self._locked() as s:
            now = time.time()
            stored = s.alive("results", task_id, now) or s.alive("states", task_id, now)
            return None if stored is None else stored.value

    def get_results(self, task_ids: Sequence[str]) -> list[bytes | None]:
        with self._locked() as s:
            now = time.time()
            found = [s.alive("results", t, now) for t in task_ids]
            return [None if f is None else f.value for f in found]

    def wait_result(self, task_id: str, timeout: float | None) -> bytes | None:
        end = None if timeout is None else time.monotonic() + timeout
        with self._locked() as s:
            while True:
                stored = s.alive("results", task_id, time.time())
                if stored is not None:
                    return stored.value
                if end is None:
                    s.finals.wait()
                    continue
                left = end - time.monotonic()
                if left <= 0:
                    return None
                s.finals.wait(left)

    def forget(self, task_id: str) -> None:
        with self._locked() as s:
            s.results.pop(task_id, None)
            s.states.pop(task_id, None)

    # -- dead letters ----------------------------------------------------------------------
    def dead_letter(self, claim: Claim, reason: str) -> None:
        with self._locked() as s:
            if claim.id in s.messages and s.held(claim) is None:
                return
            s.drop(claim.id)
            s.dead.pop(claim.id, None)  # dying again puts it last
            s.dead[claim.id] = DeadLetter(claim.id, claim.queue, reason, time.time(), claim.body)

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        with self._locked() as s:
            return list(s.dead.values())[:limit]

    def requeue_dead(self, ids: Sequence[str] | None = None) -> list[str]:
        with self._locked() as s:
            now = time.time()
            moved = []
            for id_ in list(s.dead) if ids is None else ids:
                letter = s.dead.pop(id_, None)
                if letter is not None:
                    s.put(Outgoing(letter.queue, id_, letter.body), now)
                    if self._results is None:  # the FAILURE stored as it died
                        s.results.pop(id_, None)
                        s.states.pop(id_, None)
                    moved.append(id_)
            s.work.notify_all()
        if self._results is not None:
            forget_elsewhere(self.results, moved)
        return moved

    # -- beat state (leases and dispatch: RowBeatState) ------------------------------------
    def beat_entries(self) -> dict[str, EntryState]:
        with self._locked() as s:
            return {
                name: EntryState(name, e.settled, e.next_run, s.paused(name), e.info)
                for name, e in sorted(s.entries.items())
            }

    def beat_pause(self, entry: str, paused: bool) -> None:
        with self._locked() as s:
            if paused:
                s.paused_entries.add(entry)
            else:
                s.paused_entries.discard(entry)

    # -- workers ---------------------------------------------------------------------------
    def heartbeat(self, worker: str, info: bytes, ttl: float) -> None:
        with self._locked() as s:
            now = time.time()
            s.sweep(now)
            s.keep("workers", worker, _Expiring(info, now + ttl))

    def unregister(self, worker: str) -> None:
        with self._locked() as s:
            s.workers.pop(worker, None)

    def workers(self) -> dict[str, bytes]:
        with self._locked() as s:
            now = time.time()
            return {n: w.value for n, w in s.workers.items() if w.expires > now}

    def beat_heartbeat(self, holder: str, info: bytes, ttl: float) -> None:
        with self._locked() as s:
            now = time.time()
            s.sweep(now)
            s.keep("beats", holder, _Expiring(info, now + ttl))

    def beat_unregister(self, holder: str) -> None:
        with self._locked() as s:
            s.beats.pop(holder, None)

    def beats(self) -> dict[str, bytes]:
        with self._locked() as s:
            now = time.time()
            return {n: b.value for n, b in s.beats.items() if b.expires > now}

    # -- events ----------------------------------------------------------------------------
    def add_events(self, items: Sequence[bytes], maxlen: int | None = None) -> None:
        with self._locked() as s:
            s.add_events(items, self.event_max_len if maxlen is None else maxlen)

    def read_events(
        self, after: str | None = None, count: int = 100, timeout: float | None = None
    ) -> list[tuple[str, bytes]]:
        last = int(after) if after else 0
        end = time.monotonic() + (timeout or 0.0)
        with self._locked() as s:
            while True:
                if s.events and s.events[-1][0] > last:
                    # numbers are consecutive: the first newer one is found by arithmetic
                    start = max(0, last - s.events[0][0] + 1)
                    picked = [s.events[i] for i in range(start, min(len(s.events), start + count))]
                    return [(str(n), data) for n, data in picked]
                left = end - time.monotonic()
                if left <= 0:
                    return []
                s.new_event.wait(left)

    def recent_events(self, count: int = 100) -> list[tuple[str, bytes]]:
        with self._locked() as s:
            picked = list(s.events)[-count:] if count > 0 else []
            return [(str(n), data) for n, data in picked]

    # -- timeline --------------------------------------------------------------------------
    def add_samples(self, samples: Sequence[tuple[float, bytes]], keep: float, maxlen: int) -> None:
        with self._locked() as s:
            for at, data in samples:
                s.samples[data] = at
            oldest = time.time() - keep
            kept = sorted((at, data) for data, at in s.samples.items() if at >= oldest)
            s.samples = {data: at for at, data in kept[-maxlen:]} if maxlen > 0 else {}

    def samples(self, since: float) -> list[tuple[float, bytes]]:
        with self._locked() as s:
            return sorted((at, data) for data, at in s.samples.items() if at >= since)

    # -- revoked tasks ----------------------------------------------------------------------
    def revoke(self, task_ids: Sequence[str], terminate: bool, ttl: float) -> None:
        with self._locked() as s:
            now = time.time()
            for id_, (when, _) in list(s.revocations.items()):
                if when <= now - ttl:
                    del s.revocations[id_]
            for id_ in task_ids:
                _, before = s.revocations.pop(id_, (0.0, False))  # renewed: it sorts last
                s.revocations[id_] = (now, terminate or before)

    def revoked(self, after: float = 0.0) -> list[tuple[str, float, bool]]:
        with self._locked() as s:
            found = [(i, when, term) for i, (when, term) in s.revocations.items() if when >= after]
            return sorted(found, key=lambda r: r[1])

    # -- control channel -------------------------------------------------------------------
    def send_command(self, command: bytes) -> None:
        with self._locked() as s:
            s.command_seq += 1
            s.commands.append((s.command_seq, command))
            while len(s.commands) > self.control_max_len:
                s.commands.popleft()

    def commands(self, after: str | None) -> tuple[str, list[bytes]]:
        with self._locked() as s:
            if after is None:
                return str(s.command_seq), []
            last = int(after)
            return str(s.command_seq), [c for n, c in s.commands if n > last]

    def reply(self, command_id: str, worker: str, data: bytes, ttl: float) -> None:
        with self._locked() as s:
            now = time.time()
            s.sweep(now)
            found = s.alive("replies", command_id, now)
            replies = {} if found is None else found.value
            replies[worker] = data
            s.keep("replies", command_id, _Expiring(replies, now + ttl))

    def replies(self, command_id: str) -> dict[str, bytes]:
        with self._locked() as s:
            found = s.alive("replies", command_id, time.time())
            return {} if found is None else dict(found.value)
