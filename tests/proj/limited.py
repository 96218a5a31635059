"""Tasks for the rate-limit tests: each journals when it started (tests.proj.record)."""

import time

from . import app, record


@app.task(rate_limit="4/s")
def limited(tag):
    """At most four starts a second on each worker."""
    record("starts", [tag, time.time()])
    return tag


@app.task
def stamp(tag):
    """No limit of its own: tests set one at run time (app.control.rate_limit)."""
    record("starts", [tag, time.time()])
    return tag
