"""`async def` tasks run natively in every pool, and the asyncio pool (issue 25, SPEC §13).

Real workers through the CLI on Redis and SQLite: the coroutine runs on an event loop kept
per thread (solo, threads, prefork) or on the asyncio pool's one loop; `self.request`,
self.retry, autoretry_for, the soft limit raised inside the coroutine, the hard limit and
revoke with terminate cancelling it, warm and cold stops with coroutines in flight.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import time

import pytest

from beatq import Beatq, Task
from beatq.exceptions import (
    AsyncTaskNotSupported,
    SoftTimeLimitExceeded,
    TaskRevokedError,
    TimeLimitExceeded,
)
from tests.conftest import scaled, wait_for
from tests.proj import journal
from tests.test_otel import Span, child_of, one
from tests.test_otel import traced as traced_fixture

POOLS = {
    "solo": ["-P", "solo"],
    "threads": ["-P", "threads", "-c", "2"],
    "prefork": ["-P", "prefork", "-c", "2"],
    "asyncio": ["-P", "asyncio", "-c", "50"],
}


def at_runs() -> list[tuple[str, int, int, float, float]]:
    """The journal of at_sleep: (tag, pid, loop id, start, end) per run."""
    rows = [line.split() for line in journal("at_runs")]
    return [(t, int(p), int(loop), float(s), float(e)) for t, p, loop, s, e in rows]


# -- declaring ---------------------------------------------------------------------------
@pytest.fixture
def local_app():
    app = Beatq("async-local", broker="memory://")
    yield app
    app.close()


async def fetch(url):
    await asyncio.sleep(0)
    return url


def test_every_way_of_declaring_an_async_task_registers_it(local_app):
    class AsyncCallable:
        async def __call__(self, url):
            return url

    class Fetch(Task):
        name = "proj.Fetch"

        async def run(self, url):
            return url

    declared = [
        local_app.task(fetch),
        local_app.task(bind=True, name="proj.bound")(fetch),
        local_app.task(base=type("Custom", (Task,), {}), name="proj.custom")(fetch),
        local_app.task(name="proj.obj")(AsyncCallable()),
        local_app.register_task(Fetch()),
    ]
    assert all(task.is_async for task in declared)
    assert not local_app.task(name="proj.plain")(lambda: 1).is_async
    assert {t.name for t in declared} <= set(local_app.tasks)


def test_an_async_generator_is_refused_by_name_where_declared(local_app):
    async def stream(url):
        yield url

    with pytest.raises(AsyncTaskNotSupported) as caught:
        local_app.task(stream)
    assert "'test_async_tasks.stream'" in str(caught.value) or "stream" in str(caught.value)
    assert "async generator" in str(caught.value)
    assert "return them" in str(caught.value)
    with pytest.raises(TypeError, match="async generator"):

        class Streamer(Task):
            async def run(self, url):
                yield url


def test_apply_runs_an_async_task_here_and_refuses_inside_a_running_loop(local_app):
    @local_app.task(bind=True, soft_time_limit=5)
    async def double(self, x):
        await asyncio.sleep(0.01)
        return [self.request.id, x * 2]

    eager = double.apply((21,), task_id="here")
    assert eager.get() == ["here", 42]
    assert double.apply((1,)).get()[1] == 2, "the thread's loop is reused"

    async def inside_a_loop():
        assert await double(4) == ["", 8], "a plain call is the coroutine to await"
        return double.apply((2,))

    refused = asyncio.run(inside_a_loop())
    assert refused.state == "FAILURE"
    with pytest.raises(RuntimeError, match="inside an event loop.*await task.aapply_async"):
        refused.get()


@pytest.mark.backends("redis", "sqlite")
def test_a_coroutine_behind_a_sync_decorator_fails_naming_the_fix(app, start_worker):
    from tests.proj.tasks import add, at_behind_sync

    start_worker("-P", "prefork", "-c", "1")
    res = at_behind_sync.delay("t1")
    with pytest.raises(TypeError, match="returned a coroutine that nothing awaited.*async def"):
        res.get(timeout=scaled(10))
    assert journal("at_hidden") == []
    assert add.delay(2, 3).get(timeout=scaled(10)) == 5, "the worker carries on"


# -- running in every pool ---------------------------------------------------------------
@pytest.mark.parametrize("pool", list(POOLS))
def test_async_tasks_run_in_every_pool_on_a_loop_kept_per_thread(app, start_worker, pool):
    from tests.proj.tasks import at_sleep

    worker = start_worker(*POOLS[pool])
    sent = [at_sleep.delay(0.05, f"t{i}") for i in range(8)]
    assert [r.get(timeout=scaled(10)) for r in sent] == [
        [f"t{i}", r.id] for i, r in enumerate(sent)
    ]
    runs = at_runs()
    assert sorted(tag for tag, *_ in runs) == sorted(f"t{i}" for i in range(8))
    pids = {pid for _, pid, *_ in runs}
    loops = {(pid, loop) for _, pid, loop, *_ in runs}
    if pool == "prefork":
        assert worker.pid not in pids and len(pids) <= 2
    else:
        assert pids == {worker.pid}
    # one loop per thread (or child), reused: never a loop per task
    assert len(loops) <= {"solo": 1, "threads": 2, "prefork": 2, "asyncio": 1}[pool], loops


@pytest.mark.backends("redis", "sqlite")
def test_a_thousand_sleepers_finish_together_on_the_asyncio_pool(app, start_worker):
    """1,000 tasks that each await 0.1 s finish in under 2 s on -P asyncio -c 1000."""
    from tests.proj.tasks import at_sleep

    start_worker("-P", "asyncio", "-c", "1000")
    began = time.monotonic()
    sent = at_sleep.apply_many([(0.1, f"s{i}") for i in range(1000)])
    results = [r.get(timeout=scaled(20)) for r in sent]
    elapsed = time.monotonic() - began
    assert [tag for tag, _ in results] == [f"s{i}" for i in range(1000)]
    assert elapsed < scaled(2.0), f"1,000 x 0.1 s took {elapsed:.2f} s"
    runs = at_runs()
    assert len(runs) == 1000 and len({loop for _, _, loop, *_ in runs}) == 1
    spans = sorted((s, 1) for *_, s, _ in runs) + sorted((e, -1) for *_, e in runs)
    running = peak = 0
    for _, step in sorted(spans):
        running += step
        peak = max(peak, running)
    assert peak > 100, f"at most {peak} coroutines ran at once"


@pytest.mark.backends("redis", "sqlite")
def test_a_plain_task_in_the_asyncio_pool_runs_in_a_thread_said_once(app, start_worker):
    from tests.proj.tasks import at_plain, at_sleep

    worker = start_worker("-P", "asyncio", "-c", "10")
    threads = [r.get(timeout=scaled(10)) for r in [at_plain.delay(i) for i in range(5)]]
    assert [tag for tag, _ in threads] == list(range(5))
    assert all(name.startswith("beatq-sync") for _, name in threads), threads
    assert at_sleep.delay(0, "after").get(timeout=scaled(10))[0] == "after"
    said = [line for line in worker.log().splitlines() if "at_plain is a plain def" in line]
    assert len(said) == 1, worker.log()
    assert "not on the event loop" in said[0]


# -- limits, revoke, retry ---------------------------------------------------------------
@pytest.mark.parametrize("pool", list(POOLS))
def test_the_soft_limit_is_raised_inside_the_coroutine_and_the_hard_limit_cancels_it(
    app, start_worker, pool
):
    from tests.proj.tasks import add, at_limited

    start_worker(*POOLS[pool])
    soft = at_limited.apply_async((30, "soft"), soft_time_limit=0.3, time_limit=10)
    assert soft.get(timeout=scaled(10)) == "soft"
    began = time.monotonic()
    hard = at_limited.apply_async((30, "hard"), time_limit=0.5)
    with pytest.raises(TimeLimitExceeded, match=r"time limit \(0.5s\) exceeded"):
        hard.get(timeout=scaled(10))
    assert time.monotonic() - began < scaled(3)
    assert hard.state == "FAILURE"
    assert sorted(journal("at_limits")) == ["hard:cancelled", "soft:soft"]
    assert add.delay(1, 1).get(timeout=scaled(10)) == 2, "the worker carries on"


def test_a_soft_limit_the_coroutine_does_not_catch_fails_it(app, start_worker):
    from tests.proj.tasks import at_sleep

    start_worker(*POOLS["asyncio"])
    res = at_sleep.apply_async((30, "uncaught"), soft_time_limit=0.3)
    with pytest.raises(SoftTimeLimitExceeded):
        res.get(timeout=scaled(10))
    assert at_runs() == []


def test_a_coroutine_blocking_its_prefork_child_is_killed_past_the_hard_limit(app, start_worker):
    """A coroutine that never awaits cannot be cancelled: the parent kills its child."""
    from tests.proj.tasks import at_blocks, at_sleep

    start_worker("-P", "prefork", "-c", "1")
    res = at_blocks.apply_async((30, "stuck"), time_limit=0.5)
    with pytest.raises(TimeLimitExceeded):
        res.get(timeout=scaled(10))
    assert journal("at_limits") == ["stuck:start"]
    assert at_sleep.delay(0, "next").get(timeout=scaled(10))[0] == "next"


@pytest.mark.backends("redis", "sqlite")
@pytest.mark.parametrize("pool", list(POOLS))
def test_revoke_terminate_cancels_a_running_coroutine(app, start_worker, pool):
    from tests.proj.tasks import at_limited, at_sleep

    start_worker("-E", *POOLS[pool])
    running = at_limited.delay(30, "long")
    wait_for(lambda: running.id in _started(app), scaled(10), "the task to start")
    time.sleep(0.05)  # the run is under way, past its start event
    began = time.monotonic()
    app.control.revoke(running.id, terminate=True)
    with pytest.raises(TaskRevokedError):
        running.get(timeout=scaled(10))
    assert time.monotonic() - began < scaled(3)
    assert running.state == "REVOKED"
    if pool != "prefork":  # prefork kills the child: nothing runs on to journal
        assert journal("at_limits") == ["long:cancelled"]
    assert at_sleep.delay(0, "after").get(timeout=scaled(10))[0] == "after"


def _started(app) -> set[str]:
    events = app.events.read(count=100_000)
    return {e.fields.get("task_id") for e in events if e.type == "task-started"}


@pytest.mark.backends("redis", "sqlite")
@pytest.mark.parametrize("pool", ["asyncio", "prefork"])
def test_self_retry_and_autoretry_for_in_an_async_task(app, start_worker, pool):
    from tests.proj.tasks import at_autoretry, at_flaky

    start_worker(*POOLS[pool])
    assert at_flaky.delay("twice", 2).get(timeout=scaled(10)) == 2
    assert journal("at_tries") == ["twice"] * 3
    exhausted = at_flaky.delay("always", 9)
    with pytest.raises(ValueError, match="try 3"):
        exhausted.get(timeout=scaled(10))
    assert at_autoretry.delay("a").get(timeout=scaled(10)) == "third time"
    assert journal("at_auto") == ["a"] * 3


@pytest.mark.backends("redis")
@pytest.mark.parametrize("pool", list(POOLS))
def test_a_cancellation_of_the_coroutines_own_fails_the_task_and_the_worker_goes_on(
    app, start_worker, pool
):
    from tests.proj.tasks import at_cancels_inside, at_noop

    worker = start_worker(*POOLS[pool])
    with pytest.raises(RuntimeError, match="CancelledError it did not catch"):
        at_cancels_inside.delay().get(timeout=scaled(10))  # FAILURE, not PENDING
    at_noop.delay().get(timeout=scaled(10))  # the worker (solo's too) goes on
    assert worker.process.poll() is None


@pytest.mark.backends("redis")
@pytest.mark.parametrize("pool", ["solo", "threads"])
def test_a_coroutine_that_never_awaits_is_stopped_past_its_hard_limit(app, start_worker, pool):
    from tests.proj.tasks import at_spins

    start_worker(*POOLS[pool])
    began = time.monotonic()
    with pytest.raises(TimeLimitExceeded):
        at_spins.delay(scaled(20)).get(timeout=scaled(30))  # time_limit=1: not 20 s of spin
    assert time.monotonic() - began < scaled(10)


@pytest.mark.backends("redis")
def test_a_coroutine_blocking_the_asyncio_pool_is_named_and_stopped_past_its_hard_limit(
    app, start_worker
):
    """On -P asyncio a coroutine that never awaits holds the one loop, so its limit's
    timer cannot fire: the pool's watch names it in the log with the line it spins on,
    raises TimeLimitExceeded in it a second past its hard limit, and the coroutine that
    waited behind it finishes after it."""
    from tests.proj.tasks import at_sleep, at_spins

    worker = start_worker("-E", *POOLS["asyncio"])
    neighbour = at_sleep.delay(0.3, "behind")
    wait_for(lambda: neighbour.id in _started(app), scaled(10), "the neighbour to start")
    began = time.monotonic()
    spinning = at_spins.delay(scaled(20))  # time_limit=1
    with pytest.raises(TimeLimitExceeded, match=r"time limit \(1s\) exceeded"):
        spinning.get(timeout=scaled(30))
    assert time.monotonic() - began < scaled(10)
    assert neighbour.get(timeout=scaled(10))[0] == "behind"
    log = worker.log()
    assert f"task {spinning.id} has held the event loop" in log
    assert "in at_spins" in log  # the stack of the loop's thread, where it spins
    assert f"task {spinning.id} blocks the loop" in log
    assert "the event loop runs again after" in log
    assert at_sleep.delay(0, "after").get(timeout=scaled(10))[0] == "after"


# -- stopping ----------------------------------------------------------------------------
@pytest.mark.backends("redis", "sqlite")
def test_a_warm_stop_waits_for_the_coroutines_in_flight(app, start_worker):
    from tests.proj.tasks import add, at_sleep

    worker = start_worker("-E", "-P", "asyncio", "-c", "20")
    running = [at_sleep.delay(1.0, f"w{i}") for i in range(20)]
    wait_for(lambda: _all_started(app, running), scaled(10), "the 20 to start")
    worker.signal(signal.SIGTERM)
    wait_for(lambda: "SIGTERM received" in worker.log(), scaled(5), "the signal")
    after = add.delay(2, 3)
    assert [r.get(timeout=scaled(10))[0] for r in running] == [f"w{i}" for i in range(20)]
    assert worker.wait(10) == 0
    assert "waiting for 20 running task(s)" in worker.log()
    assert after.state == "PENDING"
    assert sorted(tag for tag, *_ in at_runs()) == sorted(f"w{i}" for i in range(20))


@pytest.mark.backends("redis", "sqlite")
def test_a_cold_stop_puts_the_coroutines_in_flight_back_and_loses_none(app, start_worker):
    from tests.proj.tasks import at_sleep

    worker = start_worker("-E", "-P", "asyncio", "-c", "20")
    running = [at_sleep.delay(2.0, f"c{i}") for i in range(20)]
    wait_for(lambda: _all_started(app, running), scaled(10), "the 20 to start")
    worker.signal(signal.SIGTERM)
    wait_for(lambda: "SIGTERM received" in worker.log(), scaled(5), "the first signal")
    stopped_at = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(5) == 0
    assert time.monotonic() - stopped_at < scaled(3), "a second signal stops at once"
    assert at_runs() == [], "the coroutines were cut short"
    assert app.broker.queue_length("celery") == 20
    start_worker("-P", "asyncio", "-c", "20")
    assert [r.get(timeout=scaled(10))[0] for r in running] == [f"c{i}" for i in range(20)]
    counts = collections.Counter(tag for tag, *_ in at_runs())
    assert counts == {f"c{i}": 1 for i in range(20)}


def _all_started(app, results) -> bool:
    started = _started(app)
    return all(r.id in started for r in results)


# -- events, metrics, and the async client -----------------------------------------------
@pytest.mark.backends("redis", "sqlite")
def test_the_asyncio_pool_sends_the_events_of_the_other_pools(app, start_worker):
    from tests.proj.tasks import at_sleep

    start_worker("-E", "-P", "asyncio")
    res = at_sleep.delay(0, "ev")
    assert res.get(timeout=scaled(10))[0] == "ev"

    def kinds() -> list[str]:
        events = app.events.read(count=100_000)
        return [e.type for e in events if e.fields.get("task_id") == res.id]

    wait_for(lambda: "task-succeeded" in kinds(), scaled(10), "the success event")
    assert kinds() == ["task-received", "task-started", "task-succeeded"]


@pytest.mark.backends("redis", "sqlite", "memory")
def test_the_async_client_sends_and_awaits_results_without_blocking_the_loop(
    app, start_worker, backend, monkeypatch
):
    from tests.proj.tasks import add, at_client, at_sleep

    start_worker("-P", "threads", "-c", "4") if backend == "memory" else start_worker(
        "-P", "asyncio"
    )
    if backend == "redis":  # the asyncio client waits: no thread blocks in wait_result
        monkeypatch.setattr(type(app.result_store), "wait_result", _no_blocking_wait)

    async def client() -> tuple[list[int], float, list[int]]:
        sent = [await add.adelay(i, i) for i in range(20)]
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        slow = await at_sleep.aapply_async((0.5, "slow"))
        began = time.monotonic()
        await slow.aget(timeout=scaled(10))
        waited = time.monotonic() - began
        ticker.cancel()
        values = await asyncio.gather(*(r.aget(timeout=scaled(10)) for r in sent))
        with pytest.raises(TimeoutError):
            await at_sleep.delay(5, "late").aget(timeout=0.2)
        return list(values), waited, [ticks]

    values, waited, (ticks,) = asyncio.run(client())
    assert values == [i + i for i in range(20)]
    assert waited < scaled(3)
    assert ticks >= waited / 0.01 * 0.3, "the loop went on while aget waited"
    monkeypatch.undo()
    if backend != "memory":
        inner = at_client.delay(4)
        assert inner.get(timeout=scaled(10)) == 5, "a coroutine awaits another task's result"
        assert [c.id for c in inner.children] != [] and inner.children[0].get() == 5


def _no_blocking_wait(self, task_id, timeout):
    raise AssertionError("aget blocked a thread in wait_result")


# -- tracing -----------------------------------------------------------------------------
traced = traced_fixture  # this process traced in memory, a worker to a file (test_otel.py)


@pytest.mark.parametrize("pool", ["asyncio", "threads"])
def test_an_async_run_is_traced_as_any_run_and_what_it_sends_is_its_child(
    app, start_worker, traced, pool
):
    """beatq.otel's run span starts at task_prerun and ends at task_postrun: both in the
    context the coroutine's run began in, so the span ends and what the coroutine sends
    (through the async client) is its child."""
    from tests.proj.tasks import at_client

    tracer, spans, env = traced
    worker = start_worker(*POOLS[pool], extra_env=env)
    with tracer.start_as_current_span("web request"):
        res = at_client.delay(4)
    assert res.get(timeout=scaled(15)) == 5
    child = res.children[0].id

    def complete() -> list[Span] | None:
        found = spans()
        names = [(s["name"], s["attributes"].get("messaging.message.id")) for s in found]
        return found if ("beatq.run", child) in names and ("beatq.run", res.id) in names else None

    found = wait_for(complete, scaled(20), "the run spans")
    run = one(found, "beatq.run", res.id)
    assert run["attributes"]["beatq.task.state"] == "SUCCESS"
    assert child_of(one(found, "beatq.publish", child), run)
    assert child_of(one(found, "beatq.run", child), one(found, "beatq.publish", child))
    assert "Failed to detach context" not in worker.log()
