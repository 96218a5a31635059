"""The example project's app, as in Celery's tutorial (proj/celery.py)."""

import os

from beatq import Beatq

app = Beatq(
    "proj",
    # no broker named: the embedded SQLite default (sqlite:///beatq.sqlite3)
    broker=os.environ.get("BEATQ_BROKER_URL"),
    include=["examples.proj.tasks"],
)
app.conf.update(
    timezone="Asia/Shanghai",
    result_expires=3600,
    task_routes={"examples.proj.tasks.fetch": {"queue": "priority.high"}},
)
