"""Celery's periodic-tasks page, "Entries": periodic tasks added in code when the app is
configured. The intervals are Celery's example's in tenths of a second (10 s -> 0.5 s, 30 s
-> 0.7 s), so that a test sees them run; the crontab is the page's own."""

import os
from datetime import timedelta

from beatq import Celery
from beatq.schedules import crontab
from tests.journal import record

app = Celery("tests.guide.periodic")
app.conf.broker_transport_options = {
    "global_keyprefix": os.environ.get("BEATQ_TEST_PREFIX", "beatq-test"),
}
app.conf.beat_schedule_files = []  # beatq's YAML schedules: none here, only the code's


@app.on_after_configure.connect
def setup_periodic_tasks(sender, **kwargs):
    # Calls test('hello') every 10 seconds (here: half a second).
    sender.add_periodic_task(0.5, test.s("hello"), name="add every 10")

    # The same signature again: an explicit name keeps it from replacing the first.
    sender.add_periodic_task(timedelta(seconds=0.7), test.s("hello"), name="add every 30")

    # Calls test('world'); named after its signature.
    sender.add_periodic_task(0.6, test.s("world"), expires=10)

    # Executes every Monday morning at 7:30 a.m.
    sender.add_periodic_task(
        crontab(hour=7, minute=30, day_of_week=1),
        test.s("Happy Mondays!"),
    )


@app.task
def test(arg):
    record("periodic", {"arg": arg, "pid": os.getpid()})
