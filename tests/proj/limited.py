"""Tasks for the rate-limit tests: each journals when it started (tests.proj.record).

Loaded by the workers started with BEATQ_TEST_INCLUDE=tests.proj.limited (and by the
test process, for sending); `limited` gets the rate limit in BEATQ_TEST_RATE_LIMIT (none
by default): a worker with a rate-limited task hands every task over through its main
thread, a path the other tests' workers, in-process ones included, are left off.
"""

import os
import time

from . import app, record


@app.task(rate_limit=os.environ.get("BEATQ_TEST_RATE_LIMIT"), acks_late=True)
def limited(tag):
    """With BEATQ_TEST_RATE_LIMIT=4/s, at most four starts a second on each worker.

    acks_late: a worker killed as one runs (the kill test) runs it again elsewhere, so
    every call ends; at most once, the one it ran would be gone with it, as SPEC §6 says."""
    record("starts", [tag, time.time()])
    return tag


@app.task
def stamp(tag):
    """No limit of its own: tests set one at run time (app.control.rate_limit)."""
    record("starts", [tag, time.time()])
    return tag
