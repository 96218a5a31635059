"""Where tasks run: `solo` (inline), `threads` (N threads), `prefork` (N child processes).

A pool takes claims one at a time once `acquire` has given it a free slot, runs each
with the process's Executor, and calls `on_done(claim)` when it has finished (the
executor has acknowledged it and stored its outcome). `terminate` stops at once and
returns the claims it aborted, so the worker can put them back in their queue.
"""

from __future__ import annotations

import abc
import atexit
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

from ..brokers import Claim
from ..exceptions import TaskRevokedError, TimeLimitExceeded, WorkerLostError
from .execute import Executor, Outcome

log = logging.getLogger("beatq.worker")

OnDone = Callable[[Claim, "Outcome | None"], None]
IDLE_AFTER = 0.02  # seconds without a next task before held-back events are sent


class Pool(abc.ABC):
    name = ""

    def __init__(self, make_executor: Callable[[], Executor], concurrency: int, on_done: OnDone):
        self.make_executor = make_executor
        self.concurrency = concurrency
        self.on_done = on_done
        self.slots = threading.Semaphore(concurrency)
        self.active: dict[str, tuple[Claim, float]] = {}  # id -> (claim, started)
        self.peek: Callable[[], Claim | None] = lambda: None  # the claim submitted next
        # The worker's next claim for a slot a finished task just freed, taken off its buffer
        # (and whether its claim acknowledged it); None: the slot is given back instead.
        self.follow: Callable[[], tuple[Claim, bool] | None] = lambda: None

    def start(self) -> None:
        """Start the pool's threads or processes."""

    def acquire(self, timeout: float) -> bool:
        """Wait up to `timeout` for a free slot; True once one is reserved for `submit`."""
        return self.slots.acquire(timeout=timeout)

    def free(self) -> bool:
        """Whether a slot is free: a task submitted now starts at once."""
        return len(self.active) < self.concurrency

    @abc.abstractmethod
    def submit(self, claim: Claim, acked: bool = False) -> None:
        """Run `claim` in the slot reserved by `acquire`; `acked`: it was acknowledged
        already (in the claim), so it starts without an acknowledgement of its own."""

    def _done(
        self, claim: Claim, outcome: Outcome | None = None, follow: bool = False
    ) -> tuple[Claim, bool] | None:
        """`claim` has finished: its slot is given back, or with `follow` goes straight to
        the worker's next claim (returned, already in `active`; the caller starts it), so
        the worker's main thread is not woken to hand it over: one wake-up less a task."""
        self.active.pop(claim.id, None)
        after = self.follow() if follow else None
        if after is None:
            self.slots.release()
        self.on_done(claim, outcome)
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
        return [claim for claim, _ in list(self.active.values())]

    def stop_task(self, task_id: str) -> bool:
        """Stop the running task `task_id` (revoke with terminate); False if not running.

        Threads and solo raise TaskRevokedError inside the task's own code; the task
        finishes as REVOKED.
        """
        executor = getattr(self, "executor", None)
        return executor is not None and executor.interrupt(task_id)

    def close(self) -> None:
        """Release the pool's threads or processes after `join`."""
        self.idle()

    def idle(self) -> None:
        """Called when the worker has no work at hand: send the events held back."""
        executor = getattr(self, "executor", None)
        if executor is not None:
            executor.flush_events()


class SoloPool(Pool):
    """Runs each task inline, in the worker's main thread.

    It knows the claim it runs next (`peek`), so a task's finish also acknowledges the
    next task when that one is acknowledged as it starts: one round trip per task.
    """

    name = "solo"

    def start(self) -> None:
        self.executor = self.make_executor()
        self.acked: str | None = None  # the id acknowledged by the previous task's finish

    def submit(self, claim: Claim, acked: bool = False) -> None:
        self.active[claim.id] = (claim, time.time())
        outcome = None
        then = self.peek()
        acked, self.acked = acked or self.acked == claim.id, None
        try:
            outcome = self.executor.execute(claim, then, acked)
            if outcome.then_acked and then is not None:
                self.acked = then.id
        except Exception:
            log.exception("failed while running %s", claim.id)
        # Not in a `finally`: a cold shutdown raised in the task leaves it active, so
        # `terminate` names it and the worker puts it back in its queue.
        self._done(claim, outcome)


class ThreadPool(Pool):
    """N threads sharing one Executor (the backend's connection pool is thread-safe)."""

    name = "threads"

    def start(self) -> None:
        self.executor = self.make_executor()
        self.inbox: queue.SimpleQueue[tuple[Claim, bool] | None] = queue.SimpleQueue()
        self.threads = [
            threading.Thread(target=self._loop, name=f"beatq-pool-{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        for thread in self.threads:
            thread.start()

    def _loop(self) -> None:
        item = self.inbox.get()
        while item is not None:
            claim, acked = item
            outcome = None
            try:
                outcome = self.executor.execute(claim, acked=acked)
            except BaseException:
                log.exception("pool thread failed while running %s", claim.id)
            item = self._done(claim, outcome, follow=True)
            if item is not None:  # this thread runs the next one at once
                continue
            try:
                item = self.inbox.get(timeout=IDLE_AFTER)
            except queue.Empty:
                self.executor.flush_events()
                item = self.inbox.get()

    def submit(self, claim: Claim, acked: bool = False) -> None:
        self.active[claim.id] = (claim, time.time())
        self.inbox.put((claim, acked))

    def close(self) -> None:
        for _ in self.threads:
            self.inbox.put(None)
        for thread in self.threads:
            thread.join(5)
        super().close()


def _child(make_executor: Callable[[], Executor], conn: Connection) -> None:
    # The parent coordinates shutdown: a child ignores Ctrl-C and SIGTERM sent to the
    # whole process group (a terminal, systemd), so its task can finish.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = os.getppid()
    executor = make_executor()
    while True:
        if not conn.poll(IDLE_AFTER):
            executor.flush_events()  # no next task at once: send the events held back
        # A parent killed with SIGKILL never says goodbye, and the pipe stays open (other
        # children hold copies of its end): an idle child checks it still has its parent.
        while not conn.poll(1.0):
            if os.getppid() != parent:
                return
        try:
            item = conn.recv()
        except EOFError:
            return
        if item is None:
            executor.flush_events()
            return
        claim, acked = item
        outcome = None
        try:
            outcome = executor.execute(claim, acked=acked)
        except BaseException:
            log.exception("child failed while running %s", claim.id)
        conn.send((claim.id, outcome))  # the parent counts it (metrics)


class _Child:
    def __init__(self, process: Any, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.claim: Claim | None = None
        self.started = 0.0
        self.limit: float | None = None  # the claim's hard time limit
        self.killed: BaseException | None = None  # why the parent killed it, if it did


class PreforkPool(Pool):
    """N forked child processes; the parent hands each a claim over a pipe.

    A child that dies mid-task, or outlives the task's hard time limit (then it is
    killed), is replaced; its task is recorded as failed and acknowledged.
    """

    name = "prefork"
    grace = 1.0  # seconds past the hard limit before the parent kills a stuck child

    def __init__(
        self,
        make_executor: Callable[[], Executor],
        concurrency: int,
        on_done: OnDone,
        hard_limit: Callable[[Claim], float | None] = lambda claim: None,
    ) -> None:
        super().__init__(make_executor, concurrency, on_done)
        self.hard_limit = hard_limit
        self.ctx = multiprocessing.get_context("fork")
        self.children: list[_Child] = []
        self.lock = threading.Lock()
        self.stopping = False

    def _spawn(self) -> _Child:
        parent_conn, child_conn = self.ctx.Pipe()
        process = self.ctx.Process(
            target=_child, args=(self.make_executor, child_conn), daemon=True, name="beatq-child"
        )
        process.start()
        child_conn.close()
        return _Child(process, parent_conn)

    def start(self) -> None:
        # Children ignore SIGTERM, so multiprocessing's own exit hook (terminate, then
        # join) would wait for them forever if the parent left by an unexpected path.
        atexit.register(self._kill_all)
        self.children = [self._spawn() for _ in range(self.concurrency)]
        self.parent_executor = self.make_executor()
        self.collector = threading.Thread(target=self._collect, name="beatq-collector", daemon=True)
        self.collector.start()

    def submit(self, claim: Claim, acked: bool = False) -> None:
        with self.lock:
            child = next(c for c in self.children if c.claim is None)
            child.claim, child.started = claim, time.monotonic()
            child.limit = self.hard_limit(claim)  # once: it decodes the message
            self.active[claim.id] = (claim, time.time())
        child.conn.send((claim, acked))

    def _collect(self) -> None:
        while not self.stopping:
            with self.lock:
                # every child's pipe, busy or not: one handed a task after this line
                # must still be heard the moment it answers
                pipes = {c.conn: c for c in self.children}
                sentinels = {c.process.sentinel: c for c in self.children}
            ready = wait([*pipes, *sentinels], timeout=0.1)
            for item in ready:
                if item in pipes:
                    child = pipes[item]
                    try:
                        _, outcome = child.conn.recv()
                    except (EOFError, OSError):
                        continue  # its sentinel tells
                    self._free(child, outcome)
                elif not self.stopping:
                    self._replace(sentinels[item], WorkerLostError("the child process died"))
            self._enforce_limits()

    def _free(self, child: _Child, outcome: Outcome | None) -> None:
        with self.lock:
            claim, child.claim = child.claim, None
        if claim is None:
            return
        after = self._done(claim, outcome, follow=not self.stopping)
        if after is not None:
            try:
                self.submit(*after)
            except OSError:  # the child died meanwhile: its sentinel tells, as for any task
                log.warning("could not hand %s to child %s", after[0].id, child.process.pid)

    def _enforce_limits(self) -> None:
        now = time.monotonic()
        for child in list(self.children):
            claim = child.claim
            if claim is None:
                continue
            limit = child.limit
            if limit and now - child.started > limit + self.grace:
                self._kill(child, TimeLimitExceeded(f"time limit ({limit}s) exceeded"))

    def _kill(self, child: _Child, reason: BaseException) -> None:
        child.killed = reason  # the collector may see it die first: it records this reason
        os.kill(child.process.pid, signal.SIGKILL)
        child.process.join(5)
        self._replace(child, reason)

    def stop_task(self, task_id: str) -> bool:
        """Kill the child running `task_id` and start another; the task becomes REVOKED."""
        with self.lock:
            child = next((c for c in self.children if c.claim and c.claim.id == task_id), None)
        if child is None:
            return False
        log.warning("killing child process %s to terminate task %s", child.process.pid, task_id)
        self._kill(child, TaskRevokedError("terminated"))
        return True

    def _replace(self, child: _Child, reason: BaseException) -> None:
        child.process.join(1)
        with self.lock:
            if child not in self.children:
                return
            self.children.remove(child)
            self.children.append(self._spawn())
            claim, child.claim = child.claim, None
        log.error("child process %s exited (code %s)", child.process.pid, child.process.exitcode)
        if claim is not None:
            outcome = self.parent_executor.fail_lost(claim, child.killed or reason)
            self._done(claim, outcome)

    def terminate(self) -> list[Claim]:
        self.stopping = True
        aborted = super().terminate()
        for child in self.children:
            if child.process.is_alive():
                os.kill(child.process.pid, signal.SIGKILL)
        for child in self.children:
            child.process.join(5)
        return aborted

    def _kill_all(self) -> None:
        for child in self.children:
            if child.process.is_alive():
                child.process.kill()

    def close(self) -> None:
        self.stopping = True
        for child in self.children:
            try:
                child.conn.send(None)
            except OSError:
                pass
        for child in self.children:
            child.process.join(5)
            if child.process.is_alive():
                child.process.kill()


POOLS: dict[str, type[Pool]] = {"solo": SoloPool, "threads": ThreadPool, "prefork": PreforkPool}
