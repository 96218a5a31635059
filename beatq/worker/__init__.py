"""The worker: consume queues, run tasks in a pool, finish them atomically."""

from .execute import Executor
from .worker import Worker

__all__ = ["Executor", "Worker"]
