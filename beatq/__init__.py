"""beatq: a distributed task queue with the periodic scheduler at its centre."""

from .app import Beatq, Celery, current_app, shared_task
from .beat.schedules import crontab, every, once, schedule
from .canvas import Signature, chain, chord, chunks, group, maybe_signature, signature
from .result import AsyncResult, GroupResult
from .task import Task

__version__ = "0.1.0"

__all__ = [
    "AsyncResult",
    "Beatq",
    "Celery",
    "GroupResult",
    "Signature",
    "Task",
    "chain",
    "chord",
    "chunks",
    "crontab",
    "current_app",
    "every",
    "group",
    "maybe_signature",
    "once",
    "schedule",
    "shared_task",
    "signature",
]
