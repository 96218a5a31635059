"""Configuration as Celery users write it: settings, old names, env overrides, eager mode, -A."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import beatq.context
from beatq import Beatq, messages
from beatq.brokers import connect
from beatq.cli.base import find_app
from beatq.exceptions import ConfigurationError
from beatq.result import EagerResult
from tests.conftest import ROOT
from tests.proj import journal


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on sys.path for this test's modules; apps made here stay out of current_app."""
    monkeypatch.setattr(beatq.context, "_current", list(beatq.context._current))
    folder = tmp_path / "mods"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    before = set(sys.modules)
    yield folder
    for name in set(sys.modules) - before:
        module = sys.modules.get(name)
        if module is not None and str(getattr(module, "__file__", "")).startswith(str(folder)):
            del sys.modules[name]


def write(folder: Path, files: dict[str, str]) -> str:
    """Write a package of `files` (relative path -> source) under a fresh name; return it."""
    name = f"cfgpkg_{uuid.uuid4().hex[:8]}"
    for rel, source in files.items():
        path = folder / name / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    importlib.invalidate_caches()
    return name


def sent_header(backend, message_id: str) -> tuple[str, dict]:
    """The queue and header of a message parked in the broker with a countdown."""
    for _, claim in backend.scheduled():
        if claim.id == message_id:
            return claim.queue, messages.read_header(claim.body)
    raise AssertionError(f"message {message_id} is not in the broker")


# -- settings ----------------------------------------------------------------------------------
def test_lowercase_settings_through_conf_update(modules, redis_url, prefix, monkeypatch):
    monkeypatch.delenv("BEATQ_BROKER_URL", raising=False)
    app = Beatq("cfg", broker=redis_url)
    app.conf.update(
        timezone="Asia/Shanghai",
        task_serializer="msgpack",
        task_compression="zlib",
        task_default_queue="cfg.default",
        result_expires=30,
        broker_transport_options={"global_keyprefix": prefix},
    )

    @app.task
    def ping():
        return "pong"

    assert app.conf.timezone == app.conf["timezone"] == "Asia/Shanghai"
    assert app.timezone == ZoneInfo("Asia/Shanghai")
    assert app.now().utcoffset() == timedelta(hours=8)
    assert app.conf.result_expires == 30
    result = ping.apply_async(countdown=60)
    queue, header = sent_header(app.broker, result.id)
    assert queue == "cfg.default"
    assert (header["ct"], header["ce"]) == ("application/x-msgpack", "zlib")
    app.close()


def test_config_from_object_with_old_uppercase_names(modules, redis_url, prefix, monkeypatch):
    monkeypatch.delenv("BEATQ_BROKER_URL", raising=False)
    name = write(
        modules,
        {
            "__init__.py": "",
            "celeryconfig.py": f"""
                import os
                BROKER_URL = {redis_url!r}
                BROKER_TRANSPORT_OPTIONS = {{"global_keyprefix": {prefix!r}}}
                CELERY_TIMEZONE = "Asia/Shanghai"
                CELERY_ENABLE_UTC = True
                CELERY_TASK_SERIALIZER = "msgpack"
                CELERY_ACCEPT_CONTENT = ["json", "msgpack"]
                CELERY_DEFAULT_QUEUE = "old.default"
                CELERY_TASK_RESULT_EXPIRES = 120
                CELERY_TRACK_STARTED = True
                CELERYD_PREFETCH_MULTIPLIER = 1
                CELERYBEAT_SCHEDULE = {{"every-minute": {{"task": "x", "schedule": 60}}}}
                """,
        },
    )
    app = Beatq("old")
    app.config_from_object(f"{name}.celeryconfig")
    conf = app.conf
    assert conf.broker_url == redis_url
    assert conf.timezone == "Asia/Shanghai" and app.timezone == ZoneInfo("Asia/Shanghai")
    assert conf.task_serializer == "msgpack"
    assert conf.accept_content == ["json", "msgpack"]
    assert conf.task_default_queue == "old.default"
    assert conf.result_expires == 120
    assert conf.task_track_started is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.beat_schedule == {"every-minute": {"task": "x", "schedule": 60}}
    assert conf.CELERY_TIMEZONE == "Asia/Shanghai"  # the old names read back too
    assert "os" not in conf  # a module imported by the config file is not a setting

    @app.task
    def ping():
        return "pong"

    result = ping.apply_async(countdown=60)
    queue, header = sent_header(app.broker, result.id)
    assert (queue, header["ct"]) == ("old.default", "application/x-msgpack")
    app.close()


def test_config_from_object_with_a_class_and_a_bad_path(modules):
    class Config:
        timezone = "Europe/Paris"
        task_default_queue = "from.class"

    app = Beatq("obj")
    app.config_from_object(Config)
    assert (app.conf.timezone, app.conf.task_default_queue) == ("Europe/Paris", "from.class")
    with pytest.raises(ConfigurationError, match="no_such_config_module"):
        app.config_from_object("no_such_config_module")


def test_beatq_broker_url_env_overrides_the_code(modules, redis_url, prefix, monkeypatch):
    monkeypatch.setenv("BEATQ_BROKER_URL", redis_url)
    monkeypatch.setenv("BEATQ_RESULT_BACKEND", redis_url.rsplit("/", 1)[0] + "/3")
    app = Beatq("env", broker="redis://127.0.0.1:1/0", backend="redis://127.0.0.1:1/1")
    app.conf.update(broker_url="redis://127.0.0.1:2/0")
    app.conf.broker_transport_options = {"global_keyprefix": prefix}
    assert app.conf.broker_url == redis_url
    assert app.result_store.url.endswith("/3")

    @app.task
    def ping():
        return "pong"

    ping.delay()  # port 1 would refuse the connection: the message reaches the env's broker
    backend = connect(redis_url, {"global_keyprefix": prefix})
    assert backend.queue_length("celery") == 1
    backend.close()
    app.close()


# -- task_always_eager -------------------------------------------------------------------------
@pytest.fixture
def eager(app, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(app.conf, "task_always_eager", True)
    return app


def test_always_eager_runs_in_process_and_returns_an_eager_result(eager):
    from tests.proj.tasks import add, cfg_note

    result = add.apply_async((2, 2), link=cfg_note.s())
    assert isinstance(result, EagerResult)
    assert result.get() == 4 and result.result == 4
    assert (result.state, result.ready(), result.successful()) == ("SUCCESS", True, True)
    assert journal("note") == ["4"]  # the link ran too, here and now
    assert add.delay(1, 2).get(timeout=1) == 3
    assert eager.broker.queue_length("celery") == 0  # nothing was sent


def test_always_eager_failure_and_retries(eager, monkeypatch):
    from tests.proj.tasks import (
        CustomError,
        auto_flaky,
        cfg_note,
        errback_new,
        errback_old,
        fail,
        flaky,
    )

    result = fail.apply_async(("eager boom",), link_error=[errback_old.s(), errback_new.s()])
    assert isinstance(result, EagerResult)
    assert journal("errback") == [f"old:{result.id}", f"new:{result.id}:CustomError:eager boom"]
    assert (result.state, result.failed()) == ("FAILURE", True)
    with pytest.raises(CustomError, match="^eager boom$"):
        result.get()
    assert isinstance(result.get(propagate=False), CustomError)
    assert "raise CustomError(message)" in result.traceback

    assert flaky.apply_async((2,), link=cfg_note.s()).get() == 2
    assert journal("flaky") == ["0", "1", "2"]
    assert journal("note") == ["2"]  # the link survives the retries
    auto = auto_flaky.delay("eager-auto")
    assert auto.state == "FAILURE" and isinstance(auto.result, CustomError)
    assert journal("auto") == ["eager-auto"] * 3

    monkeypatch.setitem(eager.conf, "task_eager_propagates", True)
    with pytest.raises(CustomError, match="^propagated$"):
        fail.delay("propagated")


# -- -A: finding the app -----------------------------------------------------------------------
APP_SOURCE = """
    from beatq import Beatq
    {name} = Beatq({label!r})
"""


@pytest.mark.parametrize("attribute", ["app", "beatq", "celery", "my_queue_app"])
def test_find_app_by_module_attribute(modules, attribute):
    source = APP_SOURCE.format(name=attribute, label=attribute)
    if attribute != "my_queue_app":
        # An app under another name, defined first: the well-known name must still win.
        source = APP_SOURCE.format(name="decoy", label="decoy") + source
    name = write(modules, {"__init__.py": source})
    found = find_app(name)
    assert found.main == attribute
    assert find_app(f"{name}:{attribute}") is found


def test_find_app_prefers_app_and_takes_an_explicit_attribute_or_factory(modules):
    name = write(
        modules,
        {
            "__init__.py": """
                from beatq import Beatq
                celery = Beatq("the celery one")
                app = Beatq("the app one")
                second = Beatq("second")

                def create_app():
                    return Beatq("made")
            """,
            "sub.py": APP_SOURCE.format(name="app", label="in sub"),
        },
    )
    assert find_app(name).main == "the app one"
    assert find_app(f"{name}:second").main == "second"
    assert find_app(f"{name}:create_app").main == "made"
    assert find_app(f"{name}.sub").main == "in sub"
    assert find_app(f"{name}.sub:app").main == "in sub"


@pytest.mark.parametrize("submodule", ["beatq", "celery"])
def test_find_app_in_a_beatq_or_celery_submodule(modules, submodule):
    name = write(
        modules,
        {
            "__init__.py": "",
            f"{submodule}.py": APP_SOURCE.format(name="app", label=f"from {submodule}.py"),
        },
    )
    assert find_app(name).main == f"from {submodule}.py"


def test_find_app_in_the_django_style_layout(modules):
    # Celery's documented layout: proj/celery.py holds the app, proj/__init__.py imports it.
    name = write(
        modules,
        {
            "__init__.py": """
                from .celery import app as celery_app

                __all__ = ("celery_app",)
            """,
            "celery.py": APP_SOURCE.format(name="app", label="django style"),
        },
    )
    assert find_app(name).main == "django style"


def test_find_app_errors_name_the_module(modules):
    with pytest.raises(ConfigurationError, match="no_such_module_xyz"):
        find_app("no_such_module_xyz")
    broken = write(modules, {"__init__.py": "import missing_dependency_xyz\n"})
    with pytest.raises(ConfigurationError, match=f"{broken}.*missing_dependency_xyz"):
        find_app(broken)
    empty = write(modules, {"__init__.py": "VALUE = 1\n"})
    with pytest.raises(ConfigurationError, match=empty):
        find_app(empty)
    with pytest.raises(ConfigurationError, match=f"{empty}:VALUE"):
        find_app(f"{empty}:VALUE")


def test_cli_with_a_bad_app_path_exits_2_naming_it(modules):
    out = subprocess.run(
        [sys.executable, "-m", "beatq", "-A", "no_such_module_xyz", "worker"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert out.returncode == 2
    assert "no_such_module_xyz" in out.stderr
    assert "Traceback" not in out.stderr


def test_no_setting_beatq_reads_is_called_celerys_alone() -> None:
    """A Celery setting beatq honours is in DEFAULTS; the list of those it does not read
    (warned about as having no effect) must not name it too."""
    from beatq.conf import CELERY_ONLY, DEFAULTS

    assert sorted(set(DEFAULTS) & CELERY_ONLY) == []


def test_a_setting_read_as_an_attribute_is_the_one_stored_now(monkeypatch):
    from beatq.conf import _TRANSLATED, Settings
    from beatq.task import TASK_DEFAULTS

    conf = Settings()
    assert conf.task_default_queue == conf["task_default_queue"] == "celery"
    conf.update(task_default_queue="a")
    assert conf.task_default_queue == "a"
    conf["task_default_queue"] = "b"
    assert conf.task_default_queue == "b"
    del conf["task_default_queue"]
    with pytest.raises(AttributeError, match="no setting 'task_default_queue'"):
        _ = conf.task_default_queue
    assert getattr(conf, "task_default_queue", "gone") == "gone"
    monkeypatch.setenv("BEATQ_BROKER_URL", "memory://from-env")
    assert conf.broker_url == conf["broker_url"] == "memory://from-env"
    monkeypatch.delenv("BEATQ_BROKER_URL")
    assert conf.broker_url == "sqlite:///beatq.sqlite3"
    assert "task_default_queue" not in dir(conf)  # settings are keys, not attributes
    # Task.option reads these straight from the dict: none may be translated
    assert not {s for s in TASK_DEFAULTS.values() if s} & _TRANSLATED
