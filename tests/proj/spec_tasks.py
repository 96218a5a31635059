"""Tasks and settings for the SPEC audit tests (tests/test_spec_*.py).

A worker imports this module when BEATQ_TEST_INCLUDE names it. BEATQ_SPEC_CONF (JSON) sets
more of the app's settings there, for a worker configured as a test needs (the result
serializer, say); the test process imports the module without it.
"""

import json
import os
import time

from . import app, record
from .tasks import CustomError

if os.environ.get("BEATQ_SPEC_CONF"):
    app.conf.update(json.loads(os.environ["BEATQ_SPEC_CONF"]))


@app.task
def spec_a_set(values):
    """A value JSON cannot carry as it is: a set."""
    return set(values)


@app.task(bind=True, default_retry_delay=0.5, max_retries=1)
def spec_default_delay(self):
    """Retries once without a countdown: the retry waits default_retry_delay (0.5 s)."""
    record("spec_tries", time.time())
    if self.request.retries == 0:
        raise self.retry()
    return self.request.retries


@app.task(autoretry_for=(CustomError,), retry_backoff=0.2, retry_jitter=False, max_retries=3)
def spec_backoff(tag):
    """Fails every time: retried after 0.2 s, 0.4 s, 0.8 s (retry_backoff doubles)."""
    record("spec_tries", time.time())
    raise CustomError(tag)


@app.task(
    autoretry_for=(CustomError,),
    retry_backoff=0.2,
    retry_backoff_max=0.3,
    retry_jitter=False,
    max_retries=3,
)
def spec_backoff_capped(tag):
    """As spec_backoff, each wait capped at retry_backoff_max (0.3 s): 0.2, 0.3, 0.3."""
    record("spec_tries", time.time())
    raise CustomError(tag)


@app.task(bind=True, max_retries=1)
def spec_retry_exc(self, message):
    """Retries with exc=: past max_retries the task fails with that exception, not
    MaxRetriesExceededError (Celery's rule)."""
    record("spec_tries", time.time())
    raise self.retry(exc=CustomError(message), countdown=0.05)


@app.task(serializer="pickle")
def spec_pickled(value):
    """Sent pickled by default (the task's serializer): a tuple arrives a tuple."""
    return type(value).__name__
