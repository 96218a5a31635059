"""`async def` tasks are refused where they are declared (issue 22, defect 4).

Until SPEC §13 runs them natively, a worker would only create the coroutine and store it as
the task's result: SUCCESS for work that never ran. Every way of declaring one raises one
clear TypeError naming it; a coroutine that slips through behind a plain-def decorator
fails the task on a real worker instead of succeeding.
"""

from __future__ import annotations

import pytest

from beatq import Beatq, Task
from tests.conftest import scaled
from tests.proj import journal

NOT_YET = "async tasks are not supported yet; declare it with a plain def"


async def fetch(url):
    return url


async def stream(url):
    yield url


class AsyncCallable:
    async def __call__(self, url):
        return url


@pytest.fixture
def local_app():
    app = Beatq("refusals", broker="memory://")
    yield app
    app.close()


DECLARATIONS = {
    "@app.task": lambda app: app.task(fetch),
    "@app.task(bind=True)": lambda app: app.task(bind=True)(fetch),
    "@app.task(name=...)": lambda app: app.task(name="proj.fetch")(fetch),
    "@app.task(base=Custom)": lambda app: app.task(base=type("Custom", (Task,), {}))(fetch),
    "async generator": lambda app: app.task(stream),
    "object with async __call__": lambda app: app.task(name="proj.obj")(AsyncCallable()),
}


@pytest.mark.parametrize("declare", list(DECLARATIONS))
def test_every_way_of_declaring_an_async_task_is_refused_by_name(local_app, declare):
    with pytest.raises(TypeError) as caught:
        DECLARATIONS[declare](local_app)
    message = str(caught.value)
    assert NOT_YET in message
    assert "fetch" in message or "stream" in message or "proj.obj" in message, message
    assert not [n for n in local_app.tasks if not n.startswith("beatq.")], local_app.tasks


def test_a_task_subclass_with_an_async_run_is_refused_at_its_class_statement():
    with pytest.raises(TypeError) as caught:

        class Fetch(Task):
            async def run(self, url):
                return url

    assert NOT_YET in str(caught.value)
    assert "Fetch.run" in str(caught.value)


def test_a_plain_task_and_a_subclass_with_a_plain_run_still_register(local_app):
    class Plain(Task):
        def run(self, x):
            return x

    @local_app.task
    def add(x, y):
        return x + y

    assert add(2, 2) == 4
    assert local_app.tasks[add.name] is add


@pytest.mark.backends("redis", "sqlite")
def test_a_coroutine_behind_a_sync_decorator_fails_the_task_on_a_real_worker(app, start_worker):
    from tests.proj.tasks import add, ar_behind_sync

    start_worker("-P", "prefork", "-c", "1")
    res = ar_behind_sync.delay("t1")
    with pytest.raises(TypeError, match="returned a coroutine that nothing awaited"):
        res.get(timeout=scaled(10))
    assert res.state == "FAILURE"
    assert journal("ar_runs") == []
    assert add.delay(2, 3).get(timeout=scaled(10)) == 5, "the worker carries on"


def test_the_worker_cli_says_it_in_one_line(tmp_path):
    """A project that declares an async task: `beatq -A` exits 2 with one line naming it."""
    import os
    import subprocess
    import sys

    (tmp_path / "asyncproj.py").write_text(
        "from beatq import Beatq\n"
        "app = Beatq('asyncproj', broker='memory://')\n"
        "@app.task\n"
        "async def fetch(url):\n"
        "    return url\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "beatq", "-A", "asyncproj", "worker"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        capture_output=True,
        text=True,
        timeout=scaled(30),
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: task 'asyncproj.fetch' (")
    assert NOT_YET in lines[0]
