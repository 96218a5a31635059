"""Celery's canvas guide (userguide/canvas), its examples run against real workers on
Redis and SQLite: signatures, partials, immutability, callbacks, the primitives and their
results' shapes, chord errors, replace, and the lineage of what a workflow sends.

Written from the behaviour the guide (and Celery's own integration suite) documents:
where the guide's example prints a value, the test asserts that value."""

from __future__ import annotations

import json
import signal

import pytest

from beatq import GroupResult, Signature, chain, chord, chunks, group, signature
from beatq.exceptions import ChordError
from beatq.exceptions import TimeoutError as BeatqTimeout
from beatq.result import EagerResult
from tests.conftest import scaled, stored_messages, wait_for
from tests.proj import journal, record
from tests.proj.canvas_guide import (
    gc_add_debug,
    gc_collect_ids,
    gc_hello,
    gc_ids,
    gc_log_error,
    gc_note,
    gc_replace_add,
    gc_replace_after,
    gc_replace_chain,
    gc_replace_chord,
    gc_replace_failing,
    gc_replace_group,
    gc_spawn,
    gc_spawn_group,
    gc_spawn_many,
    gc_tsum,
)
from tests.proj.tasks import CustomError, add, echo, fail, mul, quiet, res_tracked

BOTH = pytest.mark.backends("redis", "sqlite")
T = scaled(10)


@pytest.fixture
def worker(start_worker):
    return start_worker("-P", "threads", "-c", "4")


@pytest.fixture
def drained(app):
    """Wait until the broker holds no message, then stop the workers (counts are final)."""

    def wait(*workers) -> None:
        wait_for(lambda: not stored_messages(app), 10, "the broker to hold no messages")
        for w in workers:
            w.signal(signal.SIGTERM)
            assert w.wait(10) == 0, w.log()

    return wait


# -- signatures ------------------------------------------------------------------------------
def test_signature_fields_as_the_guide_shows_them(app):
    s = add.signature((2, 2), countdown=10)
    assert (s.args, s.kwargs, s.options) == ([2, 2], {}, {"countdown": 10})
    assert (s.name, s.task, s.type, s.id) == ("tests.proj.tasks.add", add.name, add, None)
    by_name = app.signature("tests.proj.tasks.add", args=(2, 2), countdown=10)
    assert by_name == s and isinstance(by_name, Signature)

    s.args, s.kwargs, s.options = (3, 4), {"y": 1}, {"queue": "q"}  # settable, as Celery's
    assert (s.args, s.kwargs, s.options) == ([3, 4], {"y": 1}, {"queue": "q"})

    partial = add.s(2)
    assert partial.clone(args=(4,), kwargs={"debug": True}) == add.s(4, 2, debug=True)
    assert add.si(2, 2).clone(args=(4,)).args == [2, 2]  # immutable: partial args dropped
    assert s.set(countdown=1) is s and s.options["countdown"] == 1
    errback = gc_log_error.s()
    assert s.on_error(errback) is s and s.options["link_error"] == [errback]
    callback = add.s(8)
    assert s.link(callback) is callback and s.options["link"] == [callback]


CANVASES = {
    "task": lambda: add.s(2, 2).set(countdown=0.01).on_error(gc_log_error.s()),
    "chain": lambda: add.s(2, 2) | add.s(4) | mul.s(2),
    "group": lambda: group(add.s(i, i) for i in range(3)),
    "chord": lambda: chord([add.s(1, 1), add.s(2, 2)], gc_tsum.s() | mul.s(10)),
    "nested": lambda: chain(
        add.s(1, 1), group(add.s(1), chain(add.s(2), mul.s(3))), gc_tsum.s()
    ).on_error(gc_log_error.s()),
}
VALUES = {"task": 4, "chain": 16, "group": [0, 2, 4], "chord": 60, "nested": 15}


@BOTH
def test_a_canvas_round_trips_through_json_and_runs(app, worker):
    """`dict(sig)` is JSON; `Signature.from_dict`, `signature(d)` and `app.signature(d)`
    rebuild the same canvas, of the same type, which runs to the same value."""
    for kind, make in CANVASES.items():
        original = make()
        data = json.loads(json.dumps(dict(original)))
        for rebuilt in (
            Signature.from_dict(data, app=app),
            signature(data, app=app),
            app.signature(data),
        ):
            assert rebuilt == original and type(rebuilt) is type(original), kind
        assert Signature.from_dict(data, app=app).delay().get(timeout=T) == VALUES[kind], kind


@BOTH
def test_partials_and_options_given_at_call(worker):
    partial = add.s(2)
    assert partial.delay(4).get(timeout=T) == 6  # the call's args come first
    assert partial.apply_async((4,)).get(timeout=T) == 6
    s = gc_add_debug.s(2, 2)
    assert s.delay(debug=True).get(timeout=T) == {"sum": 4, "debug": True}
    # the call's options win over the signature's: not 10 s away but 0.1 s
    s = add.signature((2, 2), countdown=10)
    assert s.apply_async(countdown=0.1).get(timeout=T) == 4
    assert add.si(2, 2).delay(99).get(timeout=T) == 4  # immutable


@BOTH
def test_freeze_gives_the_id_the_result_will_have(worker):
    s = add.s(2, 2)
    frozen = s.freeze("gc-fixed-id")  # positional, as Celery's freeze(_id)
    assert frozen.id == s.id == "gc-fixed-id"
    assert s.delay().get(timeout=T) == 4 and frozen.get(timeout=T) == 4

    c = chain(add.s(1, 1), add.s(1))
    last = c.freeze(_id="gc-chain-last")  # a chain's id is its last task's
    assert last.id == "gc-chain-last" and last.parent is not None
    result = c()
    assert result.id == "gc-chain-last" and result.get(timeout=T) == 3
    assert result.parent.id == last.parent.id

    g = group(add.s(1, 1), add.s(2, 2))
    assert g.freeze().id == g.id and g().get(timeout=T) == [2, 4]

    ch = chord([add.s(1, 1), add.s(2, 2)], gc_tsum.s())
    assert ch.freeze("gc-chord-body").id == "gc-chord-body"  # a chord's is its body's
    assert ch().get(timeout=T) == 6


def test_apply_runs_here_and_sends_nothing(app):
    result = add.s(2, 2).apply()
    assert isinstance(result, EagerResult) and result.get() == 4
    assert add.s(2).apply((4,)).get() == 6
    assert (add.s(2, 2) | add.s(4) | mul.s(2)).apply().get() == 16
    assert group(add.s(1, 1), mul.s(3, 3)).apply().get() == [2, 9]
    assert chord([add.s(1, 1), add.s(2, 2)], gc_tsum.s()).apply().get() == 6
    failed = fail.si("here").apply()
    assert failed.failed() and isinstance(failed.result, CustomError)
    assert stored_messages(app) == []


# -- callbacks and immutability ----------------------------------------------------------------
@BOTH
def test_link_and_link_error(worker, drained):
    callback = add.s(8)
    callback_result = callback.freeze()
    add.apply_async((2, 2), link=callback)
    assert callback_result.get(timeout=T) == 12  # 2 + 2, then 4 + 8

    immutable = gc_note.si("done", tag="imm")
    add.apply_async((2, 2), link=immutable)  # the parent's result is not passed
    failing = fail.si("broken").on_error(gc_log_error.s()).delay()
    with pytest.raises(CustomError):
        failing.get(timeout=T)
    wait_for(lambda: journal("gc") and journal("gc_errors"), 10, "the callbacks to run")
    drained(worker)
    assert journal("gc") == ["imm:done"]
    assert journal("gc_errors") == [f"{failing.id}:CustomError:broken"]


# -- the primitives ----------------------------------------------------------------------------
@BOTH
def test_pipes_on_every_kind(worker):
    assert isinstance(add.s(2, 2) | add.s(4), chain)
    assert (add.s(2, 2) | add.s(4) | add.s(8))().get(timeout=T) == 16
    assert chain(add.s(4, 4), mul.s(8), mul.s(10))().get(timeout=T) == 640

    grouped = group(add.s(i, i) for i in range(10)) | gc_tsum.s()
    assert isinstance(grouped, chord)  # group | task is a chord
    assert grouped().get(timeout=T) == 90
    extended = chord([add.s(1, 1), add.s(2, 2)], gc_tsum.s()) | add.s(100)
    assert isinstance(extended, chord)  # chord | task: after the body
    assert extended().get(timeout=T) == 106
    assert (add.s(2, 2) | group(add.s(1), add.s(2)))().get(timeout=T) == [5, 6]
    assert (chain(add.s(1, 1), add.s(1)) | mul.s(10))().get(timeout=T) == 30
    two = group(add.s(1, 1), add.s(2, 2)) | group(gc_tsum.s(), gc_tsum.s())
    assert two().get(timeout=T) == [6, 6]


@BOTH
def test_chain_results_and_parents(worker):
    result = chain(add.s(4, 4), mul.s(8), mul.s(10))()
    assert result.get(timeout=T) == 640
    assert result.parent.get(timeout=T) == 64
    assert result.parent.parent.get(timeout=T) == 8
    independent = (add.si(2, 2) | add.si(4, 4))()
    assert (independent.get(timeout=T), independent.parent.get(timeout=T)) == (8, 4)

    broken = chain(add.s(1, 2), fail.si("in the middle"), add.s(3))()
    with pytest.raises(CustomError, match="in the middle"):
        broken.get(timeout=T)
    with pytest.raises(CustomError):
        broken.parent.get(timeout=T)


@BOTH
def test_group_results_have_celerys_shapes(worker):
    assert group(add.s(2, 2), add.s(4, 4))().get(timeout=T) == [4, 8]
    assert group(add.s(i) for i in range(10))(10).get(timeout=T) == list(range(10, 20))
    nested = group(add.si(1, 10), group(add.si(1, 100), group(add.si(1, 1000), add.si(1, 2000))))
    assert nested().get(timeout=T) == [11, 101, 1001, 2001]  # nested groups are unrolled
    lone = group(add.s(1, 2) | group(add.s(1), add.s(2)))()
    assert isinstance(lone, GroupResult) and lone.get(timeout=T) == [4, 5]
    kept = group(add.si(1, 0), add.si(2, 0), chain(add.si(5, 0), group(add.si(3, 0), add.si(4, 0))))
    assert kept().get(timeout=T) == [1, 2, [3, 4]]  # a chain ending in a group keeps its list
    assert chain(add.s(2, 2), group(add.s(1), add.s(2)))().get(timeout=T) == [5, 6]
    assert chain(group(add.s(1, 1), add.s(2, 2)), gc_tsum.s())().get(timeout=T) == 6
    mid = chain(add.s(42, 0), group(echo.s(), echo.s()), echo.s())
    assert mid().get(timeout=T) == [42, 42]
    result = group(add.s(1, 1), add.s(2, 2))()
    result.join(timeout=T)
    assert result.ready() and result.successful() and not result.failed()
    assert result.completed_count() == 2 and not result.waiting()


@BOTH
def test_chords(worker):
    assert chord(add.s(i, i) for i in range(100))(gc_tsum.s()).get(timeout=T) == 9900
    c = chord([add.s(1, 1), add.s(2, 2)], gc_tsum.s())
    assert [t.args for t in c.tasks] == [[1, 1], [2, 2]] and c.body == gc_tsum.s()
    assert chord([gc_hello, gc_hello], echo.s())().get(timeout=T) == ["hello", "hello"]
    assert chord([add.s(2, 5)], echo.s())().get(timeout=T) == [7]
    assert chord([], echo.s())().get(timeout=T) == []
    tail = chord(group(chain(add.s(42, 0), group(echo.s(), echo.s()))), echo.s())
    assert tail().get(timeout=T) == [[42, 42]]  # the chain keeps the group's list whole
    unrolled = chord((group(add.s(42, 0), add.s(42, 0)),), echo.s())
    assert unrolled().get(timeout=T) == [42, 42]
    # the guide's warning: a member that ignores its result leaves the body nothing to
    # read; beatq fails the chord, naming it, rather than wait for ever
    ignoring = chord([quiet.s(1), add.s(1, 1)], echo.s())()
    with pytest.raises(ChordError, match="has no result"):
        ignoring.get(timeout=T)


@BOTH
def test_a_chord_with_a_failing_member(worker, drained):
    """`get()` raises the member's own exception (Celery follows the body's parents);
    the body is stored as failed with a ChordError naming the member, which is what the
    body's errback gets."""
    body = gc_tsum.s().on_error(gc_log_error.s())
    result = chord([add.s(1, 2), fail.si("member broke"), add.s(3, 4)], body)()
    with pytest.raises(CustomError, match="member broke") as info:
        result.get(timeout=T)
    member = result.parent.results[1]
    assert any(member.id in note for note in info.value.__notes__)
    assert result.state == "FAILURE"
    assert isinstance(result.result, ChordError) and member.id in str(result.result)
    with pytest.raises(ChordError, match=f"Dependency {member.id} raised CustomError"):
        result.get(timeout=T, follow_parents=False)
    wait_for(lambda: journal("gc_errors"), 10, "the body's errback")
    drained(worker)
    assert journal("gc_errors") == [f"{result.id}:ChordError:{result.result}"]


# -- replace -----------------------------------------------------------------------------------
@BOTH
def test_replace_takes_the_tasks_place(start_worker, drained):
    """`return self.replace(sig)`: sig's result is stored under the replaced task's id;
    nothing after the call runs; links and errbacks move to the replacement."""
    worker = start_worker("-P", "prefork", "-c", "2")
    assert gc_replace_add.delay(2, 3).get(timeout=T) == 5
    assert gc_replace_chain.delay(1).get(timeout=T) == 12  # 1 + 1 + 10
    assert gc_replace_group.delay(3).get(timeout=T) == [4, 6]  # a group: its list
    assert gc_replace_chord.delay(3).get(timeout=T) == 9  # a chord: its body's
    assert gc_replace_after.delay(1).get(timeout=T) == 101

    linked = gc_replace_add.apply_async((2, 3), link=gc_note.s(tag="linked"))
    failing = gc_replace_failing.apply_async(("gone",), link_error=gc_log_error.s())
    assert linked.get(timeout=T) == 5
    with pytest.raises(CustomError, match="gone"):
        failing.get(timeout=T)
    wait_for(lambda: journal("gc_errors") and "linked:5" in journal("gc"), 10, "the callbacks")
    drained(worker)
    assert "after-replace" not in journal("gc")
    assert [n for n in journal("gc") if n.startswith("linked")] == ["linked:5"]
    assert journal("gc_errors") == [f"{failing.id}:CustomError:gone"]


@BOTH
def test_replace_in_chains_and_chords(worker):
    """What followed the replaced task follows its replacement: the rest of its chain,
    and its place in a chord's header."""
    result = chain(add.s(1, 1), gc_replace_chain.s(), add.s(100))()
    assert result.get(timeout=T) == 113  # 2 -> (2 + 1 + 10) -> + 100
    assert result.parent.get(timeout=T) == 13  # the replaced task's id holds the chain's
    assert chain(gc_replace_group.s(3), gc_tsum.s())().get(timeout=T) == 10
    assert chain(gc_replace_chord.s(3), add.s(1))().get(timeout=T) == 10
    assert (add.s(1, 1) | gc_replace_add.s(5) | mul.s(2))().get(timeout=T) == 14
    header = [gc_replace_add.s(1, 2), gc_replace_group.s(3), gc_replace_chain.s(0), add.s(1, 1)]
    assert chord(header, echo.s())().get(timeout=T) == [3, [4, 6], 11, 2]
    failed = chord([gc_replace_failing.s("in a header"), add.s(1, 1)], echo.s())()
    with pytest.raises(CustomError, match="in a header"):
        failed.get(timeout=T)


def test_replace_run_eagerly_returns_the_value(app):
    assert gc_replace_add.apply((2, 3)).get() == 5
    assert gc_replace_group.apply((3,)).get() == [4, 6]
    assert stored_messages(app) == []


# -- lineage: root_id and parent_id through a workflow (Celery's integration checks) ---------
def _ids(result):
    root_id, parent_id, value = result.get(timeout=T)
    return root_id, parent_id, value


@BOTH
def test_a_chain_gives_each_task_its_parent_and_root(worker):
    result = chain(gc_ids.si(i) for i in range(5))()
    root = result
    while root.parent is not None:
        root = root.parent
    node, i = result, 4
    while node is not None:
        root_id, parent_id, value = _ids(node)
        assert value == i and root_id == root.id
        assert parent_id == (node.parent.id if node.parent is not None else None)
        node, i = node.parent, i - 1
    assert i == -1


@BOTH
def test_a_group_after_a_chain_and_a_chord_body(worker):
    result = (gc_ids.si(1) | gc_ids.si(2) | group(gc_ids.si(i) for i in range(3, 7)))()
    first, second = result.parent.parent, result.parent
    assert [value[2] for value in result.get(timeout=T)] == [3, 4, 5, 6]
    for root_id, parent_id, _ in result.get(timeout=T):
        assert (root_id, parent_id) == (first.id, second.id)

    root = gc_ids.si(1)
    expected_root = root.freeze().id
    body = chain(gc_collect_ids.s(i=50), gc_ids.si(51))
    res = chain(root, gc_ids.si(2), chord(group(gc_ids.si(i) for i in range(3, 8)), body))()
    assert isinstance(res.parent.parent, GroupResult)
    assert _ids(res) == (expected_root, res.parent.id, 51)
    header_values, (root_id, parent_id, value) = res.parent.get(timeout=T)
    assert (root_id, value) == (expected_root, 50)
    assert parent_id in [r.id for r in res.parent.parent.results]  # a header member
    two = res.parent.parent.parent
    for member_root, member_parent, _ in header_values:
        assert (member_root, member_parent) == (expected_root, two.id)
    assert _ids(two) == (expected_root, two.parent.id, 2)
    assert _ids(two.parent) == (expected_root, None, 1)


# -- map, starmap, chunks; group links ---------------------------------------------------------
@BOTH
def test_map_starmap_and_chunks(worker):
    assert ~gc_tsum.map([range(10), range(100)]) == [45, 4950]
    assert ~add.starmap(zip(range(10), range(10))) == [2 * i for i in range(10)]
    result = add.chunks(zip(range(100), range(100)), 10)()
    assert result.get(timeout=T) == [[2 * i for i in range(s, s + 10)] for s in range(0, 100, 10)]
    assert chunks(add.s(), zip(range(4), range(4)), 2)().get(timeout=T) == [[0, 2], [4, 6]]
    skewed = add.chunks(zip(range(10), range(10)), 2).group().skew(start=0, step=0.1, stop=0.2)
    assert [t.options["countdown"] for t in skewed.tasks] == pytest.approx([0, 0.1, 0.2, 0.2, 0.2])
    assert skewed().get(timeout=T) == [[0, 2], [4, 6], [8, 10], [12, 14], [16, 18]]


@BOTH
def test_a_group_link_runs_with_its_first_task(worker, drained):
    """Celery's group.link: the callback, made immutable, is linked to the first task;
    apply_async(link=...) on a group is refused, naming the fix (a chord)."""
    linked = group(add.s(1, 1), add.s(2, 2))
    linked.link(gc_note.s("once", tag="glink"))
    assert linked().get(timeout=T) == [2, 4]
    with pytest.raises(TypeError, match="use a chord"):
        group(add.s(1, 1)).apply_async(link=gc_note.s(tag="never"))
    wait_for(lambda: journal("gc"), 10, "the group's link")
    drained(worker)
    assert journal("gc") == ["glink:once"]


# -- children --------------------------------------------------------------------------------
@BOTH
def test_children_are_what_a_task_sent(worker):
    """`AsyncResult.children`: the tasks (and canvases) sent from inside the task, then its
    links and its chain's next step, as Celery stores them."""
    spawned = gc_spawn.delay(3)
    assert spawned.get(timeout=T) == 3
    children = spawned.children
    assert [c.get(timeout=T) for c in children] == [0, 2, 4]
    many = gc_spawn_many.delay(3)
    assert many.get(timeout=T) == 3
    assert [c.get(timeout=T) for c in many.children] == [0, 2, 4], "apply_many's too"
    grouped = gc_spawn_group.delay(3)
    assert grouped.get(timeout=T) == 3
    (inner,) = grouped.children
    assert isinstance(inner, GroupResult) and inner.get(timeout=T) == [0, 2, 4]

    result = chain(add.s(1, 1), add.s(10), group(add.s(1), add.s(2)))()
    assert result.get(timeout=T) == [13, 14]
    first, second = result.parent.parent, result.parent
    assert [c.id for c in first.children] == [second.id]  # the chain's next step
    (fanned,) = second.children
    assert isinstance(fanned, GroupResult) and fanned.get(timeout=T) == [13, 14]

    callback = add.s(8)
    callback_result = callback.freeze()
    linked = add.apply_async((2, 2), link=callback)
    assert callback_result.get(timeout=T) == 12
    assert [c.id for c in linked.children] == [callback_result.id]
    plain = add.delay(1, 1)
    assert plain.get(timeout=T) == 2 and plain.children == []


@BOTH
def test_a_group_waits_for_a_member_that_is_started(worker):
    """A member in a state that is not final (STARTED with track_started, PROGRESS) is
    waited for, not taken for its outcome."""
    result = group(res_tracked.s("held"), add.s(1, 1))()
    wait_for(lambda: result.results[0].state == "STARTED", 10, "the member to start")
    with pytest.raises(BeatqTimeout):
        result.get(timeout=0.3)
    record("release", "held")
    assert result.get(timeout=T) == ["held", 2]
