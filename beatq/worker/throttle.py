"""Rate limits in a worker: which tasks are limited, and the claims waiting for their turn.

    main thread:  delivery taken for a slot -> delay(delivery): 0, run it; else it waits
                  here (`hold`), its slot given back, its claim still renewed by the
                  heartbeat -> `due()` puts it back in the buffer at its turn
    heartbeat:    app.control.rate_limit(...) -> `set(name, rate)`

A worker with no limited task never asks (`on` is False): no cost per task. With one,
every delivery's header is read once (the task name, `passes`): a pool slot still takes
its next delivery itself unless that one's task is limited (or its turn just came), which
is handed over by the main thread, through this check.

The limit is per worker, as Celery's: each worker starts at most `rate` of a task a
second, evenly spaced. A worker holds at most `cap` waiting claims; past that, a claim
goes back to the broker, delayed until about when the rate lets it run (acknowledged and
sent again in one atomic step, so nothing is lost), where any worker may take it.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Mapping
from typing import Any

from .. import messages
from ..rates import Bucket, parse_rate
from .delivery import Delivery


class Throttle:
    """The rate limits of one worker's tasks (`tasks`: the app's registry)."""

    def __init__(self, tasks: Mapping[str, Any], disabled: bool = False, cap: int = 100) -> None:
        self.lock = threading.Lock()
        self.disabled = disabled
        self.cap = cap
        self.buckets: dict[str, Bucket] = {}
        self.rates: dict[str, float] = {}
        self.waiting: list[tuple[float, int, Delivery]] = []  # (monotonic due, order, delivery)
        self.order = itertools.count()
        self.changed = False  # a limit changed: what waits is looked at again
        self.granted: set[str] = set()  # ids given back at their turn: they start
        self.on = False
        self.load(tasks)

    def set(self, name: str, rate: float | None) -> None:
        """Change the limit of task `name` (None: no limit), from any thread."""
        with self.lock:
            if rate:
                self.buckets[name] = Bucket(rate)
                self.rates[name] = rate
            else:
                self.buckets.pop(name, None)
                self.rates.pop(name, None)
            self.changed = True
            self.on = bool(self.buckets or self.waiting) and not self.disabled

    def passes(self, delivery: Delivery) -> bool:
        """Whether `delivery` may start with no look at the limits: none is on, it was
        acknowledged already (it starts at once, see `delay`), or its task has no limit.
        A body that is not a message passes: the executor dead-letters it."""
        if not self.on or delivery.acked:
            return True
        if self.granted and delivery.id in self.granted:
            return False  # its turn came: `delay` lets it start (and forgets the turn)
        try:
            return delivery.name not in self.buckets
        except messages.MessageError:
            return True

    def delay(self, delivery: Delivery) -> tuple[float, bool]:
        """How many seconds `delivery` must wait for its turn (0: start it now), and
        whether it waits here (its turn taken) or in the broker (the worker holds `cap`
        waiting claims already: its turn is left for when it comes back).

        A message acknowledged already (in its claim) starts at once: held here, it would
        be lost with the worker. A body that is not a message is left to the executor."""
        if delivery.acked:
            return 0.0, True
        if self.granted and delivery.id in self.granted:
            self.granted.discard(delivery.id)
            return 0.0, True
        try:
            name = delivery.name
        except messages.MessageError:
            return 0.0, True
        with self.lock:
            bucket = self.buckets.get(name)
            if bucket is None:
                return 0.0, True
            if len(self.waiting) < self.cap:
                return bucket.reserve(), True
            wait = bucket.defer()
            return (wait, False) if wait > 0 else (bucket.reserve(), True)

    def hold(self, delivery: Delivery, wait: float) -> None:
        """Keep `delivery` until its turn, `wait` seconds from now."""
        with self.lock:
            heapq.heappush(self.waiting, (time.monotonic() + wait, next(self.order), delivery))

    def due(self) -> list[Delivery]:
        """The deliveries whose turn came (every one after a limit changed: each is
        looked at again under the new limit), in the order of their turns."""
        if not self.waiting:
            return []
        found = []
        now = time.monotonic()
        with self.lock:
            again = self.changed  # each is looked at again, under the new limits
            if again:
                self.changed = False
                now = float("inf")
            while self.waiting and self.waiting[0][0] <= now:
                found.append(heapq.heappop(self.waiting)[2])
            if not again:
                self.granted.update(delivery.id for delivery in found)
            self.on = bool(self.buckets or self.waiting) and not self.disabled
        return found

    def next_due(self) -> float | None:
        """Seconds until the next turn, or None when nothing waits."""
        with self.lock:
            if self.changed and self.waiting:
                return 0.0
            return max(0.0, self.waiting[0][0] - time.monotonic()) if self.waiting else None

    def held(self) -> list[Delivery]:
        """What waits, in the order of their turns (for `inspect`)."""
        with self.lock:
            return [delivery for _, _, delivery in sorted(self.waiting)]

    def take_all(self) -> list[Delivery]:
        """Everything that waits, no longer held here (a stop puts it back in its queue)."""
        with self.lock:
            found = [delivery for _, _, delivery in sorted(self.waiting)]
            self.waiting.clear()
            self.granted.clear()
            return found

    def limits(self) -> dict[str, float]:
        """Tasks per second by limited task name."""
        with self.lock:
            return dict(self.rates)

    def load(self, tasks: Mapping[str, Any]) -> None:
        """Read the limits of `tasks` (the registry, once the task modules are in)."""
        for name, task in tasks.items():
            rate = parse_rate(task.option("rate_limit"))
            if rate and name not in self.rates:
                self.set(name, rate)
        with self.lock:
            self.changed = False
