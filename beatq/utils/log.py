"""Task loggers, as Celery's `celery.utils.log`: `logger = get_task_logger(__name__)`.

A task logger is the logger of that name, placed under `beatq.task` (Celery places it
under `celery.task`), so `logging.getLogger("beatq.task").setLevel(...)` reaches every
task's logger, and its records go on to beatq's handlers. A record logged while a task
runs in this thread carries `task_name` and `task_id` (empty strings elsewhere), and
beatq's log format prints them as Celery's does: `proj.tasks.add[6b1c...]: message`.
"""

from __future__ import annotations

import logging
from typing import Any

TASK_LOGGER = "beatq.task"

# Celery refuses its own names; beatq refuses both its own and Celery's, which a project
# moving over may still use.
RESERVED = frozenset({"beatq", TASK_LOGGER, "celery", "celery.task"})


def get_logger(name: str) -> logging.Logger:
    """The logger `name` (Celery's `get_logger`)."""
    return logging.getLogger(name)


def get_task_logger(name: str) -> logging.Logger:
    """The logger `name`, under `beatq.task`, whose records carry the running task's name
    and id. Raises RuntimeError for a reserved name (`beatq`, `beatq.task`, and Celery's)."""
    if name in RESERVED:
        raise RuntimeError(f"logger name {name!r} is reserved; use get_task_logger(__name__)")
    logger = logging.getLogger(name)
    logger.parent = logging.getLogger(TASK_LOGGER)
    if not any(isinstance(f, TaskFilter) for f in logger.filters):
        logger.addFilter(TaskFilter())
    return logger


class TaskFilter(logging.Filter):
    """Sets `task_name` and `task_id` on each record from the task running in this thread.

    Found on the stack of requests this thread runs (`Task.run_in` keeps it): one look
    per record of a task logger, whatever the number of apps and tasks."""

    def filter(self, record: logging.LogRecord) -> bool:
        request = _running_request()
        record.task_name = request.task if request is not None else ""
        record.task_id = request.id if request is not None else ""
        return True


def _running_request() -> Any:
    """The Request of the task running in this thread (eager runs too), or None."""
    from ..context import running_requests

    stack = running_requests.stack
    return stack[-1] if stack else None
