"""Rate limits as Celery writes them ("10/s", "100/m", "1000/h", or a number per second),
and the bucket a worker keeps per limited task.

A limit is per worker, as in Celery: each worker lets a task start at most `rate` times a
second, spaced evenly (a bucket of one token, as Celery's). Tasks over the limit wait in
the worker (see worker/throttle.py), not in a pool slot.
"""

from __future__ import annotations

import time

UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(value: object) -> float | None:
    """Tasks per second for `value`; None for no limit (None, 0, "" or "0").

    Raises ValueError, naming the value and the forms accepted, for anything else."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(_invalid(value))
    if isinstance(value, (int, float)):
        number, per = float(value), 1.0
    elif isinstance(value, str):
        amount, _, unit = value.strip().partition("/")
        unit = unit.strip() or "s"
        if unit not in UNITS:
            raise ValueError(_invalid(value))
        try:
            number = float(amount)
        except ValueError:
            raise ValueError(_invalid(value)) from None
        per = UNITS[unit]
    else:
        raise ValueError(_invalid(value))
    if number != number or number < 0 or number == float("inf"):
        raise ValueError(_invalid(value))
    return number / per if number else None


def _invalid(value: object) -> str:
    return (
        f"invalid rate limit {value!r}: use a number of tasks per second, or "
        '"N/s", "N/m" or "N/h" (e.g. "10/s", "100/m", "1000/h"), or None for no limit'
    )


class Bucket:
    """When the next task of one limited task name may start: at most `rate` a second,
    evenly spaced. Read by one thread (the worker's main thread)."""

    __slots__ = ("interval", "next_at", "later")

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.next_at = 0.0  # monotonic clock: the next start free
        self.later = 0.0  # the next turn handed to a task sent back to the broker

    def reserve(self) -> float:
        """Take the next start: how many seconds from now it is (0: start now)."""
        now = time.monotonic()
        at = max(now, self.next_at)
        self.next_at = at + self.interval
        return at - now

    def defer(self) -> float:
        """For a task that waits elsewhere and takes its start when it comes back: in
        how many seconds to bring it back. Each is brought back one interval after the
        last, after the starts taken, so they come back as the rate lets them run."""
        now = time.monotonic()
        at = max(now, self.next_at, self.later)
        self.later = at + self.interval
        return at - now
