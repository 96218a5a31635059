"""The backend interface: broker, result store, dead letters, leases and worker registry.

Bytes in, bytes out: serialization lives above this layer (messages.py, result.py). A
backend is chosen by URL scheme (see `beatq.brokers.connect`); the worker, the app and
the CLI only ever talk to this interface.

Delivery model. A message is *ready* (in its queue), *delayed* (until its eta) or
*claimed* by a worker until a deadline. `claim` moves ready messages to claimed,
`renew` pushes the deadline of live claims forward, `ack` forgets a message for good,
`release` puts claimed or aborted messages back at the head of their queue. A claim
whose deadline passes (its worker died) goes back to its queue by itself: that is the
visibility timeout. Due delayed messages become ready by themselves too. Every method
that changes more than one thing does it atomically.

Claims are fenced: each delivery of a message carries its own token (`Claim.token`).
A worker that paused past its visibility timeout, while its message went to another
worker, still holds the old token; its ack, renewal, dead letter or release then leaves
the message to its new holder instead of deleting or duplicating it.
"""

from __future__ import annotations

import abc
import json
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass


def new_token() -> str:
    """A fresh claim token: 64 random bits, so two deliveries never share one."""
    return os.urandom(8).hex()


def acked_at_claim(body: bytes, tasks: Collection[str], now: float) -> bool:
    """Whether `claim(..., ack_first=tasks)` acknowledges a message with this body as it
    claims it: a message of one of `tasks`, due by `now` (one claimed ahead of its eta
    waits for it, unacknowledged), with a plain JSON payload that does not say `acks_late`
    anywhere (a per-call acks_late, e.g. a chord member's, is in the payload). The Redis
    claim script applies the same rule."""
    head, _, payload = body.partition(b"\n")
    try:
        header = json.loads(head)
    except (ValueError, UnicodeDecodeError):
        return False
    return (
        isinstance(header, dict)
        and header.get("task") in tasks
        and header.get("ct") == "application/json"
        and header.get("ce") is None
        and (not isinstance(header.get("eta"), (int, float)) or header["eta"] <= now)
        and b"acks_late" not in payload
    )


@dataclass(frozen=True)
class Claim:
    """A message as a worker holds it: its broker id, its queue, its body and the token of
    this delivery. Each `claim` hands out a new token, so a message delivered again (its
    claim expired) has a new one: acks, renewals, dead-lettering and releases that carry
    an old token come from a worker that lost the message, and change nothing."""

    id: str
    queue: str
    body: bytes
    token: str = ""  # empty for a message that is not claimed (see `scheduled`)


@dataclass(frozen=True)
class Outgoing:
    """A message to send: queue, id, body and optional eta (POSIX seconds)."""

    queue: str
    id: str
    body: bytes
    eta: float | None = None


@dataclass(frozen=True)
class ResultWrite:
    """A task state to store. `final` states (SUCCESS, FAILURE, REVOKED) wake waiters."""

    task_id: str
    meta: bytes
    ttl: float
    final: bool = True


@dataclass(frozen=True)
class ChordJoin:
    """A chord member finishing: count `member` in `group`; the member that makes the
    count reach `size` (and only that one) sends `unlock`."""

    group: str
    member: str
    size: int
    unlock: Outgoing
    ttl: float


@dataclass(frozen=True)
class Claimed:
    """What `claim` returns: the claims, and the eta of the earliest delayed message."""

    claims: list[Claim]
    next_eta: float | None
    acked: bool = False  # the first claim was acknowledged in the claim (see `ack_first`)


@dataclass(frozen=True)
class DeadLetter:
    id: str
    queue: str
    reason: str
    time: float
    body: bytes


@dataclass(frozen=True)
class EntryState:
    """What the broker keeps of a beat entry."""

    name: str
    settled: float | None  # runs at or before this instant are done (dispatched or given up)
    next_run: float | None
    paused: bool
    info: bytes | None  # the beat's own record: task, schedule, counters (JSON)


@dataclass(frozen=True)
class BeatDispatch:
    """One run of a beat entry to settle and send: the arguments of `beat_dispatch`."""

    entry: str
    slot: float
    next_run: float | None
    info: bytes
    send: Sequence[Outgoing] = ()
    busy_id: str | None = None


@dataclass(frozen=True)
class Lease:
    holder: str
    token: int
    remaining: float  # seconds left before it expires
    since: float | None = None  # when this holder acquired it (POSIX seconds)


class Backend(abc.ABC):
    """One broker URL's storage. Methods raise `BrokerError` when the store is unreachable."""

    url: str

    #: Whether other processes reach the same store through the same URL. A worker whose
    #: broker is not shared cannot hand messages to forked pool children (prefork).
    shared_between_processes: bool = True

    # -- queue ---------------------------------------------------------------------------
    @abc.abstractmethod
    def send(self, messages: Sequence[Outgoing], events: Sequence[bytes] = ()) -> None:
        """Add messages, atomically and in order, in one round trip.

        A message with an eta in the future is delayed until then; the others are ready
        at once at the tail of their queue. Sending an id that is already stored replaces
        its body (a retry keeps its task id). `events` are appended to the event stream
        after the messages, in the same round trip (see `add_events`).
        """

    @abc.abstractmethod
    def claim(
        self,
        queues: Sequence[str],
        count: int,
        visibility: float,
        ack_first: Collection[str] = (),
        ahead: float = 0.0,
    ) -> Claimed:
        """Take up to `count` ready messages, draining `queues` in the order given.

        Each is claimed until now + `visibility` seconds. Before taking, due delayed
        messages become ready and expired claims go back to their queue. Never blocks.

        `ahead`: when none of `queues` has a message ready or due, delayed messages due
        within that many seconds count as due, for a caller that holds each until its eta
        (an idle worker: it starts the task at its instant instead of finding it only
        then; a busy one takes none early, which it would hold while others wait). Their
        body still says their eta.

        `ack_first`: the names of tasks acknowledged as they start, for a caller that
        starts the first message at once. When that message is one of them
        (`acked_at_claim`), it is acknowledged in the same step, as `finish(ack=...)`
        would (gone for good; `release` still brings it back), and `Claimed.acked` is True.
        Like any early acknowledgement, it is lost if the caller never sees the reply (a
        dropped connection, a kill), as after a worker killed between its ack and the run.
        """

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
        ack_first: Collection[str] = (),
        ahead: float = 0.0,
    ) -> Claimed:
        """`wait`, then `claim`, as an idle worker does; a backend may make it one round trip.

        The claim runs whether the wait was woken or timed out (due delayed messages and
        expired claims are taken up either way)."""
        self.wait(queues, timeout, ahead)
        return self.claim(queues, count, visibility, ack_first, ahead)

    def interrupt_wait(self) -> bool:
        """End the `wait` or `wait_claim` this process is blocked in, as if it were woken.

        Safe to call from a signal handler while the main thread waits. False when this
        backend cannot (or the broker is unreachable): the caller interrupts it itself."""
        return False

    @abc.abstractmethod
    def renew(self, claims: Sequence[Claim], visibility: float) -> None:
        """Extend `claims` to now + `visibility`. Claims no longer held (acknowledged,
        expired and put back, or delivered again under another token) are skipped."""

    @abc.abstractmethod
    def release(self, claims: Sequence[Claim]) -> None:
        """Put messages back at the head of their queue: those still held with the claim's
        token, and those no longer stored (acknowledged already: the body comes back).
        A message stored under another token (delivered again) is left to its holder."""

    @abc.abstractmethod
    def queue_length(self, queue: str) -> int:
        """How many ready messages `queue` holds."""

    @abc.abstractmethod
    def scheduled(self, limit: int = 100) -> list[tuple[float, Claim]]:
        """The delayed messages, earliest eta first, as (eta, message)."""

    # -- acknowledging, finishing ----------------------------------------------------------
    @abc.abstractmethod
    def finish(
        self,
        ack: Sequence[Claim] = (),
        results: Sequence[ResultWrite] = (),
        send: Sequence[Outgoing] = (),
        join: ChordJoin | None = None,
        events: Sequence[bytes] = (),
        token: str | None = None,
    ) -> None:
        """In one atomic step and in this order: acknowledge `ack` (the messages are gone
        for good; a claim whose token is no longer the message's acknowledges nothing),
        store `results`, count the chord member `join`, send `send`. Any part may be
        empty. Idempotent for ack, results and join (a member counts once however often
        it finishes); a final result wakes every `wait_result` on its task id.
        `events` are appended to the event stream afterwards, in the same round trip.

        `token`, unique per finish: a call repeating a token already finished does
        nothing, so retrying a finish whose reply was lost never sends its messages twice.
        """

    # -- results ---------------------------------------------------------------------------
    @abc.abstractmethod
    def get_result(self, task_id: str) -> bytes | None:
        """The stored state of `task_id` (final if there is one), or None."""

    @abc.abstractmethod
    def get_results(self, task_ids: Sequence[str]) -> list[bytes | None]:
        """The final states of many tasks at once (None where there is none), in order."""

    @abc.abstractmethod
    def wait_result(self, task_id: str, timeout: float | None) -> bytes | None:
        """Block until `task_id` has a final state and return it; None after `timeout`."""

    @abc.abstractmethod
    def forget(self, task_id: str) -> None:
        """Delete every state stored for `task_id`."""

    # -- dead letters ----------------------------------------------------------------------
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
        """Send dead letters (all when `ids` is None) back to their queue; the ids moved."""

    # -- leases (the beat's leader lock) ---------------------------------------------------
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

    # -- beat state -------------------------------------------------------------------------
    @abc.abstractmethod
    def beat_dispatch(
        self,
        lease: str,
        holder: str,
        token: int,
        entry: str,
        slot: float,
        next_run: float | None,
        info: bytes,
        send: Sequence[Outgoing] = (),
        busy_id: str | None = None,
    ) -> str:
        """Settle run `slot` of `entry` and send its messages, in one atomic step.

        Returns what happened:
        - "lost": `holder` does not hold `lease` with `token`; nothing changed (fencing);
        - "done": a run at or after `slot` was settled already; nothing sent;
        - "paused": the entry is paused; the run is settled, nothing sent;
        - "busy": message `busy_id` is still stored (unfinished); settled, nothing sent;
        - "sent": `send` was sent (empty `send` settles a slot given up by catch-up).
        Except for "lost", the entry's next run becomes `next_run` (None: no more runs);
        for "sent" its settled time becomes `slot` and its info becomes `info`.
        """

    def beat_dispatch_many(
        self, lease: str, holder: str, token: int, runs: Sequence[BeatDispatch]
    ) -> list[str]:
        """`beat_dispatch` for each of `runs`, in order, in as few round trips as the
        backend can (each is its own atomic, fenced step); their outcomes."""
        return [
            self.beat_dispatch(
                lease, holder, token, r.entry, r.slot, r.next_run, r.info, r.send, r.busy_id
            )
            for r in runs
        ]

    @abc.abstractmethod
    def beat_plan(
        self,
        lease: str,
        holder: str,
        token: int,
        entries: Mapping[str, tuple[float | None, float | None, bytes]],
        remove: Sequence[str] = (),
    ) -> bool:
        """As the leader: set entries' (settled, next run, info) and delete `remove`.

        A settled time of None keeps the stored one. False (nothing changed) if the
        lease is not held with `token`.
        """

    @abc.abstractmethod
    def beat_entries(self) -> dict[str, EntryState]:
        """Every entry the broker knows of."""

    @abc.abstractmethod
    def beat_pause(self, entry: str, paused: bool) -> None:
        """Pause or resume `entry`: a paused entry's runs are skipped, not caught up."""

    # -- workers ---------------------------------------------------------------------------
    @abc.abstractmethod
    def heartbeat(self, worker: str, info: bytes, ttl: float) -> None:
        """Record that `worker` is alive for `ttl` seconds, with its current `info`."""

    @abc.abstractmethod
    def unregister(self, worker: str) -> None:
        """Forget `worker` at once (clean shutdown)."""

    @abc.abstractmethod
    def workers(self) -> dict[str, bytes]:
        """The live workers and their last info."""

    # -- events --------------------------------------------------------------------------
    event_max_len: int = 10_000  # the stream keeps about this many of the newest events

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

    # -- revoked tasks ----------------------------------------------------------------------
    @abc.abstractmethod
    def revoke(self, task_ids: Sequence[str], terminate: bool, ttl: float) -> None:
        """Keep `task_ids` as revoked for `ttl` seconds (revoking again renews and may add
        `terminate`); workers skip them, and with `terminate` stop them if running."""

    @abc.abstractmethod
    def revoked(self, after: float = 0.0) -> list[tuple[str, float, bool]]:
        """The revocations made after `after` (POSIX seconds, as returned here before) and
        still kept, oldest first, as (task id, when, terminate)."""

    # -- lifecycle -------------------------------------------------------------------------
    def prime(self) -> None:
        """Ready the store for a call that must be quick, without waiting: a beat calls it
        just before a run's instant. Backends that need no readying do nothing."""

    def crowded(self) -> None:
        """The calling thread's process is one of more busy processes than the host has
        cores (a prefork worker): from now on its calls wait for replies in the kernel
        rather than polling for them, which would take a core the server or a sibling
        needs. Backends that never poll do nothing."""

    def ping(self) -> None:
        """Raise BrokerError if the store cannot be reached."""

    def close(self) -> None:
        """Release connections; the backend may not be used afterwards."""
