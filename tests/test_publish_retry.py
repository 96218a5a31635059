"""Sending when the broker is down: task_publish_retry and its policy, for one call and many."""

from __future__ import annotations

import time

import pytest

from beatq import Beatq
from beatq.exceptions import BrokerError
from tests.conftest import free_port, scaled

# A retry would first sleep interval_start: long enough that no slow machine hides it.
LONG_POLICY = {"max_retries": 1, "interval_start": 30, "interval_step": 0, "interval_max": 30}


def unreachable_app(**conf: object) -> Beatq:
    app = Beatq("down", broker=f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    app.conf.update({"task_publish_retry_policy": LONG_POLICY, **conf})
    return app


@pytest.mark.parametrize("send", ["delay", "apply_many"])
def test_publish_retry_off_raises_at_once(send: str) -> None:
    app = unreachable_app(task_publish_retry=False)
    add = app.task(name="add")(lambda x, y: x + y)
    began = time.monotonic()
    with pytest.raises(BrokerError, match="unreachable"):
        add.delay(1, 2) if send == "delay" else add.apply_many([(1, 2), (3, 4)])
    assert time.monotonic() - began < scaled(10), "slept for a retry it was told not to make"


@pytest.mark.parametrize("send", ["delay", "apply_many"])
def test_publish_retries_by_the_policy_then_raises(send: str) -> None:
    app = unreachable_app(
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0.3,
            "interval_step": 0.3,
            "interval_max": 0.6,
        }
    )
    add = app.task(name="add")(lambda x, y: x + y)
    began = time.monotonic()
    with pytest.raises(BrokerError, match="unreachable"):
        add.delay(1, 2) if send == "delay" else add.apply_many([(1, 2), (3, 4)])
    assert time.monotonic() - began >= 0.3 + 0.6  # both sleeps of the policy, then the error


def test_a_call_can_turn_the_retry_off_for_itself() -> None:
    app = unreachable_app()
    add = app.task(name="add")(lambda x, y: x + y)
    began = time.monotonic()
    with pytest.raises(BrokerError):
        add.apply_many([(1, 2)], retry=False)
    with pytest.raises(BrokerError):
        add.apply_async((1, 2), retry=False)
    assert time.monotonic() - began < scaled(10)
