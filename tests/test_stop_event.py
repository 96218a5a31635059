"""stop_event.StopEvent: a stop flag a signal handler may set, whatever its thread holds.

threading.Event.set takes its condition's lock: a handler that ran while the main thread
held it (inside the event's own wait, or inside the set of the handler before it, when a
second SIGTERM comes at once) waited for itself forever. Seen: a prefork worker hung on
its second SIGTERM, once in a dozen runs of test_delivery's cold stop.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import types

import pytest

from beatq.stop_event import StopEvent
from tests.conftest import scaled


def test_set_in_a_handler_that_interrupts_the_wait_of_its_own_thread() -> None:
    event = StopEvent()
    previous = signal.signal(signal.SIGUSR1, lambda *_: event.set())
    try:
        threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        began = time.monotonic()
        assert event.wait(scaled(5)) is True
        assert time.monotonic() - began < scaled(2)
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_set_by_signals_that_land_inside_the_first_handlers_set() -> None:
    """SIGUSR1's handler sets the event; a profile hook sends SIGUSR1 again at each call the
    first handler's set makes (with threading.Event: one with its condition's lock held),
    so more handlers run inside that set. threading.Event never returns from this."""
    event = StopEvent()
    setter = type(event).set.__code__
    outer: list[types.FrameType] = []  # the first handler's set
    nested = [0, False]  # handlers run inside it; one of them runs now

    def handler(*_: object) -> None:
        if outer:
            nested[0], nested[1] = nested[0] + 1, True
        event.set()
        nested[1] = False

    def within(frame: types.FrameType | None) -> bool:
        while frame is not None:
            if frame is outer[0]:
                return True
            frame = frame.f_back
        return False

    def hook(frame: types.FrameType, what: str, arg: object) -> None:
        if what == "call" and frame.f_code is setter and not outer:
            outer.append(frame)
        elif outer and what in ("call", "c_call") and not nested[1] and nested[0] < 4:
            if within(frame):
                signal.raise_signal(signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, handler)
    sys.setprofile(hook)
    try:
        signal.raise_signal(signal.SIGUSR1)
    finally:
        sys.setprofile(None)
        signal.signal(signal.SIGUSR1, previous)
    assert nested[0] >= 1, "a handler ran inside the first one's set"
    assert event.is_set() and event.wait(0)


def test_waits_in_every_thread_wake_at_once_and_later_waits_return_at_once() -> None:
    event = StopEvent()
    woken: list[float] = []
    threads = [
        threading.Thread(target=lambda: woken.append(event.wait(scaled(10)) and time.monotonic()))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    time.sleep(0.1)
    set_at = time.monotonic()
    event.set()
    for t in threads:
        t.join(scaled(5))
    assert len(woken) == 4 and all(w and w - set_at < scaled(1) for w in woken)
    assert event.wait(0) and event.wait(None) and event.wait(5)


@pytest.mark.parametrize("timeout", [0.0, 0.0004, 0.05])
def test_a_timeout_is_kept_and_never_cut_short(timeout: float) -> None:
    event = StopEvent()
    began = time.monotonic()
    assert event.wait(timeout) is False
    waited = time.monotonic() - began
    assert timeout <= waited < timeout + scaled(0.05)
