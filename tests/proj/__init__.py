"""The app the end-to-end tests run in real worker processes.

Its broker comes from BEATQ_BROKER_URL and its key prefix from BEATQ_TEST_PREFIX, so
each test gets its own keys on the test Redis.
"""

import json
import os
import time

import redis

from beatq import Beatq

app = Beatq("tests.proj", include=["tests.proj.tasks"])
app.conf.update(
    broker_transport_options={
        "global_keyprefix": os.environ.get("BEATQ_TEST_PREFIX", "beatq-test"),
        "visibility_timeout": float(os.environ.get("BEATQ_TEST_VISIBILITY", "60")),
    },
    timezone=os.environ.get("BEATQ_TEST_TIMEZONE", "UTC"),
    accept_content=os.environ.get("BEATQ_TEST_ACCEPT", "json").split(","),
)
if os.environ.get("BEATQ_TEST_RESULT_EXPIRES"):
    app.conf.result_expires = float(os.environ["BEATQ_TEST_RESULT_EXPIRES"])
if os.environ.get("BEATQ_TEST_ROUTES"):
    app.conf.task_routes = json.loads(os.environ["BEATQ_TEST_ROUTES"])


def record(kind: str, value: str) -> None:
    """Append `value` to the test's journal list `{prefix}:journal:{kind}` (for assertions)."""
    prefix = app.conf.broker_transport_options["global_keyprefix"]
    client = redis.Redis.from_url(app.conf.broker_url)
    try:
        client.rpush(f"{prefix}:journal:{kind}", value)
    finally:
        client.close()


def journal(kind: str) -> list[str]:
    prefix = app.conf.broker_transport_options["global_keyprefix"]
    client = redis.Redis.from_url(app.conf.broker_url)
    try:
        return [v.decode() for v in client.lrange(f"{prefix}:journal:{kind}", 0, -1)]
    finally:
        client.close()


def now() -> float:
    return time.time()
