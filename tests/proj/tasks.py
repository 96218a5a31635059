"""Tasks for the end-to-end tests. Side effects go to the journal (see tests.proj.record)."""

import os
import time

from . import app, record


class CustomError(Exception):
    """A task's own exception class, re-raised by AsyncResult.get."""


@app.task
def add(x, y):
    return x + y


@app.task
def mul(x, y):
    return x * y


@app.task
def echo(value):
    return value


@app.task
def fail(message="boom"):
    raise CustomError(message)


@app.task
def sleep(seconds, tag=""):
    """Sleep in short steps (so soft limits land) and journal each run by tag."""
    record("runs", f"{tag}:start:{os.getpid()}")
    deadline = time.time() + seconds
    while time.time() < deadline:
        time.sleep(0.01)
    record("runs", f"{tag}:end:{os.getpid()}")
    return tag


@app.task(acks_late=True)
def sleep_late(seconds, tag=""):
    record("runs", f"{tag}:start:{os.getpid()}")
    deadline = time.time() + seconds
    while time.time() < deadline:
        time.sleep(0.01)
    record("runs", f"{tag}:end:{os.getpid()}")
    return tag


@app.task(bind=True, max_retries=3)
def flaky(self, fail_times):
    """Fails `fail_times` times with self.retry(countdown=0.1), then returns the retries."""
    record("flaky", str(self.request.retries))
    if self.request.retries < fail_times:
        raise self.retry(countdown=0.1)
    return self.request.retries


@app.task(autoretry_for=(CustomError,), retry_backoff=0.05, retry_jitter=False, max_retries=2)
def auto_flaky(tag):
    record("auto", tag)
    raise CustomError(tag)


@app.task
def errback_old(task_id):
    """Old-style errback: gets the failed task's id."""
    record("errback", f"old:{task_id}")


@app.task
def errback_new(request, exc, traceback):
    """New-style errback: gets (request, exc, traceback)."""
    record("errback", f"new:{request.id}:{type(exc).__name__}:{exc}")


@app.task(soft_time_limit=0.3, time_limit=2)
def soft_limited(seconds):
    from beatq.exceptions import SoftTimeLimitExceeded

    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        return "soft limit caught"
    return "finished"


@app.task(time_limit=0.5)
def hard_limited(seconds):
    time.sleep(seconds)
    return "finished"


@app.task(queue="priority.high")
def urgent(tag):
    record("order", tag)
    return tag


@app.task
def ordered(tag):
    record("order", tag)
    return tag
