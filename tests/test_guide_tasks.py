"""Celery's tasks page, run by real workers on Redis and SQLite (issue 22).

What happens around a task's run: the request's fields (ids of the workflow, delivery
info, custom headers, time limits), `Reject` with and without requeue (a requeued message
comes back `redelivered`, and the loop is bounded by `worker_requeue_max`),
`reject_on_worker_lost` when a prefork child is killed with `kill -9`, a message refused
by `accept_content`, exceptions that cannot be rebuilt where the result is read, and time
limits that contradict each other.
"""

from __future__ import annotations

import os
import signal

import pytest

from beatq.exceptions import Reject, WorkerLostError
from tests.conftest import stored_messages, wait_for
from tests.journal import journal

E2E = pytest.mark.backends("redis", "sqlite")


def dead_letter(app, task_id: str):
    """The dead letter of `task_id`, or None."""
    return next((d for d in app.broker.dead_letters(limit=1000) if d.id == task_id), None)


# -- the request -----------------------------------------------------------------------------
@E2E
def test_request_fields_as_celery_names_them(app, start_worker):
    from tests.proj.tasks import gt_request

    worker = start_worker("-P", "prefork", "-c", "1")
    result = gt_request.apply_async(
        queue="celery",
        priority=3,
        headers={"trace_id": "t-42", "tenant": "acme"},
        time_limit=20,
        soft_time_limit=10,
        expires=600,
    )
    fields = result.get(timeout=20)
    assert fields["id"] == fields["correlation_id"] == result.id
    assert fields["parent_id"] is None
    assert fields["root_id"] == result.id  # a task sent from outside is its own root
    assert fields["hostname"] == worker.name
    assert fields["retries"] == 0 and fields["is_eager"] is False
    assert fields["called_directly"] is False
    assert fields["expires"] is not None and fields["eta"] is None
    assert fields["delivery_info"] == {
        "exchange": "",
        "routing_key": "celery",
        "queue": "celery",
        "priority": 3,
        "redelivered": False,
    }
    assert fields["headers"] == {"trace_id": "t-42", "tenant": "acme"}
    assert fields["timelimit"] == [20, 10]
    assert (fields["time_limit"], fields["soft_time_limit"]) == (20, 10)


@E2E
def test_custom_headers_read_as_request_attributes(app, start_worker):
    from tests.proj.tasks import gt_request

    start_worker("-P", "prefork", "-c", "1")
    fields = gt_request.apply_async(("trace_id",), headers={"trace_id": "t-7"}).get(timeout=20)
    assert (fields["attribute"], fields["get"]) == ("t-7", "t-7")
    plain = gt_request.delay().get(timeout=20)  # no headers: an empty dict, nothing sent
    assert plain["headers"] == {}


@E2E
def test_a_header_added_by_a_before_task_publish_receiver_reaches_the_task(app, start_worker):
    """Tracing integrations inject their context into the headers there, and read it back
    from the request's attributes in the worker."""
    from beatq import signals
    from tests.proj.tasks import gt_request

    def inject(sender=None, headers=None, **kwargs):
        headers["traceparent"] = "00-4bf92f3577b34da6-00f067aa0ba902b7-01"

    start_worker("-P", "prefork", "-c", "1")
    signals.before_task_publish.connect(inject)
    try:
        fields = gt_request.apply_async(("traceparent",), headers={"tenant": "acme"})
    finally:
        signals.before_task_publish.disconnect(inject)
    fields = fields.get(timeout=20)
    assert fields["attribute"] == "00-4bf92f3577b34da6-00f067aa0ba902b7-01"
    assert fields["headers"] == {"tenant": "acme", "traceparent": fields["attribute"]}


@E2E
def test_tasks_sent_from_a_task_carry_its_id_as_parent_and_the_first_as_root(app, start_worker):
    from tests.proj.tasks import gt_descend

    start_worker("-P", "prefork", "-c", "2")
    top = gt_descend.delay(2)
    first = top.get(timeout=20)
    second = app.AsyncResult(first["child"]).get(timeout=20)
    third = app.AsyncResult(second["child"]).get(timeout=20)
    assert first["fields"]["parent_id"] is None and first["fields"]["root_id"] == top.id
    assert second["fields"]["parent_id"] == top.id and second["fields"]["root_id"] == top.id
    assert third["fields"]["parent_id"] == first["child"]
    assert third["fields"]["root_id"] == top.id


def test_a_direct_call_and_apply_are_not_a_worker_run(app):
    from tests.proj.tasks import gt_request

    eager = gt_request.apply(headers={"trace_id": "t-1"}).get()
    assert eager["is_eager"] is True and eager["called_directly"] is False
    assert eager["headers"] == {"trace_id": "t-1"} and eager["root_id"] == eager["id"]
    assert gt_request()["called_directly"] is True


# -- Reject ------------------------------------------------------------------------------------
@E2E
def test_reject_requeue_comes_back_redelivered(app, start_worker):
    """Celery's example: `if not redelivered: raise Reject(requeue=True)`."""
    from tests.proj.tasks import gt_requeue_once

    start_worker("-P", "prefork", "-c", "1")
    assert gt_requeue_once.delay("a").get(timeout=20) == "received two times"
    runs = [r for r in journal("gt_requeue_once") if r["tag"] == "a"]
    assert [r["redelivered"] for r in runs] == [False, True]


@E2E
def test_reject_requeue_loop_is_bounded_then_dead_lettered_and_failed(app, start_worker):
    from tests.proj.tasks import gt_requeue_forever

    worker = start_worker("-P", "prefork", "-c", "1", extra_env={"BEATQ_TEST_REQUEUE_MAX": "5"})
    result = gt_requeue_forever.delay("loop")
    with pytest.raises(Reject) as caught:
        result.get(timeout=20)
    assert "requeued 5 times" in str(caught.value) and "not now (loop)" in str(caught.value)
    assert journal("gt_requeue_forever") == ["loop"] * 6  # the first run and five requeues
    letter = wait_for(lambda: dead_letter(app, result.id), 10, "the dead letter")
    assert "worker_requeue_max" in letter.reason
    assert worker.process.poll() is None


@E2E
def test_reject_without_requeue_fails_at_once_and_is_dead_lettered(app, start_worker):
    from tests.proj.tasks import add, gt_reject

    start_worker("-P", "prefork", "-c", "1")
    result = gt_reject.delay("file too big")
    with pytest.raises(Reject, match="rejected by the task: file too big"):
        result.get(timeout=20)
    assert result.state == "FAILURE"
    letter = wait_for(lambda: dead_letter(app, result.id), 10, "the dead letter")
    assert letter.reason == "rejected by the task: file too big"
    assert add.delay(1, 2).get(timeout=20) == 3  # the worker carries on


@pytest.mark.backends("memory")
def test_reject_without_requeue_sends_task_rejected(app, start_worker):
    """In-process (memory://): the receiver connected here sees the worker's signal."""
    from beatq import signals
    from tests.proj.tasks import gt_reject

    seen = []

    def receiver(sender=None, message=None, exc=None, **kwargs):
        seen.append((sender, message.id, type(exc).__name__, str(exc)))

    signals.task_rejected.connect(receiver)
    try:
        worker = start_worker("-P", "threads", "-c", "1")
        result = gt_reject.delay("no room")
        with pytest.raises(Reject):
            result.get(timeout=10)
        assert wait_for(lambda: seen, 5, "task_rejected") == [
            (worker.name, result.id, "Reject", "no room")
        ]
    finally:
        signals.task_rejected.disconnect(receiver)


# -- a prefork child killed with kill -9 ---------------------------------------------------------
def _started(tag: str, redelivered: bool = False) -> dict:
    def found():
        runs = [r for r in journal("gt_lost") if r["tag"] == tag]
        return next((r for r in runs if r["redelivered"] == redelivered), None)

    return wait_for(found, 20, f"{tag} to start")


@E2E
def test_reject_on_worker_lost_requeues_the_task_of_a_killed_child(app, start_worker):
    from tests.proj.tasks import gt_lost_requeued

    worker = start_worker("-P", "prefork", "-c", "1")
    result = gt_lost_requeued.delay("kept")
    run = _started("kept")
    assert run["pid"] != worker.pid
    os.kill(run["pid"], signal.SIGKILL)
    assert result.get(timeout=30) == "kept ran again"
    again = _started("kept", redelivered=True)
    assert again["pid"] != run["pid"]  # a new child ran it, told it came back


@E2E
def test_reject_on_worker_lost_requeues_at_most_worker_requeue_max_times(app, start_worker):
    from tests.proj.tasks import gt_lost_always

    start_worker("-P", "prefork", "-c", "1", extra_env={"BEATQ_TEST_REQUEUE_MAX": "1"})
    result = gt_lost_always.delay("twice")
    os.kill(_started("twice")["pid"], signal.SIGKILL)
    os.kill(_started("twice", redelivered=True)["pid"], signal.SIGKILL)  # requeued once
    with pytest.raises(WorkerLostError, match="worker_requeue_max"):
        result.get(timeout=30)
    assert len([r for r in journal("gt_lost") if r["tag"] == "twice"]) == 2
    letter = wait_for(lambda: dead_letter(app, result.id), 10, "the dead letter")
    assert "requeued 1 times" in letter.reason


@E2E
def test_a_message_back_from_a_killed_worker_is_redelivered(app, start_worker):
    """The whole worker killed mid-task: its claim expires and the message comes back,
    `redelivered` (as after any visibility-timeout redelivery)."""
    from tests.proj.tasks import gt_lost_requeued

    short = {"BEATQ_TEST_VISIBILITY": "1"}
    first = start_worker("-P", "solo", extra_env=short)
    result = gt_lost_requeued.delay("whole")
    assert _started("whole")["pid"] == first.pid
    first.process.kill()
    first.process.wait()
    start_worker("-P", "solo", extra_env=short)
    assert result.get(timeout=30) == "whole ran again"
    assert _started("whole", redelivered=True)


@E2E
def test_a_hard_time_limit_fails_the_task_even_with_reject_on_worker_lost(app, start_worker):
    """Celery's rule: only a lost worker requeues; a child killed for its time limit fails."""
    from beatq.exceptions import TimeLimitExceeded
    from tests.proj.tasks import gt_lost_limited

    start_worker("-P", "prefork", "-c", "1")
    result = gt_lost_limited.delay("limited")
    with pytest.raises(TimeLimitExceeded):
        result.get(timeout=30)
    assert len([r for r in journal("gt_lost") if r["tag"] == "limited"]) == 1


@E2E
def test_without_reject_on_worker_lost_a_killed_child_fails_its_task(app, start_worker):
    from tests.proj.tasks import gt_lost_failed

    start_worker("-P", "prefork", "-c", "1")
    result = gt_lost_failed.delay("lost")
    os.kill(_started("lost")["pid"], signal.SIGKILL)
    with pytest.raises(WorkerLostError):
        result.get(timeout=30)
    assert len([r for r in journal("gt_lost") if r["tag"] == "lost"]) == 1


# -- exceptions that cannot be rebuilt where the result is read ------------------------------------
@E2E
def test_exceptions_that_cannot_be_rebuilt_keep_their_class_name_and_message(app, start_worker):
    from tests.proj.tasks import GtNeedsArgs, GtPathError, gt_raise

    start_worker("-P", "prefork", "-c", "1")
    results = {kind: gt_raise.delay(kind) for kind in ("needs-args", "custom-str", "worker-only")}
    raised = {}
    for kind, result in results.items():
        with pytest.raises(Exception) as caught:
            result.get(timeout=20)
        raised[kind] = caught.value
    needs = raised["needs-args"]
    assert isinstance(needs, GtNeedsArgs) and str(needs) == "404: no such page"
    custom = raised["custom-str"]
    assert isinstance(custom, GtPathError) and str(custom) == "cannot open /etc/beatq.conf"
    alien = raised["worker-only"]
    assert type(alien).__name__ == "WorkerOnlyError" and type(alien).__module__ == "gt_worker_only"
    assert str(alien) == "only here"
    assert "WorkerOnlyError" in repr(alien)


@E2E
def test_an_exception_holding_an_unpicklable_argument_comes_back_as_its_class(app, start_worker):
    from tests.proj.tasks import gt_raise

    start_worker("-P", "prefork", "-c", "1")
    with pytest.raises(ValueError) as caught:
        gt_raise.delay("holds-a-lock").get(timeout=20)
    assert caught.value.args[0] == "cannot pickle this"
    assert "lock" in str(caught.value.args[1])  # its repr, the part JSON could not carry


# -- accept_content ------------------------------------------------------------------------------
@E2E
def test_a_message_refused_by_accept_content_fails_its_task_at_once(app, start_worker):
    from beatq.serializers import ContentDisallowed
    from tests.proj.tasks import add

    start_worker("-P", "prefork", "-c", "1")  # accept_content=["json"]
    result = add.apply_async((2, 2), serializer="pickle")
    with pytest.raises(ContentDisallowed, match="pickle"):
        result.get(timeout=20)  # not PENDING until the timeout
    assert result.state == "FAILURE"
    letter = wait_for(lambda: dead_letter(app, result.id), 10, "the dead letter")
    assert "pickle" in letter.reason
    assert add.delay(2, 3).get(timeout=20) == 5


# -- time limits ----------------------------------------------------------------------------------
def test_a_soft_time_limit_above_the_hard_one_is_refused_where_declared(app):
    with pytest.raises(ValueError, match="soft_time_limit=10 is greater than time_limit=5"):

        @app.task(name="gt.contradicting", soft_time_limit=10, time_limit=5)
        def contradicting():
            return None

    assert "gt.contradicting" not in app.tasks
    with pytest.raises(ValueError, match="time_limit='soon' is not a number of seconds"):
        app.task(name="gt.wordy", time_limit="soon")(lambda: None)


def test_a_soft_time_limit_above_the_hard_one_is_refused_at_send(app):
    from tests.proj.tasks import add, soft_limited

    with pytest.raises(ValueError, match="soft_time_limit=30 is greater than time_limit=3"):
        add.apply_async((1, 1), soft_time_limit=30, time_limit=3)
    # against the task's own hard limit (2 s): a per-call soft limit of 5 would never fire
    with pytest.raises(ValueError, match="soft_time_limit=5 is greater than time_limit=2"):
        soft_limited.apply_async((0,), soft_time_limit=5)
    assert stored_messages(app) == []  # nothing was sent
