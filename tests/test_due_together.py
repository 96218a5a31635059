"""Tasks due together (a chunk sent with one eta) start without waiting on each other.

A prefork worker hands such a chunk to its children ahead of the eta, beyond its slots
(Pool.hand_ahead), and a child acknowledges those it will start within GROUP_HORIZON in
one round trip as the first of them starts (Executor._due_with); a task that runs long
is acknowledged on its own, so what waits behind it stays claimed, not acknowledged.
"""

from __future__ import annotations

import time

import pytest

from beatq.worker.delivery import Delivery
from beatq.worker.execute import GROUP_HORIZON, Executor
from tests.conftest import scaled, stored_messages, wait_for
from tests.proj import journal


def _acks(broker) -> list[list[str]]:
    """The ids each `finish` of `broker` acknowledges, one list a call that acknowledges."""
    acks: list[list[str]] = []
    real = broker.finish

    def finish(ack=(), *args, **kwargs):
        if ack:
            acks.append(sorted(c.id for c in ack))
        return real(ack, *args, **kwargs)

    broker.finish = finish
    return acks


def _run_in_order(executor: Executor, deliveries: list[Delivery]) -> None:
    """As a prefork child runs what it was handed: each with the next and the rest."""
    for i, delivery in enumerate(deliveries):
        rest = deliveries[i + 1 :]
        then = rest[0] if rest else None
        outcome = executor.execute(delivery, then, lambda rest=rest: rest)
        if then is not None and outcome.then_acked:
            then.acked = True


@pytest.mark.backends("redis", "sqlite", "memory")
def test_quick_tasks_due_together_are_acknowledged_in_one_round_trip(app) -> None:
    from tests.proj.tasks import quiet

    broker = app.broker
    executor = Executor(app, "test-host")
    quiet.delay(0)  # its run shows the executor the task is quick
    executor.execute(Delivery(broker.claim(["celery"], 1, 30).claims[0]))
    quiet.apply_many([(i,) for i in range(1, 6)], eta=time.time())
    quiet.apply_many([(i,) for i in range(6, 9)])  # sent with no eta: each on its own
    claims = broker.claim(["celery"], 8, 30).claims
    acks = _acks(broker)
    _run_in_order(executor, [Delivery(c) for c in claims])
    chunk, plain = claims[:5], claims[5:]
    assert acks == [sorted(c.id for c in chunk), *([c.id] for c in plain)]
    assert [int(x) for x in journal("quiet")] == list(range(9))
    assert not [m for m in stored_messages(app) if m.state == "claimed"]


@pytest.mark.backends("redis", "sqlite", "memory")
def test_a_task_seen_to_run_long_acknowledges_only_itself_as_it_starts(app) -> None:
    """Those behind a long task are not acknowledged at its start: a worker killed while
    it runs would lose them (they come back, claimed and not acknowledged)."""
    from tests.proj.tasks import dl_span

    broker = app.broker
    executor = Executor(app, "test-host")
    long = GROUP_HORIZON * 2
    dl_span.delay(long, "seen")
    executor.execute(Delivery(broker.claim(["celery"], 1, 30).claims[0]))
    dl_span.apply_many([(long, f"t{i}") for i in range(3)], eta=time.time())
    claims = broker.claim(["celery"], 3, 30).claims
    acks = _acks(broker)
    _run_in_order(executor, [Delivery(c) for c in claims])
    assert acks == [[c.id] for c in claims], "each on its own (the next by the finish before)"


@pytest.mark.backends("redis", "sqlite")
def test_a_chunk_sharing_one_eta_is_claimed_whole_ahead_beyond_the_prefetch(app, start_worker):
    """A prefork worker of 2 slots (prefetch multiplier 1) claims a chunk of 20 tasks sharing
    one eta ahead of it, all of it (its children hold them): none waits at the eta for a
    slot to free and a claim. Seen as the 20 claimed at once just before the eta; up to
    three tries, as a loaded host may claim some only after the first ones start."""
    from tests.proj.tasks import quiet

    start_worker("-P", "prefork", "-c", "2", "--prefetch-multiplier", "1")
    most = 0
    for attempt in range(3):
        eta = time.time() + scaled(1.0)
        quiet.apply_many([(attempt * 100 + i,) for i in range(20)], eta=eta)
        time.sleep(max(0.0, eta - 0.1 - time.time()))  # claimed AHEAD (20 ms) of the eta
        while time.time() < eta:
            most = max(most, sum(m.state == "claimed" for m in stored_messages(app)))
        wait_for(lambda n=attempt: len(journal("quiet")) == 20 * (n + 1), scaled(10), "to run")
        if most == 20:
            break
    assert most == 20, "claimed at once before the eta, at most"


def test_a_prefork_child_runs_the_task_it_started_behind_ones_not_yet_reported() -> None:
    """A child reports a chunk's outcomes a few at a time (prefork.REPORT_MAX): what the
    parent still holds as handed may begin with tasks that have finished. The running one
    (whose hard time limit the parent enforces) is the one the board says it started."""
    import multiprocessing

    from beatq.brokers import Claim
    from beatq.worker.prefork import DONE, STARTED, _Child, _Handed

    board = multiprocessing.get_context("fork").Array("d", [-1.0, 0.0, 0.0, 0.0, -1.0])
    child = _Child(None, None, board)
    child.handed.extend(
        _Handed(seq, Delivery(Claim(f"m{seq}", "celery", b""))) for seq in (1, 2, 3)
    )
    board[STARTED], board[DONE] = 2, 1
    running = child.running()
    assert running is not None and running.handed.seq == 2
    assert child.waiting() is child.handed[2]


def test_a_parked_claim_goes_to_the_first_idle_child_before_later_ones() -> None:
    """Children holding claims handed ahead park what is submitted meanwhile; the first
    child with nothing handed takes the claim parked first, not the one submitted then
    (handed past it, a parked claim waited seconds under a stream of ETA tasks)."""
    import multiprocessing
    import threading

    from beatq.brokers import Claim
    from beatq.worker.handoff import Handoff
    from beatq.worker.prefork import PreforkPool, _Child, _Handed

    class Pipe:
        def __init__(self) -> None:
            self.sent: list = []

        def send(self, item) -> None:
            self.sent.append(item)

    ctx = multiprocessing.get_context("fork")
    handoff = Handoff(6, set(), threading.Event(), low=1)
    pool = PreforkPool(None, 2, lambda d, o: None, handoff)  # type: ignore[arg-type]
    pool.children = [
        _Child(None, Pipe(), ctx.Array("d", [-1.0, 0.0, 0.0, 0.0, -1.0])) for _ in range(2)
    ]
    for child in pool.children:  # each holds more than QUEUED
        for seq in range(1, 5):
            child.handed.append(_Handed(seq, Delivery(Claim(f"held{seq}", "celery", b""))))
        child.seq = 4
    first, then = (Delivery(Claim(id_, "celery", b"x")) for id_ in ("first", "then"))
    pool.submit(first)
    assert list(pool.parked) == [first]
    idle = pool.children[1]
    idle.handed.clear()  # its tasks reported finished
    pool.submit(then)
    assert [item[1].id for item in idle.conn.sent] == ["first"]
    assert list(pool.parked) == [then]
