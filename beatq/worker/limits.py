"""Time limits inside the process or thread that runs a task.

In the main thread (solo pool, prefork children) SIGALRM interrupts the task, even in
`time.sleep`. In a pool thread an asynchronous exception is raised in that thread,
which takes effect at the next Python bytecode (code blocked in C waits until it returns).
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from ..exceptions import SoftTimeLimitExceeded, TimeLimitExceeded


@contextlib.contextmanager
def time_limits(soft: float | None, hard: float | None) -> Iterator[None]:
    """Raise SoftTimeLimitExceeded after `soft` seconds, TimeLimitExceeded after `hard`."""
    if not soft and not hard:
        yield
        return
    if threading.current_thread() is threading.main_thread():
        with _alarm_limits(soft, hard):
            yield
    else:
        with _thread_limits(soft, hard):
            yield


def _steps(soft: float | None, hard: float | None) -> list[tuple[float, type[BaseException]]]:
    steps: list[tuple[float, type[BaseException]]] = []
    if soft and (not hard or soft < hard):
        steps.append((soft, SoftTimeLimitExceeded))
    if hard:
        steps.append((hard, TimeLimitExceeded))
    return steps


@contextlib.contextmanager
def _alarm_limits(soft: float | None, hard: float | None) -> Iterator[None]:
    steps = _steps(soft, hard)
    state = {"next": 0}

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        at, exc = steps[state["next"]]
        state["next"] += 1
        if state["next"] < len(steps):
            signal.setitimer(signal.ITIMER_REAL, steps[state["next"]][0] - at)
        raise exc(f"time limit ({at}s) exceeded")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, steps[0][0])
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def raise_in(thread_id: int, exc: type[BaseException]) -> None:
    """Raise `exc` in thread `thread_id` at its next Python instruction."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc))


@contextlib.contextmanager
def _thread_limits(soft: float | None, hard: float | None) -> Iterator[None]:
    ident = threading.get_ident()
    done = threading.Event()

    def watch() -> None:
        elapsed = 0.0
        for at, exc in _steps(soft, hard):
            if done.wait(at - elapsed):
                return
            elapsed = at
            raise_in(ident, exc)

    watcher = threading.Thread(target=watch, name="beatq-time-limit", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
