"""Canvas end to end (SPEC §7): signatures, chain, group, chord, map, starmap, chunks,
nesting and failure semantics, run by real worker processes (on memory://, a worker in
this process). The chord join and the canvases built on it run on every backend."""

from __future__ import annotations

import os
import signal
import time

import pytest

from beatq import GroupResult, chain, chord, group, signature
from beatq.canvas import maybe_signature
from beatq.exceptions import ChordError
from beatq.serializers import dumps, loads
from tests.conftest import scaled, stored_messages, wait_for
from tests.proj import journal
from tests.proj.tasks import (
    CustomError,
    add,
    cv_body,
    cv_note,
    cv_retry_once,
    cv_seen,
    cv_slow,
    cv_stamp,
    cv_where,
    echo,
    errback_new,
    errback_old,
    fail,
    mul,
)
from tests.proj.tasks import cv_xsum as xsum

EVENS = [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
ALL = pytest.mark.backends("redis", "sqlite", "memory", "cluster")


@pytest.fixture
def worker(start_worker):
    """One threads worker for the test, also consuming the queue `cv.other`."""
    return start_worker("-P", "threads", "-c", "4", "-Q", "celery,cv.other")


@pytest.fixture
def drained(app):
    """`drained(*workers)`: wait until the broker holds no message at all (ready, delayed
    or claimed), then stop the workers gracefully (they finish what runs): nothing can
    run any more, so a count taken afterwards is final. A task acknowledged as it starts
    is in no store while it runs, so what it sends when it finishes (a link) is not
    waited for here: wait for its effect first."""

    def wait(*workers, timeout: float = 10.0) -> None:
        wait_for(lambda: not stored_messages(app), timeout, "the broker to hold no messages")
        for worker in workers:
            worker.signal(signal.SIGTERM)
            assert worker.wait(10) == 0, worker.log()

    return wait


# -- 1. signatures --------------------------------------------------------------------------
def test_signature_fields_and_local_call(app):
    s = add.s(2, 2)
    assert (s.task, s.args, s.kwargs, s.immutable) == ("tests.proj.tasks.add", [2, 2], {}, False)
    assert add.si(2, 2).immutable is True
    assert s() == 4  # a plain call, here
    assert add.s(2)(3) == 5  # partial: the call's args come first
    assert add.si(2, 2)(99) == 4  # immutable: the call's args are ignored

    by_name = signature(
        "tests.proj.tasks.add", args=(2, 3), kwargs={}, options={"queue": "cv.other"}, app=app
    )
    assert (by_name.task, by_name.args, by_name.options) == (
        "tests.proj.tasks.add",
        [2, 3],
        {"queue": "cv.other"},
    )
    assert by_name() == 5

    clone = s.clone()
    clone.set(queue="cv.other")
    clone.args.append(7)
    assert s.options == {} and s.args == [2, 2]
    assert clone.options == {"queue": "cv.other"} and clone.args == [2, 2, 7]
    assert add.s(2).clone(args=(1,)).args == [1, 2]
    assert add.si(2, 2).clone(args=(1,)).args == [2, 2]


CANVASES = {
    "task": lambda: add.s(2, 2).set(queue="cv.other", countdown=1),
    "immutable": lambda: add.si(2, 2),
    "chain": lambda: chain(add.s(2, 2), add.s(4), add.s(8)),
    "group": lambda: group(add.s(i, i) for i in range(3)),
    "chord": lambda: chord((add.s(i, i) for i in range(3)), xsum.s() | mul.s(2)),
    "nested": lambda: chain(add.s(1, 1), group(add.s(1), chain(add.s(2), mul.s(3))), xsum.s()),
}


@pytest.mark.parametrize("serializer", ["json", "pickle", "msgpack", "yaml"])
@pytest.mark.parametrize("kind", sorted(CANVASES))
def test_signature_survives_serialization(app, serializer, kind):
    original = CANVASES[kind]()
    content_type, data = dumps(original, serializer)
    rebuilt = maybe_signature(loads(data, content_type), app)
    assert rebuilt == original
    assert type(rebuilt) is type(original)
    if kind in ("chain", "group"):
        assert [type(t) for t in rebuilt.tasks] == [type(t) for t in original.tasks]
    if kind == "chord":
        assert type(rebuilt.body) is chain and len(rebuilt.header.tasks) == 3


def test_signature_delay_and_apply_async(worker):
    assert add.s(2, 2).delay().get(timeout=scaled(5)) == 4
    assert add.s("b").apply_async(("a",)).get(timeout=scaled(5)) == "ab"  # partial args first
    assert add.s("b").delay("a").get(timeout=scaled(5)) == "ab"
    assert add.si("x", "y").delay("ignored").get(timeout=scaled(5)) == "xy"
    assert (~add.s(3, 4)) == 7


def test_si_ignores_the_parent_result(worker):
    result = chain(add.s(2, 2), add.si(10, 10))()
    assert result.get(timeout=scaled(5)) == 20
    assert result.parent.get(timeout=scaled(5)) == 4


def test_set_queue_and_countdown_are_honoured(worker):
    assert cv_where.s().set(queue="cv.other").delay().get(timeout=scaled(5)) == "cv.other"
    assert cv_where.s().delay().get(timeout=scaled(5)) == "celery"

    sent = time.time()
    direct = cv_stamp.s().set(countdown=1).delay()
    delayed_chain = chain(cv_stamp.s(), cv_stamp.s()).apply_async(countdown=1)
    result = chain(cv_stamp.s(), cv_stamp.s().set(countdown=1))()
    second = result.get(timeout=scaled(5))
    first = result.parent.get(timeout=scaled(5))
    late = scaled(2.0)  # how much after its countdown a task may start here
    assert 1.0 <= second - first < 1.0 + late  # the countdown runs from when the link is sent
    assert 1.0 <= direct.get(timeout=scaled(5)) - sent < 1.0 + late
    # a chain's: its first task
    assert 1.0 <= delayed_chain.parent.get(timeout=scaled(5)) - sent < 1.0 + late
    assert delayed_chain.get(timeout=scaled(5)) >= delayed_chain.parent.get(timeout=scaled(5))


def test_options_on_a_canvas_reach_its_tasks(worker):
    """As in Celery: a group's options go to every member, a chain's to its first task, a
    chord's to its header and its body."""
    routed = group(cv_where.s(), cv_where.s()).apply_async(queue="cv.other")
    assert routed.get(timeout=scaled(5)) == ["cv.other", "cv.other"]
    assert group(cv_where.s(), cv_where.s()).set(queue="cv.other")().get(timeout=scaled(5)) == [
        "cv.other",
        "cv.other",
    ]
    routed_chain = chain(cv_where.s(), cv_where.s()).apply_async(queue="cv.other")
    assert (routed_chain.parent.get(timeout=scaled(5)), routed_chain.get(timeout=scaled(5))) == (
        "cv.other",
        "celery",
    )
    routed_chord = chord([cv_where.s(), cv_where.s()], cv_where.s()).apply_async(queue="cv.other")
    assert routed_chord.get(timeout=scaled(5)) == "cv.other"
    assert routed_chord.parent.get(timeout=scaled(5)) == ["cv.other", "cv.other"]
    inner = group(cv_where.s(), chain(cv_where.s(), cv_where.s()).set(queue="cv.other"))()
    assert inner.get(timeout=scaled(5)) == ["celery", "celery"]
    assert inner.results[1].parent.get(timeout=scaled(5)) == "cv.other"


def test_rebuilt_canvas_can_be_applied(worker, app):
    """A canvas that travelled as data (a message, a file) runs as the original does."""
    for serializer in ("json", "pickle", "msgpack"):
        content_type, data = dumps(chain(add.s(2, 2), add.s(4), add.s(8)), serializer)
        result = maybe_signature(loads(data, content_type), app)()
        assert result.get(timeout=scaled(5)) == 16
        assert result.parent.get(timeout=scaled(5)) == 8

        content_type, data = dumps(chord((add.s(i, i) for i in range(10)), xsum.s()), serializer)
        assert maybe_signature(loads(data, content_type), app)().get(timeout=scaled(5)) == 90


# -- 2. chain -------------------------------------------------------------------------------
@ALL
def test_chain_values_and_parents(worker):
    result = chain(add.s(2, 2), add.s(4), add.s(8))()
    assert result.get(timeout=scaled(5)) == 16
    assert result.parent.get(timeout=scaled(5)) == 8
    assert result.parent.parent.get(timeout=scaled(5)) == 4
    assert result.parent.parent.parent is None

    piped = add.s(2, 2) | add.s(4) | add.s(8)
    assert isinstance(piped, chain) and len(piped.tasks) == 3
    assert piped().get(timeout=scaled(5)) == 16

    nested = (add.s(4, 16) | mul.s(2) | (add.s(4) | mul.s(8)))()
    assert nested.get(timeout=scaled(5)) == 352
    values = []
    node = nested
    while node is not None:
        values.append(node.get(timeout=scaled(5)))
        node = node.parent
    assert values == [352, 44, 40, 20]

    retried = chain(add.s(1, 1), cv_retry_once.s(), add.s(1))()  # a link that retries once
    assert retried.get(timeout=scaled(5)) == 3
    assert journal("cv_retry") == ["0", "1"]


# -- 3. group -------------------------------------------------------------------------------
@ALL
def test_group_values_and_group_result(worker, app):
    result = group(add.s(i, i) for i in range(10))()
    assert isinstance(result, GroupResult)
    assert result.get(timeout=scaled(5)) == EVENS
    assert len(result) == 10
    assert result.ready() and result.successful() and not result.failed()
    assert result.completed_count() == 10
    assert [r.get(timeout=1) for r in result.results] == EVENS

    restored = GroupResult.restore(result.id, app=app)
    assert restored is not None
    assert [r.id for r in restored.results] == [r.id for r in result.results]
    assert restored.get(timeout=1) == EVENS
    assert restored.completed_count() == 10 and restored.ready()

    assert group(add.s(1), add.s(2)).delay(10).get(timeout=scaled(5)) == [11, 12]  # partial args
    assert ~group(add.s(1, 1), mul.s(3, 3)) == [2, 9]
    empty = group([])()
    assert (empty.get(timeout=1), len(empty), empty.ready()) == ([], 0, True)


def test_group_with_a_failure(worker):
    result = group(add.s(1, 1), fail.si("member broke"), add.s(2, 2))()
    values = result.get(timeout=scaled(5), propagate=False)
    assert values[0] == 2 and values[2] == 4
    assert isinstance(values[1], CustomError) and str(values[1]) == "member broke"
    assert result.ready() and result.failed() and not result.successful()
    assert result.completed_count() == 2
    with pytest.raises(CustomError, match="member broke"):
        result.get(timeout=scaled(5))


# -- 4. chord -------------------------------------------------------------------------------
@ALL
def test_chord_values(worker):
    result = chord((add.s(i, i) for i in range(10)), xsum.s())()
    assert result.get(timeout=scaled(5)) == 90
    assert result.parent.get(timeout=scaled(5)) == EVENS

    assert (group(add.s(i, i) for i in range(10)) | xsum.s())().get(timeout=scaled(5)) == 90
    assert chord(add.s(i, i) for i in range(10))(xsum.s()).get(timeout=scaled(5)) == 90


@ALL
def test_chord_with_an_empty_header_runs_the_body_with_nothing(worker):
    assert chord([], echo.s())().get(timeout=scaled(5)) == []
    assert chord([], xsum.s())().get(timeout=scaled(5)) == 0


@ALL
def test_chord_join_runs_once_when_a_member_retries(worker, drained):
    result = chord([cv_retry_once.s(5), add.s(1, 1), add.s(2, 2)], cv_body.s())()
    assert result.get(timeout=scaled(10)) == 11
    drained(worker)
    assert journal("cv_retry") == ["0", "1"]
    assert journal("cv_body") == ["body:11"]


@pytest.mark.backends("redis", "sqlite", "cluster")
def test_chord_join_runs_once_when_a_members_worker_is_killed(start_worker, drained):
    visibility = {"BEATQ_TEST_VISIBILITY": "1.5"}
    first = start_worker("-P", "solo", extra_env=visibility)
    result = chord([cv_slow.s(7, 1.0, "m0"), add.s(1, 1), add.s(2, 2)], cv_body.s())()
    wait_for(lambda: "m0:start" in journal("cv"), 10, "the slow member to start")
    os.kill(first.pid, signal.SIGKILL)
    first.wait(5)
    second = start_worker("-P", "threads", "-c", "4", extra_env=visibility)
    assert result.get(timeout=scaled(15)) == 13
    drained(second)
    assert journal("cv").count("m0:start") == 2  # acknowledged late: run again
    assert journal("cv_body") == ["body:13"]


# -- 5. map, starmap, chunks ----------------------------------------------------------------
def test_map_starmap_chunks(worker):
    assert ~xsum.map([range(10), range(100)]) == [45, 4950]
    assert ~add.starmap(zip(range(10), range(10))) == EVENS
    result = add.chunks(zip(range(100), range(100)), 10)().get(timeout=scaled(5))
    assert result == [[2 * i for i in range(start, start + 10)] for start in range(0, 100, 10)]


# -- 6. nesting -----------------------------------------------------------------------------
def test_chains_in_a_group(worker):
    result = group(chain(add.s(1, 1), mul.s(10)), add.s(2, 2) | mul.s(10))()
    assert result.get(timeout=scaled(5)) == [20, 40]


@ALL
def test_group_in_a_chain_is_a_chord(worker):
    result = chain(add.s(1, 1), group(add.s(1), mul.s(3)), xsum.s())()
    assert result.get(timeout=scaled(5)) == 9  # 2 -> [3, 6] -> 9
    assert result.parent.get(timeout=scaled(5)) == [3, 6]
    assert result.parent.parent.get(timeout=scaled(5)) == 2

    ending = chain(add.s(1, 1), group(add.s(1), mul.s(3)))()
    assert isinstance(ending, GroupResult)
    assert ending.get(timeout=scaled(5)) == [3, 6]


def test_chord_in_a_chain_continues_after_the_body(worker):
    first = chain(chord([add.s(i, i) for i in range(4)], xsum.s()), add.s(100))()
    assert first.get(timeout=scaled(5)) == 112  # 0+2+4+6 = 12, + 100
    middle = chain(add.s(1, 1), chord([add.s(1), add.s(2)], xsum.s()), mul.s(10))()
    assert middle.get(timeout=scaled(5)) == 70  # 2 -> [3, 4] -> 7 -> 70
    assert middle.parent.get(timeout=scaled(5)) == 7


def test_chain_as_a_chord_body_and_chains_in_its_header(worker):
    result = chord([add.s(i, i) for i in range(3)], xsum.s() | mul.s(10))()
    assert result.get(timeout=scaled(5)) == 60
    assert result.parent.get(timeout=scaled(5)) == 6

    headed = chord([add.s(1, 1) | mul.s(2), add.s(2, 2) | mul.s(2), add.s(3, 3)], xsum.s())()
    assert headed.get(timeout=scaled(5)) == 18  # 4 + 8 + 6
    assert (
        chord([group(add.s(1, 1), add.s(2, 2)), add.s(3, 3)], xsum.s())().get(timeout=scaled(5))
        == 12
    )
    in_header = chord([chord([add.s(1, 1), add.s(2, 2)], xsum.s()), add.s(3, 3)], xsum.s())()
    assert in_header.get(timeout=scaled(5)) == 12  # [2 + 4, 6]


# -- 7. failure -----------------------------------------------------------------------------
@ALL
def test_a_failing_link_stops_the_chain_and_its_errbacks_run_once(worker, drained):
    canvas = chain(add.s(1, 1), cv_note.s("before"), fail.si("link broke"), cv_note.s("after"))
    canvas.link_error(errback_old.s())
    canvas.link_error(errback_new.s())
    result = canvas()
    with pytest.raises(CustomError, match="link broke"):
        result.get(timeout=scaled(5))
    assert result.state == "FAILURE"
    assert isinstance(result.result, CustomError) and str(result.result) == "link broke"
    failed = result.parent
    assert failed.state == "FAILURE"
    assert failed.parent.get(timeout=1) == 2
    # sent as the failed task finishes, each acknowledged as it starts: waited for by
    # their effect (see drained), then counted once nothing more can run
    wait_for(lambda: len(journal("errback")) >= 2, 10, "both errbacks to run")
    drained(worker)
    assert journal("cv") == ["before"]  # the link after the failure never ran
    assert sorted(journal("errback")) == [
        f"new:{failed.id}:CustomError:link broke",
        f"old:{failed.id}",
    ]


def test_callbacks_given_to_a_canvas_land_on_the_right_tasks(worker, drained):
    """`link` gets the canvas's result; `link_error` runs once whichever task fails."""
    chain(add.s(1, 1), add.s(2)).apply_async(link=cv_seen.s("chain"))
    linked = chain(add.s(1, 1), add.s(3))
    linked.link(cv_seen.s("chain.link"))
    linked()
    chord([add.s(1, 1), add.s(2, 2)], xsum.s()).apply_async(link=cv_seen.s("chord"))
    stopped = chain(add.s(1, 1), fail.si("x"), add.s(1)).apply_async(link_error=errback_old.s())
    failed_chord = chord([fail.si("y"), add.s(1, 1)], xsum.s() | mul.s(2))
    failed_chord.link_error(errback_new.s())
    failed_chord = failed_chord()
    for result in (stopped, failed_chord):
        with pytest.raises((CustomError, ChordError)):
            result.get(timeout=scaled(5))
    # the links are sent as their canvases finish: awaited here, counted after the drain
    wait_for(lambda: len(journal("cv_seen")) >= 3, 10, "the three links to run")
    drained(worker)
    assert sorted(journal("cv_seen")) == ["chain.link:5", "chain:4", "chord:6"]
    errbacks = sorted(journal("errback"))
    assert len(errbacks) == 2
    assert errbacks[0].startswith(f"new:{failed_chord.parent.id}:ChordError:")
    assert errbacks[1] == f"old:{stopped.parent.id}"


@ALL
def test_a_failing_member_fails_the_chord_and_its_errback_runs_once(worker, drained):
    canvas = chord([add.s(1, 1), fail.si("member broke"), add.s(2, 2)], cv_body.s())
    canvas.link_error(errback_new.s())
    result = canvas()
    member = result.parent.results[1]
    # as in Celery: get() raises the member's own exception; the body's stored failure
    # (and what its errback gets) is a ChordError naming the member
    with pytest.raises(CustomError, match="member broke"):
        result.get(timeout=scaled(5))
    assert result.state == "FAILURE"
    stored = result.result
    assert isinstance(stored, ChordError)
    assert member.id in str(stored) and "member broke" in str(stored)
    drained(worker)
    assert journal("cv_body") == []
    assert journal("errback") == [f"new:{result.id}:ChordError:{stored}"]


def test_a_chord_whose_unlock_cannot_send_its_body_fails_it_at_once(app, worker, drained):
    """The unlock finds the chord's saved group gone (here: deleted while the header runs):
    the body fails with a ChordError saying why, its errback runs, and `get()` raises at
    once rather than wait out its timeout."""
    from beatq.result import group_key

    body = cv_body.s()
    body.link_error(errback_new.s())
    result = chord([cv_slow.s(1, 1.0, "held"), add.s(2, 2)], body)()
    wait_for(lambda: "held:start" in journal("cv"), 10, "the slow member to start")
    app.result_store.forget(group_key(result.parent.id))
    began = time.monotonic()
    with pytest.raises(ChordError, match="its body could not be sent") as raised:
        result.get(timeout=scaled(20))
    assert time.monotonic() - began < scaled(10)
    assert "saved group has expired" in str(raised.value)
    assert result.state == "FAILURE"
    drained(worker)
    assert journal("cv_body") == []
    assert journal("errback") == [f"new:{result.id}:ChordError:{result.result}"]


def test_a_chord_body_errback_old_style_runs_once(worker, drained):
    body = cv_body.s()
    body.link_error(errback_old.s())
    result = chord([fail.si("first"), add.s(2, 2), fail.si("second")], body)()
    with pytest.raises(CustomError, match="first"):  # the first failed member's, in order
        result.get(timeout=scaled(5))
    with pytest.raises(ChordError, match=f"{result.parent.results[0].id} raised CustomError"):
        result.get(timeout=scaled(5), follow_parents=False)
    drained(worker)
    assert journal("cv_body") == []
    assert journal("errback") == [f"old:{result.id}"]


@ALL
def test_a_failure_deep_in_a_chord_header_fails_the_chord(worker, drained):
    """What a chord waits for never runs (a chain stopped, an inner chord failed): the
    chord still completes, and fails, rather than wait for ever."""
    stopped = chord([add.s(1, 1) | fail.si("deep") | add.s(1), add.s(2, 2)], cv_body.s())()
    fanned = chord(
        [add.s(1, 1) | fail.si("fan") | group(add.s(1), add.s(2)), add.s(2, 2)], cv_body.s()
    )()
    inner = chord([chord([fail.si("inner"), add.s(1, 1)], xsum.s()), add.s(2, 2)], cv_body.s())()
    # get() raises what the failed member stored: a chain's own failure, or the inner
    # chord's ChordError (Celery's shapes)
    expected = (
        (stopped, CustomError, "deep"),
        (fanned, CustomError, "fan"),
        (inner, ChordError, "inner"),
    )
    for result, error, message in expected:
        with pytest.raises(error, match=message):
            result.get(timeout=scaled(5))
    drained(worker)
    assert journal("cv_body") == []


# -- 8. eager -------------------------------------------------------------------------------
def test_always_eager_computes_in_process(app):
    app.conf.task_always_eager = True
    try:
        assert chain(add.s(2, 2), add.s(4), add.s(8))().get() == 16
        assert (add.s(4, 16) | mul.s(2) | (add.s(4) | mul.s(8)))().get() == 352
        assert group(add.s(i, i) for i in range(10))().get() == EVENS
        assert chord((add.s(i, i) for i in range(10)), xsum.s())().get() == 90
        assert (group(add.s(i, i) for i in range(10)) | xsum.s())().get() == 90
        assert chain(add.s(1, 1), chord([add.s(1), add.s(2)], xsum.s()), mul.s(10))().get() == 70
        assert ~xsum.map([range(10), range(100)]) == [45, 4950]
        assert ~add.starmap(zip(range(10), range(10))) == EVENS
        assert len(add.chunks(zip(range(100), range(100)), 10)().get()) == 10
    finally:
        app.conf.task_always_eager = False
    assert stored_messages(app) == []  # nothing was sent


def test_a_signature_used_twice_gets_its_own_id_each_time(app, start_worker):
    """`chain(add.s(0, 1), *[add.s(1)] * n)` repeats one object; each link must run."""
    from beatq import chain
    from tests.proj.tasks import add

    start_worker("-P", "solo")
    assert chain(add.s(0, 1), *[add.s(1)] * 49)().get(timeout=scaled(20)) == 50
    sig = add.s(2, 3)
    first, second = sig.delay(), sig.delay()
    assert first.id != second.id
    assert (first.get(timeout=scaled(5)), second.get(timeout=scaled(5))) == (5, 5)
    assert "task_id" not in sig.options
