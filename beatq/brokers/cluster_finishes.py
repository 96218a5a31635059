"""Finishes a Redis Cluster could not take yet, made again in the background.

A task's finish touches the slot of its result (by task id), of its chord, of the queues
its callbacks go to and of its own queue: any shard. While one shard has no master (a
failover: `cluster-node-timeout` and a vote), a worker that waited for every such finish
in its pool threads would stop taking work on every queue, the healthy shards' included.
So a finish that meets an unreachable shard is handed to one thread of the process that
makes it again, with backoff, until the cluster takes it; the pool thread goes on.

Every step of a finish is idempotent when made again (cluster.py: results, the chord's
count, sends marked with the finish's token, the acknowledgement with its token), so
making one again doubles nothing. Until it lands its message stays claimed and is no
longer renewed: one that does not land within the visibility timeout, or whose process
ends first, is delivered again and run again (at least once, as after a kill mid-task).
`close` gives the pending ones a few seconds.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable

from ..exceptions import BrokerAccessDenied, BrokerError

log = logging.getLogger("beatq.broker")

FIRST_DELAY = 0.1  # seconds before a finish is made again, doubled up to MAX_DELAY
MAX_DELAY = 2.0
CLOSE_WAIT = 5.0  # seconds `close` gives the pending finishes


class LaterFinishes:
    """Finishes (as calls) to make again until they land, in a thread of this process
    (started when one is left for later, ended by `close`)."""

    def __init__(self) -> None:
        self._reset()
        _LIVE.add(self)  # a forked child has none of these (one fork hook for all)

    def _reset(self) -> None:
        self.pending: list[Callable[[], object]] = []
        self.trying = 0  # finishes taken out of `pending` by the thread, being made
        self.lock = threading.Condition()
        self.thread: threading.Thread | None = None  # the one that makes them; None: none

    def run(self, finish: Callable[[], frozenset[str]]) -> frozenset[str]:
        """Make `finish`; if the cluster cannot take it now, again later (see above). What
        it returns (the stale acknowledgements, see Store.finish), none when left for later."""
        try:
            return finish()
        except BrokerAccessDenied:
            raise  # turned away, not out of reach: made again it fails the same way
        except BrokerError as exc:
            with self.lock:
                if not self.pending:  # said once while some wait
                    log.warning("finishes are left for later, a shard is out of reach: %s", exc)
                self.pending.append(finish)
                if self.thread is None:
                    self.thread = threading.Thread(
                        target=self._loop, name="beatq-finishes", daemon=True
                    )
                    self.thread.start()
                self.lock.notify_all()
        return frozenset()

    def _loop(self) -> None:
        me = threading.current_thread()
        delay = FIRST_DELAY
        while True:
            with self.lock:
                while not self.pending and self.thread is me:
                    self.lock.wait()
                if self.thread is not me:  # closed (or forked): this thread's work ends
                    return
                batch, self.pending = self.pending, []
                self.trying = len(batch)
            failed = []
            for finish in batch:
                try:
                    finish()
                except BrokerError:
                    failed.append(finish)
                except Exception:  # a bug: said, not made again forever
                    log.exception("a finish left for later failed")
            with self.lock:
                if self.thread is me:  # else given up by `close`
                    self.pending[:0] = failed
                self.trying = 0
                self.lock.notify_all()
                if failed:
                    self.lock.wait(delay)  # woken early by `close`
                    delay = min(delay * 2, MAX_DELAY)
            if not failed:
                log.warning("%d finish(es) left for later have landed", len(batch))
                delay = FIRST_DELAY

    def close(self, wait: float = CLOSE_WAIT) -> None:
        """Give the pending finishes up to `wait` seconds to land, then end the thread
        (those still pending are given up: their messages are delivered again)."""
        end = time.monotonic() + wait
        with self.lock:
            while (self.pending or self.trying) and time.monotonic() < end:
                self.lock.wait(max(end - time.monotonic(), 0.0))
            left = len(self.pending) + self.trying
            self.pending = []
            thread, self.thread = self.thread, None
            self.lock.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(end - time.monotonic(), 0.0) + 1.0)  # a finish under way ends
        if left:
            log.error(
                "%d finish(es) could not reach the cluster: their messages will be "
                "delivered again after their visibility timeout",
                left,
            )


_LIVE: weakref.WeakSet[LaterFinishes] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for later in list(_LIVE):
        later._reset()


os.register_at_fork(after_in_child=_after_fork_in_child)
