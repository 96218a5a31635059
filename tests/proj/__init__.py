"""The app the end-to-end tests run in real worker processes.

Its broker comes from BEATQ_BROKER_URL and its key prefix from BEATQ_TEST_PREFIX, so
each test gets its own store. Tasks journal their side effects to files in the directory
BEATQ_TEST_JOURNAL (one file per kind, one line per entry): a journal that needs no
broker, read the same way whichever backend the test runs on.
"""

import json
import os
import time

from beatq import Beatq
from tests.journal import journal, record  # noqa: F401 (the tasks and the tests import them here)

# BEATQ_TEST_INCLUDE: more task modules, for the tests that need them. The rate-limited
# tasks (tests.proj.limited) are only there when asked for: a worker with a limited task
# takes every delivery through its throttle, a path the other tests must not be run on.


def transport_options(url: str, prefix: str, visibility: float) -> dict:
    """The store's options for a test: the key prefix only where keys are shared (Redis:
    a SQLite file or a memory:// name is the test's own, and says the prefix does nothing)."""
    options: dict = {"visibility_timeout": visibility}
    if not url.startswith(("sqlite:", "memory:")):
        options["global_keyprefix"] = prefix
    return options


more = [name for name in os.environ.get("BEATQ_TEST_INCLUDE", "").split(",") if name]
app = Beatq("tests.proj", include=["tests.proj.tasks", *more])
app.conf.update(
    broker_transport_options=transport_options(
        os.environ.get("BEATQ_BROKER_URL", ""),
        os.environ.get("BEATQ_TEST_PREFIX", "beatq-test"),
        float(os.environ.get("BEATQ_TEST_VISIBILITY", "60")),
    ),
    timezone=os.environ.get("BEATQ_TEST_TIMEZONE", "UTC"),
    accept_content=os.environ.get("BEATQ_TEST_ACCEPT", "json").split(","),
)
if os.environ.get("BEATQ_TEST_TRANSPORT"):  # more transport options, as JSON
    app.conf.broker_transport_options.update(json.loads(os.environ["BEATQ_TEST_TRANSPORT"]))
if os.environ.get("BEATQ_TEST_RESULT_EXPIRES"):
    app.conf.result_expires = float(os.environ["BEATQ_TEST_RESULT_EXPIRES"])
if os.environ.get("BEATQ_TEST_REQUEUE_MAX"):
    app.conf.worker_requeue_max = int(os.environ["BEATQ_TEST_REQUEUE_MAX"])
if os.environ.get("BEATQ_TEST_TIMELINE"):  # "interval,keep" seconds: charts in seconds
    interval, keep = os.environ["BEATQ_TEST_TIMELINE"].split(",")
    app.conf.update(timeline_interval=float(interval), timeline_keep=float(keep))
if os.environ.get("BEATQ_TEST_AUTOSCALE_KEEPALIVE"):
    app.conf.worker_autoscale_keepalive = float(os.environ["BEATQ_TEST_AUTOSCALE_KEEPALIVE"])
if os.environ.get("BEATQ_TEST_ROUTES"):
    app.conf.task_routes = json.loads(os.environ["BEATQ_TEST_ROUTES"])


def now() -> float:
    return time.time()


if os.environ.get("BEATQ_TEST_TRACK_STARTED"):
    app.conf.task_track_started = True
