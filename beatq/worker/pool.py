"""Where tasks run: `solo` (inline), `threads` (N threads); `prefork` lives in prefork.py.

A pool is given its Executor and the worker's Handoff. The worker's main thread submits
deliveries one at a time, each into a slot reserved from the Handoff; a slot whose task
has finished takes its next delivery from the Handoff itself (`follow`) or gives the
slot back. The pool runs each with the Executor and calls `on_done(delivery, outcome)`
when it has finished (the executor has acknowledged it and stored its outcome).
`terminate` stops at once and returns the claims it aborted, so the worker can put them
back in their queue.
"""

from __future__ import annotations

import abc
import logging
import queue
import threading
import time
from collections.abc import Callable

from ..brokers import Claim
from .delivery import Delivery
from .execute import Executor, Outcome
from .handoff import Handoff

log = logging.getLogger("beatq.worker")

OnDone = Callable[[Delivery, "Outcome | None"], None]
IDLE_AFTER = 0.02  # seconds without a next task before held-back events are sent


class Pool(abc.ABC):
    """`executor`: runs the tasks (shared by the pool's threads; a prefork child makes
    its own). `handoff`: where the worker leaves what it claimed (see handoff.py)."""

    name = ""

    def __init__(
        self, executor: Executor, concurrency: int, on_done: OnDone, handoff: Handoff
    ) -> None:
        self.executor = executor
        self.concurrency = concurrency
        self.on_done = on_done
        self.handoff = handoff
        self.active: dict[str, tuple[Delivery, float]] = {}  # id -> (delivery, started)

    @classmethod
    def capacity(cls, concurrency: int, queued: int = 0) -> int:
        """How many deliveries the pool holds at once: the Handoff's slots."""
        return concurrency

    def start(self) -> None:
        """Start the pool's threads or processes."""

    def free(self) -> bool:
        """Whether a slot is free: a task submitted now starts at once."""
        return len(self.active) < self.concurrency

    @abc.abstractmethod
    def submit(self, delivery: Delivery) -> None:
        """Run `delivery` in the slot reserved from the Handoff."""

    def _start(self, delivery: Delivery) -> None:
        """The Handoff gave this slot its next delivery (`follow`): it is the pool's now."""
        self.active[delivery.id] = (delivery, time.time())

    def _done(
        self, delivery: Delivery, outcome: Outcome | None = None, follow: bool = False
    ) -> Delivery | None:
        """`delivery` has finished: its slot is given back, or with `follow` goes straight
        to the worker's next delivery (returned, already in `active`; the caller starts
        it), so the worker's main thread is not woken to hand it over: one wake-up less a
        task."""
        self.active.pop(delivery.id, None)
        after = self.handoff.follow(self.free, self._start) if follow else None
        if after is None:
            self.handoff.give_back()
        self.on_done(delivery, outcome)
        return after

    def join(self, timeout: float | None = None) -> bool:
        """Wait for running tasks to finish; False if some still run after `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.active:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def terminate(self) -> list[Claim]:
        """Stop now; the claims of the tasks that were running."""
        return [delivery.claim for delivery, _ in list(self.active.values())]

    def holds(self, task_id: str) -> bool:
        """Whether `task_id` was handed to the pool and has not finished."""
        return task_id in self.active

    def held(self) -> list[Delivery]:
        """What was handed to the pool and has not finished, running or not."""
        return [delivery for delivery, _ in list(self.active.values())]

    def running(self) -> list[tuple[Delivery, float]]:
        """The deliveries whose tasks run now, with when each started (wall clock)."""
        return list(self.active.values())

    def skip(self, task_id: str) -> bool:
        """Record `task_id` REVOKED without running it if the pool holds it, not started
        (prefork: it waits in a child); False otherwise."""
        return False

    def recall(self) -> list[Claim]:
        """Take back the claims the pool holds and has not started (a warm stop puts them
        back in their queue)."""
        return [delivery.claim for delivery in self.withdraw()]

    def withdraw(self) -> list[Delivery]:
        """Take back the deliveries the pool holds and has not started, each child's in
        the order it was handed them; they are no longer the pool's (nor in `held`)."""
        return []

    def stop_task(self, task_id: str) -> bool:
        """Stop the running task `task_id` (revoke with terminate); False if not running.

        Threads and solo raise TaskRevokedError inside the task's own code; the task
        finishes as REVOKED.
        """
        return self.executor.interrupt(task_id)

    def close(self) -> None:
        """Release the pool's threads or processes after `join`."""
        self.idle()

    def idle(self) -> None:
        """Called when the worker has no work at hand: send the events held back."""
        self.executor.flush_events()


class SoloPool(Pool):
    """Runs each task inline, in the worker's main thread.

    It knows the delivery it runs next (the Handoff's `peek`), so a task's finish also
    acknowledges the next task when that one is acknowledged as it starts: one round trip
    per task.
    """

    name = "solo"

    def submit(self, delivery: Delivery) -> None:
        self.active[delivery.id] = (delivery, time.time())
        outcome = None
        then = self.handoff.peek()
        try:
            outcome = self.executor.execute(delivery, then)
            if outcome.then_acked and then is not None:
                then.acked = True
        except Exception:
            log.exception("failed while running %s", delivery.id)
        # Not in a `finally`: a cold shutdown raised in the task leaves it active, so
        # `terminate` names it and the worker puts it back in its queue.
        self._done(delivery, outcome)


class ThreadPool(Pool):
    """N threads sharing one Executor (the backend's connection pool is thread-safe)."""

    name = "threads"

    def start(self) -> None:
        self.inbox: queue.SimpleQueue[Delivery | None] = queue.SimpleQueue()
        self.threads = [
            threading.Thread(target=self._loop, name=f"beatq-pool-{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        for thread in self.threads:
            thread.start()

    def _loop(self) -> None:
        delivery = self.inbox.get()
        while delivery is not None:
            outcome = None
            try:
                outcome = self.executor.execute(delivery)
            except BaseException:
                log.exception("pool thread failed while running %s", delivery.id)
            delivery = self._done(delivery, outcome, follow=True)
            if delivery is not None:  # this thread runs the next one at once
                continue
            try:
                delivery = self.inbox.get(timeout=IDLE_AFTER)
            except queue.Empty:
                self.executor.flush_events()
                delivery = self.inbox.get()

    def submit(self, delivery: Delivery) -> None:
        self.active[delivery.id] = (delivery, time.time())
        self.inbox.put(delivery)

    def close(self) -> None:
        for _ in self.threads:
            self.inbox.put(None)
        for thread in self.threads:
            thread.join(5)
        super().close()
