"""Celery's signals page, its examples as written there, against a real broker and worker.

The page's first example connects `after_task_publish` for one task by its name
(`sender="proj.tasks.add"`), reading the id from the message's headers. Every signal of
the page, with its senders and arguments, is run by real workers of a Celery-style
project in test_celery_project.py (celeryd_init's sender there is the worker's node name,
what the page's second example connects to); connecting and sending in test_celery_api.py.
"""

from __future__ import annotations

import pytest

from beatq import signals
from tests.conftest import scaled

pytestmark = pytest.mark.backends("redis", "sqlite")


def test_after_task_publish_for_one_task_by_its_name(app, start_worker) -> None:
    from tests.proj.tasks import add, mul

    published = []

    @signals.after_task_publish.connect(sender=add.name)
    def task_sent_handler(sender=None, headers=None, body=None, **kwargs):
        info = headers if "task" in headers else body  # the page's line, as written
        published.append((sender, info["id"]))

    try:
        start_worker("-P", "solo")
        sent = add.delay(2, 2)
        other = mul.delay(2, 3)
        also = add.apply_async((1, 1), countdown=0.1)
        assert [sent.get(timeout=scaled(10)), other.get(timeout=scaled(10))] == [4, 6]
        assert also.get(timeout=scaled(10)) == 2
    finally:
        signals.after_task_publish.disconnect(task_sent_handler, sender=add.name)
    assert published == [(add.name, sent.id), (add.name, also.id)]
