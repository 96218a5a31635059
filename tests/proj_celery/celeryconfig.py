"""Settings, Celery's lower-case names. The broker comes from BEATQ_BROKER_URL (tests)."""

import os

broker_transport_options = {
    "global_keyprefix": os.environ.get("BEATQ_TEST_PREFIX", "beatq-test"),
    "visibility_timeout": 60.0,
}
timezone = "UTC"
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
beat_schedule = {
    "tick-every-half-second": {
        "task": "tests.proj_celery.tasks.tick",
        "schedule": 0.5,
    },
}
beat_schedule_files = []  # beatq's own: no schedules/*.yaml files, only beat_schedule
