"""Celery's calling guide ("Calling Tasks"), its examples run against real workers.

Options given at declaration and per call: argument checking at send (`typing`),
`ignore_result` per call, `track_started`, `priority` within a queue, and the options beatq
refuses (one clear error each, never accepted and dropped).
"""

from __future__ import annotations

import pytest

from beatq import AsyncResult, chain, group
from tests.conftest import scaled, steady, stored_messages, wait_for
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
        ({"countdwon": 3}, r"unknown option 'countdwon' for apply_async\(\) \(did you mean 'coun"),
        ({"ignore_results": True}, r"did you mean 'ignore_result'\?"),
        ({"shadow": "other"}, r"option 'shadow' of apply_async\(\) is not supported"),
        ({"producer": object()}, r"option 'producer' of apply_async\(\) is not supported"),
        ({"reply_to": "q"}, r"option 'reply_to' of apply_async\(\) is not supported"),
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


def test_a_timestamp_given_as_seconds_from_now_is_refused_and_nothing_is_sent(app):
    """countdown= and expires= count seconds from now, as in Celery: time.time() + 60 there
    would mean 56 years ahead (a task never run, or never expiring). Such a number is
    refused naming the fix; a year of seconds is still a countdown."""
    import time
    from datetime import timedelta

    from beatq import messages
    from tests.proj.tasks import add

    with pytest.raises(ValueError, match=r"countdown=.* looks like a POSIX timestamp; pass eta="):
        add.apply_async((1, 1), countdown=time.time() + 60)
    with pytest.raises(ValueError, match=r"expires=.* years ahead.*pass expires=datetime"):
        add.apply_async((1, 1), expires=time.time() + 60)
    with pytest.raises(ValueError, match="expires="):
        add.apply_async((1, 1), expires=timedelta(days=20_000))
    assert stored_messages(app) == []
    year = 365 * 86400
    sent = add.apply_async((1, 1), countdown=year, expires=2 * year)
    (stored,) = stored_messages(app)
    assert (stored.id, stored.state) == (sent.id, "delayed")
    message = messages.decode(stored.body, None)
    assert time.time() + year - 60 < message.eta < time.time() + year + 60
    assert time.time() + 2 * year - 60 < message.expires < time.time() + 2 * year + 60


# -- priority: higher first within a queue (RabbitMQ's order), on every backend -----------------
def runs(prefix: str) -> list[str]:
    return [r for r in journal("runs") if r.startswith(prefix)]


POOLS = {
    "prefork": ["-P", "prefork", "-c", "1"],
    "threads": ["-P", "threads", "-c", "1"],
    "solo": ["-P", "solo"],
}


@pytest.mark.backends("redis", "sqlite", "memory")
@pytest.mark.parametrize("pool", list(POOLS))
def test_higher_priority_sent_while_busy_runs_before_lower_work_held(
    app, start_worker, backend, pool, request
):
    from tests.proj import record
    from tests.proj.tasks import held, ordered

    if backend == "memory" and pool == "prefork":
        pytest.skip("memory:// serves one process: no prefork children")
    # held until released below: however slow the machine, it runs while the rest is sent
    long = held.apply_async(("long", scaled(30)))
    request.addfinalizer(lambda: record("release", "long"))  # a failed test lets it go too
    start_worker(*POOLS[pool])  # default prefetch: claims ahead while busy
    wait_for(lambda: runs("long:start"), scaled(10), "the long task to start")
    low = [ordered.delay(f"low{i}") for i in range(4)]
    if pool != "solo":  # solo claims nothing while it runs
        # at least low0, claimed by the wait it woke (see test_urgency: Handoff.dried)
        wait_for(lambda: app.broker.queue_length("celery") <= 3, 5, "claims ahead")
    high = [ordered.apply_async((f"high{i}",), priority=9) for i in range(3)]
    mid = ordered.apply_async(("mid",), priority=4)
    assert runs("long:end") == [], "sent while the long task ran"
    if pool != "solo":
        # the busy worker looks for higher priorities every URGENT_EVERY (0.1 s): it takes
        # the high ones and gives back as many low ones; the long task ends once its looks
        # took all they will (a look between two sends takes high0 alone, and a release
        # then ran low0 before the next look took high1)
        def claimed() -> frozenset[str]:
            return frozenset(m.id for m in stored_messages(app) if m.state == "claimed")

        wait_for(
            steady(claimed, lambda ids: high[0].id in ids, scaled(0.5)),
            5,
            "the busy worker to take the high-priority work ahead",
        )
    record("release", "long")
    assert long.get(timeout=scaled(15)) == "long"
    for result in [*high, mid, *low]:
        result.get(timeout=scaled(10))
    expected = ["high0", "high1", "high2", "mid"] + [f"low{i}" for i in range(4)]
    assert journal("order") == expected


def test_priority_per_call_over_the_task_option_over_none(app, start_worker):
    from tests.proj.calling_guide import call_prior
    from tests.proj.tasks import ordered

    sent = [
        ordered.delay("none"),
        call_prior.delay("task7"),  # @app.task(priority=7)
        call_prior.apply_async(("call2",), priority=2),  # the call's own wins
        ordered.apply_async(("call9",), priority=9),
        ordered.apply_async(("zero",), priority=0),  # 0: the same as none, first come first
    ]
    start_worker("-c", "1")
    for result in sent:
        result.get(timeout=scaled(10))
    assert journal("order") == ["call9", "task7", "call2", "none", "zero"]


def test_eta_messages_keep_their_priority_when_they_fall_due(app, start_worker):
    from tests.proj.tasks import ordered, sleep

    long = sleep.apply_async((scaled(1.0), "long"))
    start_worker("-c", "1", "-P", "threads")
    wait_for(lambda: runs("long:start"), 10, "the long task to start")
    later = ordered.apply_async(("due-hi",), countdown=0.2, priority=6)
    low = [ordered.delay(f"low{i}") for i in range(3)]
    assert long.get(timeout=scaled(15)) == "long"
    for result in [later, *low]:
        result.get(timeout=scaled(10))
    assert journal("order") == ["due-hi", "low0", "low1", "low2"]


def test_queue_order_ranks_before_priority(app, start_worker):
    from tests.proj.tasks import ordered, urgent

    sent = [ordered.apply_async((f"normal9-{i}",), priority=9) for i in range(2)]
    sent += [urgent.delay("urgent0"), urgent.apply_async(("urgent5",), priority=5)]
    start_worker("-c", "1", "-Q", "priority.high,celery")
    for result in sent:
        result.get(timeout=scaled(10))
    assert journal("order") == ["urgent5", "urgent0", "normal9-0", "normal9-1"]


@pytest.mark.parametrize("bad", [-1, 256, 1.5, "9", True])
def test_a_priority_out_of_range_is_refused(app, bad):
    from tests.proj.tasks import add

    with pytest.raises(ValueError, match=r"priority .* is not a whole number from 0 to 255"):
        add.apply_async((1, 2), priority=bad)
    with pytest.raises(ValueError, match=r"task 'bad_priority'"):
        app.task(name="bad_priority", priority=bad)(lambda: None)
    assert stored_messages(app) == []


def test_task_default_priority_setting(app, start_worker, monkeypatch):
    from tests.proj.tasks import ordered

    first = ordered.delay("plain")
    monkeypatch.setitem(app.conf, "task_default_priority", 3)
    second = ordered.delay("defaulted")
    start_worker("-c", "1")
    for result in (first, second):
        result.get(timeout=scaled(10))
    assert journal("order") == ["defaulted", "plain"]


def test_a_periodic_task_with_an_unknown_option_is_refused_before_start(tmp_path):
    from datetime import timezone

    from beatq.beat.loader import load_file
    from beatq.exceptions import ScheduleError

    path = tmp_path / "bad.yaml"
    path.write_text(
        "schedules:\n  nightly: {task: proj.add, every: 30s, options: {queue: q, priorty: 5}}\n"
    )
    with pytest.raises(ScheduleError, match=r"bad\.yaml:2: entry 'nightly': .*'priorty'") as e:
        load_file(path, timezone.utc)
    assert "did you mean 'priority'?" in str(e.value)
    path.write_text("schedules:\n  n: {task: proj.add, every: 30s, options: {priority: 300}}\n")
    with pytest.raises(ScheduleError, match=r"priority 300 is not a whole number"):
        load_file(path, timezone.utc)
