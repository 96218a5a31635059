"""When a prefork child retires: Celery's `--max-tasks-per-child` and
`--max-memory-per-child` (settings `worker_max_tasks_per_child`,
`worker_max_memory_per_child`).

A child that has run its number of tasks, or whose resident memory has grown past the
line (its peak, in KiB, as Celery reads it), finishes and reports the task that crossed
the line, then exits; the pool starts another in its place and hands it what waited in
the old one (prefork.py, `_replace`), so nothing is lost or run twice. A child that knows
its next task is its last does not acknowledge the one after it ahead of time.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass


@dataclass(frozen=True)
class Recycle:
    """The lines a child retires at; None: no line."""

    tasks: int | None = None
    memory_kib: int | None = None

    def __bool__(self) -> bool:
        return bool(self.tasks or self.memory_kib)

    def last(self, done: int) -> bool:
        """Whether the task after `done` finished ones is this child's last by count."""
        return bool(self.tasks) and done + 1 >= self.tasks  # type: ignore[operator]

    def due(self, done: int) -> str | None:
        """Why a child that has finished `done` tasks retires now, or None."""
        if self.tasks and done >= self.tasks:
            return f"ran {done} tasks (max-tasks-per-child {self.tasks})"
        if self.memory_kib:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
            if peak > self.memory_kib:
                return f"uses {peak} KiB (max-memory-per-child {self.memory_kib} KiB)"
        return None
