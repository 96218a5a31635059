"""A stop flag that a signal handler may set: `StopEvent`.

`threading.Event.set` takes the lock of the event's condition. Python runs a signal handler
in the main thread between two bytecodes, so a handler that sets an event can find that
lock held by the very code it interrupted: the main thread inside the event's own `wait`,
or inside the `set` of a first handler when a second signal comes (SIGTERM twice in a row,
the cold stop). It then waits for itself, forever: a worker hung on its second SIGTERM.

`StopEvent` takes no lock. `set` writes one byte to a pipe, which is never read back; a
wait polls the pipe's other end, so every waiter, in any thread, wakes at once and any
later wait returns at once. It is set once and never cleared, as a stop is.
"""

from __future__ import annotations

import os
import select
import time
import weakref


class StopEvent:
    """`threading.Event`'s `set`, `is_set` and `wait`, safe to set in a signal handler."""

    def __init__(self) -> None:
        self._set = False
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        weakref.finalize(self, _close, self._read, self._write)

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        try:
            os.write(self._write, b"!")
        except BlockingIOError:  # cannot happen (one byte, once); the flag is set anyway
            pass

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until set or `timeout` seconds pass; whether it is set."""
        if self._set:
            return True
        poll = select.poll()  # not select(): no limit on the descriptor's number
        poll.register(self._read, select.POLLIN)
        if timeout is None:
            poll.poll()
            return self._set
        deadline = time.monotonic() + timeout
        while not self._set:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if left < 0.001:  # poll counts whole ms: the last fraction is slept (an eta's)
                time.sleep(left)
            else:
                poll.poll(int(left * 1000))
        return self._set


def _close(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
