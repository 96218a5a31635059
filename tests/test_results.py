"""What a user sees of a task after sending it: states, values, errors, callbacks, retries, time.

Most tests share one worker per module and backend (threads pool, on a store of the
module's own) and run on every backend; the few that need a worker configured
differently, or kill one, start their own.
"""

from __future__ import annotations

import builtins
import os
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import pytz

from beatq import AsyncResult
from beatq.brokers import connect
from beatq.exceptions import MaxRetriesExceededError, TaskRevokedError
from beatq.exceptions import TimeoutError as BeatqTimeoutError
from tests.conftest import (
    ROOT,
    ThreadWorker,
    WorkerProcess,
    delete_keys,
    point_app,
    scaled,
    store_url,
    wait_for,
    wait_ready,
)
from tests.proj import journal

SHANGHAI = ZoneInfo("Asia/Shanghai")
pytestmark = pytest.mark.backends("redis", "sqlite", "memory", "cluster")


# -- a worker shared by the tests of a module ------------------------------------------------
@dataclass
class SharedWorker:
    prefix: str
    url: str
    journal: Path
    process: WorkerProcess | ThreadWorker
    name: str

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "BEATQ_BROKER_URL": self.url,
            "BEATQ_TEST_PREFIX": self.prefix,
            "BEATQ_TEST_JOURNAL": str(self.journal),
            "PYTHONPATH": str(ROOT),
        }


def shared_worker(
    backend: str,
    request: pytest.FixtureRequest,
    folder: Path,
    settings: dict[str, str],
    *args: str,
) -> Iterator[SharedWorker]:
    """Start one worker on a store of its own, yield it, stop it and delete the store.

    `settings` are environment variables of tests.proj (BEATQ_TEST_*); on memory:// the
    worker is a thread of this process, and `conf` takes their meaning instead.
    """
    prefix = f"bqt-{uuid.uuid4().hex[:12]}"
    name = f"shared-{uuid.uuid4().hex[:6]}"
    url = store_url(backend, request, prefix, folder)
    journal_dir = folder / "journal"
    journal_dir.mkdir()
    process: WorkerProcess | ThreadWorker
    restore: dict[str, object] = {}  # the shared app's settings changed here, put back after
    if backend == "memory":
        app = point_app(url, prefix)
        changes = dict(CONF_OF_ENV[key](value) for key, value in settings.items())
        restore = {key: app.conf.get(key) for key in changes}
        app.conf.update(changes)
        process = ThreadWorker(app, list(args), name)
        alive = process.thread.is_alive
    else:
        env = {**os.environ, "PYTHONPATH": str(ROOT), **settings}
        env.update(BEATQ_BROKER_URL=url, BEATQ_TEST_PREFIX=prefix)
        env.update(BEATQ_TEST_JOURNAL=str(journal_dir))
        argv = ["-A", "tests.proj", "worker", "-n", name, *args]
        process = WorkerProcess(argv, env, folder / f"{name}.log")
        alive = lambda: process.process.poll() is None  # noqa: E731
    backend_ = connect(url, {"global_keyprefix": prefix})
    try:
        wait_ready(backend_, name, alive, process.log)
        yield SharedWorker(prefix, url, journal_dir, process, name)
    finally:
        process.stop()
        backend_.close()
        if restore:
            app.conf.update(restore)  # (made in the memory branch above)
        if backend == "redis":
            delete_keys(url, prefix)


# What tests.proj makes of its BEATQ_TEST_* variables, for a worker in this process.
CONF_OF_ENV = {
    "BEATQ_TEST_TIMEZONE": lambda value: ("timezone", value),
    "BEATQ_TEST_ACCEPT": lambda value: ("accept_content", value.split(",")),
}


def point_app_at(shared: SharedWorker, monkeypatch: pytest.MonkeyPatch):
    """The tests' app, pointed at the shared worker's store (here and in child processes)."""
    for key, value in shared.env().items():
        monkeypatch.setenv(key, value)
    proj_app = point_app(shared.url, shared.prefix)
    # Each test starts with empty journals.
    for kind in shared.journal.iterdir():
        kind.unlink()
    return proj_app


@pytest.fixture(scope="module")
def shared(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SharedWorker]:
    # Asia/Shanghai on both sides, so naive datetimes mean the same instant everywhere.
    yield from shared_worker(
        backend,
        request,
        tmp_path_factory.mktemp("shared"),
        {"BEATQ_TEST_TIMEZONE": "Asia/Shanghai"},
        "-P",
        "threads",
        "-c",
        "4",
    )


@pytest.fixture
def sapp(shared: SharedWorker, monkeypatch: pytest.MonkeyPatch):
    proj_app = point_app_at(shared, monkeypatch)
    monkeypatch.setitem(proj_app.conf, "timezone", "Asia/Shanghai")
    yield proj_app
    proj_app.close()


# -- states ------------------------------------------------------------------------------------
def test_unknown_id_is_pending_and_not_ready(sapp):
    result = AsyncResult(str(uuid.uuid4()), app=sapp)
    assert result.state == "PENDING"
    assert not result.ready()
    assert result.result is None
    assert result.date_done is None


def test_success_state_value_and_aware_date_done(sapp):
    from tests.proj.tasks import add

    before = datetime.now(timezone.utc)
    result = add.delay(2, 3)
    assert result.get(timeout=scaled(5)) == 5
    assert (result.state, result.ready(), result.successful(), result.failed()) == (
        "SUCCESS",
        True,
        True,
        False,
    )
    assert sapp.AsyncResult(result.id).get(timeout=0) == 5  # stored: no waiting needed
    again = sapp.AsyncResult(result.id)
    assert again.result == 5
    done = again.date_done
    assert done.tzinfo is not None and done.utcoffset() == timedelta(hours=8)
    assert before - timedelta(seconds=1) <= done <= datetime.now(timezone.utc)


def test_started_state_is_visible_with_track_started(sapp, shared):
    from tests.proj import record
    from tests.proj.tasks import res_tracked

    result = res_tracked.delay("hold-1")
    wait_for(lambda: result.state == "STARTED", 5, "the STARTED state")
    assert not result.ready()
    assert result.info["hostname"] == shared.name
    record("release", "hold-1")
    assert result.get(timeout=scaled(5)) == "hold-1"
    assert AsyncResult(result.id, app=sapp).state == "SUCCESS"


def test_retry_state_then_success(sapp):
    from tests.proj.tasks import CustomError, res_retry_once

    result = res_retry_once.delay()
    wait_for(lambda: AsyncResult(result.id, app=sapp).state == "RETRY", 5, "the RETRY state")
    retrying = AsyncResult(result.id, app=sapp)
    assert isinstance(retrying.result, CustomError)
    assert str(retrying.result) == "again"
    assert not retrying.ready()
    assert result.get(timeout=scaled(5)) == "done after 1"
    assert result.state == "SUCCESS"


def test_failure_reraises_the_task_exception_with_message_and_traceback(sapp):
    from tests.proj.tasks import CustomError, fail

    result = fail.delay("it broke")
    with pytest.raises(CustomError, match="^it broke$"):
        result.get(timeout=scaled(5))
    assert (result.state, result.ready(), result.failed(), result.successful()) == (
        "FAILURE",
        True,
        True,
        False,
    )
    exc = result.get(timeout=scaled(5), propagate=False)
    assert type(exc) is CustomError and exc.args == ("it broke",)
    assert isinstance(result.result, CustomError)
    fresh = AsyncResult(result.id, app=sapp)
    assert "raise CustomError(message)" in fresh.traceback
    assert "CustomError: it broke" in fresh.traceback
    assert fresh.date_done is not None and fresh.date_done.tzinfo is not None


def test_get_times_out_without_a_worker(app):
    from tests.proj.tasks import add

    result = add.delay(1, 1)
    began = time.monotonic()
    with pytest.raises(BeatqTimeoutError) as info:
        result.get(timeout=0.3)
    elapsed = time.monotonic() - began
    assert isinstance(info.value, builtins.TimeoutError)
    assert 0.3 <= elapsed < scaled(1.5)
    with pytest.raises(BeatqTimeoutError):
        result.get(timeout=0)
    assert result.state == "PENDING"
    assert app.broker.queue_length("celery") == 1  # still waiting for a worker, not lost


# 0.6 s as well: a get() polling every 0.5 s (Celery's default interval) would return at 1.0 s.
@pytest.mark.parametrize("seconds", [0.3, 0.6])
def test_get_is_woken_when_the_result_is_stored(sapp, seconds):
    from tests.proj.tasks import sleep

    began = time.monotonic()
    result = sleep.delay(seconds, "wake")
    assert result.get(timeout=scaled(5)) == "wake"
    elapsed = time.monotonic() - began
    late = elapsed - seconds
    assert 0 <= late < scaled(0.25), f"get returned {late:.3f}s late"


def test_forget_deletes_the_result(sapp):
    from tests.proj.tasks import add

    result = add.delay(20, 22)
    assert result.get(timeout=scaled(5)) == 42
    result.forget()
    assert result.state == "PENDING"
    assert AsyncResult(result.id, app=sapp).state == "PENDING"
    assert AsyncResult(result.id, app=sapp).result is None


@pytest.mark.backends("redis", "sqlite")
def test_result_expires_after_result_expires(app, start_worker):
    from tests.proj.tasks import add

    start_worker("-P", "solo", extra_env={"BEATQ_TEST_RESULT_EXPIRES": "1"})
    result = add.delay(1, 2)
    assert result.get(timeout=scaled(5)) == 3
    stored = time.time()
    assert AsyncResult(result.id, app=app).state == "SUCCESS"
    wait_for(lambda: AsyncResult(result.id, app=app).state == "PENDING", 5, "the result to expire")
    lived = time.time() - stored
    assert 0.8 <= lived < scaled(2.5), f"the result lived {lived:.2f}s with result_expires=1"


# -- callbacks -----------------------------------------------------------------------------
def test_link_runs_the_callback_with_the_result(sapp):
    from tests.proj.tasks import add

    child_id = str(uuid.uuid4())
    parent = add.apply_async((2, 2), link=add.s(16).set(task_id=child_id))
    assert parent.get(timeout=scaled(5)) == 4
    assert AsyncResult(child_id, app=sapp).get(timeout=scaled(5)) == 20


def test_link_error_old_and_new_style_errbacks(sapp):
    from tests.proj.tasks import CustomError, errback_new, errback_old, fail, res_errback_bound

    result = fail.apply_async(
        ("bad input",),
        link_error=[errback_old.s(), errback_new.s(), res_errback_bound.s()],
    )
    with pytest.raises(CustomError):
        result.get(timeout=scaled(5))
    expected = {
        f"old:{result.id}",
        f"bound:{result.id}",
        f"new:{result.id}:CustomError:bad input",
    }
    wait_for(lambda: set(journal("errback")) == expected, 5, "the three errbacks")
    assert sorted(journal("errback")) == sorted(expected)  # each ran once


def test_link_error_does_not_run_on_success(sapp):
    from tests.proj.tasks import add, errback_old, fail

    ok = add.apply_async((1, 1), link_error=errback_old.s())
    assert ok.get(timeout=scaled(5)) == 2
    # A failing task sent afterwards to the same worker runs its errback; the first never does.
    bad = fail.apply_async(link_error=errback_old.s())
    wait_for(lambda: f"old:{bad.id}" in journal("errback"), 5, "the failing task's errback")
    assert journal("errback") == [f"old:{bad.id}"]


# -- retries -------------------------------------------------------------------------------
def test_retry_with_countdown_until_success(sapp):
    from tests.proj.tasks import flaky

    result = flaky.delay(2)
    assert result.get(timeout=scaled(5)) == 2
    assert journal("flaky") == ["0", "1", "2"]
    assert result.state == "SUCCESS"


def test_max_retries_exceeded_fails_the_task(sapp):
    from tests.proj.tasks import flaky

    result = flaky.delay(10)  # max_retries=3: runs with retries 0..3, then gives up
    with pytest.raises(MaxRetriesExceededError, match="max_retries=3"):
        result.get(timeout=scaled(5))
    assert result.state == "FAILURE"
    assert journal("flaky") == ["0", "1", "2", "3"]


def test_autoretry_for_with_backoff_then_failure(sapp):
    from tests.proj.tasks import CustomError, auto_flaky

    began = time.monotonic()
    result = auto_flaky.delay("auto-1")
    with pytest.raises(CustomError, match="^auto-1$"):
        result.get(timeout=scaled(5))
    elapsed = time.monotonic() - began
    assert journal("auto") == ["auto-1"] * 3  # the first run and max_retries=2 retries
    assert result.state == "FAILURE"
    assert elapsed >= 0.05 + 0.1  # retry_backoff=0.05 doubles: 0.05 s, then 0.1 s


# -- time ------------------------------------------------------------------------------------
def test_countdown_holds_the_task_until_due(sapp):
    from tests.proj.tasks import res_stamp

    sent = time.time()
    result = res_stamp.apply_async(countdown=1)
    started = result.get(timeout=scaled(5))
    assert started >= sent + 1.0
    assert started < sent + 1.0 + 1.0


def test_eta_aware_naive_and_pytz_datetimes(sapp):
    from tests.proj.tasks import res_stamp

    # The app's time zone is Asia/Shanghai (client and worker): a naive eta is read there.
    base = datetime.now(SHANGHAI) + timedelta(seconds=1)
    etas = {
        "zoneinfo": base,
        "naive": base.replace(tzinfo=None) + timedelta(seconds=0.1),
        "pytz": pytz.timezone("Asia/Shanghai").localize(
            base.replace(tzinfo=None) + timedelta(seconds=0.2)
        ),
    }
    expected = {
        "zoneinfo": base.timestamp(),
        "naive": base.timestamp() + 0.1,
        "pytz": base.timestamp() + 0.2,
    }
    results = {kind: res_stamp.apply_async(eta=eta) for kind, eta in etas.items()}
    for kind, result in results.items():
        started = result.get(timeout=scaled(5))
        assert started >= expected[kind], f"{kind} eta ran {expected[kind] - started:.3f}s early"
        assert started < expected[kind] + 1.0, (
            f"{kind} eta ran {started - expected[kind]:.3f}s late"
        )


EXPIRED = {
    "past aware datetime": lambda: datetime.now(timezone.utc) - timedelta(minutes=1),
    # Read in the app's zone (Asia/Shanghai): read as UTC it would lie 8 hours ahead.
    "past naive datetime": lambda: (
        datetime.now(SHANGHAI).replace(tzinfo=None) - timedelta(minutes=1)
    ),
    "past seconds": lambda: -1,
}


@pytest.mark.parametrize("when", list(EXPIRED))
def test_expired_task_is_revoked_and_its_errback_runs(sapp, when):
    from tests.proj.tasks import add, errback_new, errback_old

    expires = EXPIRED[when]()
    result = add.apply_async((1, 1), expires=expires, link_error=[errback_old.s(), errback_new.s()])
    with pytest.raises(TaskRevokedError, match="expired"):
        result.get(timeout=scaled(5))
    assert result.state == "REVOKED"
    assert result.ready() and not result.successful()
    revoked = AsyncResult(result.id, app=sapp).result
    assert isinstance(revoked, TaskRevokedError) and "expired" in str(revoked)
    expected = {f"old:{result.id}", f"new:{result.id}:TaskRevokedError:expired"}
    wait_for(lambda: set(journal("errback")) == expected, 5, "the errbacks of the expired task")


def test_expires_shorter_than_countdown_never_runs(sapp):
    from tests.proj.tasks import res_stamp

    result = res_stamp.apply_async(countdown=0.5, expires=0.2)
    in_time = res_stamp.apply_async(countdown=0.5, expires=30)
    with pytest.raises(TaskRevokedError, match="expired"):
        result.get(timeout=scaled(5))
    assert result.state == "REVOKED"
    assert isinstance(in_time.get(timeout=scaled(5)), float)
    assert in_time.state == "SUCCESS"


@pytest.mark.backends("redis", "sqlite")
def test_eta_task_waits_in_the_broker_and_survives_a_killed_worker(app, start_worker):
    from tests.proj.tasks import res_stamp

    first = start_worker("-P", "solo")
    countdown = scaled(2.5)  # long enough to kill a worker and start another before it
    sent = time.time()
    result = res_stamp.apply_async(countdown=countdown)
    scheduled = app.broker.scheduled()
    assert [claim.id for _, claim in scheduled] == [result.id]
    eta = scheduled[0][0]
    assert sent + countdown <= eta < sent + countdown + 0.1

    os.kill(first.pid, signal.SIGKILL)
    first.wait(5)
    assert [claim.id for _, claim in app.broker.scheduled()] == [result.id]
    start_worker("-P", "solo")
    assert time.time() < eta, "the second worker started too late for this test to mean anything"
    started = result.get(timeout=scaled(5))
    assert eta <= started < eta + scaled(1.0)
    assert app.broker.scheduled() == []
