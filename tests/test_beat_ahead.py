"""The beat builds the next run's message while it waits for the run's instant.

In-process beat on a memory:// broker with a clock of the test's own: what is sent is what
the schedule says at the instant, built ahead or not.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from beatq import Beatq
from beatq.beat.beat import Beat
from beatq.messages import decode

SLOT = 1_800_000_000.0  # a whole second: where the 1-s entry falls due


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def start(args: list[int], **entry: object) -> tuple[Beatq, Beat, Clock]:
    app = Beatq("ahead", broker=f"memory://ahead-{uuid.uuid4().hex}")

    @app.task(name="ahead.echo")
    def echo(*values: int) -> tuple[int, ...]:
        return values

    app.conf.beat_schedule = {
        "tick": {"task": "ahead.echo", "schedule": 1.0, "args": args, **entry}
    }
    clock = Clock(SLOT - 0.5)
    beat = Beat(app, files=[], clock=clock, lease_ttl=60)  # no renewal due mid-test
    beat._sleep = lambda seconds, precise: None  # one tick at a time, by hand
    beat.entries = beat.load()
    assert beat.lease.acquire()
    beat._lead()
    return app, beat, clock


def build_ahead(beat: Beat, clock: Clock, slot: float):
    """Let the beat build ahead as it would just before `slot`; what it built."""
    clock.now = slot - 0.0004
    beat._build_ahead()
    assert beat.ahead is not None
    return beat.ahead


def sent(app: Beatq) -> list[tuple[float, list[int], str]]:
    claims = app.broker.claim(["celery"], 100, 30).claims
    messages = [decode(c.body, None) for c in claims]
    return [(m.options["beat"]["slot"], m.args, m.id) for m in messages]


@pytest.mark.parametrize("ahead", [True, False], ids=["built-ahead", "built-at-the-instant"])
def test_each_slot_is_sent_once_with_the_schedule_args(ahead: bool) -> None:
    app, beat, clock = start([1, 2])
    for slot in (SLOT, SLOT + 1, SLOT + 2):
        if ahead:
            assert build_ahead(beat, clock, slot).slot == slot
        clock.now = slot + 0.0001
        beat._tick()
        assert beat.ahead is None, "a message built ahead is used once"
    got = sent(app)
    assert [(slot, args) for slot, args, _ in got] == [
        (SLOT, [1, 2]),
        (SLOT + 1, [1, 2]),
        (SLOT + 2, [1, 2]),
    ]
    assert len({task_id for *_, task_id in got}) == 3
    assert beat.records["tick"].runs == 3 and beat.records["tick"].missed == 0


def test_a_schedule_change_after_the_build_is_what_gets_sent() -> None:
    app, beat, clock = start([1, 2])
    built = build_ahead(beat, clock, SLOT)
    app.conf.beat_schedule = {"tick": {"task": "ahead.echo", "schedule": 1.0, "args": [7]}}
    beat.entries = beat.load()  # as a reload between the build and the instant would
    clock.now = SLOT + 0.0001
    beat._tick()
    [(slot, args, task_id)] = sent(app)
    assert (slot, args) == (SLOT, [7])
    assert task_id != built.message.id, "the message built for the old entry is not sent"


def test_a_message_built_for_a_slot_that_is_not_run_is_not_sent() -> None:
    app, beat, clock = start([1, 2])
    built = build_ahead(beat, clock, SLOT)
    # the beat stalls past the next slot: catchup "latest" sends the later slot only
    clock.now = SLOT + 1.2
    beat._tick()
    [(slot, args, task_id)] = sent(app)
    assert slot == SLOT + 1 and args == [1, 2]
    assert task_id != built.message.id
    assert beat.records["tick"].missed == 1


@pytest.mark.parametrize("ahead", [True, False], ids=["built-ahead", "built-at-the-instant"])
def test_the_stored_record_is_stamped_when_the_run_is_sent(ahead: bool) -> None:
    """A run made ready ahead still records the instant it went out, not when it was built;
    stamps of the run before it are replaced, and the record stays one JSON object."""
    app, beat, clock = start([1, 2])
    for n, slot in enumerate((SLOT, SLOT + 1), start=1):
        if ahead:
            build_ahead(beat, clock, slot)
        clock.now = slot + 0.0007 * n
        beat._tick()
        info = app.broker.beat_entries()["tick"].info
        assert info.count(b'"last_sent"') == info.count(b'"lateness"') == 1
        stored = json.loads(info)
        assert stored["last_sent"] == slot + 0.0007 * n
        assert stored["lateness"] == pytest.approx(0.0007 * n, abs=1e-6)
        assert (stored["runs"], stored["last_slot"], stored["settled"]) == (n, slot, slot)
        assert stored == {**beat.records["tick"].to_dict(), "settled": slot}


@pytest.mark.parametrize("overlap", ["allow", "skip"])
def test_a_run_goes_out_early_with_its_instant_as_eta_unless_overlap_is_checked(
    overlap: str,
) -> None:
    """A run is sent `Beat.early` before its instant, with the instant as its eta (the
    worker starts it then); one whose entry skips overlapping runs is sent at the instant,
    when whether the previous run is unfinished can be known."""
    app, beat, clock = start([1, 2], overlap=overlap)
    early = beat.early if overlap == "allow" else 0.0
    assert beat.early > 0
    clock.now = SLOT - early - 0.001
    beat._tick()
    assert app.broker.scheduled() == [] and app.broker.queue_length("celery") == 0
    clock.now = SLOT - early
    beat._tick()
    # in its queue at once, as any run (its backlog shows there): the eta holds it in the
    # worker that claims it
    assert app.broker.scheduled() == [] and app.broker.queue_length("celery") == 1
    [message] = [decode(c.body, None) for c in app.broker.claim(["celery"], 10, 30).claims]
    assert message.options["beat"]["slot"] == SLOT
    assert message.eta == (SLOT if overlap == "allow" else None)
    stored = json.loads(app.broker.beat_entries()["tick"].info)
    # sent ahead is not late: the record says when it went out, and 0 lateness
    assert (stored["last_sent"], stored["lateness"], stored["runs"]) == (SLOT - early, 0, 1)
    clock.now = SLOT + 0.5  # nothing more until the next run's own send time
    beat._tick()
    assert app.broker.claim(["celery"], 10, 30).claims == []


def test_an_entry_whose_options_delay_its_runs_is_sent_at_the_instant() -> None:
    """A countdown in an entry's options counts from the send, as before: no early send."""
    app, beat, clock = start([1], options={"countdown": 5})
    clock.now = SLOT - beat.early
    beat._tick()
    assert app.broker.scheduled() == [] and app.broker.queue_length("celery") == 0
    clock.now = SLOT
    before = time.time()
    beat._tick()
    [(eta, claim)] = app.broker.scheduled()
    assert decode(claim.body, None).options["beat"]["slot"] == SLOT
    assert before + 5 <= eta <= time.time() + 5
