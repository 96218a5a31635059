"""Waking up on time: how beatq waits until an instant (the beat its send, a worker a
held task's eta), a long wait that ends early, then short naps.

A timed wait wakes late, and the longer it was the later: on a virtual machine, whose idle
CPU the host halts, a 10 ms sleep wakes ~0.2 ms late and a 0.1 ms one ~10 µs late (with
the thread's timer slack tightened; the kernel's default lets a sleep run 50 µs over). A
beat that spun through its last stretch instead would hold its CPU, and on a small host
the broker and the worker that the run wakes may be queued on that very CPU behind it
(seen here: Redis waited 0.6 ms for a spinning beat while the other core idled). So the
last stretch is napped, and only the last few microseconds are spun.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
import threading
import time
from collections.abc import Callable

NAP = 0.0001  # seconds: the longest nap of the last stretch
SPUN = 0.00003  # seconds: the last stretch that is spun, not napped (a nap's overshoot)
STRETCH = 0.002  # seconds: the last stretch before an instant, napped (see until_wall)
_PR_SET_TIMERSLACK = 29
_tightened = threading.local()


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None


def tighten_timer_slack() -> bool:
    """Let this thread's timed waits end on time, not up to 50 µs later (Linux' default
    slack for timers). Only the calling thread is changed, once; False where it cannot be."""
    done = getattr(_tightened, "done", None)
    if done is None:
        libc = _libc()
        try:
            done = libc is not None and libc.prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0) == 0
        except AttributeError:
            done = False
        _tightened.done = done
    return done


def nap_until(end: float, before: Callable[[], None] | None = None, ahead: float = 0.0) -> None:
    """Return at monotonic time `end`, napping at most NAP at a time and spinning the last
    SPUN seconds. `before` is called once when `ahead` seconds or less are left (not at
    all if `end` has passed)."""
    pending = before
    while (left := end - time.monotonic()) > 0:
        if pending is not None and left <= ahead:
            pending()
            pending = None
            continue
        # the next point to wake at: the call `ahead` of the end, or the spun stretch
        until = left - ahead if pending is not None else left - SPUN
        if until > 0:
            time.sleep(min(NAP, until))


def until_wall(
    instant: float,
    longest: float,
    before: Callable[[], None] | None = None,
    ahead: float = 0.0,
) -> None:
    """Return at wall-clock time `instant` (time.time()), but after `longest` seconds at
    most: a long wait that ends STRETCH early, then naps (`nap_until`, which calls
    `before` when `ahead` seconds are left)."""
    left = min(instant - time.time(), longest)
    if left <= 0:
        return
    end = time.monotonic() + left
    tighten_timer_slack()
    if left > STRETCH + ahead:
        time.sleep(left - STRETCH - ahead)
    nap_until(end, before, ahead)
