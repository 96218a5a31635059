"""Celery's configuration pages, and its "First steps with Django": settings as Celery
projects write them, and the traps beatq names instead of falling into silently.

- `config_from_object("django.conf:settings", namespace="CELERY")` with a real Django
  settings module, and `autodiscover_tasks()` reading INSTALLED_APPS in a real worker;
- a setting beatq does not read (a typo, or one of Celery's it has no use for) is named
  in one warning, with a did-you-mean;
- a process with no broker configured says which SQLite file it uses;
- a naive eta that lies in the past (`datetime.utcnow()` under an app zone east of UTC)
  is warned about once, naming the fix.
"""

from __future__ import annotations

import importlib
import logging
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import beatq.app
import beatq.conf
import beatq.context
from beatq import Beatq, Celery
from beatq.discovery import DiscoveryError
from tests.conftest import ROOT, scaled, wait_for


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on sys.path for this test's modules (forgotten afterwards); apps made
    here stay out of current_app; each warning may be given again."""
    monkeypatch.setattr(beatq.context, "_current", list(beatq.context._current))
    monkeypatch.setattr(beatq.conf, "_warned", set())
    monkeypatch.delenv("BEATQ_BROKER_URL", raising=False)
    folder = tmp_path / "mods"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    before = set(sys.modules)
    shared_before = len(beatq.app._shared_tasks)
    yield folder
    for name in set(sys.modules) - before:
        module = sys.modules.get(name)
        if module is not None and str(getattr(module, "__file__", "")).startswith(str(folder)):
            del sys.modules[name]
    # the shared tasks the test's modules made bind to every app made later: forget them
    for shared in beatq.app._shared_tasks[shared_before:]:
        for app, task in list(shared._tasks.items()):
            app.tasks.pop(task.name, None)
    del beatq.app._shared_tasks[shared_before:]


def write(folder: Path, files: dict[str, str]) -> None:
    for rel, source in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    importlib.invalidate_caches()


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# -- Django: settings with the CELERY namespace, autodiscover_tasks ----------------------------
def django_project(folder: Path, tag: str, settings: str = "") -> str:
    """A Django project as Celery's Django page lays it out; returns its package name."""
    proj = f"djproj_{tag}"
    write(
        folder,
        {
            f"{proj}/__init__.py": """
                from .celery import app as celery_app

                __all__ = ("celery_app",)
            """,
            f"{proj}/settings.py": f"""
                import os

                SECRET_KEY = "test"
                DEBUG = True
                INSTALLED_APPS = [
                    "django.contrib.contenttypes",  # a package without tasks: skipped
                    "blog_{tag}",
                    "shop_{tag}.apps.ShopConfig",  # an AppConfig path, as Django allows
                ]
                CELERY_BROKER_TRANSPORT_OPTIONS = {{
                    "global_keyprefix": os.environ.get("BEATQ_TEST_PREFIX", "beatq-test"),
                }}
                CELERY_TIMEZONE = "Asia/Shanghai"
                CELERY_TASK_ROUTES = {{"blog_{tag}.tasks.*": {{"queue": "blog"}}}}
                CELERY_BEAT_SCHEDULE_FILES = []
                {settings}
            """,
            f"{proj}/celery.py": f"""
                import os

                from beatq import Celery

                os.environ.setdefault("DJANGO_SETTINGS_MODULE", "{proj}.settings")

                app = Celery("{proj}")
                app.config_from_object("django.conf:settings", namespace="CELERY")
                app.autodiscover_tasks()
            """,
            f"blog_{tag}/__init__.py": "",
            f"blog_{tag}/tasks.py": """
                from django.apps import apps

                from beatq import shared_task

                apps.check_apps_ready()  # as a tasks module importing models needs


                @shared_task
                def hello(name):
                    return f"hello {name}"
            """,
            f"shop_{tag}/__init__.py": "",
            f"shop_{tag}/apps.py": f"""
                from django.apps import AppConfig


                class ShopConfig(AppConfig):
                    name = "shop_{tag}"
            """,
            f"shop_{tag}/tasks.py": """
                from beatq import shared_task


                @shared_task
                def total(prices):
                    return sum(prices)
            """,
        },
    )
    return proj


@pytest.fixture
def django_settings() -> Iterator[None]:
    """Django's settings as new, before and after the test (its app registry is left
    alone: the tests that need it run in processes of their own)."""
    pytest.importorskip("django")  # in the test extras; a venv made before it skips
    from django import conf as django_conf
    from django.utils.functional import empty

    django_conf.settings._wrapped = empty
    yield
    django_conf.settings._wrapped = empty


def test_django_settings_are_read_under_the_celery_namespace(
    modules: Path, django_settings: None, caplog: pytest.LogCaptureFixture, monkeypatch
) -> None:
    tag = uuid.uuid4().hex[:6]
    store = f"memory://dj-{tag}"
    proj = django_project(
        modules,
        tag,
        f"""
                CELERY_BROKER_URL = "{store}"
                CELERY_RESULT_BACKEND = "{store}"
                CELERY_TASK_DEFAULT_QUEU = "web"  # a typo
                BROKER_URL = "redis://unused"  # Celery's old name, without the namespace
        """,
    )
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", f"{proj}.settings")
    with caplog.at_level(logging.WARNING):
        app = importlib.import_module(f"{proj}.celery").app
    conf = app.conf
    assert (conf.broker_url, conf.result_backend) == (store, store)
    assert conf.timezone == "Asia/Shanghai"
    assert conf.task_routes == {f"blog_{tag}.tasks.*": {"queue": "blog"}}
    assert "debug" not in conf and "DEBUG" not in conf and "secret_key" not in conf
    assert conf.task_default_queue == "celery"  # not the typo's
    assert warnings_of(caplog) == [
        "setting 'BROKER_URL' is not read: with namespace 'CELERY' only CELERY_* names are; "
        "name it 'CELERY_BROKER_URL'",
        "unknown setting 'CELERY_TASK_DEFAULT_QUEU': beatq does not read it, so it has no "
        "effect (did you mean 'CELERY_TASK_DEFAULT_QUEUE'?)",
    ]

    # autodiscover_tasks() waits for the start (a worker's, a beat's: the next test)
    assert app._discover == [(None, "tasks")]
    assert f"blog_{tag}.tasks.hello" not in app.tasks
    sent = app.send_task(f"blog_{tag}.tasks.hello", ("django",))
    assert app.broker.queue_length("blog") == 1  # CELERY_TASK_ROUTES routed it
    assert sent.id

    # the same settings without the namespace: the new names are not read, and said so
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        plain = Beatq("plain", broker="memory://plain", set_as_current=False)
        plain.config_from_object("django.conf:settings")
    assert plain.conf.timezone == "Asia/Shanghai"  # CELERY_TIMEZONE: Celery's old name
    assert plain.conf.task_routes == {}
    assert (
        "setting 'CELERY_TASK_ROUTES' is not read: it is 'task_routes' under namespace "
        "'CELERY'; load it with config_from_object(..., namespace=\"CELERY\")"
    ) in warnings_of(caplog)


@pytest.mark.backends("redis", "sqlite")
def test_a_django_project_runs_its_apps_tasks_in_a_real_worker(
    env: dict[str, str], tmp_path: Path, prefix: str
) -> None:
    pytest.importorskip("django")
    folder = tmp_path / "site"
    tag = uuid.uuid4().hex[:6]
    proj = django_project(folder, tag)
    log = tmp_path / "worker.log"
    name = f"dj-{tag}"
    child_env = {**env, "PYTHONPATH": f"{folder}{os.pathsep}{ROOT}"}
    child_env.pop("DJANGO_SETTINGS_MODULE", None)
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "beatq", "-A", proj, "worker", "-n", name, "-Q", "blog,celery"],
            env=child_env,
            cwd=folder,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    client = Beatq("client")
    client.conf.broker_transport_options = {"global_keyprefix": prefix}
    try:
        wait_for(lambda: name in client.broker.workers() or worker.poll() is not None, 60)
        assert worker.poll() is None, log.read_text()
        hello = client.send_task(f"blog_{tag}.tasks.hello", ("django",), queue="blog")
        total = client.send_task(f"shop_{tag}.tasks.total", ([1, 2, 3],))
        assert hello.get(timeout=scaled(20)) == "hello django"
        assert total.get(timeout=scaled(20)) == 6
    finally:
        worker.terminate()
        worker.wait(scaled(10))
        client.close()
        beatq.context._current[:] = [a for a in beatq.context._current if a is not client]


# -- autodiscover_tasks with packages -----------------------------------------------------------
def test_autodiscover_is_lazy_skips_packages_without_tasks_and_reports_a_broken_one(
    modules: Path,
) -> None:
    write(
        modules,
        {
            "ad_one/__init__.py": "",
            "ad_one/tasks.py": """
                from beatq import shared_task


                @shared_task
                def one():
                    return 1
            """,
            "ad_none/__init__.py": "",  # no tasks module: skipped, as Celery skips it
            "ad_broken/__init__.py": "",
            "ad_broken/tasks.py": "import missing_dependency_xyz\n",
            "ad_jobs/__init__.py": "",
            "ad_jobs/jobs.py": """
                from beatq import shared_task


                @shared_task
                def job():
                    return "job"
            """,
        },
    )
    app = Beatq("ad", broker="memory://ad")
    asked = []

    def installed() -> list[str]:  # read when the modules are imported, not before
        asked.append(True)
        return ["ad_one", "ad_none"]

    app.autodiscover_tasks(installed)
    app.autodiscover_tasks(["ad_jobs"], related_name="jobs")
    assert not asked and "ad_one.tasks.one" not in app.tasks
    app.import_modules()
    assert asked == [True]
    assert {"ad_one.tasks.one", "ad_jobs.jobs.job"} <= set(app.tasks)

    with pytest.raises(DiscoveryError) as raised:
        app.autodiscover_tasks(["ad_broken"], force=True)
    assert isinstance(raised.value, ImportError)
    assert str(raised.value) == (
        "cannot import ad_broken.tasks (autodiscover_tasks): "
        "No module named 'missing_dependency_xyz'"
    )
    with pytest.raises(ImportError, match="cannot import 'ad_missing_package'"):
        app.autodiscover_tasks(["ad_missing_package"], force=True)
    app.close()


def test_a_worker_whose_tasks_module_is_broken_stops_with_its_error(
    modules: Path, tmp_path: Path
) -> None:
    write(
        modules,
        {
            "adw/__init__.py": """
                from beatq import Celery

                app = Celery("adw")
                app.autodiscover_tasks(["adw.good", "adw.bad"])
            """,
            "adw/good/__init__.py": "",
            "adw/good/tasks.py": "",
            "adw/bad/__init__.py": "",
            "adw/bad/tasks.py": "from .models import Order\n",
        },
    )
    env = {
        **os.environ,
        "PYTHONPATH": f"{modules}{os.pathsep}{ROOT}",
        "BEATQ_BROKER_URL": f"sqlite:///{tmp_path / 'w.sqlite3'}",
    }
    ran = subprocess.run(
        [sys.executable, "-m", "beatq", "-A", "adw", "worker", "-P", "solo"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )
    assert ran.returncode == 2, ran.stderr
    assert ran.stderr.strip().splitlines()[-1] == (
        "Error: cannot import adw.bad.tasks (autodiscover_tasks): No module named 'adw.bad.models'"
    )


# -- settings beatq does not read ---------------------------------------------------------------
def test_unknown_settings_are_warned_about_once_with_a_did_you_mean(
    modules: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(
        modules,
        {
            "typo_config.py": """
                import os

                broker_url = "memory://typo"
                task_serializr = "json"
                worker_hijack_root_logger = False
                broker_connection_retry_on_startup = True
                task_queues = ["billing"]  # read by purge: no word
                CELERYD_TASK_TIME_LIMT = 10
                CELERYBEAT_SCHEDULE = {}
                DEBUG = True
            """
        },
    )
    with caplog.at_level(logging.WARNING, logger="beatq.conf"):
        app = Beatq("typo", brokr_url="redis://localhost:6379/0")
        app.conf.brokr_url = "redis://localhost:6379/1"  # the same key again: no second word
        app.conf.update(timezon="Asia/Shanghai")
        app.config_from_object("typo_config")
    assert warnings_of(caplog) == [
        "unknown setting 'brokr_url': beatq does not read it, so it has no effect "
        "(did you mean 'broker_url'?)",
        "unknown setting 'timezon': beatq does not read it, so it has no effect "
        "(did you mean 'timezone'?)",
        "unknown setting 'CELERYD_TASK_TIME_LIMT': beatq does not read it, so it has no "
        "effect (did you mean 'CELERYD_TASK_TIME_LIMIT'?)",
        "unknown setting 'task_serializr': beatq does not read it, so it has no effect "
        "(did you mean 'task_serializer'?)",
        "setting 'worker_hijack_root_logger' is Celery's; beatq does not read it, so it has "
        "no effect",
    ]
    # what was meant is not taken from the typo: the broker is the config's
    assert app.conf.broker_url == "memory://typo"
    assert app.conf.brokr_url == "redis://localhost:6379/1"  # kept, as Celery keeps it
    app.close()


def test_a_client_and_a_worker_with_no_broker_say_which_sqlite_file_they_share(
    modules: Path, tmp_path: Path
) -> None:
    write(
        modules,
        {
            "nobroker.py": """
                from beatq import Celery

                app = Celery("nobroker", brokr_url="redis://127.0.0.1:1/0")  # a typo


                @app.task
                def add(x, y):
                    return x + y
            """
        },
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEATQ_")}
    env["PYTHONPATH"] = f"{modules}{os.pathsep}{ROOT}"
    here = tmp_path / "here"
    here.mkdir()
    path = here / "beatq.sqlite3"
    with open(tmp_path / "worker.log", "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "beatq", "-A", "nobroker", "worker", "-P", "solo", "-l", "info"],
            env=env,
            cwd=here,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        client = subprocess.run(
            [
                sys.executable,
                "-c",
                "import logging; logging.basicConfig(level=logging.INFO)\n"
                "from nobroker import add\n"
                "print(add.delay(2, 3).get(timeout=30))",
            ],
            env=env,
            cwd=here,
            capture_output=True,
            text=True,
            timeout=scaled(60),
        )
        assert client.stdout.strip() == "5", client.stderr
        said = f"no broker_url is set: using the embedded default, the SQLite file {path} "
        assert said in client.stderr
        assert client.stderr.count("no broker_url is set") == 1
        assert "unknown setting 'brokr_url'" in client.stderr
        assert "did you mean 'broker_url'?" in client.stderr
        log = (tmp_path / "worker.log").read_text
        wait_for(lambda: said in log(), 10, "the worker's line")
        assert "unknown setting 'brokr_url'" in log()
    finally:
        worker.terminate()
        worker.wait(scaled(10))


# -- the naive eta --------------------------------------------------------------------------
def test_a_naive_eta_in_the_past_is_read_in_the_app_zone_and_warned_about_once(
    modules: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(beatq.app, "_warned_naive_eta", False)
    app = Beatq("eta", broker=f"memory://eta-{uuid.uuid4().hex[:6]}", timezone="Asia/Shanghai")

    @app.task
    def ping():
        return "pong"

    def utcnow() -> datetime:  # datetime.utcnow(), without its deprecation warning
        return datetime.now(timezone.utc).replace(tzinfo=None)

    with caplog.at_level(logging.WARNING, logger="beatq.app"):
        # aware, or naive in the app's own zone: exact, and no word
        ping.apply_async(eta=datetime.now(timezone.utc) + timedelta(seconds=3))
        local = datetime.now(app.timezone).replace(tzinfo=None)
        ping.apply_async(eta=local + timedelta(seconds=3))
        assert warnings_of(caplog) == []
        # the trap: a UTC wall time read as Shanghai's, 8 hours ago: runs now, as SPEC §4 says
        trapped = ping.apply_async(eta=utcnow() + timedelta(seconds=3))
        ping.apply_async(eta=utcnow() + timedelta(seconds=3))
    [warning] = warnings_of(caplog)
    assert "has no time zone, so it is read in the app's timezone (Asia/Shanghai)" in warning
    assert "8.0 h ago, and the task runs at once" in warning
    assert "datetime.now(timezone.utc) + timedelta(...), not datetime.utcnow()" in warning
    assert app.broker.queue_length("celery") == 2  # the two trapped ones are ready now
    delayed = {claim.id for _, claim in app.broker.scheduled()}
    assert len(delayed) == 2 and trapped.id not in delayed
    app.close()


# -- the constructor ------------------------------------------------------------------------
def test_celerys_constructor_arguments(modules: Path) -> None:
    write(
        modules,
        {
            "ctor_base.py": """
                from beatq import Task


                class Audited(Task):
                    audited = True
            """,
            "ctor_settings.py": """
                CELERY_TASK_DEFAULT_QUEUE = "from.namespace"
                task_default_queue = "not read: no prefix"
            """,
        },
    )
    current = Beatq("current")
    app = Celery(
        "ctor",
        config_source="ctor_settings",
        namespace="CELERY",
        task_cls="ctor_base:Audited",
        set_as_current=False,
        changes={"timezone": "Europe/Paris"},
    )
    assert beatq.context.current_app() is current  # set_as_current=False
    assert app.conf.task_default_queue == "from.namespace"
    assert app.conf.timezone == "Europe/Paris"

    @app.task
    def ping():
        return "pong"

    assert type(ping).__name__ == "Audited" and ping.audited is True
    assert app.Task is type(ping)  # Celery's app.Task: the base of the app's tasks

    class Timed(app.Task):  # as Celery's "custom task classes" write it
        timed = True

    app.Task = Timed

    @app.task
    def pong():
        return "ping"

    assert isinstance(pong, Timed) and pong.audited and pong.timed
    assert app.config_from_object("no_such_settings_xyz", silent=True) is False
    with pytest.raises(TypeError, match=r"Celery\(loader=\.\.\.\) is not supported by beatq"):
        Celery("ctor", loader="celery.loaders.app:AppLoader")
