"""The asyncio pool (`-P asyncio -c N`): one process, one event loop, up to N tasks at once.

The worker's main thread claims as for any pool and hands each delivery to the loop,
which runs it as an asyncio task of its own (in a fresh context, so `self.request` and
what it sends are its own). A slot whose task ended takes its next delivery from the
Handoff itself, as a pool thread does. An `async def` task's coroutine runs on the loop
under its limits (loops.Run); the steps around it that talk to the broker (the early
acknowledgement, the finish) run in a few threads beside the loop, so a round trip never
stalls the coroutines. A plain-def task runs whole in a thread pool, never on the loop
(said once per task in the log).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .. import messages
from ..brokers import Claim
from ..exceptions import TimeLimitExceeded
from ..loops import Run
from .delivery import Delivery
from .execute import Begun, Executor, Outcome
from .handoff import Handoff
from .pool import IDLE_AFTER, OnDone, Pool
from .stall import LoopWatch

log = logging.getLogger("beatq.worker")

T = TypeVar("T")

DEFAULT_CONCURRENCY = 100  # coroutines at once when -c is not given
BROKER_THREADS = 8  # threads that make the broker round trips around the coroutines
SYNC_THREADS = 32  # at most, for the plain-def tasks this pool runs


class AsyncioPool(Pool):
    """One event loop in a thread of its own, `concurrency` tasks on it at once."""

    name = "asyncio"

    def __init__(
        self, executor: Executor, concurrency: int, on_done: OnDone, handoff: Handoff
    ) -> None:
        super().__init__(executor, concurrency, on_done, handoff)
        self.loop = asyncio.new_event_loop()
        self.broker_threads = ThreadPoolExecutor(
            min(concurrency, BROKER_THREADS), thread_name_prefix="beatq-asyncio-io"
        )
        self.sync_size = min(concurrency, SYNC_THREADS)
        self.sync_threads = ThreadPoolExecutor(self.sync_size, thread_name_prefix="beatq-sync")
        self.said_sync: set[str] = set()  # the plain-def tasks already named in the log
        self.idle_timer: asyncio.TimerHandle | None = None
        self.thread = threading.Thread(target=self._serve, name="beatq-asyncio", daemon=True)
        self.watch = LoopWatch(self.loop, self.thread, self._runs)

    def start(self) -> None:
        self.thread.start()
        self.watch.start()

    def _runs(self) -> list[tuple[str, Run]]:
        with self.executor.bodies_lock:
            return list(self.executor.runs.items())

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        while True:
            try:
                self.loop.run_forever()
                return
            except TimeLimitExceeded:
                # the watch's interrupt landed as the coroutine gave the loop back: the
                # loop carries on (the run's own hard-limit timer ends it)
                log.warning("pool asyncio: a time limit's interrupt reached the loop itself")

    def submit(self, delivery: Delivery) -> None:
        self.active[delivery.id] = (delivery, time.time())
        self.loop.call_soon_threadsafe(self._spawn, delivery)

    def _spawn(self, delivery: Delivery) -> None:
        # each run in a fresh context (its own request stack); create_task(context=) is 3.11+
        contextvars.Context().run(self.loop.create_task, self._slot(delivery))

    async def _slot(self, delivery: Delivery | None) -> None:
        """A slot: run `delivery`, then the Handoff's next ones, until there is none. The
        next one is taken as a task finishes, and acknowledged in its finish if it is
        acknowledged as it starts (as the solo pool does): one round trip a task, and it
        begins here, on the loop, with no round trip of its own."""
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        folded = False  # `delivery` was acknowledged in the finish before it
        while delivery is not None:
            outcome = None
            taken: list[Delivery] = []  # the next delivery, once _run took it
            try:
                outcome = await self._execute(delivery, folded, taken)
            except BaseException:
                log.exception("asyncio pool failed while running %s", delivery.id)
            if taken:  # it is in `active` already: this slot runs it
                self.active.pop(delivery.id, None)
                self.on_done(delivery, outcome)
                delivery = taken[0]
                folded = outcome is not None and outcome.then_acked
            else:
                delivery, folded = self._done(delivery, outcome, follow=True), False
        if not self.active and self.idle_timer is None:  # no next task at once: send the events
            self.idle_timer = self.loop.call_later(IDLE_AFTER, self._flush)

    def _flush(self) -> None:
        self.idle_timer = None
        self.loop.run_in_executor(self.broker_threads, self.executor.flush_events)

    async def _blocking(self, call: Callable[..., T], *args: Any) -> T:
        # in a copy of the run's context: what its finish sends (a callback, a chain's next
        # step) is sent in the run's trace, as from any pool (beatq.otel's current span)
        context = contextvars.copy_context()
        return await self.loop.run_in_executor(self.broker_threads, context.run, call, *args)

    async def _execute(self, delivery: Delivery, folded: bool, taken: list[Delivery]) -> Outcome:
        """Run one delivery: a plain-def task in the thread pool, an async one here.
        `folded`: its acknowledgement was folded into the previous finish, so `begin`
        makes no round trip (see Executor._acked_at_start) and runs on the loop."""
        executor = self.executor
        if not self._is_async(delivery):
            return await self.loop.run_in_executor(self.sync_threads, executor.execute, delivery)
        try:
            if folded:
                begun = executor.begin(delivery)
            else:
                begun = await self._blocking(executor.begin, delivery)
            if isinstance(begun, Outcome):
                return begun
            return await self._run(begun, taken)
        except Exception as exc:
            return await self._blocking(executor.salvage, delivery, exc)

    async def _run(self, begun: Begun, taken: list[Delivery]) -> Outcome:
        executor = self.executor
        if begun.held is not None:  # claimed ahead of its eta: its instant, by this clock
            await asyncio.sleep(max(begun.held - time.time(), 0.0))
        began = time.perf_counter()
        later: list[Any] = []  # the hooks and signals, run here: where the run's began
        try:
            with executor.coroutine(begun) as run:
                value = await run.main()
        except Exception as exc:
            end, result = executor.ended, exc
        else:
            end, result = executor.succeeded, value
        runtime = time.perf_counter() - began
        after = self.handoff.follow(self.free, self._start)
        if after is not None:
            taken.append(after)
        outcome = await self._blocking(self._settle, end, begun, result, runtime, later, after)
        for args in later:
            begun.task.ended(*args)
        return outcome

    def _settle(
        self,
        end: Callable[..., Outcome],
        begun: Begun,
        result: Any,
        runtime: float,
        later: list[Any],
        after: Delivery | None,
    ) -> Outcome:
        """In a broker thread: store the outcome (`end`: Executor.succeeded or ended),
        acknowledging `after` with it when it is acknowledged as it starts."""
        folded = self.executor._acked_at_start(after)
        if folded:
            begun = begun._replace(ack=[*begun.ack, *folded], folded=True)
        outcome = end(begun, result, runtime, later)
        if after is not None and outcome.then_acked:
            after.acked = True
        return outcome

    def _is_async(self, delivery: Delivery) -> bool:
        """Whether the delivery's task is an async def here, read from the message's
        header (its payload is read once its signature is checked, in `begin`). One that
        names no task here, or does not read, goes the plain way: it is dead-lettered."""
        try:
            name = messages.read_header(delivery.claim.body)["task"]
        except messages.MessageError:
            return False
        task = self.executor.app.tasks.get(name)
        if task is None:
            return False
        if not task.is_async and name not in self.said_sync:
            self.said_sync.add(name)
            log.info(
                "pool asyncio: task %s is a plain def: it runs in a pool of %d threads, not "
                "on the event loop (declare it async def to run it there)",
                name,
                self.sync_size,
            )
        return task.is_async

    def terminate(self) -> list[Claim]:
        aborted = super().terminate()
        self._stop_loop()
        return aborted

    def close(self) -> None:
        self._stop_loop()
        self.sync_threads.shutdown(wait=True)
        self.broker_threads.shutdown(wait=True)
        self.executor.flush_events()

    def _stop_loop(self) -> None:
        self.watch.stop()
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
