"""Where the worker leaves the messages it claimed and its pool takes them.

    main thread:  hold(claims)  reserve(timeout) -> take(free) -> pool.submit(delivery)
    pool slot:    a task finished -> follow(free, start): its next delivery, or give_back()
    stop:         frozen() -> what was not handed over, to put back in its queue
    urgency:      put(taken back from the pool), give_up(n) -> the least urgent, to release

The worker owns one Handoff and gives it to its pool. Everything that moves a claim from
the worker to the pool goes through it: the buffer of claims not yet handed over, the
pool's free slots, the lock under which a claim leaves the buffer, and the revocation
check. The lock is why a claim is either handed to the pool or, on a stop, returned to
its queue, never both.

The buffer is kept in `-Q` order (SPEC §6: the first queue the most urgent), and within
a queue in priority order (a higher one first): sorted by each claim's rank, first come
first served within a rank. A worker of one queue that has seen no priority only
appends, as a plain FIFO.
"""

from __future__ import annotations

import contextlib
import heapq
import threading
import time
from collections import deque
from collections.abc import Callable, Container, Iterator, Sequence

from ..brokers import Claim
from ..calling import MAX_PRIORITY
from ..stop_event import StopEvent
from .delivery import Delivery
from .throttle import Throttle

# Seconds a top-up that found nothing puts the next off, at first and at most (it doubles).
DRY_FIRST = 0.1
DRY_MOST = 2.0

# A claim's rank: its queue's place in -Q, then its priority, in one number (lower first).
PRIORITIES = MAX_PRIORITY + 1


def split_rank(rank: int) -> tuple[int, int]:
    """The queue's place in -Q and the priority that make `rank` (see Handoff.claim_rank)."""
    place, rest = divmod(rank, PRIORITIES)
    return place, MAX_PRIORITY - rest


class Slots:
    """A semaphore for the pool's slots whose waiter can also be woken without one
    (`nudge`): the worker's main thread waits here, and tops up its buffer when a pool
    thread says it runs low."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.nudged = False
        self.cond = threading.Condition(threading.Lock())

    def acquire(self, timeout: float) -> bool:
        """Take a slot, waiting up to `timeout`; False if none came, or on a nudge."""
        with self.cond:
            if not self.count and not self.nudged:
                self.cond.wait(timeout)
            if self.nudged:
                self.nudged = False
                return False
            if self.count:
                self.count -= 1
                return True
            return False

    def release(self) -> None:
        with self.cond:
            self.count += 1
            self.cond.notify()

    def nudge(self) -> None:
        with self.cond:
            if not self.nudged:
                self.nudged = True
                self.cond.notify()


class Handoff:
    """The buffer between a worker's claims and its pool.

    `slots`: how many deliveries the pool may hold at once (running, or waiting in a
    prefork child). `revoked`: the ids of revoked tasks (read, never written, here).
    `stopping`: once set, nothing more is handed over. `low`: when the buffer falls to
    this many while the pool is busy, the main thread is woken to claim more (a top-up);
    one that found nothing is tried again DRY_FIRST later, then twice as long after each
    that finds nothing again, DRY_MOST at most, until one finds work or the buffer runs
    out (`dried`, `refilled`): work sent meanwhile is claimed ahead within that time, not
    a claim round trip for nothing a task.

    `free` arguments below ask the pool whether a task submitted now would start at
    once; they are called only when the buffer runs low. `queues`: the worker's `-Q`, the
    first the most urgent; the buffer hands out the claims of an earlier one first.
    `throttle`: the worker's rate limits; while any is set, a delivery of a limited task
    goes through the main thread (`take`), which checks it, never straight to a slot
    (`follow`); the others still do.
    """

    def __init__(
        self,
        slots: int,
        revoked: Container[str],
        stopping: StopEvent,
        low: int,
        queues: Sequence[str] = (),
        throttle: Throttle | None = None,
    ) -> None:
        self.throttle = throttle or Throttle({})
        self.ranks = {queue: rank for rank, queue in reversed(list(enumerate(queues)))}
        self.prioritized = False  # a claim with a priority came: rank within a queue too
        self.buffer: deque[Delivery] = deque()
        self.slots = Slots(slots)
        self.revoked = revoked
        self.stopping = stopping
        self.low = low
        self.dry_until = 0.0  # no top-up before this (monotonic clock): see `dried`
        self.dry_for = 0.0  # seconds the last top-up that found nothing put it off
        self.lock = threading.Lock()

    # -- the worker's main thread ------------------------------------------------------------
    def hold(self, claims: list[Claim], acked: bool) -> None:
        """Buffer `claims` (see `put`); `acked`: the first was acknowledged in its claim."""
        deliveries = [Delivery(claim) for claim in claims]
        if not self.prioritized and any(claim.priority for claim in claims):
            self.prioritized = True
        if acked and deliveries:
            deliveries[0].acked = True  # the most urgent of its claim: it starts next
        self.put(deliveries)

    def claim_rank(self, claim: Claim) -> int:
        """The urgency of `claim`, 0 the most urgent: its queue's place in `-Q`, then its
        priority (a higher one more urgent), as one number (split_rank takes it apart)."""
        place = self.ranks.get(claim.queue, len(self.ranks))
        return place * PRIORITIES + MAX_PRIORITY - claim.priority

    def rank(self, delivery: Delivery) -> int:
        return self.claim_rank(delivery.claim)

    def put(self, deliveries: list[Delivery], before: bool = False) -> None:
        """Buffer `deliveries` in rank order, after those buffered of the same rank, or
        before them with `before` (taken back from the pool: they came first)."""
        if len(self.ranks) <= 1 and not self.prioritized:  # one queue, no priority: a FIFO
            if before:
                self.buffer.extendleft(reversed(deliveries))
            else:
                self.buffer.extend(deliveries)
            return
        rank = self.rank
        new = sorted(deliveries, key=rank)  # stable: FIFO within a rank
        if not new:
            return
        with self.lock:  # a slot's `follow` sees the buffer before or after, never between
            if not before and (not self.buffer or rank(self.buffer[-1]) <= rank(new[0])):
                self.buffer.extend(new)
                return
            held = list(self.buffer)
            first, then = (new, held) if before else (held, new)
            merged = list(heapq.merge(first, then, key=rank))  # ties: `first`'s go first
            self.buffer.clear()
            self.buffer.extend(merged)

    def give_up(self, count: int, rank: int) -> list[Claim]:
        """Take up to `count` claims of rank `rank` or less urgent off the buffer's end
        (the least urgent, the last come): the caller returns them to their queue."""
        given: list[Claim] = []
        with self.lock:
            while len(given) < count and self.buffer and self.rank(self.buffer[-1]) >= rank:
                given.append(self.buffer.pop().claim)
        given.reverse()  # back in their queue in the order they were claimed
        return given

    def reserve(self, timeout: float) -> bool:
        """Wait up to `timeout` for a free pool slot and reserve it for `take`. False when
        none came, or when a pool slot said the buffer runs low (then top it up)."""
        return self.slots.acquire(timeout)

    def take(self, free: Callable[[], bool]) -> Delivery | None:
        """The next delivery, for the slot `reserve` gave; None when stopping or when a
        pool slot took the rest meanwhile (`follow`): the slot is then given back. A
        revoked one is returned too (see `is_revoked`): the caller records it."""
        with self.lock:
            taken = None if self.stopping.is_set() else self._pop(free)
        if taken is None:
            self.slots.release()
        return taken

    def give_back(self) -> None:
        """A slot reserved, or freed by a finished task, that no delivery took."""
        self.slots.release()

    def is_revoked(self, delivery: Delivery) -> bool:
        return delivery.id in self.revoked

    def runs_low(self) -> bool:
        """Whether a top-up is due: the buffer at its low mark, and not put off (`dried`)."""
        return len(self.buffer) <= self.low and time.monotonic() >= self.dry_until

    def dried(self) -> None:
        """A top-up found nothing: the next is put off DRY_FIRST, or twice as long as the
        last put off, DRY_MOST at most (a busy worker's queues may stay empty for hours)."""
        self.dry_for = min(max(DRY_FIRST, 2 * self.dry_for), DRY_MOST)
        self.dry_until = time.monotonic() + self.dry_for

    def refilled(self) -> None:
        """A claim found work, or the buffer ran out: top-ups are due at the low mark."""
        self.dry_for = self.dry_until = 0.0

    @contextlib.contextmanager
    def frozen(self) -> Iterator[list[Claim]]:
        """Empty the buffer on a stop: yields the claims no slot will take (the caller
        returns them to their queue). Nothing leaves the buffer for the pool while the
        block runs, so what the pool holds then is all that is not in the list."""
        with self.lock:
            rest = [delivery.claim for delivery in self.buffer]
            self.buffer.clear()
            yield rest

    # -- a pool slot -----------------------------------------------------------------------
    def peek(self) -> Delivery | None:
        """The delivery taken next, if known (the solo pool lets the finish of a task
        acknowledge it). Under rate limits, only one that starts with no wait: not of a
        limited task, and none waiting in the throttle whose turn has come (it goes
        ahead, see Worker._unthrottle), so one acknowledged early is taken next."""
        if not self.buffer:
            return None
        head = self.buffer[0]
        throttle = self.throttle
        if throttle.on and (not throttle.passes(head) or throttle.next_due() == 0.0):
            return None
        return head

    def follow(
        self, free: Callable[[], bool], start: Callable[[Delivery], None]
    ) -> Delivery | None:
        """For a slot whose task just finished: the next delivery, so the main thread is
        not woken to hand it over (one wake-up less a task). `start` is called with it
        under the lock: from then on the pool holds it, so a stop finds it there. None
        when stopping or when the next one is revoked (left to the main thread, which
        records it); the caller then gives the slot back."""
        with self.lock:
            if self.stopping.is_set():
                return None
            if self.buffer:
                head = self.buffer[0]
                if head.id in self.revoked or not self.throttle.passes(head):
                    return None
            taken = self._pop(free)
            if taken is not None:
                start(taken)
            return taken

    def _pop(self, free: Callable[[], bool]) -> Delivery | None:
        """With the lock: the next delivery; a nudge to the main thread if the buffer runs
        low while the pool is busy."""
        if not self.buffer:
            return None
        delivery = self.buffer.popleft()
        if self.runs_low() and not free():
            self.slots.nudge()  # the main thread tops the buffer up (Worker._top_up)
        return delivery
