"""The backend roles: one small interface per concern, each with its contract.

Bytes in, bytes out: serialization lives above this layer (messages.py, result.py). A
store is chosen by URL scheme (`beatq.brokers.connect`); each of memory.py, sqlite.py
and redis.py is one class that plays every role (`Backend`) on its own URL.

    Store          url, ping, close, prime, crowded, topology: a connection to one URL
    ├─ Delivery    queues: send, claim, wait, renew, release, finish; dead letters
    ├─ Results     task states: store, read, wait for, forget
    ├─ Leases      the beat's leader lock, with a fencing token
    │  ├─ BeatState   each entry's settled run, next run and record, fenced by a lease
    │  └─ Schedules   entries added at run time, requests to run them now, run history
    ├─ Events      the capped event stream
    ├─ Timeline    the short rolling history of counts behind the dashboard's charts
    └─ Workers     live workers and beats (heartbeats) and revoked tasks
    Backend        all of them on one URL; its results may live elsewhere (`results`)

Delivery model. A message is *ready* (in its queue), *delayed* (until its eta) or
*claimed* by a worker until a deadline. `claim` moves ready messages to claimed,
`renew` pushes the deadline of live claims forward, `finish` acknowledges (forgets a
message for good), `release` puts claimed or aborted messages back at the head of their
queue. A claim whose deadline passes (its worker died) goes back to its queue by
itself: that is the visibility timeout. Due delayed messages become ready by themselves
too. Every method that changes more than one thing does it atomically.

Claims are fenced: each delivery of a message carries its own token (`Claim.token`).
A worker that paused past its visibility timeout, while its message went to another
worker, still holds the old token; its ack, renewal, dead letter or release then leaves
the message to its new holder instead of deleting or duplicating it.

Whether a message may be acknowledged as it is claimed is the sender's word, stored
beside the body at send (`Outgoing.ack_at_claim`): no backend reads a body.
"""

from __future__ import annotations

import abc
import asyncio
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..exceptions import ConfigurationError
from .records import (
    BeatDispatch,
    ChordJoin,
    Claim,
    Claimed,
    DeadLetter,
    EntryState,
    Lease,
    Outgoing,
    ResultWrite,
    RunRequest,
    Topology,
)
from .urls import shown_url

AWAIT_STEP = 1.0  # seconds an executor thread waits at a time in `await_result`

#: Beat entries as the leader plans them: name -> (settled or None to keep it, next run, info).
Plan = Mapping[str, tuple[float | None, float | None, bytes]]


def new_token() -> str:
    """A fresh claim token (see `Delivery`): 64 random bits, so two deliveries never share one."""
    return os.urandom(8).hex()


@dataclass(slots=True)
class Finish:
    """The parts of one `Delivery.finish`, in the order they happen (see there)."""

    ack: Sequence[Claim] = ()
    results: Sequence[ResultWrite] = ()
    send: Sequence[Outgoing] = ()
    join: ChordJoin | None = None
    events: Sequence[bytes] = ()
    token: str | None = None


NONE_STALE: frozenset[str] = frozenset()  # what `finish` returns as a rule
EXPIRED_KEPT = 86400.0  # seconds an expired claim is remembered (stale acks, see `finish`)


def expired_key(id_: str, token: str) -> str:
    """An expired claim's key where a store keeps its finish tokens (those are hex)."""
    return f"expired:{id_}|{token}"


@dataclass(slots=True)
class Take:
    """What a claim asks for (the arguments of `Delivery.claim`)."""

    queues: Sequence[str]
    count: int
    visibility: float
    ack_first: bool = False
    ahead: float = 0.0
    above: int | None = None


class Store(abc.ABC):
    """A connection to one URL's storage. Every method of every role raises `BrokerError`
    when the store is unreachable."""

    url: str

    #: Whether other processes reach the same store through the same URL. A worker whose
    #: broker is not shared cannot hand messages to forked pool children (prefork).
    shared_between_processes: bool = True

    def prime(self) -> None:
        """Ready the store for a call that must be quick, without waiting: a beat calls it
        just before a run's instant. Stores that need no readying do nothing."""

    def crowded(self) -> None:
        """The calling thread's process is one of more busy processes than the host has
        cores (a prefork worker): from now on its calls wait for replies in the kernel
        rather than polling for them, which would take a core the server or a sibling
        needs. Stores that never poll do nothing."""

    def ping(self) -> None:
        """Raise BrokerError if the store cannot be reached."""

    def topology(self) -> Topology:
        """What this store runs on, read now: its kind, its URL (passwords masked), and
        where it has them its servers (each shard's master and replicas, with their
        replication lag), the sentinels, the file. See `Topology` for the shape.

        A read only, of a few round trips: a part that does not answer is reported in
        its `Node.status`; BrokerError only when the store itself cannot be reached.
        This default knows the kind alone (the URL's scheme)."""
        return Topology(self.url.partition(":")[0], shown_url(self.url))

    def disconnect(self) -> None:
        """Release this store's own connections (what `close` does for it)."""

    def close(self) -> None:
        """Release connections; the store may not be used afterwards."""
        self.disconnect()


class Results(Store):
    """Task states by task id: the latest non-final one (STARTED, RETRY) and the final one
    (SUCCESS, FAILURE, REVOKED), each kept for its ttl."""

    @abc.abstractmethod
    def store_results(self, results: Sequence[ResultWrite]) -> None:
        """Store `results`, atomically and idempotently. A final state replaces the
        task's non-final one and wakes every `wait_result` on its task id."""

    @abc.abstractmethod
    def get_result(self, task_id: str) -> bytes | None:
        """The stored state of `task_id` (final if there is one), or None."""

    @abc.abstractmethod
    def get_results(self, task_ids: Sequence[str]) -> list[bytes | None]:
        """The final states of many tasks at once (None where there is none), in order."""

    @abc.abstractmethod
    def wait_result(self, task_id: str, timeout: float | None) -> bytes | None:
        """Block until `task_id` has a final state and return it; None after `timeout`."""

    async def await_result(self, task_id: str, timeout: float | None) -> bytes | None:
        """`wait_result` for code in an event loop, which goes on meanwhile.

        This store has no asynchronous wake-up: a thread of the loop's default executor
        waits on the store's own (what wakes `wait_result`), a second at a time, so a
        cancelled wait frees its thread within a second. Redis overrides this with its
        asyncio client: no thread waits there."""
        loop = asyncio.get_running_loop()
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            left = AWAIT_STEP if end is None else min(max(end - time.monotonic(), 0.0), AWAIT_STEP)
            raw = await loop.run_in_executor(None, self.wait_result, task_id, left)
            if raw is not None or (end is not None and time.monotonic() >= end):
                return raw

    @abc.abstractmethod
    def forget(self, task_id: str) -> None:
        """Delete every state stored for `task_id`."""


class Delivery(Store):
    """Queues of messages, delayed messages, claims, and the dead letters."""

    _results: Results | None = None  # set by `keep_results_in`

    @property
    def results(self) -> Results:
        """Where `finish` stores results, and where they are read: this store, unless
        another was given (`keep_results_in`, a `result_backend` on another URL)."""
        if self._results is not None:
            return self._results
        if not isinstance(self, Results):
            raise ConfigurationError(f"{self.url} keeps no results and was given no store")
        return self

    def keep_results_in(self, store: Results) -> None:
        """Keep results in `store` (another URL's) from now on; `close` closes it too."""
        self._results = store

    def close(self) -> None:
        super().close()
        if self._results is not None:
            self._results.close()

    # -- sending -------------------------------------------------------------------------
    @abc.abstractmethod
    def send(self, messages: Sequence[Outgoing], events: Sequence[bytes] = ()) -> None:
        """Add messages, atomically and in order, in one round trip.

        A message with an eta in the future is delayed until then; the others are ready
        at once at the tail of their queue. Sending an id that is already stored replaces
        its body (a retry keeps its task id). Each message's `ack_at_claim` is stored with
        it. `events` are appended to the event stream after the messages, in the same
        round trip (see `Events.add_events`).
        """

    # -- claiming ------------------------------------------------------------------------
    def claim(
        self,
        queues: Sequence[str],
        count: int,
        visibility: float,
        ack_first: bool = False,
        ahead: float = 0.0,
        above: int | None = None,
    ) -> Claimed:
        """Take up to `count` ready messages, draining `queues` in the order given; within
        a queue, those of a higher priority (`Outgoing.priority`) first, first come first
        served within a priority. `above`: from the last of `queues`, take only messages
        of a priority above it (a busy worker looking for work that outranks what it holds).

        Each is claimed until now + `visibility` seconds. Before taking, due delayed
        messages become ready and expired claims go back to their queue. Never blocks.

        `ahead`: when none of `queues` has a message ready or due, delayed messages due
        within that many seconds count as due, for a caller that holds each until its eta
        (an idle worker: it starts the task at its instant instead of finding it only
        then; a busy one takes none early, which it would hold while others wait). A
        message made ready before its eta is no longer `ack_at_claim`: its holder could
        die before the eta, and the message must come back then.

        `ack_first`: the caller starts the first message at once. When that message was
        sent `ack_at_claim`, it is acknowledged in the same step, as `finish(ack=...)`
        would (gone for good; `release` and `dead_letter` still take it back), and
        `Claimed.acked` is True. Like any early acknowledgement, it is lost if the caller
        never sees the reply (a dropped connection, a kill), as after a worker killed
        between its ack and the run.
        """
        return self.take(Take(queues, count, visibility, ack_first, ahead, above))

    @abc.abstractmethod
    def take(self, ask: Take) -> Claimed:
        """`claim` as `ask` says: what each store implements."""

    @abc.abstractmethod
    def wait(self, queues: Sequence[str], timeout: float, ahead: float = 0.0) -> bool:
        """Block up to `timeout` seconds until one of `queues` may have ready messages
        (a delayed message counts from `ahead` seconds before its eta, as in `claim`).

        True means "try `claim`"; a spurious True is allowed, a missed wake-up is not.
        """

    def wait_claim(
        self,
        queues: Sequence[str],
        timeout: float,
        count: int,
        visibility: float,
        ack_first: bool = False,
        ahead: float = 0.0,
    ) -> Claimed:
        """`wait`, then `claim`, as an idle worker does; a store may make it one round trip.

        The claim runs whether the wait was woken or timed out (due delayed messages and
        expired claims are taken up either way)."""
        return self.wait_take(Take(queues, count, visibility, ack_first, ahead), timeout)

    def wait_take(self, ask: Take, timeout: float) -> Claimed:
        """`wait_claim` as `ask` says; by default a `wait`, then a `take`."""
        self.wait(ask.queues, timeout, ask.ahead)
        return self.take(ask)

    def interrupt_wait(self) -> bool:
        """End the `wait` or `wait_claim` this process is blocked in, as if it were woken.

        Safe to call from a signal handler while the main thread waits. False when this
        store cannot (or is unreachable): the caller interrupts it itself."""
        return False

    @abc.abstractmethod
    def renew(self, claims: Sequence[Claim], visibility: float) -> None:
        """Extend `claims` to now + `visibility`. Claims no longer held (acknowledged,
        expired and put back, or delivered again under another token) are skipped."""

    @abc.abstractmethod
    def release(self, claims: Sequence[Claim]) -> None:
        """Put messages back at the head of their queue: those still held with the claim's
        token, and those no longer stored (acknowledged already: the body comes back, no
        longer `ack_at_claim`). A message stored under another token (delivered again) is
        left to its holder."""

    @abc.abstractmethod
    def queue_length(self, queue: str) -> int:
        """How many ready messages `queue` holds."""

    @abc.abstractmethod
    def purge(self, queues: Sequence[str]) -> int:
        """Delete the ready messages of `queues` for good, atomically; how many there were.

        Delayed messages (an eta to come) and claimed ones (a worker holds them) are left,
        as Celery's purge leaves what its workers hold."""

    @abc.abstractmethod
    def scheduled(self, limit: int = 100) -> list[tuple[float, Claim]]:
        """The delayed messages, earliest eta first, as (eta, message)."""

    # -- finishing -----------------------------------------------------------------------
    def finish(
        self,
        ack: Sequence[Claim] = (),
        results: Sequence[ResultWrite] = (),
        send: Sequence[Outgoing] = (),
        join: ChordJoin | None = None,
        events: Sequence[bytes] = (),
        token: str | None = None,
    ) -> frozenset[str]:
        """In one atomic step and in this order: acknowledge `ack` (the messages are gone
        for good; a claim whose token is no longer the message's acknowledges nothing),
        store `results`, count the chord member `join`, send `send`. Any part may be
        empty. Idempotent for ack, results and join (a member counts once however often
        it finishes); a final result wakes every `wait_result` on its task id.
        `events` are appended to the event stream afterwards, in the same round trip.

        `token`, unique per finish: a call repeating a token already finished does
        nothing, so retrying a finish whose reply was lost never sends its messages twice.

        Results kept in another store (`results`) are stored there first, then the rest
        here: a task's result is never missing once its message is acknowledged.

        Returns the ids of the `ack` claims that were stale: their claim had expired (a
        worker paused past its visibility timeout) and the message was delivered again,
        whether it waits, is held by another worker or was run and acknowledged there.
        A worker must not start such a message: it is another delivery's now, and a
        message of `send` with the id of a stale one (a retry, a rate-limited task put
        back) is not sent. A claim whose acknowledgement went through in an earlier try
        of this call (its reply lost) is not stale. Empty as a rule.
        """
        if results and self._results is not None:
            self._results.store_results(results)
            results = ()
            if not (ack or send or join or events):
                return NONE_STALE
        return self.settle(Finish(ack, results, send, join, events, token))

    @abc.abstractmethod
    def settle(self, step: Finish) -> frozenset[str]:
        """`finish` in this store, results included: what each store implements, with
        the ids of the stale acknowledgements (see `finish`)."""

    # -- dead letters --------------------------------------------------------------------
    @abc.abstractmethod
    def dead_letter(self, claim: Claim, reason: str) -> None:
        """Move a claimed message to the dead letters, atomically, with the reason. As in
        `release`, a message no longer stored (acknowledged already, e.g. in its claim:
        a worker refuses a message only once it has read it) goes there with the claim's
        body; one stored under another token (delivered again) is left to its holder."""

    @abc.abstractmethod
    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The dead letters, oldest first."""

    @abc.abstractmethod
    def requeue_dead(self, ids: Sequence[str] | None = None) -> list[str]:
        """Send dead letters (all when `ids` is None) back to their queue; the ids moved.
        They are acknowledged by their worker, not in a claim. Each one's stored state
        (the FAILURE its worker stored as it dead-lettered it) is forgotten, in the same
        step where the results are kept here, so a waiter waits for the new run."""


def forget_elsewhere(results: Results, ids: Sequence[str]) -> None:
    """Forget the states of requeued dead letters kept in another store (a `result_backend`
    on another URL): after the requeue, so a run that finishes first loses its result
    (a window of one round trip, on that set-up only)."""
    for id_ in ids:
        results.forget(id_)


class Leases(Store):
    """Named leases: one holder at a time, for a ttl, with a fencing token that grows with
    every acquisition of the same lease (the beat's leader lock)."""

    @abc.abstractmethod
    def acquire_lease(self, name: str, holder: str, ttl: float) -> int | None:
        """Take lease `name` for `ttl` seconds if it is free; its new fencing token, or None.

        Tokens grow strictly with every acquisition of the same lease.
        """

    @abc.abstractmethod
    def renew_lease(self, name: str, holder: str, token: int, ttl: float) -> bool:
        """Extend the lease if `holder` still holds it with `token`; False if it was lost."""

    @abc.abstractmethod
    def release_lease(self, name: str, holder: str, token: int) -> None:
        """Give the lease up at once if held with `token`; otherwise do nothing."""

    @abc.abstractmethod
    def get_lease(self, name: str) -> Lease | None:
        """Who holds lease `name` now, or None."""


class BeatState(Leases):
    """Each beat entry's settled instant, next run, paused flag and record (the beat's
    JSON). Writes are fenced by a lease of the same store: a holder that lost it changes
    nothing. A dispatch sends messages, so the store that keeps beat state is the broker."""

    def beat_dispatch(self, lease: str, holder: str, token: int, run: BeatDispatch) -> str:
        """Settle run `run.slot` of `run.entry` and send its messages, in one atomic step.

        Returns what happened:
        - "lost": `holder` does not hold `lease` with `token`; nothing changed (fencing);
        - "done": a run at or after the slot was settled already; nothing sent;
        - "paused": the entry is paused; the run is settled, nothing sent;
        - "busy": message `run.busy_id` is still stored (unfinished); settled, nothing sent;
        - "sent": `run.send` was sent (none settles a slot given up by catch-up).
        Except for "lost", the entry's next run becomes `run.next_run` (None: no more
        runs); for "sent" its settled time becomes the slot and its info `run.info`.
        """
        return self.beat_dispatch_many(lease, holder, token, [run])[0]

    @abc.abstractmethod
    def beat_dispatch_many(
        self, lease: str, holder: str, token: int, runs: Sequence[BeatDispatch]
    ) -> list[str]:
        """`beat_dispatch` for each of `runs`, in order, in as few round trips as the
        store can (each is its own atomic, fenced step); their outcomes."""

    @abc.abstractmethod
    def beat_plan(
        self, lease: str, holder: str, token: int, entries: Plan, remove: Sequence[str] = ()
    ) -> bool:
        """As the leader: set entries' (settled, next run, info) and delete `remove`.

        A settled time of None keeps the stored one. False (nothing changed) if the
        lease is not held with `token`.
        """

    @abc.abstractmethod
    def beat_entries(self) -> dict[str, EntryState]:
        """Every entry the store knows of."""

    @abc.abstractmethod
    def beat_pause(self, entry: str, paused: bool) -> None:
        """Pause or resume `entry`: a paused entry's runs are skipped, not caught up."""


class Schedules(Leases):
    """What `app.schedules` keeps in the broker beside the beat's state: the entries added
    at run time (name -> the caller's spec, JSON), a version that grows with every change
    of them (the leader reads it, one read, to learn of a change), the requests to run an
    entry out of turn (trigger, backfill), and each entry's capped run history.

    A request is run slot by slot, in order, by the leader: each slot's message is sent
    in the same atomic, fenced step that moves the request's cursor to that slot, so a
    new leader resumes after the last slot sent, and no slot is sent twice or skipped.
    """

    @abc.abstractmethod
    def schedule_version(self) -> int:
        """A number that changes whenever an entry or a request is added, changed or
        removed (0 before the first)."""

    @abc.abstractmethod
    def schedule_specs(self) -> tuple[int, dict[str, bytes]]:
        """The version and every stored entry's spec, read together."""

    @abc.abstractmethod
    def schedule_changes(self, since: int) -> tuple[int, dict[str, bytes | None]]:
        """The version, and the entries added, changed or removed after version `since`
        (each its spec now; None: removed), read together: what a leader that read the
        store at `since` takes up, without reading every spec again."""

    @abc.abstractmethod
    def schedule_put(self, name: str, spec: bytes, mode: str) -> bool:
        """Store entry `name`'s spec and bump the version, atomically. `mode` "add": only
        if there is no such entry; "update": only if there is; "set": either way. False
        (nothing changed) when the mode refuses."""

    @abc.abstractmethod
    def schedule_add_many(self, items: Sequence[tuple[str, bytes]]) -> list[str]:
        """Add every (name, spec) of `items`, all or none, with one bump of the version,
        atomically: the names of `items` already stored (nothing changed then), or []."""

    @abc.abstractmethod
    def schedule_delete(self, name: str) -> bool:
        """Forget entry `name`'s spec (its history stays); False if there was none."""

    @abc.abstractmethod
    def schedule_request(self, request_id: str, body: bytes, keep: float) -> bool:
        """Add a request under `request_id` and bump the version, unless a request of that
        id is stored already (pending, or done less than `keep` seconds ago): False then,
        and nothing changed. Requests done longer ago are forgotten in the same step."""

    @abc.abstractmethod
    def schedule_requests(self) -> list[RunRequest]:
        """Every stored request, pending and done, in the order they were added."""

    @abc.abstractmethod
    def schedule_run(
        self,
        lease: str,
        holder: str,
        token: int,
        request_id: str,
        slot: float,
        last: bool,
        send: Sequence[Outgoing] = (),
        busy_id: str | None = None,
        record: tuple[str, bytes, int] | None = None,
    ) -> str:
        """As the leader, run slot `slot` of request `request_id`, in one atomic step:
        - "lost": `holder` does not hold `lease` with `token`; nothing changed;
        - "done": the request is done, gone, or its cursor is at or past `slot`;
        - "busy": message `busy_id` (the entry's last run, overlap "skip") is still
          stored: nothing changed, the slot is to be run later;
        - "sent": `send` was sent and the cursor moved to `slot` (done too if `last`),
          and `record` (entry, history record, maxlen) appended as `history_add` does:
          a run and its record are never apart (a later backfill reads it)."""

    @abc.abstractmethod
    def history_add(self, items: Sequence[tuple[str, bytes]], maxlen: int) -> None:
        """Append (entry, record) items to their entries' histories, each capped to the
        newest `maxlen`."""

    @abc.abstractmethod
    def history(self, name: str, limit: int) -> list[bytes]:
        """Entry `name`'s newest `limit` history records, newest first."""

    def beat_entry(self, name: str) -> EntryState | None:
        """What the beat keeps of entry `name` (as `BeatState.beat_entries` has it), read
        alone: a client checking one name reads one entry, not all of them."""
        entries = self.beat_entries()  # type: ignore[attr-defined]
        found: EntryState | None = entries.get(name)
        return found


class Events(Store):
    """The event stream: appended to, capped to about the newest `event_max_len`."""

    event_max_len: int = 10_000

    @abc.abstractmethod
    def add_events(self, items: Sequence[bytes], maxlen: int | None = None) -> None:
        """Append events to the stream, in order. The stream keeps about the newest
        `maxlen` (default `event_max_len`); older ones are dropped, never an error."""

    @abc.abstractmethod
    def read_events(
        self, after: str | None = None, count: int = 100, timeout: float | None = None
    ) -> list[tuple[str, bytes]]:
        """Up to `count` events newer than the id `after` (None: from the oldest kept),
        oldest first, as (id, data). Ids grow with each event: the last one read is the
        cursor for the next call. With nothing newer, block up to `timeout` seconds
        (None or 0: return at once) until something arrives."""

    @abc.abstractmethod
    def recent_events(self, count: int = 100) -> list[tuple[str, bytes]]:
        """The newest `count` events, newest last."""


class Timeline(Store):
    """A short rolling history of what workers and the beat measured: samples, each the
    (interval start, data) of one writer for one interval (beatq/timeline.py writes and
    reads them). Bounded twice: by age and by count."""

    @abc.abstractmethod
    def add_samples(self, samples: Sequence[tuple[float, bytes]], keep: float, maxlen: int) -> None:
        """Append `samples`, then drop those older than now - `keep` seconds and all but
        the newest `maxlen`, in one round trip. Each sample's data is unique (it names its
        writer and interval): adding the same sample twice keeps one."""

    @abc.abstractmethod
    def samples(self, since: float) -> list[tuple[float, bytes]]:
        """The samples kept of intervals starting at or after `since`, oldest first."""


class Workers(Store):
    """What control commands reach: the live workers, the revoked tasks they skip, and
    the control channel (commands broadcast to every worker, replies kept per command);
    beside them, the live beats (what `beatq status` shows of each).

    The channel is a log that each worker reads with its heartbeat, from a cursor of its
    own: a command reaches the workers alive when it is sent, each once, and none that
    starts later. The log keeps about the newest `control_max_len` commands; replies to a
    command are kept `ttl` seconds after the last one."""

    control_max_len: int = 1000

    @abc.abstractmethod
    def heartbeat(self, worker: str, info: bytes, ttl: float) -> None:
        """Record that `worker` is alive for `ttl` seconds, with its current `info`."""

    @abc.abstractmethod
    def unregister(self, worker: str) -> None:
        """Forget `worker` at once (clean shutdown)."""

    @abc.abstractmethod
    def workers(self) -> dict[str, bytes]:
        """The live workers and their last info."""

    @abc.abstractmethod
    def beat_heartbeat(self, holder: str, info: bytes, ttl: float) -> None:
        """Record that the beat `holder` (leader or standby) is alive for `ttl` seconds,
        with its current `info`; apart from the workers, which `workers` lists alone."""

    @abc.abstractmethod
    def beat_unregister(self, holder: str) -> None:
        """Forget the beat `holder` at once (clean stop)."""

    @abc.abstractmethod
    def beats(self) -> dict[str, bytes]:
        """The live beats and their last info."""

    @abc.abstractmethod
    def revoke(self, task_ids: Sequence[str], terminate: bool, ttl: float) -> None:
        """Keep `task_ids` as revoked for `ttl` seconds (revoking again renews and may add
        `terminate`); workers skip them, and with `terminate` stop them if running."""

    @abc.abstractmethod
    def revoked(self, after: float = 0.0) -> list[tuple[str, float, bool]]:
        """The revocations made after `after` (POSIX seconds, as returned here before) and
        still kept, oldest first, as (task id, when, terminate)."""

    @abc.abstractmethod
    def send_command(self, command: bytes) -> None:
        """Append `command` to the control channel (see the class)."""

    @abc.abstractmethod
    def commands(self, after: str | None) -> tuple[str, list[bytes]]:
        """The commands sent after cursor `after`, oldest first, and the cursor to pass
        next time. `after=None`: no command, and the cursor of now (a worker starting)."""

    @abc.abstractmethod
    def reply(self, command_id: str, worker: str, data: bytes, ttl: float) -> None:
        """Keep `worker`'s reply to command `command_id` for `ttl` seconds."""

    @abc.abstractmethod
    def replies(self, command_id: str) -> dict[str, bytes]:
        """The replies to command `command_id` kept so far, by worker."""


class Backend(Delivery, Results, BeatState, Schedules, Events, Timeline, Workers):
    """One URL's store in every role: what `connect` returns for a broker URL.

    Its `results` are its own unless `connect` was given a result URL of its own: read
    results through `backend.results`, never through the broker's own `get_result`.
    """

    def store_results(self, results: Sequence[ResultWrite]) -> None:
        self.settle(Finish(results=results))
