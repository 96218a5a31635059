"""The prefork pool: N forked child processes, each handed claims over a pipe.

The parent (the worker's process) hands each child its next claims while it runs one, so
a child goes from task to task without waiting for it; a collector thread in the parent
reads what the children report, gives an idle child what waits behind a busy sibling,
replaces a child that died, and kills one stuck past its task's hard time limit. Parent
and child share a small board per child (see _Child) instead of a message per step.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import select
import selectors
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

from .. import signals
from ..brokers import Claim
from ..exceptions import TaskRevokedError, TimeLimitExceeded, WorkerLostError
from .autoscale import Autoscale
from .delivery import DECODE_ERRORS, Delivery
from .execute import Executor, Outcome
from .handoff import Handoff
from .pool import IDLE_AFTER, OnDone, Pool
from .recycle import Recycle

log = logging.getLogger("beatq.worker")

LIMITS_EVERY = 0.05  # seconds between two looks at the children's time limits
ORPHAN_EVERY = 0.2  # seconds between two looks of a child at whether its parent lives


def _child(
    parents: Executor, conn: Connection, board: Any, crowded: bool, recycle: Recycle = Recycle()
) -> None:
    # The parent coordinates shutdown: a child ignores Ctrl-C and SIGTERM sent to the
    # whole process group (a terminal, systemd), so its task can finish.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = os.getppid()
    _die_with(parent)
    # An executor of its own for the same app and host: the parent's copy may hold a
    # lock another parent thread had taken at the fork, and events held back there.
    executor = Executor(parents.app, parents.hostname)
    signals.worker_process_init.send(sender=None)
    if crowded:  # as many children as cores, beside the parent and often the server
        for backend in {executor.app.broker, executor.app.result_store}:
            backend.crowded()
    queued: deque[tuple[int, Delivery]] = deque()  # handed over, not started: in order
    done = 0  # tasks run, for recycle
    sent = _poller(conn)
    while True:
        if not queued:
            if not sent(IDLE_AFTER):
                executor.flush_events()  # no next task at once: send the events held back
            # A parent killed with SIGKILL never says goodbye, and the pipe stays open (other
            # children hold copies of its end): an idle child checks it still has its parent.
            while not sent(1.0):
                if os.getppid() != parent:
                    return
        while sent(0.0):  # whatever the parent sent meanwhile, without waiting
            try:
                item = conn.recv()
            except EOFError:
                return
            if item is None:
                executor.flush_events()
                signals.worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=0)
                return
            seq, claim, acked = item
            queued.append((seq, Delivery(claim, acked)))
        seq, delivery = queued.popleft()
        if not delivery.acked and os.getppid() != parent:
            # Orphaned (its parent was killed) while claims waited here: they come back to
            # their queue after the visibility timeout and run elsewhere; run here too, they
            # would run twice. One already acknowledged would not come back: it runs here.
            continue
        if not _begin(board, seq):
            continue  # the parent took it back (_Child.withdraw)
        limit = _hard_limit(executor, delivery)  # decodes it, for `execute` too
        if limit:
            board[LIMIT] = limit
        then = queued[0][1] if queued and queued[0][0] >= board[FLOOR] else None
        if then is not None and recycle.last(done):
            then = None  # this child's last task: the next runs in another, acked there
        outcome = None
        try:
            outcome = executor.execute(delivery, then)
        except BaseException:
            log.exception("child failed while running %s", delivery.id)
        if then is not None and outcome is not None and outcome.then_acked:
            then.acked = True
        conn.send((seq, outcome))  # the parent counts it (metrics)
        done += 1
        why = recycle and recycle.due(done)
        if why:  # retire: the parent replaces this child and re-hands what waits here
            log.info("child process %s %s: replaced", os.getpid(), why)
            executor.flush_events()
            signals.worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=0)
            return


def _die_with(parent: int) -> None:
    """End this child soon after its parent dies, even mid-task. A parent killed with
    SIGKILL cannot stop its children, and an orphan left to finish its task would also
    acknowledge the next claim it was handed (with that finish), by then back in its queue
    and run elsewhere: run twice. Ended, the orphan's task is lost as on a power loss
    (acknowledged at its start: not run again; acks_late: run again), and what waited in
    it comes back to its queue (SPEC §6)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(ORPHAN_EVERY)
        os._exit(1)

    threading.Thread(target=watch, name="beatq-orphan-watch", daemon=True).start()


def _poller(conn: Connection) -> Callable[[float], bool]:
    """In the child: whether the parent sent something on `conn`, waiting up to the
    seconds given. One poll object for the child's life: Connection.poll makes and
    registers a selector on every call (two a task, a tenth of a child's CPU)."""
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN | select.POLLHUP)
    poll = poller.poll

    def sent(timeout: float) -> bool:
        return bool(poll(timeout * 1000))

    return sent


STARTED, FLOOR, SINCE, LIMIT = 0, 1, 2, 3  # a child's board: see _Child


def _begin(board: Any, seq: int) -> bool:
    """In the child: start the claim numbered `seq`, unless the parent took it back.
    Its hard limit is not known yet (0) until the child has read it (_hard_limit)."""
    with board.get_lock():
        if seq < board[FLOOR]:
            return False
        board[STARTED], board[SINCE], board[LIMIT] = seq, time.monotonic(), 0.0
        return True


def _hard_limit(executor: Executor, delivery: Delivery) -> float:
    """In the child: the hard time limit of `delivery`'s task in seconds, 0 for none. A
    per-call time_limit (apply_async) wins over the task's. 0 for a message that does
    not decode or names no task here: it is dead-lettered, not run."""
    try:
        message = delivery.message(executor.accept)
    except DECODE_ERRORS:
        return 0.0
    task = executor.app.tasks.get(message.task)
    limit = message.options.get("time_limit", task.option("time_limit") if task else None)
    try:
        return float(limit or 0.0)
    except (TypeError, ValueError):
        return 0.0


class _Handed:
    """A delivery handed to a child, numbered in the order the child receives them."""

    __slots__ = ("seq", "delivery")

    def __init__(self, seq: int, delivery: Delivery) -> None:
        self.seq, self.delivery = seq, delivery


class _Running(NamedTuple):
    """What a child runs now: since when (monotonic clock), its hard limit (0: none)."""

    handed: _Handed
    since: float
    limit: float


class _Child:
    """A child process, what it was handed, and the board it shares with the parent:
    the number of the claim it started last, the lowest number it may still start
    (what the parent took back lies below), when it started (monotonic clock) and the
    hard time limit of its task, which the child reads as it decodes the message (0
    until then, or for none)."""

    def __init__(self, process: Any, conn: Connection, board: Any) -> None:
        self.process = process
        self.conn = conn
        self.board = board
        self.handed: deque[_Handed] = deque()  # not reported finished; the first runs
        self.seq = 0
        self.idle_since: float | None = None  # when autoscale saw it idle first (monotonic)
        self.killed: BaseException | None = None  # why the parent killed it, if it did

    def running(self) -> _Running | None:
        """The delivery this child runs now, since when, and its limit, if any."""
        with self.board.get_lock():
            started, since, limit = self.board[STARTED], self.board[SINCE], self.board[LIMIT]
        try:
            first = self.handed[0]  # read without the pool's lock: it may empty meanwhile
        except IndexError:
            return None
        return _Running(first, since, limit) if first.seq == started else None

    def waiting(self) -> _Handed | None:
        """The first claim handed over that the child has not started."""
        started = self.board[STARTED]
        return next((h for h in self.handed if h.seq > started), None)

    def withdraw(self, handed: _Handed) -> list[_Handed]:
        """Take back `handed` and what waits here before it, in order (the child skips
        them: it starts none below FLOOR); [] if the child started `handed` meanwhile.
        In one step: taken one at a time, the next could start between two."""
        with self.board.get_lock():
            started = self.board[STARTED]
            if handed.seq <= started or handed not in self.handed:
                return []
            self.board[FLOOR] = handed.seq + 1
        taken = [h for h in self.handed if started < h.seq <= handed.seq]
        for h in taken:
            self.handed.remove(h)
        return taken


class PreforkPool(Pool):
    """N forked child processes; the parent hands each a claim over a pipe.

    A busy child is handed its next claim while it runs one (at most `QUEUED` wait in a
    child), so it goes from task to task without waiting for the parent, and a task's
    finish acknowledges the next as in the solo pool. What waits in a child is not lost
    to the others: a child with nothing to do takes it over once the task ahead of it
    has run `STEAL_AFTER`; a revocation, a warm stop or the child's death gives it back.

    A child that dies mid-task, or outlives the task's hard time limit (then it is
    killed), is replaced; its task is recorded as failed and acknowledged.
    """

    name = "prefork"
    grace = 1.0  # seconds past the hard limit before the parent kills a stuck child
    QUEUED = 2  # claims that wait in a busy child behind its running task
    QUEUE_BODY_MAX = 32 * 1024  # bytes: a bigger message waits for an idle child here
    STEAL_AFTER = 0.01  # seconds a task runs before a sibling takes what waits behind it

    def __init__(
        self,
        executor: Executor,
        concurrency: int,
        on_done: OnDone,
        handoff: Handoff,
        queued: int = QUEUED,
        recycle: Recycle = Recycle(),
        autoscale: Autoscale | None = None,
    ) -> None:
        super().__init__(executor, concurrency, on_done, handoff)
        self.recycle = recycle  # when a child retires (recycle.py)
        self.autoscale = autoscale  # `concurrency` is its max (autoscale.py)
        self.retiring: list[_Child] = []  # children autoscale retired, until they exit
        self.queued = queued  # at most QUEUED (the worker's prefetch may allow fewer)
        self.ctx = multiprocessing.get_context("fork")
        self.children: list[_Child] = []
        self.parked: deque[Delivery] = deque()  # for the next idle child
        self.lock = threading.Lock()
        self.stopping = False
        self.crowded = concurrency >= (os.cpu_count() or 1)

    def _spawn(self) -> _Child:
        parent_conn, child_conn = self.ctx.Pipe()
        board = self.ctx.Array("d", [-1.0, 0.0, 0.0, 0.0])
        process = self.ctx.Process(
            target=_child,
            args=(self.executor, child_conn, board, self.crowded, self.recycle),
            daemon=True,
            name="beatq-child",
        )
        process.start()
        child_conn.close()
        return _Child(process, parent_conn, board)

    def start(self) -> None:
        # Children ignore SIGTERM, so multiprocessing's own exit hook (terminate, then
        # join) would wait for them forever if the parent left by an unexpected path.
        atexit.register(self._kill_all)
        start = self.autoscale.low if self.autoscale is not None else self.concurrency
        self.children = [self._spawn() for _ in range(start)]
        self.collector = threading.Thread(target=self._collect, name="beatq-collector", daemon=True)
        self.collector.start()

    @classmethod
    def capacity(cls, concurrency: int, queued: int = QUEUED) -> int:
        """A running task and up to `queued` waiting behind it, in each child."""
        return concurrency * (1 + queued)

    def free(self) -> bool:
        return any(not child.handed for child in self.children)

    def submit(self, delivery: Delivery) -> None:
        with self.lock:
            self.active[delivery.id] = (delivery, time.time())
            child = min(self.children, key=lambda c: len(c.handed))
            # A big message waits here for an idle child: sent to a busy one it could
            # fill the pipe, and the parent would wait until that child's task ends.
            # While any claim is parked, those after it park too: they go in order.
            if self.parked or (
                child.handed
                and (
                    len(child.handed) > self.queued
                    or len(delivery.claim.body) > self.QUEUE_BODY_MAX
                )
            ):
                self.parked.append(delivery)
            else:
                self._hand(child, delivery)

    def _hand(self, child: _Child, delivery: Delivery) -> None:
        """With the lock: numbers and sends in one step, so the child gets them in order.
        The child is sent the claim, not the decoded message: it decodes it itself."""
        child.seq += 1
        child.handed.append(_Handed(child.seq, delivery))
        try:
            child.conn.send((child.seq, delivery.claim, delivery.acked))
        except OSError:  # the child died meanwhile: its sentinel tells, and gives it back
            log.warning("could not hand %s to child %s", delivery.id, child.process.pid)

    def running(self) -> list[tuple[Delivery, float]]:
        now, wall = time.monotonic(), time.time()
        found = []
        for child in list(self.children):
            current = child.running()
            if current is not None:
                found.append((current.handed.delivery, wall - (now - current.since)))
        return found

    def _collect(self) -> None:
        selector = selectors.DefaultSelector()
        listening: list[_Child] = []
        checked = 0.0  # when the time limits were last looked at
        while not self.stopping:
            if listening != self.children:  # a child was replaced: listen to the new one
                selector.close()
                selector = selectors.DefaultSelector()
                listening = list(self.children)
                for child in listening:
                    selector.register(child.conn, selectors.EVENT_READ, (child, False))
                    selector.register(child.process.sentinel, selectors.EVENT_READ, (child, True))
            timeout = self.STEAL_AFTER if self.parked or self._stuck() else 0.1
            for key, _ in selector.select(timeout):
                child, died = key.data
                if not died:
                    try:
                        seq, outcome = child.conn.recv()
                    except (EOFError, OSError):
                        continue  # its sentinel tells
                    self._free(child, seq, outcome)
                elif not self.stopping and child in self.children:
                    self._replace(child, WorkerLostError("the child process died"))
            self._balance()
            if time.monotonic() - checked >= LIMITS_EVERY:
                checked = time.monotonic()
                self._enforce_limits()
                if self.autoscale is not None:
                    self._scale(self.autoscale)
        selector.close()

    def _scale(self, autoscale: Autoscale) -> None:
        """In the collector: start a child when work waits and none is idle, retire one
        idle past the keepalive (autoscale.py); reap the retired ones that exited."""
        for child in [c for c in self.retiring if not c.process.is_alive()]:
            self.retiring.remove(child)
            child.process.join(0)
            child.conn.close()
        now = time.monotonic()
        with self.lock:
            idle = [c for c in self.children if not c.handed]
            for child in self.children:
                if child.handed:
                    child.idle_since = None
                elif child.idle_since is None:
                    child.idle_since = now
            waiting = len(self.parked) + len(self.handoff.buffer)
            longest = max((now - c.idle_since for c in idle if c.idle_since), default=0.0)
            before = len(self.children)
            step = autoscale.decide(before, len(idle), waiting, longest)
            if step > 0:
                self.children.append(self._spawn())
                why = f"{waiting} waiting, no child idle" if waiting else "below MIN"
            elif step < 0:
                oldest = min(idle, key=lambda c: c.idle_since or now)
                self.children.remove(oldest)
                self.retiring.append(oldest)
                why = f"a child idle {longest:.0f}s (keepalive {autoscale.keepalive:g}s)"
            else:
                return
        if step < 0:
            try:
                oldest.conn.send(None)  # it sends its held events and exits
            except OSError:
                pass
        after = len(self.children)
        autoscale.record(before, after, why)
        log.info("autoscale: %d -> %d child processes (%s)", before, after, why)

    def _stuck(self) -> bool:
        """Whether a claim waits in a child while another child has nothing to do."""
        return any(not c.handed for c in self.children) and any(
            len(c.handed) > 1 for c in self.children
        )

    def _free(self, child: _Child, seq: int, outcome: Outcome | None) -> None:
        with self.lock:
            handed = next((h for h in child.handed if h.seq == seq), None)
            if handed is None:
                return
            child.handed.remove(handed)
        self._balance()
        after = self._done(handed.delivery, outcome, follow=not self.stopping)
        if after is not None:
            self.submit(after)

    def _balance(self) -> None:
        """Give each idle child a parked claim, or one waiting behind a sibling's task
        that has run STEAL_AFTER."""
        if self.stopping:
            return
        with self.lock:
            for child in self.children:
                if child.handed:
                    continue
                if self.parked:
                    self._hand(child, self.parked.popleft())
                    continue
                taken = self._take_waiting(time.monotonic() - self.STEAL_AFTER)
                if taken is not None:
                    self._hand(child, taken.delivery)

    def _take_waiting(self, before: float) -> _Handed | None:
        """With the lock: withdraw a claim waiting in a child whose task started `before`."""
        for child in self.children:
            if len(child.handed) < 2:
                continue
            current = child.running()
            waiting = child.waiting()
            if current is None or current.since > before or waiting is None:
                continue
            if child.withdraw(waiting):
                return waiting
        return None

    def _enforce_limits(self) -> None:
        now = time.monotonic()
        for child in list(self.children):
            current = child.running()
            if current is None or not current.limit:
                continue
            if now - current.since > current.limit + self.grace:
                limit = current.limit
                self._kill(child, TimeLimitExceeded(f"time limit ({limit:g}s) exceeded"))

    def _kill(self, child: _Child, reason: BaseException) -> None:
        """SIGKILL `child`; the collector sees it die and records `reason` (_replace)."""
        child.killed = reason
        child.process.kill()  # not a pid reused after the collector reaped it

    def skip(self, task_id: str) -> bool:
        """Record `task_id` REVOKED without running it if it waits in a child (or for one)."""
        with self.lock:
            delivery = self._recall(task_id)
        if delivery is None:
            return False
        self._done(delivery, self.executor.skip(delivery.claim))
        return True

    def _recall(self, task_id: str | None) -> Delivery | None:
        """With the lock: take back a delivery not started (`task_id`'s, or any if None)."""
        for i, delivery in enumerate(self.parked):
            if task_id is None or delivery.id == task_id:
                del self.parked[i]
                return delivery
        for child in self.children:
            waiting = child.waiting()
            if waiting is None:
                continue
            target = waiting
            if task_id is not None:
                later = (h for h in child.handed if h.seq >= waiting.seq)
                target = next((h for h in later if h.delivery.id == task_id), None)
                if target is None:
                    continue
            # What waits here is taken back whole, `target` with it wherever it waits.
            # The others wait first in line for the next idle child (they came before
            # anything parked: see submit), not sent to this one again: the busy child
            # reads its pipe only between tasks and the copies it is to skip are still in
            # it, so each recall would add as many again until a send blocked, with the
            # pool's lock held, in the thread that renews the worker's claims.
            taken = child.withdraw(child.handed[-1])
            self.parked.extendleft(reversed([h.delivery for h in taken if h is not target]))
            if target in taken:
                return target.delivery
        return None

    def withdraw(self) -> list[Delivery]:
        """Take back every claim no child has started (a warm stop returns them; a more
        urgent claim than they are goes ahead of them)."""
        taken = []
        with self.lock:
            for child in self.children:  # what waits in a child came before what is parked
                while (waiting := child.waiting()) is not None and child.withdraw(waiting):
                    taken.append(waiting.delivery)
            taken += self.parked
            self.parked.clear()
            for delivery in taken:
                self.active.pop(delivery.id, None)
        return taken

    def stop_task(self, task_id: str) -> bool:
        """Kill the child running `task_id` and start another; the task becomes REVOKED.
        One that waits in a child is recorded REVOKED without running."""
        if self.skip(task_id):
            return True
        with self.lock:
            child = next(
                (
                    c
                    for c in self.children
                    if (current := c.running()) is not None
                    and current.handed.delivery.id == task_id
                ),
                None,
            )
        if child is None or (current := child.running()) is None:
            return False
        log.warning("killing child process %s to terminate task %s", child.process.pid, task_id)
        ran = time.monotonic() - current.since
        self._kill(child, TaskRevokedError(f"terminated after {ran:.1f}s"))
        return True

    def _replace(self, child: _Child, reason: BaseException) -> None:
        """In the collector: `child` died. Its reports still in the pipe count first; the
        task it ran is recorded as lost, what waited in it is handed to others."""
        child.process.join(1)
        with self.lock:
            self.children.remove(child)
            self.children.append(self._spawn())
        try:
            while child.conn.poll():
                seq, outcome = child.conn.recv()
                self._free(child, seq, outcome)
        except (EOFError, OSError):
            pass
        child.conn.close()
        with self.lock:
            started = child.board[STARTED]
            lost = [h for h in child.handed if h.seq <= started]
            again = [h for h in child.handed if h.seq > started]
            child.handed.clear()
        code = child.process.exitcode
        # a child that retired (recycle.py) exits 0 once it has reported its last task
        log.log(
            logging.INFO if code == 0 and not lost else logging.ERROR,
            "child process %s exited (code %s)",
            child.process.pid,
            code,
        )
        for handed in lost:
            outcome = self.executor.fail_lost(handed.delivery.claim, child.killed or reason)
            self._done(handed.delivery, outcome)
        for handed in again:  # acknowledged or not, it runs once in another child
            handed.delivery.acked = False
            self.submit(handed.delivery)
        try:
            child.process.close()  # its sentinel's descriptor
        except ValueError:
            pass

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
        for child in [*self.children, *self.retiring]:
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
