"""`--autoscale MAX,MIN`: the prefork pool follows the load (Celery's autoscaler).

The pool starts MIN children. When work waits (claims in the worker's buffer, or parked
for an idle child) and no child is idle, it starts one more, up to MAX; a child idle for
`worker_autoscale_keepalive` seconds (default 30) is retired, down to MIN. prefork.py
asks `Autoscale.decide` each time its collector looks (every 0.1 s at most); each
decision is logged and kept (the last 20), for `inspect stats` and the metrics.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import ConfigurationError

KEPT = 20  # decisions kept for inspect stats


def parse_autoscale(value: str) -> tuple[int, int]:
    """`"MAX,MIN"` (or `"MAX"`: MIN 0 as Celery, read as 1) as (max, min); a clear
    ConfigurationError naming the option otherwise."""
    parts = [p.strip() for p in str(value).split(",")]
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) not in (1, 2):
        raise ConfigurationError(
            f"--autoscale {value!r}: give MAX,MIN child processes, e.g. --autoscale 10,3"
        )
    high, low = numbers[0], numbers[1] if len(numbers) == 2 else 1
    low = max(low, 1)
    if high < low:
        raise ConfigurationError(
            f"--autoscale {value!r}: MAX ({high}) is below MIN ({low}); MAX comes first, "
            f"e.g. --autoscale {low},{high}"
        )
    return high, low


@dataclass
class Autoscale:
    """The bounds, the keepalive, and what was decided."""

    high: int
    low: int
    keepalive: float = 30.0
    grown: int = 0
    shrunk: int = 0
    decisions: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=KEPT))

    def decide(self, children: int, idle: int, waiting: int, longest_idle: float) -> int:
        """+1 (start a child), -1 (retire the longest idle), or 0."""
        if children < self.low:
            return 1
        if waiting and not idle and children < self.high:
            return 1
        if children > self.low and idle and longest_idle >= self.keepalive:
            return -1
        return 0

    def record(self, before: int, after: int, why: str) -> None:
        if after > before:
            self.grown += 1
        else:
            self.shrunk += 1
        self.decisions.append({"at": time.time(), "from": before, "to": after, "why": why})

    def info(self, processes: int) -> dict[str, Any]:
        """What `inspect stats` shows under pool.autoscaler."""
        return {
            "max": self.high,
            "min": self.low,
            "keepalive": self.keepalive,
            "processes": processes,
            "grown": self.grown,
            "shrunk": self.shrunk,
            "decisions": list(self.decisions),
        }
