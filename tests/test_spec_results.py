"""SPEC §1–§3 promises on results and retries that no other test pins down.

- `result_serializer` and `result_compression` are how a worker stores results, and a
  client anywhere reads them back.
- Results expire after `result_expires`, by default one day.
- A result is seen within a millisecond or two of being stored: `get` is woken, it does
  not poll at its `interval` (which it takes, as Celery's does).
- `default_retry_delay`, `retry_backoff` (with `retry_backoff_max`) and `self.retry(exc=)`
  past `max_retries` behave as in Celery.

- A task's own `serializer` is used for its messages unless a call names another.

One worker per backend for the module (tests.proj plus tests.proj.spec_tasks, its results
pickled and zlib-compressed, json and pickle accepted); the latency test needs none.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from beatq import AsyncResult
from beatq.exceptions import MaxRetriesExceededError
from beatq.result import state_write
from tests.conftest import scaled, wait_for
from tests.proj import journal
from tests.test_results import SharedWorker, point_app_at, shared_worker

BOTH = pytest.mark.backends("redis", "sqlite")
PICKLED = {"result_serializer": "pickle", "result_compression": "zlib"}


@pytest.fixture(scope="module")
def shared(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SharedWorker]:
    yield from shared_worker(
        backend,
        request,
        tmp_path_factory.mktemp("spec-results"),
        {
            "BEATQ_TEST_INCLUDE": "tests.proj.spec_tasks",
            "BEATQ_SPEC_CONF": json.dumps(PICKLED),
            "BEATQ_TEST_ACCEPT": "json,pickle",
        },
        "-P",
        "threads",
        "-c",
        "4",
    )


@pytest.fixture
def sapp(shared: SharedWorker, monkeypatch: pytest.MonkeyPatch):
    import tests.proj.spec_tasks  # noqa: F401  (registers the tasks here too)

    proj_app = point_app_at(shared, monkeypatch)
    yield proj_app
    proj_app.close()


def stored_ttl(app, task_id: str) -> float:
    """Seconds the store keeps the result of `task_id` from now."""
    broker = app.broker
    if type(broker).__name__ == "RedisBackend":
        return broker.client.pttl(broker.keys.result(task_id)) / 1000
    with broker.db.read() as conn:
        (expires,) = conn.execute(
            "SELECT expires FROM results WHERE task_id = ?", (task_id,)
        ).fetchone()
    return expires - time.time()


def gaps(kind: str) -> list[float]:
    """Seconds between the successive entries of journal `kind` (POSIX times)."""
    stamps = journal(kind)
    return [later - earlier for earlier, later in zip(stamps, stamps[1:])]


# -- results ---------------------------------------------------------------------------------
@BOTH
def test_results_are_stored_with_the_workers_result_serializer_and_compression(sapp):
    from tests.proj.spec_tasks import spec_a_set

    result = spec_a_set.delay([3, 1, 2])
    assert result.get(timeout=scaled(5)) == {1, 2, 3}, "pickled: a set stays a set"
    head = sapp.broker.get_result(result.id).partition(b"\n")[0]
    assert head == b"application/x-python-serialize;zlib"
    assert AsyncResult(result.id, app=sapp).result == {1, 2, 3}


@BOTH
def test_a_tasks_serializer_is_used_unless_the_call_names_another(sapp):
    from tests.proj.spec_tasks import spec_pickled

    assert spec_pickled.delay((1, 2)).get(timeout=scaled(5)) == "tuple", "sent pickled"
    by_call = spec_pickled.apply_async(((1, 2),), serializer="json")
    assert by_call.get(timeout=scaled(5)) == "list", "the call's serializer wins"


@BOTH
def test_results_expire_after_one_day_by_default(sapp):
    from tests.proj.tasks import add

    assert sapp.conf.result_expires == 86400
    result = add.delay(1, 1)
    assert result.get(timeout=scaled(5)) == 2
    ttl = stored_ttl(sapp, result.id)
    assert 86400 - scaled(10) < ttl <= 86400, f"the result is kept {ttl:.0f}s, not a day"


@pytest.mark.backends("redis", "sqlite", "memory")
def test_get_is_woken_within_milliseconds_of_the_store_whatever_its_interval(app):
    """A getter waiting in another thread returns within a few ms of the write; with an
    `interval` of 0.5 s (Celery's default) a polling get would take 250 ms on average."""
    lags = []
    for _ in range(10):
        task_id = str(uuid.uuid4())
        done: dict[str, float] = {}

        def wait(task_id: str = task_id, done: dict[str, float] = done) -> None:
            done["value"] = AsyncResult(task_id, app=app).get(timeout=5, interval=0.5)
            done["at"] = time.perf_counter()

        getter = threading.Thread(target=wait, daemon=True)
        getter.start()
        time.sleep(0.03)  # the getter is waiting
        app.broker.finish(results=[state_write(app, task_id, "SUCCESS", 7)])
        stored = time.perf_counter()
        getter.join(5)
        assert done["value"] == 7
        lags.append(done["at"] - stored)
    assert statistics.median(lags) < 0.01, f"get woke {statistics.median(lags) * 1000:.1f} ms late"


# -- retries ---------------------------------------------------------------------------------
@BOTH
def test_a_retry_without_countdown_waits_default_retry_delay(sapp):
    from tests.proj.spec_tasks import spec_default_delay

    assert spec_default_delay.delay().get(timeout=scaled(5)) == 1
    (gap,) = gaps("spec_tries")
    assert 0.5 <= gap < 0.5 + scaled(0.5), f"retried after {gap:.3f}s, not 0.5 s"


@BOTH
@pytest.mark.parametrize(
    "name, waits",
    [("spec_backoff", [0.2, 0.4, 0.8]), ("spec_backoff_capped", [0.2, 0.3, 0.3])],
    ids=["doubling", "capped"],
)
def test_retry_backoff_doubles_each_wait_up_to_retry_backoff_max(sapp, name, waits):
    from tests.proj import spec_tasks
    from tests.proj.tasks import CustomError

    with pytest.raises(CustomError, match="^b$"):
        getattr(spec_tasks, name).delay("b").get(timeout=scaled(10))
    found = gaps("spec_tries")
    assert len(found) == 3, "the first run and max_retries=3 retries"
    for gap, wait in zip(found, waits):
        assert wait <= gap < wait + scaled(0.15), f"waits {found}, expected about {waits}"


@BOTH
def test_past_max_retries_a_retry_with_exc_fails_with_that_exception(sapp):
    from tests.proj.spec_tasks import spec_retry_exc
    from tests.proj.tasks import CustomError

    result = spec_retry_exc.delay("gave up")
    with pytest.raises(CustomError, match="^gave up$") as info:
        result.get(timeout=scaled(5))
    assert not isinstance(info.value, MaxRetriesExceededError)
    assert result.state == "FAILURE"
    assert len(journal("spec_tries")) == 2, "the first run and max_retries=1 retry"


@BOTH
def test_callbacks_of_a_retried_task_run_once_for_its_outcome_never_for_a_retry(sapp):
    """SPEC §3: the errback runs when the task fails, the link when it succeeds: after the
    retries, once; a retry is neither."""
    from tests.proj.spec_tasks import spec_backoff, spec_default_delay
    from tests.proj.tasks import CustomError, cv_seen, errback_old

    failing = spec_backoff.apply_async(("r",), link_error=errback_old.s(), link=cv_seen.s("linked"))
    succeeding = spec_default_delay.apply_async(
        link_error=errback_old.s(), link=cv_seen.s("linked")
    )
    with pytest.raises(CustomError):
        failing.get(timeout=scaled(10))
    assert succeeding.get(timeout=scaled(10)) == 1
    wait_for(lambda: journal("errback") and journal("cv_seen"), 5, "the callbacks")
    time.sleep(0.3)  # a second run of either would land within this
    assert journal("errback") == [f"old:{failing.id}"], "the errback: once, for the failure"
    assert journal("cv_seen") == ["linked:1"], "the link: once, with the final value"


def test_retry_backoff_true_doubles_from_one_second_jittered_below_each_wait_by_default(
    monkeypatch,
):
    """Celery's defaults: `retry_backoff=True` waits 1, 2, 4, ... s, capped at
    `retry_backoff_max` (600 s), and `retry_jitter` (on by default) picks a wait between 0
    and that."""
    import beatq.context
    from beatq import Beatq

    # an app of this test's own, kept out of current_app
    monkeypatch.setattr(beatq.context, "_current", list(beatq.context._current))
    local = Beatq("backoff", broker=f"memory://backoff-{uuid.uuid4().hex[:8]}")

    @local.task(retry_backoff=True, retry_jitter=False)
    def plain():
        pass

    @local.task(retry_backoff=True)
    def jittered():
        pass

    assert [plain.backoff(n) for n in range(4)] == [1, 2, 4, 8]
    assert plain.backoff(20) == 600, "capped at retry_backoff_max"
    waits = [jittered.backoff(3) for _ in range(50)]
    assert all(0 <= w <= 8 for w in waits) and len(set(waits)) > 1
    local.close()
