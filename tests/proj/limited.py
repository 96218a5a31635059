"""Tasks for the rate-limit tests: each journals when it started (tests.proj.record).

`limited` is declared with the rate limit in BEATQ_TEST_RATE_LIMIT (none by default): a
worker with a rate-limited task hands every task over through its main thread, so the
other tests' workers are left without one.
"""

import os
import time

from . import app, record


@app.task(rate_limit=os.environ.get("BEATQ_TEST_RATE_LIMIT"))
def limited(tag):
    """With BEATQ_TEST_RATE_LIMIT=4/s, at most four starts a second on each worker."""
    record("starts", [tag, time.time()])
    return tag


@app.task
def stamp(tag):
    """No limit of its own: tests set one at run time (app.control.rate_limit)."""
    record("starts", [tag, time.time()])
    return tag
