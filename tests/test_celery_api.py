"""Celery's names in-process: `Celery`, `shared_task`, `Task` subclasses, the `Signal`
class, and hooks and signals around a task run here (`apply`, task_always_eager).

Real workers running the same (hooks in the prefork child, signals where Celery sends
them) are in test_celery_project.py."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator

import pytest

import beatq
from beatq import Beatq, Celery, Task, context, shared_task, signals
from beatq import app as app_module
from beatq.einfo import ExceptionInfo
from beatq.signals import Signal


@pytest.fixture
def fresh() -> Iterator[list[Beatq]]:
    """Apps made by the test (append them), and the shared tasks it makes, forgotten after."""
    made: list[Beatq] = []
    shared_before = list(app_module._shared_tasks)
    apps_before = list(context._current)
    yield made
    for shared in app_module._shared_tasks[len(shared_before) :]:
        for app in list(app_module._apps):
            task = shared._tasks.get(app)
            if task is not None:
                app.tasks.pop(task.name, None)
    app_module._shared_tasks[:] = shared_before
    for app in made:
        app.close()
    context._current[:] = apps_before


def test_celery_is_beatq_and_the_names_import_from_the_package() -> None:
    assert Celery is Beatq
    assert {"Celery", "shared_task", "Task"} <= set(beatq.__all__)


def test_a_shared_task_binds_to_apps_made_before_and_after_it(fresh: list[Beatq]) -> None:
    before = Celery("before", broker="memory://shared-before")
    fresh.append(before)

    @shared_task
    def double(x):
        return 2 * x

    @shared_task(bind=True, max_retries=7)
    def whoami(self):
        return (self.name, self.app.main, self.max_retries)

    assert double(4) == 8  # a plain call, here
    assert isinstance(double, Task)
    assert double.name in before.tasks
    after = Celery("after", broker="memory://shared-after")
    fresh.append(after)
    assert double.name in after.tasks  # registered with the app made afterwards too
    # each use goes to the current app's task (the newest app)
    assert whoami.apply().get() == (whoami.name, "after", 7)
    assert double.app is after
    assert before.tasks[double.name] is not after.tasks[double.name]


def test_a_class_based_task_is_registered_named_and_run(fresh: list[Beatq]) -> None:
    app = Celery("cls", broker="memory://cls")
    fresh.append(app)

    class Fetch(Task):
        name = "proj.fetch"
        max_retries = 5
        queue = "io"

        def run(self, url, retries=0):
            return f"{url}:{self.request.id == self.request.id and bool(self.request.id)}"

    fetch = app.register_task(Fetch())
    assert app.tasks["proj.fetch"] is fetch and fetch.app is app
    assert fetch("u") == "u:False"  # a plain call has no request id
    assert fetch.apply(("u",)).get() == "u:True"
    assert fetch.option("max_retries") == 5 and fetch.option("queue") == "io"
    assert app.route("proj.fetch", (), {}, fetch) == "io"

    class Unnamed(Task):
        def run(self):
            return self.name

    unnamed = app.register_task(Unnamed)  # a class is made into its instance
    assert unnamed.name == f"{__name__}.Unnamed" or unnamed.name.endswith(".Unnamed")
    assert unnamed.apply().get() == unnamed.name

    class OwnInit(Task):
        name = "proj.own_init"

        def __init__(self):  # Celery's Task needs no super().__init__()
            self.calls = 0

        def run(self):
            self.calls += 1
            return self.request.id

    own = app.register_task(OwnInit())
    assert own.apply(task_id="abc").get() == "abc"
    assert own.calls == 1


def test_a_base_class_takes_its_own_attributes_as_options_and_refuses_unknown_ones(
    fresh: list[Beatq],
) -> None:
    app = Celery("base", broker="memory://base")
    fresh.append(app)

    class Tagged(Task):
        tag = "none"
        acks_late = True

    @app.task(base=Tagged, tag="mine")
    def tagged():
        return 1

    assert (tagged.tag, tagged.option("acks_late")) == ("mine", True)
    with pytest.raises(TypeError, match="unknown option 'tga'"):
        app.task(base=Tagged, tga="x")(lambda: 1)


def test_hooks_and_signals_run_around_an_eager_call_in_celerys_order(
    fresh: list[Beatq],
) -> None:
    app = Celery("hooks", broker="memory://hooks")
    fresh.append(app)
    seen: list[tuple] = []

    class Hooked(Task):
        def before_start(self, task_id, args, kwargs):
            seen.append(("before_start", task_id == self.request.id, list(args)))

        def on_success(self, retval, task_id, args, kwargs):
            seen.append(("on_success", retval))

        def on_failure(self, exc, task_id, args, kwargs, einfo):
            seen.append(("on_failure", type(exc).__name__, type(einfo).__name__))
            assert einfo.exception is exc and "KeyError" in str(einfo)

        def on_retry(self, exc, task_id, args, kwargs, einfo):
            seen.append(("on_retry", str(exc)))

        def after_return(self, status, retval, task_id, args, kwargs, einfo):
            seen.append(("after_return", status, repr(retval)))

    @app.task(base=Hooked)
    def add(x, y):
        return x + y

    @app.task(base=Hooked)
    def boom():
        raise KeyError("k")

    @app.task(base=Hooked, bind=True, max_retries=1)
    def again(self):
        if not self.request.retries:
            raise self.retry(exc=ValueError("once"), countdown=0)
        return "ok"

    def on(name):
        def receiver(sender=None, **kwargs):
            seen.append((name, sender.name))

        return receiver

    receivers = [(getattr(signals, n), on(n)) for n in ("task_prerun", "task_postrun")]
    receivers += [(getattr(signals, n), on(n)) for n in ("task_success", "task_failure")]
    receivers += [(signals.task_retry, on("task_retry"))]
    for signal, receiver in receivers:
        signal.connect(receiver)
    try:
        assert add.apply((2, 3)).get() == 5
        assert boom.apply().state == "FAILURE"
        assert again.apply().get() == "ok"
    finally:
        for signal, receiver in receivers:
            signal.disconnect(receiver)
    assert seen == [
        ("task_prerun", add.name),
        ("before_start", True, [2, 3]),
        ("on_success", 5),
        ("task_success", add.name),
        ("after_return", "SUCCESS", "5"),
        ("task_postrun", add.name),
        ("task_prerun", boom.name),
        ("before_start", True, []),
        ("on_failure", "KeyError", "ExceptionInfo"),
        ("task_failure", boom.name),
        ("after_return", "FAILURE", "KeyError('k')"),
        ("task_postrun", boom.name),
        ("task_prerun", again.name),
        ("before_start", True, []),
        ("on_retry", "once"),
        ("task_retry", again.name),
        ("task_postrun", again.name),
        ("task_prerun", again.name),
        ("before_start", True, []),
        ("on_success", "ok"),
        ("task_success", again.name),
        ("after_return", "SUCCESS", "'ok'"),
        ("task_postrun", again.name),
    ]


def test_a_hook_that_raises_is_logged_and_the_outcome_stands(
    fresh: list[Beatq], caplog: pytest.LogCaptureFixture
) -> None:
    app = Celery("raising", broker="memory://raising")
    fresh.append(app)

    class Raising(Task):
        def on_success(self, retval, task_id, args, kwargs):
            raise RuntimeError("hook broke")

    @app.task(base=Raising)
    def one():
        return 1

    with caplog.at_level(logging.ERROR, logger="beatq.task"):
        assert one.apply().get() == 1
    assert "its on_success hook raised" in caplog.text and "hook broke" in caplog.text


# -- the Signal class ---------------------------------------------------------------------
def test_a_signal_connects_as_a_decorator_or_a_call_and_returns_each_answer() -> None:
    sig = Signal("demo")
    assert not sig.receivers and sig.send(sender="x") == []

    @sig.connect
    def first(sender=None, signal=None, value=0, **kwargs):
        return (sender, signal.name, value)

    @sig.connect(sender="proj.tasks.add")
    def only_add(sender=None, **kwargs):
        return "add"

    def third(**kwargs):
        return 3

    sig.connect(third)
    sig.connect(third)  # connected once
    assert sig.send(sender="other", value=1) == [(first, ("other", "demo", 1)), (third, 3)]
    answers = [a for _, a in sig.send(sender="proj.tasks.add", value=2)]
    assert answers == [("proj.tasks.add", "demo", 2), "add", 3]
    assert sig.disconnect(third) and not sig.disconnect(third)
    assert [a for _, a in sig.send(sender="other")] == [("other", "demo", 0)]


def test_a_sender_filter_matches_a_task_by_itself_or_by_its_name(fresh: list[Beatq]) -> None:
    app = Celery("filter", broker="memory://filter")
    fresh.append(app)

    @app.task
    def add(x, y):
        return x + y

    sig = Signal("task-ish")
    got: list[str] = []
    sig.connect(lambda sender=None, **kw: got.append("by task"), sender=add, weak=False)
    sig.connect(lambda sender=None, **kw: got.append("by name"), sender=add.name, weak=False)
    sig.send(sender=add)
    sig.send(sender=add.name)
    sig.send(sender="something.else")
    assert got == ["by task", "by name", "by task", "by name"]


def test_a_raising_receiver_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sig = Signal("fragile")
    calls: list[str] = []

    def broken(**kwargs):
        raise ValueError("receiver broke")

    def fine(**kwargs):
        calls.append("fine")

    sig.connect(broken)
    sig.connect(fine)
    with caplog.at_level(logging.ERROR, logger="beatq.signals"):
        answers = sig.send(sender=None)
    assert calls == ["fine"]
    assert isinstance(answers[0][1], ValueError) and answers[1] == (fine, None)
    assert "receiver broke" in caplog.text


def test_weak_receivers_go_with_their_object_and_strong_ones_stay() -> None:
    sig = Signal("weak")

    class Listener:
        def __init__(self) -> None:
            self.calls = 0

        def on(self, **kwargs):
            self.calls += 1

    listener = Listener()
    sig.connect(listener.on)  # a bound method, held weakly (Celery's default)
    sig.connect(lambda **kw: "kept", weak=False, dispatch_uid="kept")
    sig.send(sender=None)
    assert listener.calls == 1
    del listener
    gc.collect()
    assert [a for _, a in sig.send(sender=None)] == ["kept"]
    assert len(sig.receivers) == 1
    assert sig.disconnect(dispatch_uid="kept") and not sig.receivers


def test_every_celery_signal_name_exists() -> None:
    names = """before_task_publish after_task_publish task_received task_prerun task_postrun
    task_success task_failure task_retry task_revoked task_unknown task_rejected worker_init
    worker_process_init worker_ready worker_shutting_down worker_shutdown beat_init
    beat_embedded_init setup_logging after_setup_logger celeryd_init""".split()
    for name in names:
        assert isinstance(getattr(signals, name), Signal), name


def test_exception_info_holds_the_exception_and_its_traceback() -> None:
    try:
        raise KeyError("x")
    except KeyError:
        einfo = ExceptionInfo()
    assert einfo.type is KeyError and isinstance(einfo.exception, KeyError)
    assert einfo.traceback.startswith("Traceback") and str(einfo) == einfo.traceback


# -- Celery keywords beatq does not honour are refused, never dropped -----------------------
@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda a: a.control.broadcast("ping", pattern="w*"), "destination="),
        (lambda a: a.control.ping(connection=object()), "app's broker"),
        (lambda a: a.control.inspect(limit=1), "inspect()"),
        (lambda a: a.control.revoke("x", reply=True), "app.control.revoked()"),
        (lambda a: a.control.purge(connection=object()), "app's broker"),
        (lambda a: a.control.shutdown(colour="red"), "unexpected keyword argument 'colour'"),
        (lambda a: a.AsyncResult("x").get(on_message=print), "progress"),
        (lambda a: a.AsyncResult("x").get(callback=print), "once"),
        (lambda a: a.AsyncResult("x").get(PROPAGATE_STATES=["X"]), "FAILURE and REVOKED"),
        (lambda a: signals.task_success.connect(print, retry=True), "never retried"),
        (lambda a: a.signature("t").freeze(group_index=1), "beatq's needs none"),
    ],
)
def test_a_celery_keyword_beatq_does_not_honour_is_refused_by_name(call, message) -> None:
    app = Beatq("kw", broker="memory://kw", set_as_current=False)
    with pytest.raises(TypeError, match=message):
        call(app)
    app.close()


def test_get_takes_no_ack_and_update_state_refuses_what_it_does_not_store() -> None:
    app = Beatq("sync", broker="memory://sync", set_as_current=False)
    app.conf.task_always_eager = True

    @app.task
    def inner():
        return 1

    @app.task
    def outer():
        return inner.delay().get(no_ack=False, disable_sync_subtasks=True)  # eager: no worker

    assert outer.delay().get() == 1

    @app.task(bind=True)
    def progress(self):
        with pytest.raises(TypeError, match="unexpected keyword argument 'request'"):
            self.update_state(state="PROGRESS", meta={"done": 1}, request=None)
        return "checked"

    assert progress.delay().get() == "checked"
    app.close()


@pytest.mark.backends("memory")
def test_in_a_worker_get_with_disable_sync_subtasks_raises_as_celery(app, start_worker) -> None:
    from tests.proj.tasks import waits_for

    start_worker("-P", "threads", "-c", "2")
    assert waits_for.delay(False).get(timeout=10) == "x"  # beatq lets a task wait by default
    with pytest.raises(RuntimeError, match="disable_sync_subtasks=True"):
        waits_for.delay(True).get(timeout=10)
