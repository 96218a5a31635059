"""Running a task's coroutine: the event loop a thread keeps, and one run on a loop with
its time limits and its cancellation (revoke with terminate).

The solo, threads and prefork pools run an `async def` task on the loop of the thread
that runs it: made at the thread's first async task, reused for the next ones (never
`asyncio.run` per task). The asyncio pool runs them all on its one loop. Either way a run
is a `Run`: its soft limit raises SoftTimeLimitExceeded inside the coroutine, at the await
it waits in; its hard limit and a revoke with terminate cancel it, and the run ends with
TimeLimitExceeded or TaskRevokedError.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Generator
from typing import Any

from .exceptions import SoftTimeLimitExceeded, TaskRevokedError, TimeLimitExceeded

_local = threading.local()


class _Kept:
    """A thread's loop, closed when its thread ends (the thread's locals go with it)."""

    __slots__ = ("loop",)

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def __del__(self) -> None:
        if not self.loop.is_running():
            self.loop.close()


def thread_loop() -> asyncio.AbstractEventLoop:
    """This thread's event loop for async tasks, made at its first use and kept."""
    kept: _Kept | None = getattr(_local, "kept", None)
    if kept is None or kept.loop.is_closed():
        kept = _local.kept = _Kept()
    return kept.loop


def loop_running_here() -> bool:
    """Whether an event loop runs in this thread now (its code is what calls us)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class _Steer:
    """Awaits a coroutine as `await coro` does, step by step, except that a cancellation
    meant as another exception (`swap`, set by `Run.soft_limit`) reaches the coroutine as
    that exception, and the asyncio task is uncancelled: it runs on."""

    __slots__ = ("coro", "swap")

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.coro = coro
        self.swap: BaseException | None = None

    def __await__(self) -> Generator[Any, Any, Any]:
        coro = self.coro
        value: Any = None
        thrown: BaseException | None = None
        while True:
            try:
                step = coro.send(value) if thrown is None else coro.throw(thrown)
            except StopIteration as stop:
                return stop.value
            value = thrown = None
            try:
                value = yield step
            except GeneratorExit:
                coro.close()
                raise
            except asyncio.CancelledError as exc:
                thrown = exc
                if self.swap is not None:
                    thrown, self.swap = self.swap, None
                    task = asyncio.current_task()
                    if task is not None and hasattr(task, "uncancel"):  # 3.11+; 3.10 counts none
                        task.uncancel()
            except BaseException as exc:  # anything else thrown in goes on to the coroutine
                thrown = exc


class Run:
    """One run of a task's coroutine on the running loop (`main`), under its limits.

    `stop(exc)` (any thread) cancels it and makes the run end with `exc` (a revoke with
    terminate: TaskRevokedError); the hard limit does the same with TimeLimitExceeded. A
    coroutine that swallows the cancellation still ends with that exception."""

    def __init__(
        self, coro: Coroutine[Any, Any, Any], soft: float | None = None, hard: float | None = None
    ) -> None:
        self.coro = coro
        self.soft = float(soft) if soft else None
        self.hard = float(hard) if hard else None
        soft_first = self.soft and (not self.hard or self.soft < self.hard)
        self.steer = _Steer(coro) if soft_first else None
        self.why: BaseException | None = None
        self.task: asyncio.Task[Any] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.began: float | None = None  # time.time() as the coroutine began

    async def main(self) -> Any:
        """Await the coroutine in this asyncio task; its value, or the exception it ended with."""
        loop = self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        self.began = time.time()
        if self.why is not None:  # stopped before it began
            self.coro.close()
            raise self.why
        timers = []
        if self.steer is not None:
            timers.append(loop.call_later(self.soft, self._soft_limit))  # type: ignore[arg-type]
        if self.hard:
            why = TimeLimitExceeded(f"time limit ({self.hard:g}s) exceeded")
            timers.append(loop.call_later(self.hard, self._cancel, why))
        try:
            value = await (self.steer if self.steer is not None else self.coro)
        except TimeLimitExceeded:  # raised in the thread by a watch (worker/stall.py)
            if self.why is not None:
                raise self.why from None
            raise
        except asyncio.CancelledError as exc:
            if self.why is not None:
                raise self.why from None
            # not a limit nor a revoke (only those cancel a run): the coroutine's own, such
            # as an awaited task it cancelled. A BaseException, it would pass every handler
            # and end the worker (solo) or leave the task PENDING: it fails the task instead.
            raise RuntimeError(
                "the task's coroutine ended with an asyncio.CancelledError it did not catch "
                "(neither a time limit nor a revoke cancelled it)"
            ) from exc
        finally:
            for timer in timers:
                timer.cancel()
        if self.why is not None:  # it caught the cancellation and returned anyway
            raise self.why
        return value

    def _soft_limit(self) -> None:
        if self.task is not None and not self.task.done() and self.steer is not None:
            self.steer.swap = SoftTimeLimitExceeded(f"time limit ({self.soft:g}s) exceeded")
            self.task.cancel()

    def _cancel(self, why: BaseException) -> None:
        if self.why is not None or (self.task is not None and self.task.done()):
            return
        self.why = why
        if self.task is not None:  # else `main` ends it as it begins
            self.task.cancel()

    def stop(self, why: BaseException | None = None) -> None:
        """Cancel the run from any thread; it ends with `why` (default: terminated)."""
        why = why or TaskRevokedError("terminated")
        loop = self.loop
        if loop is None or loop.is_closed():
            self.why = self.why or why
            return
        try:
            loop.call_soon_threadsafe(self._cancel, why)
        except RuntimeError:  # the loop closed meanwhile: the run is over
            pass


def run_here(run: Run) -> Any:
    """Run `run` to its end on this thread's loop (solo, threads, prefork). Refused when
    a loop already runs in this thread: it would block that loop until the task ends."""
    if loop_running_here():
        run.coro.close()
        raise RuntimeError(
            "an async task cannot be run to its end from code running inside an event loop "
            "(it would block that loop); await it instead: `await task.aapply_async(...)` "
            "sends it to a worker, `await task(...)` runs its body here"
        )
    loop = run.loop = thread_loop()
    return loop.run_until_complete(run.main())
