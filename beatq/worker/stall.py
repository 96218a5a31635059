"""Watching the asyncio pool's loop for a coroutine that blocks it.

A coroutine that runs without awaiting (a busy loop, a blocking call) holds the pool's one
loop: the other coroutines wait, and its own limits, which are loop timers, never fire.
A thread beside the loop posts it a callback every TICK seconds. When one waits longer
than STALL_WARN, the log names the task that holds the loop and shows where it is; once
that task is a second past its hard time limit, TimeLimitExceeded is raised in the loop's
thread, as the threads pool does for a plain task: it lands at the coroutine's next Python
instruction (a blocking C call, when it returns), and the run fails with it.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable

from ..exceptions import TimeLimitExceeded
from ..loops import Run
from .limits import raise_in

log = logging.getLogger("beatq.worker")

TICK = 0.25  # seconds between two callbacks posted to the loop
STALL_WARN = 1.0  # seconds a posted callback may wait before the log says who blocks
PAST_HARD = 1.0  # seconds past its hard limit a blocking coroutine is interrupted
STACK_DEPTH = 6  # innermost frames of the loop's thread shown in the warning


class LoopWatch:
    """Watch `loop`, which runs in `thread`, for stalls; `runs()` lists the (task id,
    Run) pairs running on it."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        thread: threading.Thread,
        runs: Callable[[], Iterable[tuple[str, Run]]],
    ) -> None:
        self.loop, self.thread, self.runs = loop, thread, runs
        self.stopped = threading.Event()
        self.posted: float | None = None  # when the unanswered callback was posted
        self.warned = False  # the current stall is in the log
        self.interrupted: set[int] = set()  # id() of the runs interrupted already
        self.watcher = threading.Thread(target=self._watch, name="beatq-loop-watch", daemon=True)

    def start(self) -> None:
        self.watcher.start()

    def stop(self) -> None:
        self.stopped.set()

    def _answered(self) -> None:  # on the loop
        stalled = time.monotonic() - self.posted if self.posted is not None else 0.0
        if self.warned:
            log.warning("pool asyncio: the event loop runs again after %.1f s", stalled)
        self.posted, self.warned = None, False

    def _watch(self) -> None:
        while not self.stopped.wait(TICK):
            if self.posted is None:
                self.posted = time.monotonic()
                try:
                    self.loop.call_soon_threadsafe(self._answered)
                except RuntimeError:  # the loop is closed: the pool is stopping
                    return
                continue
            stalled = time.monotonic() - self.posted
            if stalled >= STALL_WARN:
                self._stalled(stalled)

    def _stalled(self, stalled: float) -> None:
        held = self._holder()
        if held is None:  # the loop's own code, or a plain callback: nothing to name
            return
        task_id, run = held
        if not self.warned:
            self.warned = True
            log.warning(
                "pool asyncio: task %s has held the event loop for %.1f s without awaiting "
                "(the other coroutines wait; await the slow call, or run it with "
                "asyncio.to_thread); it is at:\n%s",
                task_id,
                stalled,
                self._where(),
            )
        if run.hard and run.began is not None and id(run) not in self.interrupted:
            over = time.time() - run.began - run.hard
            if over >= PAST_HARD and run.coro.cr_running:
                self.interrupted.add(id(run))
                run.why = run.why or TimeLimitExceeded(f"time limit ({run.hard:g}s) exceeded")
                log.error(
                    "pool asyncio: task %s blocks the loop %.1f s past its hard time limit: "
                    "TimeLimitExceeded raised in it",
                    task_id,
                    over,
                )
                raise_in(self.thread.ident or 0, TimeLimitExceeded)

    def _holder(self) -> tuple[str, Run] | None:
        """The run whose coroutine is being stepped now (only one can be, on one loop)."""
        for task_id, run in self.runs():
            if run.loop is self.loop and run.coro.cr_running:
                return task_id, run
        return None

    def _where(self) -> str:
        frame = sys._current_frames().get(self.thread.ident or 0)
        if frame is None:
            return "  (its stack could not be read)"
        lines = traceback.format_stack(frame)[-STACK_DEPTH:]
        return "".join(lines).rstrip()
