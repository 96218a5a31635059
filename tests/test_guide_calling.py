"""Celery's calling guide ("Calling Tasks"), its examples run against real workers.

Options given at declaration and per call: argument checking at send (`typing`),
`ignore_result` per call, `track_started`, `priority` within a queue, and the options beatq
refuses (one clear error each, never accepted and dropped).
"""

from __future__ import annotations

import pytest

from beatq import AsyncResult, chain, group
from tests.conftest import scaled, stored_messages, wait_for
from tests.proj import journal

pytestmark = pytest.mark.backends("redis", "sqlite")


# -- typing: a call that does not fit the task fails where it is sent ---------------------------
@pytest.mark.parametrize(
    "send",
    [
        pytest.param(lambda t: t.add.delay(1), id="delay-missing"),
        pytest.param(lambda t: t.add.delay(1, 2, 3), id="delay-too-many"),
        pytest.param(lambda t: t.add.apply_async((1,), {"z": 2}), id="apply_async-kwarg"),
        pytest.param(lambda t: t.add.s(1).delay(), id="signature-delay"),
        pytest.param(lambda t: t.add.apply_async(kwargs={"x": 1}), id="kwargs-only"),
        pytest.param(lambda t: t.flaky.delay(), id="bind-skips-self"),
        pytest.param(lambda t: group(t.add.s(1, 1), t.add.s(2)).delay(), id="group-member"),
        pytest.param(lambda t: chain(t.add.s(1), t.mul.s(2)).delay(), id="chain-first"),
        pytest.param(lambda t: t.add.apply_many([(1, 1), (2,)]), id="apply_many"),
    ],
)
def test_a_call_that_does_not_fit_fails_at_send_with_typeerror_naming_the_task(app, send):
    from tests.proj import tasks

    with pytest.raises(TypeError, match=r"task 'tests\.proj\.tasks\.(add|flaky)' cannot take"):
        send(tasks)
    assert stored_messages(app) == [], "nothing may be sent for a call that does not fit"


def test_calls_that_fit_are_sent_and_run(app, start_worker):
    from tests.proj.tasks import add, flaky, mul

    start_worker("-c", "2")
    assert add.delay(2, 2).get(timeout=scaled(10)) == 4
    assert add.apply_async(kwargs={"x": 1, "y": 2}).get(timeout=scaled(10)) == 3
    assert add.s(1).delay(2).get(timeout=scaled(10)) == 3  # partial: the call's args first
    assert flaky.delay(0).get(timeout=scaled(10)) == 0  # bind=True: self is not counted
    assert chain(add.s(1, 1), mul.s(3)).delay().get(timeout=scaled(10)) == 6  # mul gets 2


def test_typing_false_sends_the_call_which_fails_on_the_worker(app, start_worker):
    from tests.proj.calling_guide import call_loose

    result = call_loose.delay(1, 2)  # call_loose(x): sent all the same
    start_worker("-c", "1")
    with pytest.raises(TypeError):
        result.get(timeout=scaled(10))
    assert result.state == "FAILURE"
    assert call_loose.delay(5).get(timeout=scaled(10)) == 5


# -- ignore_result: per call and per task --------------------------------------------------------
def test_ignore_result_per_call_stores_nothing_and_get_returns_none_at_once(app, start_worker):
    from tests.proj.tasks import ordered

    start_worker("-c", "1")
    result = ordered.apply_async(("ignored",), ignore_result=True)
    assert result.get(timeout=0.01) is None  # at once: nothing will be stored
    kept = ordered.delay("kept")
    assert kept.get(timeout=scaled(10)) == "kept"  # run after the ignored one (FIFO, -c 1)
    assert journal("order") == ["ignored", "kept"]
    assert AsyncResult(result.id, app=app).state == "PENDING"  # no result was stored
    assert ordered.s("sig").set(ignore_result=True).delay().get(timeout=0.01) is None


def test_ignore_result_of_the_task_and_false_per_call(app, start_worker):
    from tests.proj.tasks import quiet

    start_worker("-c", "1")
    assert quiet.delay(1).get(timeout=0.01) is None  # the task's own ignore_result=True
    stored = quiet.apply_async((2,), ignore_result=False)  # the call wins, as in Celery
    assert stored.get(timeout=scaled(10)) == 2
    wait_for(lambda: journal("quiet") == ["1", "2"], 10, "both quiet runs")
    assert AsyncResult(stored.id, app=app).state == "SUCCESS"


# -- track_started: the setting, seen from another process -----------------------------------
def test_task_track_started_setting_shows_started_while_it_runs(app, start_worker, monkeypatch):
    from tests.proj.tasks import sleep

    monkeypatch.setitem(app.conf, "task_track_started", True)
    start_worker("-c", "1", extra_env={"BEATQ_TEST_TRACK_STARTED": "1"})
    result = sleep.delay(scaled(1.0), "tracked")
    wait_for(lambda: AsyncResult(result.id, app=app).state == "STARTED", 10, "STARTED")
    assert result.get(timeout=scaled(10)) == "tracked"
    assert AsyncResult(result.id, app=app).state == "SUCCESS"


# -- options: each honoured or refused with one clear error -----------------------------------
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"countdwon": 3}, r"unknown option 'countdwon' \(did you mean 'countdown'\?\)"),
        ({"ignore_results": True}, r"did you mean 'ignore_result'\?"),
        ({"shadow": "other"}, r"apply_async\(shadow=...\) is not supported"),
        ({"producer": object()}, r"apply_async\(producer=...\) is not supported"),
        ({"reply_to": "q"}, r"apply_async\(reply_to=...\) is not supported"),
        ({"routing_key": "video"}, r"give queue='video' instead"),
        ({"exchange": "media"}, r"beatq has no exchanges"),
    ],
)
def test_an_option_beatq_does_not_honour_is_refused_at_send(app, options, message):
    from tests.proj.tasks import add

    with pytest.raises(TypeError, match=message):
        add.apply_async((1, 2), **options)
    with pytest.raises(TypeError, match=message):
        add.s(1, 2).set(**options).delay()
    assert stored_messages(app) == []


def test_routing_key_and_exchange_naming_the_queue_are_honoured(app, start_worker):
    from tests.proj.tasks import add

    start_worker("-c", "1", "-Q", "video")
    result = add.apply_async((2, 3), queue="video", routing_key="video", exchange="video")
    assert result.get(timeout=scaled(10)) == 5


def test_calling_guide_options_run_as_documented(app, start_worker):
    from tests.proj.tasks import add, echo

    start_worker("-c", "2")
    opts = {"retry": True, "retry_policy": {"max_retries": 3, "interval_start": 0}}
    assert add.apply_async((2, 2), **opts).get(timeout=scaled(10)) == 4
    packed = add.apply_async((2, 2), serializer="json", compression="zlib")
    assert packed.get(timeout=scaled(10)) == 4
    given = add.apply_async((1, 1), task_id="my-own-id", time_limit=5, soft_time_limit=4)
    assert given.id == "my-own-id" and given.get(timeout=scaled(10)) == 2
    linked = add.apply_async((2, 2), link=echo.s(), add_to_parent=False)
    assert linked.get(timeout=scaled(10)) == 4
    assert add.apply_async((3, 3), countdown=0.1, expires=60).get(timeout=scaled(10)) == 6


def test_result_cls_makes_the_handle_of_that_class(app):
    from tests.proj.tasks import add

    class Mine(AsyncResult):
        pass

    result = add.apply_async((1, 2), result_cls=Mine)
    assert type(result) is Mine
    assert [m.id for m in stored_messages(app)] == [result.id]
