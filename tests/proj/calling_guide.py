"""Tasks of Celery's calling guide as tests/test_guide_calling.py runs it."""

from . import app, record


@app.task(typing=False)
def call_loose(x):
    """typing=False: a call whose arguments do not fit is sent, and fails where it runs."""
    record("order", str(x))
    return x


@app.task(priority=7)
def call_prior(tag):
    """A task whose messages carry priority 7 unless the call gives another."""
    record("order", tag)
    return tag
