"""The beat: turns entries into task messages on time, as the one leader among many.

    standby: try to take the lease every half second
    leader:  plan entries in the broker, then sleep exactly until the next run (or a
             renewal, or a file or store check), dispatch what is due, repeat

Entries come from the app's code, the schedule files and the broker's store (entries
added at run time: `app.schedules`, beat/store.py). A file or code entry owns its name:
a store entry of the same name is left out, with an error in the log. The leader reads
the store's version every `store_interval` (one read); when it changed, it reads the
specs of the entries changed since (the store notes which changed at which version) and
the run requests, and plans what changed, as for an edited file: a hundred entries at a
time between runs (see _take_store), so 10,000 entries added at once never hold up a run
that is due.

Every dispatch is one atomic, fenced broker call that settles the run and sends its
message, so a restart, a second beat or a change of leader neither repeats a run nor
misses one. A paused (SIGSTOP) or partitioned old leader cannot dispatch: its token is
stale.
"""

from __future__ import annotations

import functools
import heapq
import logging
import os
import random
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import events as ev
from ..app import Beatq
from ..brokers import BeatDispatch, Outgoing
from ..brokers.urls import process_urls
from ..exceptions import BrokerError, LeaseLost, NotReplicated, ScheduleError
from ..messages import Message
from ..metrics import Metrics
from ..stop_event import StopEvent
from ..timeline import beat_timeline
from ..timezones import format_entry_time
from ..wakeup import nap_until, tighten_timer_slack
from .entries import Entry
from .history import (
    BACKFILL,
    CAUGHT_UP,
    NO_LEADER,
    OVERLAP,
    PAUSED,
    TRIGGER,
    RunRecord,
    covered_from,
)
from .history import encode as encode_run
from .lease import LeaderLease
from .loader import load_all, schedule_files
from .presence import Presence
from .record import EntryRecord
from .specs import SOURCE, decode, entry_of

log = logging.getLogger("beatq.beat")

LEASE_NAME = "beat"


@dataclass
class _Request:
    """A trigger or a backfill the leader is running: its slots still to send, in order."""

    id: str
    entry: str
    kind: str  # trigger or backfill
    slots: deque[float]
    spacing: float  # seconds between two of its runs
    next_at: float  # when its next slot is sent
    waiting: bool = False  # on the entry's unfinished last run (overlap "skip")


@dataclass
class _Run:
    """One run of an entry, ready to dispatch, and what to record once it is sent."""

    entry: Entry
    dispatch: BeatDispatch
    update: EntryRecord
    task_id: str | None
    sent_at: float


@dataclass
class _Ready:
    """A run worked out but for the instant it is sent (`stamped`); made while the beat
    waits for that instant, or at it."""

    entry: Entry
    slot: float
    next_run: float | None  # the entry's run after `slot`
    record: EntryRecord  # the record it was worked out from ...
    settled: float | None  # ... and that record's settled instant then
    message: Message | None  # None: the slot is settled without a message
    outgoing: list[Outgoing]
    busy: str | None
    update: EntryRecord  # the record after this run, but for the stamps of its sending
    head: bytes  # `update.open_json()`: its JSON but for those stamps

    def fits(self, entry: Entry, record: EntryRecord) -> bool:
        """Whether it was worked out for `entry` on `record` as it still is."""
        return self.entry is entry and self.record is record and self.settled == record.settled

    def stamped(self, sent_at: float) -> _Run:
        """The run as sent at `sent_at`: its record says when, and how late (0 when it was
        sent ahead, to start at its instant: see Beat.early)."""
        update = self.update
        task_id = self.message.id if self.message is not None else None
        if task_id is not None:
            update.last_sent, update.lateness = sent_at, max(sent_at - self.slot, 0.0)
        info = EntryRecord.close_json(self.head, update.last_sent, update.lateness)
        dispatch = BeatDispatch(
            self.entry.name, self.slot, self.next_run, info, self.outgoing, self.busy
        )
        return _Run(self.entry, dispatch, update, task_id, sent_at)


class Beat:
    """Runs the schedule of `app` (its beat_schedule and YAML files) while it leads.

    >>> Beat(app, files=["schedules/*.yaml"]).run()   # until stop()
    """

    standby_poll = 0.5  # seconds between attempts to take the lease
    reload_interval = 1.0  # seconds between checks of the schedule files
    batch_size = 500  # runs dispatched per round trip
    plan_chunk = 5_000  # entries planned per round trip; the lease is renewed between them
    lead = 0.002  # seconds before a send at which the beat gets it ready (see _sleep)
    prime_ahead = 0.0003  # seconds before a send at which the broker is woken (see _sleep)
    # Seconds before its instant that a run is sent, with that instant as its eta: a worker
    # claims it ahead (worker.execute.AHEAD, larger) and starts it on time, rather than
    # being woken, claiming and decoding only then. An entry with overlap "skip" is sent at
    # its instant: whether the previous run is still unfinished is known only then (and
    # one whose options give an eta or countdown, counted from the send, as before).
    early = 0.01
    store_interval = 0.5  # seconds between reads of the store's version (see the module)
    store_room = 0.05  # seconds before a send within which the store is not read
    store_slice = 0.02  # seconds of store entries taken up at a time (see _take_store)
    store_chunk = 100  # store entries planned per round trip while taken up

    def __init__(
        self,
        app: Beatq,
        files: Sequence[str] | None = None,
        lease_ttl: float | None = None,
        holder: str | None = None,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self.app = app
        # the modules of `include` and `imports` first: a beat_* setting made there counts
        app.import_modules()
        self.patterns = list(app.conf.beat_schedule_files if files is None else files)
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.ttl = float(lease_ttl or app.conf.beat_lease_ttl)
        self.clock = clock
        self.lease = LeaderLease(app.broker, LEASE_NAME, self.holder, self.ttl)
        self.stopping = StopEvent()  # set by `beatq beat`'s signal handler: see stop_event.py
        self.entries: dict[str, Entry] = {}
        self.records: dict[str, EntryRecord] = {}  # per entry: settled, counters, last task
        # (send at, -push number, version, name, run at): of runs sent at one instant, the
        # entry scheduled last (the most frequent: a 1-s entry beside a minutely burst) first
        self.heap: list[tuple[float, int, int, str, float]] = []
        self.pushes = 0
        self.versions: dict[str, int] = {}
        self.file_stamps: dict[Path, float] = {}
        self.next_reload = 0.0
        self.metrics = metrics
        self.timeline = beat_timeline(app, self.holder)  # lateness, for the dashboard's charts
        # the next run, made ready while the beat waits for its instant; _run_due and
        # _prepare take it if it is still that entry's run
        self.ahead: _Ready | None = None
        self.defined: dict[str, Entry] = {}  # the entries of files and code
        self.store_version: int | None = None  # the store's version last read (None: never)
        self.next_store_check = 0.0
        self.requests: dict[str, _Request] = {}  # triggers and backfills being run
        self.store_since: dict[str, float] = {}  # when each store entry was last changed
        self.store_seen: dict[str, bytes] = {}  # each store spec as last read
        # store specs read but not taken up yet (see _take_store), in the order read
        self.store_todo: dict[str, bytes] = {}
        self.history: list[tuple[str, bytes]] = []  # run records not written yet
        self.history_len = int(app.conf.beat_history_len or 0)
        self.led_at = 0.0  # when this beat last became the leader
        self.started_at: float | None = None
        self.presence = Presence(lambda: self.app.broker, self.holder, self.describe)
        if metrics is not None:
            metrics.watch_lease(app, LEASE_NAME)

    # -- loading -------------------------------------------------------------------------------
    def load(self) -> dict[str, Entry]:
        """Read every entry; ScheduleError (file, line, reason) if anything is wrong."""
        self.app.import_modules()
        files = schedule_files(self.patterns)
        self.file_stamps = {path: _mtime(path) for path in files}
        self.defined = dict(load_all(self.app, files))
        stored = {n: e for n, e in self.entries.items() if e.source == SOURCE}
        return {**{n: e for n, e in stored.items() if n not in self.defined}, **self.defined}

    def _files_changed(self) -> bool:
        files = schedule_files(self.patterns)
        return {p: _mtime(p) for p in files} != self.file_stamps

    # -- running -------------------------------------------------------------------------------
    def run(self) -> None:
        """Run until `stop`; raises ScheduleError before starting if a schedule is bad."""
        if not self.entries:
            self.entries = self.load()
        log.info(
            "beat %s starting: %d entries, lease %.1fs", self.holder, len(self.entries), self.ttl
        )
        tighten_timer_slack()  # this thread's naps before a run (see _sleep)
        failures = 0
        unreplicated = False  # said that no replica confirms the lease (once while it lasts)
        self.started_at = time.time()
        self.presence.start()
        try:
            while not self.stopping.is_set():
                try:
                    if not self.lease.held:
                        try:
                            if not self.lease.acquire():
                                self.stopping.wait(self.standby_poll)
                                continue
                        except NotReplicated as exc:
                            if not unreplicated:
                                unreplicated = True
                                log.error(
                                    "beat %s cannot lead: %s. It keeps trying, and leads "
                                    "once a replica confirms the lease; a broker without "
                                    "replicas needs broker_transport_options="
                                    "{'beat_min_replicas': 0} (the beat then leads without "
                                    "the failover promises: README, 'What beatq promises "
                                    "across a failover')",
                                    self.holder,
                                    exc,
                                )
                            self.stopping.wait(self.standby_poll)
                            continue
                        if unreplicated:
                            unreplicated = False
                            log.warning("beat %s: a replica confirmed the lease", self.holder)
                        self._lead()
                    elif failures:
                        # still leading after the broker failed: runs taken off the heap
                        # may not have gone out; the broker's state says which did
                        log.warning("beat %s: planning again from the broker's state", self.holder)
                        self._take_state()
                    self._tick()
                    failures = 0
                except LeaseLost as exc:
                    log.warning("beat %s lost the leadership: %s", self.holder, exc)
                    self.lease.lost()
                    self.presence.changed()
                    self.heap.clear()
                    self.ahead = None
                    self._event(ev.BEAT_LOST, reason=str(exc))
                    if self.metrics is not None:
                        self.metrics.beat_leading(False)
                except BrokerError as exc:
                    failures += 1
                    delay = min(0.1 * 2 ** (failures - 1), 2.0)
                    log.error("beat: broker unreachable (%s); retrying in %.1fs", exc, delay)
                    self.stopping.wait(delay)
        finally:
            self._hand_over()
            self.presence.stop()

    def stop(self) -> None:
        """Stop at the next step and hand the lease over at once."""
        self.stopping.set()

    def describe(self) -> dict[str, Any]:
        """What `beatq status` and the dashboard show of this beat (its heartbeat)."""
        token = self.lease.token
        return {
            "holder": self.holder,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "started": self.started_at,
            "leader": token is not None,
            "token": token,
            "lease_ttl": self.ttl,
            **process_urls(self.app.conf.broker_url, self.app.conf.result_backend),
        }

    def _hand_over(self) -> None:
        if self.lease.held:
            try:
                self.lease.release()
                log.info("beat %s stopped and released the leadership", self.holder)
                self._event(ev.BEAT_LOST, reason="released")
                if self.metrics is not None:
                    self.metrics.beat_leading(False)
            except BrokerError as exc:
                log.error("beat: could not release the lease (%s); it expires by itself", exc)

    # -- leading -------------------------------------------------------------------------------
    def _lead(self) -> None:
        log.warning("beat %s is the leader now (token %s)", self.holder, self.lease.token)
        self.presence.changed()
        self._event(ev.BEAT_ELECTED, token=self.lease.token, ttl=self.ttl)
        if self.metrics is not None:
            self.metrics.beat_leading(True)
        self.led_at = self.clock()
        self._take_state()

    def _take_state(self) -> None:
        """Plan every entry from the broker's state of the runs (on taking the lead, and
        after the broker failed while leading: a run whose dispatch failed is due again
        unless the broker settled it)."""
        self.heap.clear()
        self.ahead = None
        # a standby does not watch the files: take up edits made while it stood by, or
        # planning would drop the state (pause, last run) of entries the old leader added
        if self._files_changed():
            try:
                self.entries = self.load()
            except ScheduleError as exc:
                log.error("beat: schedule change refused, keeping the current one: %s", exc)
            self._keep_lease("while the schedule was loaded")
        self.requests.clear()
        self._read_store()
        state = self.app.broker.beat_entries()
        stale = [name for name in state if name not in self.entries]
        self.records = {}
        for n, (name, saved) in enumerate(state.items(), start=1):
            if name in self.entries and saved.info:
                record = EntryRecord.from_json(saved.info)
                record.settled = saved.settled  # the broker's, newer after a skipped run
                self.records[name] = record
            if n % self.plan_chunk == 0:
                self._keep_lease("while the entries' state was read")
        self._plan(list(self.entries), stale)
        self._take_requests()

    def _plan(self, names: list[str], remove: list[str]) -> None:
        """Store the entries' next runs in the broker and schedule them here, `plan_chunk`
        entries a round trip, renewing the lease between them: planning a big schedule on
        a slow machine can take longer than the lease lives."""
        now = self.clock()
        for start in range(0, max(len(names), 1), self.plan_chunk):
            plans = {
                name: self._plan_one(name, now) for name in names[start : start + self.plan_chunk]
            }
            gone = remove if start == 0 else []
            if not self.app.broker.beat_plan(
                LEASE_NAME, self.holder, self.lease.token or 0, plans, gone
            ):
                raise LeaseLost("the lease was taken while planning")
            self._keep_lease("while planning")
        for name in remove:
            self.records.pop(name, None)

    def _plan_one(self, name: str, now: float) -> tuple[float, float | None, bytes]:
        """Entry `name`'s record brought up to its definition, and its next run scheduled
        here: (settled, next run, record as JSON) for the broker."""
        entry = self.entries[name]
        record = self.records.get(name) or EntryRecord()
        settled = record.settled
        if settled is None or record.fingerprint != entry.fingerprint():
            # a new or changed definition starts from now (a store entry: from when it
            # was changed, so its first run is on time however soon it is seen)
            start = min(self.store_since.get(name, now), now) if entry.source == SOURCE else now
            settled = max(settled or 0.0, start)
        record.describe(entry)
        record.settled = settled
        self.records[name] = record
        next_run = entry.next_after(settled) if entry.enabled else None
        self._push(name, next_run)
        return settled, next_run, record.to_json()

    def _keep_lease(self, during: str) -> None:
        """Renew the lease if it is due; LeaseLost if it was lost meanwhile."""
        if time.monotonic() >= self.lease.renew_at and not self.lease.renew():
            raise LeaseLost(f"the lease expired {during}")

    def _push(self, name: str, at: float | None) -> None:
        """Schedule entry `name`'s next run, at `at` (None: none), to be sent `_early`."""
        version = self.versions.get(name, 0) + 1
        self.versions[name] = version
        if at is not None:
            self.pushes += 1
            send_at = at - self._early(self.entries.get(name))
            heapq.heappush(self.heap, (send_at, -self.pushes, version, name, at))

    def _early(self, entry: Entry | None) -> float:
        """How long before its instant a run of `entry` is sent (with that eta): not at
        all for overlap "skip", nor when the entry's options delay the run themselves."""
        if entry is None or entry.overlap == "skip" or {"eta", "countdown"} & entry.options.keys():
            return 0.0
        return self.early

    def _tick(self) -> None:
        now = self.clock()
        self._keep_lease("before it was renewed")
        if now >= self.next_reload:
            self.next_reload = now + self.reload_interval
            if self._files_changed():
                self._reload()
        # Due entries go out in batches, earliest first; the first batch leaves before the
        # rest of a big burst is even taken off the heap. Whatever falls due while a burst
        # is out (a 1-s entry beside 100,000 minutely ones) goes ahead of the burst's rest.
        due = deque(run for _, run in self._pop_due(self.batch_size))
        while due:
            batch = [due.popleft() for _ in range(min(self.batch_size, len(due)))]
            self._run_due(batch, self.clock())
            self._keep_lease("during dispatch")
            popped = self._pop_due()
            due.extendleft(reversed([run for at, run in popped if at > now]))
            due.extend(run for at, run in popped if at <= now)
        # after what was due: the store's round trip never delays a run (and its read of
        # every spec waits for a gap before the next send, up to a second)
        if now >= self.next_store_check and (
            self._room() > self.store_room or now >= self.next_store_check + 1.0
        ):
            self.next_store_check = now + self.store_interval
            if self.app.broker.schedule_version() != self.store_version:
                self._store_changed()
        if self.store_todo:
            self._take_store()
        if self.requests:
            self._run_requests()
        if self.history:
            self._write_history()
        if self.timeline is not None:
            self.timeline.tick(self.app.broker)
        run_at = self.heap[0][0] if self.heap else now + self.ttl
        wake = min(
            run_at,
            now + max(self.lease.renew_at - time.monotonic(), 0.0),
            self.next_reload,
            self.next_store_check,
            min((r.next_at for r in self.requests.values()), default=run_at),
        )
        if self.store_todo and self._room() > self.store_room:
            wake = now  # more of the store to take up, and time for it before a send
        self._sleep(wake - self.clock(), precise=wake == run_at)

    def _room(self) -> float:
        """Seconds until the beat must be back for its next send (`lead` before it)."""
        if not self.heap:
            return self.ttl
        return self.heap[0][0] - self.lead - self.clock()

    def _pop_due(self, limit: int | None = None) -> list[tuple[float, tuple[Entry, float]]]:
        """Take (up to `limit`) runs due to be sent off the heap, earliest first:
        (send at, (entry, run at))."""
        now = self.clock()
        due: list[tuple[float, tuple[Entry, float]]] = []
        while self.heap and self.heap[0][0] <= now and (limit is None or len(due) < limit):
            at, _, version, name, slot = heapq.heappop(self.heap)
            if self.versions.get(name) == version and name in self.entries:
                due.append((at, (self.entries[name], slot)))
        return due

    def _sleep(self, seconds: float, precise: bool) -> None:
        """Wait `seconds`, or less if stopped. Before a run (`precise`) the wait ends `lead`
        seconds early: the run is made ready (a long wait wakes late, and the first
        Python after it runs ~10× slower than warm), then the rest is napped (wakeup.py)
        and the broker is woken `prime_ahead` before the instant (see Backend.prime)."""
        end = time.monotonic() + seconds
        if not precise or seconds <= 0:
            self.stopping.wait(max(seconds, 0.0))
            return
        if self.stopping.wait(max(seconds - self.lead, 0.0)):
            return
        self._build_ahead()
        nap_until(end, self.app.broker.prime, self.prime_ahead)

    def _build_ahead(self) -> None:
        """Make the run at the top of the heap ready now, not at its instant: its slot,
        the run after it, and its message. Only a plain run is made ready (the one slot
        since the entry's record was settled): a catch-up is worked out at the instant."""
        self.ahead = None
        if not self.heap:
            return
        _, _, version, name, at = self.heap[0]
        entry, record = self.entries.get(name), self.records.get(name)
        if (
            entry is None
            or record is None
            or not entry.enabled
            or self.versions.get(name) != version
        ):
            return
        slots, count, next_run = entry.slots_between(record.settled or 0.0, at, 1)
        if slots == [at] and count == 1:
            self.ahead = self._ready(entry, at, next_run, send=True)

    def _planned(
        self, entry: Entry, record: EntryRecord, now: float
    ) -> tuple[list[float], int, float | None] | None:
        """What `slots_between` would say at `now`, from the run made ready ahead: if it is
        that entry's, on the same record, and `now` is before the run after it."""
        ahead = self.ahead
        if ahead is None or not ahead.fits(entry, record):
            return None
        if now < ahead.slot or (ahead.next_run is not None and now >= ahead.next_run):
            return None
        return [ahead.slot], 1, ahead.next_run

    def _reload(self) -> None:
        try:
            fresh = self.load()
        except ScheduleError as exc:
            log.error("beat: schedule change refused, keeping the current one: %s", exc)
            return
        removed = [n for n in self.entries if n not in fresh]
        changed = [
            n
            for n, e in fresh.items()
            if n not in self.entries
            or self.entries[n].fingerprint() != e.fingerprint()
            or self.entries[n].enabled != e.enabled
        ]
        self.entries = fresh
        for name in removed:
            self.versions[name] = self.versions.get(name, 0) + 1
        if changed or removed:
            log.warning(
                "beat: schedule reloaded: %d new or changed, %d removed", len(changed), len(removed)
            )
            self._plan(changed, removed)

    # -- the store (entries added at run time, triggers, backfills) --------------------------
    def _store_entry(self, name: str, data: bytes, registered: list[str] | None) -> Entry | None:
        """Store spec `name` as an entry the beat can run; None (an error in the log) if it
        is bad here (its task not registered on this host, say) or a file or code entry
        owns its name."""
        if name in self.defined:
            log.error(
                "beat: store entry %r is left out: %s defines an entry of that name",
                name,
                self.defined[name].source,
            )
            return None
        spec = decode(data)
        try:
            entry = entry_of(name, spec, self.app.timezone, registered)
        except ScheduleError as exc:
            log.error("beat: store entry %r is left out: %s", name, exc)
            return None
        changed = spec.get("updated")
        if isinstance(changed, (int, float)):
            self.store_since[name] = float(changed)
        return entry

    def _registered(self) -> list[str] | None:
        return list(self.app.tasks) if self.app.tasks else None

    def _read_store(self) -> None:
        """Take up the store's entries as they are now, all at once (as the leader takes
        over, before it plans everything)."""
        version, specs = self.app.broker.schedule_specs()
        self.store_version, self.store_seen, self.store_todo = version, dict(specs), {}
        registered = self._registered()
        stored = {n: self._store_entry(n, d, registered) for n, d in specs.items()}
        for name in [n for n, e in self.entries.items() if e.source == SOURCE]:
            if stored.get(name) is None:
                del self.entries[name]
        self.entries.update({n: e for n, e in stored.items() if e is not None})

    def _store_changed(self) -> None:
        """Read what changed in the store since it was last read (the specs of those
        entries only): drop the removed entries at once, queue the new and changed ones
        to be taken up between runs, and take up new requests."""
        version, changes = self.app.broker.schedule_changes(self.store_version or 0)
        self.store_version = version
        seen = self.store_seen
        removed = [n for n, data in changes.items() if data is None and n in seen]
        for name in removed:
            del seen[name]
            self.store_todo.pop(name, None)
            self.store_since.pop(name, None)
        for name, data in changes.items():
            if data is not None and seen.get(name) != data:
                seen[name] = self.store_todo[name] = data
        gone = [n for n in removed if n in self.entries and self.entries[n].source == SOURCE]
        for name in gone:
            del self.entries[name]
            self.versions[name] = self.versions.get(name, 0) + 1
        if gone:
            self._plan([], gone)
        if gone or self.store_todo:
            log.warning(
                "beat: store changed: %d new or changed, %d removed",
                len(self.store_todo),
                len(gone),
            )
        if not (self.store_todo and self._take_store()):
            self._take_requests()

    def _take_store(self) -> bool:
        """Take up the queued store specs: read and plan them `store_chunk` at a time (one
        round trip each), for `store_slice` seconds at most and never into the time a send
        is due; what is left is taken up at the next gap. True once all are taken up (and
        the requests waiting for them with them)."""
        registered = self._registered()
        start = time.monotonic()
        while self.store_todo:
            if time.monotonic() - start > self.store_slice or self._room() < self.store_room / 2:
                return False
            chunk = []
            for name in list(self.store_todo)[: self.store_chunk]:
                entry = self._store_entry(name, self.store_todo.pop(name), registered)
                old = self.entries.get(name)
                if entry is None:
                    if old is not None and old.source == SOURCE:  # now bad here: dropped
                        del self.entries[name]
                        self.versions[name] = self.versions.get(name, 0) + 1
                        self._plan([], [name])
                    continue
                if (
                    old is not None
                    and old.fingerprint() == entry.fingerprint()
                    and old.enabled == entry.enabled
                ):
                    self.entries[name] = entry  # a change of nothing the beat runs by
                    continue
                self.entries[name] = entry
                chunk.append(name)
            if chunk:
                self._plan(chunk, [])
        self._take_requests()  # those of entries not taken up before
        return True

    def _take_requests(self) -> None:
        """Take up the pending triggers and backfills not being run yet."""
        now = self.clock()
        for request in self.app.broker.schedule_requests():
            if request.done is not None or request.id in self.requests:
                continue
            body = decode(request.body)
            name, kind = str(body.get("entry")), body.get("kind")
            entry = self.entries.get(name)
            if entry is None and name in self.store_todo:
                continue  # added a moment ago: run once it is taken up (_take_store)
            if entry is None or kind not in (TRIGGER, BACKFILL):
                why = "no such entry" if entry is None else f"unknown kind {kind!r}"
                log.error("beat: run request %s of entry %r dropped: %s", request.id, name, why)
                self._end_request(request.id, now)
                continue
            if kind == TRIGGER:
                slots = [float(body.get("at") or now)]
            else:
                slots = self._backfill_slots(entry, body)
            cursor = request.cursor
            todo = deque(s for s in slots if cursor is None or s > cursor)
            if not todo:
                self._end_request(request.id, now)
                continue
            spacing = float(body.get("spacing") or 0.0)
            self.requests[request.id] = _Request(request.id, name, kind, todo, spacing, now)
            log.info("beat: %s %s of entry %r: %d run(s)", kind, request.id, name, len(todo))

    def _backfill_slots(self, entry: Entry, body: dict[str, Any]) -> list[float]:
        """The slots of `entry` in [start, end) that it settled without running them (the
        slots still to come are the schedule's), oldest first. Which ran is read from its
        history and its record's last slot sent (written with the dispatch itself, for a
        run whose history record a crash lost); the part of the range the capped history
        no longer covers is left out, with a warning (app.schedules refuses to ask that)."""
        start, end = float(body.get("start") or 0.0), float(body.get("end") or 0.0)
        record = self.records.get(entry.name)
        settled = record.settled if record is not None and record.settled else 0.0
        if self.history_len <= 0:
            log.error(
                "beat: backfill of entry %r dropped: beat_history_len is 0, so which slots "
                "ran is not known",
                entry.name,
            )
            return []
        found = [
            r
            for r in map(RunRecord.from_json, self.app.broker.history(entry.name, self.history_len))
            if r is not None
        ]
        ran = {r.slot for r in found if r.sent_at is not None and r.kind != TRIGGER}
        if record is not None and record.last_slot is not None:
            ran.add(record.last_slot)
        since = covered_from(found, self.history_len)
        if since is not None and start < since:
            log.warning(
                "beat: backfill of entry %r starts at %s, but its history covers from %s on "
                "only: the slots before are left out (they may have run)",
                entry.name,
                self._at(start, entry),
                self._at(since, entry),
            )
            start = since
        slots: list[float] = []
        at = entry.next_after(start - 1e-6)
        while at is not None and at < end and at <= settled and len(slots) < 100_000:
            if at not in ran:
                slots.append(at)
            at = entry.next_after(at)
        return slots

    def _end_request(self, request_id: str, now: float) -> None:
        """Mark a request done without running anything more of it."""
        token = self.lease.token or 0
        outcome = self.app.broker.schedule_run(
            LEASE_NAME, self.holder, token, request_id, now, True
        )
        if outcome == "lost":
            raise LeaseLost(f"request {request_id} refused: another beat holds the lease")
        self.requests.pop(request_id, None)

    def _run_requests(self) -> None:
        """Send the requests' slots that are due, each in one fenced step with its cursor."""
        now = self.clock()
        token = self.lease.token or 0
        for request in list(self.requests.values()):
            while request.slots and request.next_at <= now:
                entry = self.entries.get(request.entry)
                if entry is None:  # removed since: its runs end here
                    self._end_request(request.id, now)
                    break
                slot = request.slots.popleft()
                last = not request.slots
                extra = {"task_id": request.id} if request.kind == TRIGGER else {}
                message, body = self._build(entry, slot, request.kind, **extra)
                outgoing = self.app.outgoing(message, body)
                record = self.records.get(entry.name)
                # overlap "skip": never two runs at once, a requested one included
                busy = record.last_task_id if record and entry.overlap == "skip" else None
                sent_at = self.clock()
                lateness = max(sent_at - slot, 0.0)
                # its history record in the same step: a crash cannot keep one and not the
                # other (a later backfill reads which slots ran from the history)
                run = encode_run(slot, request.kind, sent_at, lateness, message.id, None, sent_at)
                keep = (entry.name, run, self.history_len) if self.history_len > 0 else None
                outcome = self.app.broker.schedule_run(
                    LEASE_NAME, self.holder, token, request.id, slot, last, [outgoing], busy, keep
                )
                if self.app.tracing is not None:
                    self.app.tracing.beat_sent(message.id, outcome, max(sent_at - slot, 0.0))
                if outcome == "lost":
                    raise LeaseLost(f"{request.kind} of {entry.name!r} refused: lease lost")
                if outcome == "busy":  # sent once the entry's last run ends
                    request.slots.appendleft(slot)
                    if not request.waiting:
                        log.info(
                            "beat: %s %s of entry %r waits: its last run %s is unfinished "
                            "(overlap skip)",
                            request.kind,
                            request.id,
                            entry.name,
                            busy,
                        )
                    request.waiting, request.next_at = True, now + self.store_interval
                    break
                request.waiting = False
                if outcome == "sent":
                    if record is not None:  # the entry's last run now (overlap "skip")
                        record.last_task_id, self.ahead = message.id, None
                    log.info(
                        "beat: sent %s for entry %r (%s of %s), id %s",
                        entry.task,
                        entry.name,
                        request.kind,
                        self._at(slot, entry),
                        message.id,
                    )
                if outcome == "done" or last:
                    self.requests.pop(request.id, None)
                    break
                request.next_at = (sent_at + request.spacing) if request.spacing else now
                self._keep_lease("while a request ran")

    # -- history -----------------------------------------------------------------------------
    def _remember(
        self,
        entry: Entry,
        slot: float,
        kind: str = "schedule",
        sent_at: float | None = None,
        lateness: float | None = None,
        task_id: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Keep a run record of `entry` for its history (written after the dispatch)."""
        if self.history_len > 0:
            record = encode_run(slot, kind, sent_at, lateness, task_id, reason, self.clock())
            self.history.append((entry.name, record))

    def _write_history(self) -> None:
        items, self.history = self.history, []
        try:
            self.app.broker.history_add(items, self.history_len)
        except BrokerError as exc:
            log.error("beat: %d run record(s) not written to the history: %s", len(items), exc)

    # -- dispatching -------------------------------------------------------------------------
    def _run_due(self, runs: list[tuple[Entry, float]], now: float) -> None:
        """Settle the due runs of the (entry, run at) `runs` in one batch of fenced
        dispatches (an entry catching up several runs sends them one by one, each on the
        record of the last). A run is due `_early` before its instant."""
        batch: list[_Run] = []
        for entry, at in runs:
            record = self.records[entry.name]
            limit = 1 if entry.catchup != "all" else 10_000
            # the instant up to which runs are due (`at` itself, whatever the rounding)
            seen = max(now + self._early(entry), at)
            planned = self._planned(entry, record, seen)
            slots, count, next_run = planned or entry.slots_between(
                record.settled or 0.0, seen, limit
            )
            if not entry.enabled:
                next_run = None
            if entry.catchup == "all":
                chosen = [s for s in slots if s >= seen - entry.catchup_window.total_seconds()]
            elif entry.catchup == "skip":
                chosen = [s for s in slots if seen - s <= 2 * self.ttl]
            else:
                chosen = slots[-1:]
            missed = count - len(chosen)
            if missed:
                self._missed(entry, record, missed, slots, chosen)
            if len(chosen) > 1:
                for slot in chosen:
                    self._dispatch([self._prepare(entry, slot, next_run)])
            elif chosen:
                batch.append(self._prepare(entry, chosen[0], next_run))
            elif slots:
                batch.append(self._prepare(entry, slots[-1], next_run, send=False))
            else:
                self._push(entry.name, next_run)
        if batch:
            self._dispatch(batch)

    def _missed(
        self,
        entry: Entry,
        record: EntryRecord,
        missed: int,
        slots: list[float],
        chosen: list[float],
    ) -> None:
        record.missed += missed
        if self.history_len > 0:
            # the slots given up: the newest 100 of them, each with why
            given_up, _, _ = entry.slots_between(record.settled or 0.0, slots[-1], 100)
            for slot in given_up:
                if slot not in chosen:
                    why = NO_LEADER if slot < self.led_at else CAUGHT_UP
                    self._remember(entry, slot, reason=why)
        log.warning(
            "beat: entry %r missed %d run(s) (catchup %s)", entry.name, missed, entry.catchup
        )
        if self.metrics is not None:
            self.metrics.beat_missed(entry.name, missed)
        self._event(
            ev.BEAT_MISSED,
            entry=entry.name,
            task=entry.task,
            missed=missed,
            catchup=entry.catchup,
            slots=slots[:100],
        )

    def _prepare(
        self, entry: Entry, slot: float, next_run: float | None, send: bool = True
    ) -> _Run:
        """The dispatch of `entry`'s run at `slot` (with its message if `send`), sent now:
        the one made ready ahead if it is this very run."""
        ahead, self.ahead = self.ahead, None
        record = self.records[entry.name]
        if (
            send
            and ahead is not None
            and ahead.fits(entry, record)
            and (ahead.slot, ahead.next_run) == (slot, next_run)
        ):
            return ahead.stamped(self.clock())
        return self._ready(entry, slot, next_run, send).stamped(self.clock())

    def _ready(self, entry: Entry, slot: float, next_run: float | None, send: bool) -> _Ready:
        """`entry`'s run at `slot` worked out from its record as it is now."""
        record = self.records[entry.name]
        message, outgoing = None, []
        update = record.copy(settled=slot)
        if send:
            message, body = self._build(entry, slot)
            # a run sent `early` is ready in its queue at once (its backlog shows there, as
            # any run's): the eta in its body holds it in the worker until its instant
            held = message.eta is not None and message.eta == slot
            outgoing.append(self.app.outgoing(message, body, held=held))
            update.last_sent = update.lateness = None  # stamped as it is sent
            update.runs, update.last_slot, update.last_task_id = record.runs + 1, slot, message.id
        busy = record.last_task_id if entry.overlap == "skip" and send else None
        return _Ready(
            entry,
            slot,
            next_run,
            record,
            record.settled,
            message,
            outgoing,
            busy,
            update,
            update.open_json(),
        )

    def _build(
        self, entry: Entry, slot: float, kind: str | None = None, **extra: Any
    ) -> tuple[Message, bytes]:
        """The message of `entry`'s run at `slot`, and its encoded body (`kind`: a
        trigger's or a backfill's, not the schedule's)."""
        # the run this message is, carried for tracing (Request.options["beat"])
        run: dict[str, Any] = {"entry": entry.name, "slot": slot}
        if kind is not None:
            run["kind"] = kind
        options = {**entry.options, "beat": run, **extra}
        if entry.overlap == "skip":
            # unfinished = still stored in the broker: acknowledge only when done
            options["acks_late"] = True
        if entry.jitter:
            # from the slot, not from now: the run lands in [slot, slot + jitter]
            options["eta"] = slot + random.uniform(0, entry.jitter.total_seconds())
        elif self._early(entry):
            options["eta"] = slot  # sent ahead of it (see `early`)
        tracing = self.app.tracing
        if tracing is not None:  # beatq.otel: built under its dispatch span
            build = functools.partial(
                self.app.build_message, entry.task, entry.args, entry.kwargs, **options
            )
            return tracing.beat_build(entry.name, slot, kind, build)
        return self.app.build_message(entry.task, entry.args, entry.kwargs, **options)

    def _dispatch(self, runs: list[_Run]) -> None:
        """Dispatch `runs` in one round trip, each fenced by the lease; then record them."""
        outcomes = self.app.broker.beat_dispatch_many(
            LEASE_NAME, self.holder, self.lease.token or 0, [run.dispatch for run in runs]
        )
        for run, outcome in zip(runs, outcomes):
            self._settle(run, outcome)

    def _settle(self, run: _Run, outcome: str) -> None:
        entry, slot, next_run = run.entry, run.dispatch.slot, run.dispatch.next_run
        record, update, busy = self.records[entry.name], run.update, run.dispatch.busy_id
        send, task_id, sent_at = bool(run.dispatch.send), run.task_id, run.sent_at
        if self.app.tracing is not None and task_id is not None:
            self.app.tracing.beat_sent(task_id, outcome, update.lateness)
        if outcome == "lost":
            raise LeaseLost(f"dispatch of {entry.name!r} refused: another beat holds the lease")
        self._push(entry.name, next_run)
        if outcome == "sent":
            self.records[entry.name] = update
            if send:
                self._remember(entry, slot, "schedule", sent_at, update.lateness, task_id)
                if self.metrics is not None:
                    self.metrics.beat_dispatched(entry.name, update.lateness or 0.0)
                if self.timeline is not None:
                    self.timeline.dispatched(update.lateness or 0.0)
                self._event(
                    ev.BEAT_DISPATCHED,
                    entry=entry.name,
                    task=entry.task,
                    task_id=task_id,
                    slot=slot,
                    lateness=update.lateness,
                    next_run=next_run,
                )
                log.info(
                    "beat: sent %s for entry %r, run of %s (%.1f ms %s), id %s",
                    entry.task,
                    entry.name,
                    self._at(slot, entry),
                    abs(sent_at - slot) * 1000,
                    "late" if sent_at >= slot else "ahead, to start at it",
                    task_id,
                )
        elif outcome == "busy":
            record.settled = slot
            record.overlapped += 1
            self._remember(entry, slot, reason=OVERLAP)
            log.warning(
                "beat: entry %r skipped its run of %s: the previous run %s is unfinished",
                entry.name,
                self._at(slot, entry),
                busy,
            )
        elif outcome == "paused":
            record.settled = slot
            self._remember(entry, slot, reason=PAUSED)
            log.info(
                "beat: entry %r is paused; run of %s skipped", entry.name, self._at(slot, entry)
            )
        else:
            record.settled = max(record.settled or 0.0, slot)

    def _at(self, ts: float, entry: Entry) -> str:
        """A run's instant as the log shows it: in the app's zone, and the entry's own."""
        return format_entry_time(ts, self.app.timezone, entry.zone)

    # -- events ------------------------------------------------------------------------------
    def _event(self, type_: str, **fields: Any) -> None:
        """A beat event (beat -E), in a round trip of its own: a beat sends few."""
        if not self.app.events.enabled(type_):
            return
        try:
            self.app.events.send(type_, holder=self.holder, **fields)
        except BrokerError as exc:
            log.error("beat: could not send %s event: %s", type_, exc)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return -1.0
