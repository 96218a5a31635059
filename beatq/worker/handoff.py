"""Where the worker leaves the messages it claimed and its pool takes them.

    main thread:  hold(claims)  reserve(timeout) -> take(free) -> pool.submit(delivery)
    pool slot:    a task finished -> follow(free, start): its next delivery, or give_back()
    stop:         frozen() -> what was not handed over, to put back in its queue

The worker owns one Handoff and gives it to its pool. Everything that moves a claim from
the worker to the pool goes through it: the buffer of claims not yet handed over, the
pool's free slots, the lock under which a claim leaves the buffer, and the revocation
check. The lock is why a claim is either handed to the pool or, on a stop, returned to
its queue, never both.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Container, Iterator

from ..brokers import Claim
from .delivery import Delivery


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
    this many while the pool is busy, the main thread is woken to claim more (a top-up),
    unless the last top-up found nothing (`dry`).

    `free` arguments below ask the pool whether a task submitted now would start at
    once; they are called only when the buffer runs low.
    """

    def __init__(
        self, slots: int, revoked: Container[str], stopping: threading.Event, low: int
    ) -> None:
        self.buffer: deque[Delivery] = deque()
        self.slots = Slots(slots)
        self.revoked = revoked
        self.stopping = stopping
        self.low = low
        self.dry = False
        self.lock = threading.Lock()

    # -- the worker's main thread ------------------------------------------------------------
    def hold(self, claims: list[Claim], acked: bool) -> None:
        """Buffer `claims`, in order; `acked`: the first was acknowledged in its claim."""
        first = len(self.buffer)
        self.buffer.extend(Delivery(claim) for claim in claims)
        if acked and claims:
            self.buffer[first].acked = True

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
        """Whether a top-up is due: the buffer at its low mark, the last top-up not dry."""
        return not self.dry and len(self.buffer) <= self.low

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
        acknowledge it)."""
        return self.buffer[0] if self.buffer else None

    def follow(
        self, free: Callable[[], bool], start: Callable[[Delivery], None]
    ) -> Delivery | None:
        """For a slot whose task just finished: the next delivery, so the main thread is
        not woken to hand it over (one wake-up less a task). `start` is called with it
        under the lock: from then on the pool holds it, so a stop finds it there. None
        when stopping or when the next one is revoked (left to the main thread, which
        records it); the caller then gives the slot back."""
        with self.lock:
            if self.stopping.is_set() or (self.buffer and self.buffer[0].id in self.revoked):
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
        if len(self.buffer) <= self.low and not self.dry and not free():
            self.slots.nudge()  # the main thread tops the buffer up (Worker._top_up)
        return delivery
