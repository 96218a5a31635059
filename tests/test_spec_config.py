"""SPEC §1 and §4 settings that no other test pins down.

- `enable_utc` (default true) keeps stored timestamps in UTC. beatq always does; Celery's
  `enable_utc=False` (local times stored) is not offered, so it is refused loudly where it
  is set, never taken and ignored.
- `worker_concurrency` is the pool size of a worker started without `-c`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest

from beatq import Beatq
from beatq.exceptions import ConfigurationError
from tests.conftest import ROOT, WorkerProcess, scaled, wait_for, wait_ready
from tests.proj import journal


def test_enable_utc_is_true_by_default_and_true_is_taken():
    app = Beatq("utc", broker="memory://spec-utc")
    assert app.conf.enable_utc is True
    app.conf.update(enable_utc=True)
    config = types.SimpleNamespace(CELERY_ENABLE_UTC=True)
    app.config_from_object(config)
    assert app.conf.enable_utc is True


@pytest.mark.parametrize(
    "how",
    ["update", "attribute", "old name", "config_from_object"],
)
def test_enable_utc_false_is_refused_naming_the_setting_and_the_fix(how):
    app = Beatq("utc", broker="memory://spec-utc")
    with pytest.raises(ConfigurationError) as info:
        if how == "update":
            app.conf.update(timezone="Europe/Paris", enable_utc=False)
        elif how == "attribute":
            app.conf.enable_utc = False
        elif how == "old name":
            app.conf["CELERY_ENABLE_UTC"] = False
        else:
            app.config_from_object(types.SimpleNamespace(CELERY_ENABLE_UTC=False))
    message = str(info.value)
    assert "ENABLE_UTC" in message.upper() and "=False" in message
    assert "set timezone" in message, "names the fix"
    assert app.conf.enable_utc is True, "the refused value is not kept"


def test_a_worker_whose_app_sets_enable_utc_false_exits_2_in_one_line(env):
    proc = subprocess.run(
        [sys.executable, "-m", "beatq", "-A", "tests.proj", "worker", "-P", "solo"],
        env={
            **env,
            "BEATQ_TEST_INCLUDE": "tests.proj.spec_tasks",
            "BEATQ_SPEC_CONF": json.dumps({"enable_utc": False}),
        },
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=scaled(30),
    )
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith("Error: setting 'enable_utc'=False is not supported"), line


@pytest.mark.backends("redis", "sqlite")
def test_worker_concurrency_sets_the_pool_size_when_c_is_not_given(app, env, tmp_path):
    """The setting made where the app is (-A names tests.proj.spec_tasks, which applies
    BEATQ_SPEC_CONF as it is imported), as a user's app module or config would."""
    from tests.proj.tasks import dl_span

    argv = ["-A", "tests.proj.spec_tasks", "worker", "-n", "conc", "-P", "threads"]
    settings = {"BEATQ_SPEC_CONF": json.dumps({"worker_concurrency": 3})}
    worker = WorkerProcess(argv, {**env, **settings}, tmp_path / "conc.log")
    try:
        wait_ready(app.broker, "conc", lambda: worker.process.poll() is None, worker.log)
        # the banner may be written after the worker's first heartbeat
        wait_for(lambda: "pool threads, concurrency 3," in worker.log(), scaled(10), "the banner")
        results = [dl_span.delay(scaled(1), f"s{i}") for i in range(4)]
        assert sorted(r.get(timeout=scaled(10)) for r in results) == ["s0", "s1", "s2", "s3"]
    finally:
        worker.stop()
    spans = sorted((float(a), float(b)) for _, _, a, b in map(str.split, journal("spans")))
    # three at once: the first three overlap, the fourth starts after one of them ended
    first_end = min(end for _, end in spans[:3])
    assert max(start for start, _ in spans[:3]) < first_end, "three ran at once"
    assert spans[3][0] >= first_end, "not four: the fourth waited for a free slot"
