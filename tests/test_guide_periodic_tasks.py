"""Celery's periodic-tasks page: `app.on_after_configure` and `add_periodic_task`.

tests/guide/periodic.py is the page's example (intervals in tenths of seconds); a real
`beatq worker -B` runs it on Redis and SQLite. Entries added in code are the beat's like
beat_schedule's: they run under its lease, and `schedule check` shows where each was added.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import beatq.app
import beatq.context
from beatq import Beatq
from beatq.beat import Beat
from beatq.exceptions import ConfigurationError, ScheduleError
from beatq.schedules import crontab
from tests.conftest import ROOT, WorkerProcess, scaled, wait_for, wait_ready
from tests.journal import journal

pytestmark = pytest.mark.backends("redis", "sqlite")

PROJ = "tests.guide.periodic"
TEST = f"{PROJ}.test"


@pytest.fixture
def client(env: dict[str, str]) -> Iterator[Beatq]:
    """A plain app on the test's store, to read what the beat stored."""
    app = Beatq("client")
    app.conf.broker_transport_options = {"global_keyprefix": env["BEATQ_TEST_PREFIX"]}
    yield app
    app.close()
    beatq.context._current[:] = [a for a in beatq.context._current if a is not app]


@pytest.fixture
def start(
    client: Beatq, env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def run(*args: str) -> WorkerProcess:
        name = f"gp{len(started)}-{uuid.uuid4().hex[:6]}"
        argv = ["-A", PROJ, "worker", "-n", name, *args]
        proc = WorkerProcess(argv, env, tmp_path / f"{name}.log")
        started.append(proc)
        wait_ready(client.broker, name, lambda: proc.process.poll() is None, proc.log)
        return proc

    yield run
    for proc in started:
        proc.stop()


def test_entries_added_on_after_configure_run_in_a_worker_with_an_embedded_beat(
    client: Beatq, start: Callable[..., WorkerProcess]
) -> None:
    worker = start("-B", "-c", "1")
    wait_for(
        lambda: (
            (c := Counter(r["arg"] for r in journal("periodic")))["hello"] >= 4 and c["world"] >= 2
        ),
        20,
        "the periodic tasks to run",
    )
    assert worker.pid not in {r["pid"] for r in journal("periodic")}  # run by the pool
    assert "Happy Mondays!" not in {r["arg"] for r in journal("periodic")}  # not Monday 7:30 yet
    # the beat planned every entry, under Celery's names: the given ones, else the signature's
    entries = client.broker.beat_entries()
    assert sorted(entries) == sorted(
        [
            "add every 10",
            "add every 30",
            f"{TEST}('world')",
            f"{TEST}('Happy Mondays!')",
        ]
    )
    monday = entries[f"{TEST}('Happy Mondays!')"].next_run
    assert monday is not None
    when = datetime.fromtimestamp(monday, client.timezone)
    assert (when.weekday(), when.hour, when.minute) == (0, 7, 30)
    assert timedelta(0) < when - client.now() <= timedelta(days=7)


def test_schedule_check_shows_where_each_code_entry_was_added(env: dict[str, str]) -> None:
    checked = subprocess.run(
        [sys.executable, "-m", "beatq", "-A", PROJ, "schedule", "check", "-n", "2"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )
    assert checked.returncode == 0, checked.stderr
    out = checked.stdout
    source = re.escape("from add_periodic_task at tests/guide/periodic.py:")
    assert re.search(rf"^add every 10: {TEST} every 0\.5s \[UTC\] {source}\d+$", out, re.M)
    assert re.search(rf"^add every 30: {TEST} every 0\.7s \[UTC\] {source}\d+$", out, re.M)
    mondays = re.search(
        rf"^{re.escape(TEST)}\('Happy Mondays!'\): {TEST} 30 7 \* \* 1 \[UTC\] {source}\d+\n"
        r"    (\S+) 07:30:00\.000\+00:00 .*\n    (\S+) 07:30:00\.000\+00:00",
        out,
        re.M,
    )
    assert mondays, out
    days = [datetime.fromisoformat(d) for d in mondays.groups()]
    assert [d.weekday() for d in days] == [0, 0] and days[1] - days[0] == timedelta(days=7)
    assert "4 entries OK" in out


# -- in one process: the names, duplicates and the signals' order ----------------------------
@pytest.fixture
def local(monkeypatch: pytest.MonkeyPatch) -> Iterator[Beatq]:
    monkeypatch.setattr(beatq.context, "_current", list(beatq.context._current))
    local = Beatq("periodic", broker="memory://periodic-" + uuid.uuid4().hex[:8])
    local.conf.beat_schedule_files = []
    yield local
    local.close()


def test_a_name_added_twice_differently_is_refused_and_the_beat_does_not_start(local) -> None:
    @local.task
    def ping(word):
        return word

    def setup(sender, **kwargs):
        sender.add_periodic_task(10.0, ping.s("hello"))
        sender.add_periodic_task(10.0, ping.s("hello"))  # the same again: kept once
        sender.add_periodic_task(30.0, ping.s("hello"))  # Celery would replace the first

    local.on_after_configure.connect(setup, weak=False)
    local.finalize()
    name = f"{ping.name}('hello')"
    assert list(local.periodic_tasks) == [name]
    assert local.periodic_tasks[name][0]["schedule"] == 10.0
    with pytest.raises(ScheduleError, match=re.escape(f"periodic task {name!r} is added twice")):
        Beat(local, files=[]).load()
    with pytest.raises(ConfigurationError, match="give each its own name="):
        local.add_periodic_task(crontab(minute=0), ping.s("hello"))


def test_a_code_entry_with_a_beat_schedule_name_or_an_unknown_task_is_refused(local) -> None:
    @local.task
    def ping(word):
        return word

    local.conf.beat_schedule = {"ping": {"task": ping.name, "schedule": 5.0, "args": ("a",)}}
    local.add_periodic_task(5.0, ping.s("a"), name="ping")
    with pytest.raises(ScheduleError, match="'ping' is also in beat_schedule"):
        Beat(local, files=[]).load()

    other = Beatq("other", broker="memory://other-" + uuid.uuid4().hex[:8])
    other.conf.beat_schedule_files = []
    other.add_periodic_task(5.0, "proj.tasks.missing", name="gone")
    with pytest.raises(
        ScheduleError, match="periodic task 'gone': names task 'proj.tasks.missing'"
    ):
        Beat(other, files=[]).load()
    other.close()


def test_args_kwargs_and_options_merge_as_celery_merges_them(local) -> None:
    @local.task
    def add(x, y, z=0):
        return x + y + z

    name = local.add_periodic_task(
        timedelta(minutes=1),
        add.s(1).set(queue="q1"),
        args=(2,),
        kwargs={"z": 3},
        expires=30,
        catchup="skip",
    )
    assert name == f"{add.name}(2, 1, z=3)"  # new args first, as Signature.clone
    entry = Beat(local, files=[]).load()[name]
    assert (entry.args, entry.kwargs) == ([2, 1], {"z": 3})
    assert entry.options == {"queue": "q1", "expires": 30}
    assert entry.catchup == "skip"
    assert entry.source.startswith("add_periodic_task at tests/test_guide_periodic_tasks.py:")
    with pytest.raises(ConfigurationError, match="runs one task, not a group"):
        from beatq import group

        local.add_periodic_task(5, group(add.s(1, 1), add.s(2, 2)))


def test_every_key_of_a_beat_schedule_entry_is_taken_not_sent_as_an_option(local) -> None:
    @local.task
    def ping():
        return "pong"

    start, end = datetime(2027, 1, 1, 9, 0), datetime(2027, 2, 1, 9, 0)
    name = local.add_periodic_task(
        crontab(minute=0, hour=9),
        ping.s(),
        name="mornings",
        timezone="Asia/Shanghai",
        start_at=start,
        end_at=end,
        overlap="skip",
        queue="q1",
    )
    entry = Beat(local, files=[]).load()[name]
    assert entry.options == {"queue": "q1"}  # nothing of the entry's travels with the task
    zone = ZoneInfo("Asia/Shanghai")  # naive instants are in the entry's zone
    assert entry.start_at == start.replace(tzinfo=zone).timestamp()
    assert entry.end_at == end.replace(tzinfo=zone).timestamp()
    assert entry.overlap == "skip"


def test_app_signals_fire_once_in_celerys_order(local) -> None:
    fired: list[tuple[str, object, list[str]]] = []
    for signal in (local.on_configure, local.on_after_configure, local.on_after_finalize):

        def receiver(sender, signal=None, **kwargs):
            fired.append((signal.name, sender, sorted(kwargs)))

        signal.connect(receiver, weak=False)
    local.broker  # noqa: B018 (the first use of the settings configures the app)
    assert fired == [
        ("app.on_configure", local, []),
        ("app.on_after_configure", local, ["source"]),
    ]
    assert fired[-1] and local.configured and not local.finalized
    local.import_modules()  # what a worker and a beat do as they start
    local.import_modules()
    local.finalize()
    assert [f[0] for f in fired] == [
        "app.on_configure",
        "app.on_after_configure",
        "app.on_after_finalize",
    ]


def test_entries_added_on_after_finalize_see_the_discovered_tasks(local, modules_dir) -> None:
    (modules_dir / "pt_app").mkdir()
    (modules_dir / "pt_app" / "__init__.py").write_text("")
    (modules_dir / "pt_app" / "tasks.py").write_text(
        "from beatq import shared_task\n\n\n@shared_task\ndef report(kind):\n    return kind\n"
    )
    local.autodiscover_tasks(["pt_app"])

    @local.on_after_finalize.connect
    def setup(sender, **kwargs):  # the tasks modules are imported by now, as in Celery
        sender.add_periodic_task(
            crontab(minute=0, hour=9), sender.tasks["pt_app.tasks.report"].s("daily")
        )

    entries = Beat(local, files=[]).load()  # what a beat does as it starts
    entry = entries["pt_app.tasks.report('daily')"]
    assert (entry.task, entry.args, str(entry.schedule)) == (
        "pt_app.tasks.report",
        ["daily"],
        "0 9 * * *",
    )


@pytest.fixture
def modules_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = tmp_path / "mods"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    shared_before = len(beatq.app._shared_tasks)
    yield folder
    # the shared tasks the test's modules made bind to every app made later: forget them
    for shared in beatq.app._shared_tasks[shared_before:]:
        for app, task in list(shared._tasks.items()):
            app.tasks.pop(task.name, None)
    del beatq.app._shared_tasks[shared_before:]
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", "")).startswith(str(folder)):
            del sys.modules[name]


def test_an_on_after_configure_receiver_connected_after_the_first_use_still_runs(
    local, modules_dir
) -> None:
    """Celery never calls a receiver connected after on_after_configure fired (one in a
    tasks module found by autodiscover_tasks): beatq calls it as the app is finalized."""
    (modules_dir / "late_app").mkdir()
    (modules_dir / "late_app" / "__init__.py").write_text("")
    (modules_dir / "late_app" / "tasks.py").write_text(
        "from beatq import current_app\n"
        "app = current_app()\n\n\n"
        "@app.task\n"
        "def sweep():\n"
        "    return 'swept'\n\n\n"
        "@app.on_after_configure.connect\n"
        "def schedule_sweep(sender, **kwargs):\n"
        "    sender.add_periodic_task(60.0, sweep.s(), name='sweep')\n"
    )
    calls = []
    local.on_after_configure.connect(lambda sender, **kw: calls.append(sender), weak=False)
    local.autodiscover_tasks(["late_app"])
    local.broker  # noqa: B018 (the first use: on_after_configure is sent, before the import)
    assert calls == [local] and "sweep" not in local.periodic_tasks
    entries = Beat(local, files=[]).load()  # the start: imports late_app.tasks, finalizes
    assert entries["sweep"].task == "late_app.tasks.sweep"
    local.finalize()
    assert calls == [local]  # each receiver once
