"""The example project's app, as in Celery's tutorial (proj/celery.py)."""

import os

from beatq import Beatq

app = Beatq(
    "proj",
    broker=os.environ.get("BEATQ_BROKER_URL", "redis://localhost:6379/0"),
    include=["examples.proj.tasks"],
)
app.conf.update(
    timezone="Asia/Shanghai",
    result_expires=3600,
    task_routes={"examples.proj.tasks.fetch": {"queue": "priority.high"}},
)
