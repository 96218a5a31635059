"""The project's tasks: shared tasks with a base= class, a class-based task, progress."""

import os
import signal
import time
from pathlib import Path

from beatq import Task, shared_task
from tests.journal import record

from .base import Journaled
from .celery import app


class Refused(Exception):
    pass


@shared_task(base=Journaled)
def add(x, y):
    record("runs", {"task": "add", "pid": os.getpid()})
    return x + y


@shared_task(base=Journaled)
def fail(message):
    raise Refused(message)


@shared_task(base=Journaled, bind=True, max_retries=2)
def retry_once(self):
    if self.request.retries == 0:
        raise self.retry(countdown=0, exc=Refused("first try"))
    return f"retried {self.request.retries}"


@shared_task
def tick():
    record("ticks", {"pid": os.getpid()})


@shared_task(bind=True)
def progress(self, gate):
    """Shows its progress as a custom state, then waits until the file `gate` exists."""
    self.update_state(state="PROGRESS", meta={"done": 1, "total": 2})
    deadline = time.monotonic() + 60
    while not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return "finished"


class Multiply(Journaled):
    """A class-based task, as Celery 1.0-style code and some libraries write them."""

    name = "tests.proj_celery.multiply"
    acks_late = True

    def run(self, x, y):
        record("runs", {"task": "multiply", "pid": os.getpid(), "late": self.option("acks_late")})
        return x * y


multiply = app.register_task(Multiply())


class Plain(Task):
    """A class-based task with no name: registered as module.Class."""

    def run(self):
        return self.name


plain = app.register_task(Plain)


@shared_task(base=Journaled)
def die():
    """Its process dies under it (as under the OOM killer)."""
    os.kill(os.getpid(), signal.SIGKILL)
