"""The tutorial, verbatim: delay, loop on ready(), get(); read it later from another process."""

import subprocess
import sys
import time

import pytest

from beatq import AsyncResult


@pytest.mark.backends("redis", "sqlite")
def test_delay_ready_get_and_read_back_from_another_process(app, start_worker, env):
    from tests.proj.tasks import add

    start_worker("-P", "solo")
    result = add.delay(4, 4)
    assert isinstance(result.id, str) and len(result.id) == 36
    deadline = time.monotonic() + 10
    while not result.ready():
        assert time.monotonic() < deadline, "the task did not finish"
        time.sleep(0.01)
    assert result.get() == 8
    assert result.state == "SUCCESS"

    code = (
        "from tests.proj import app; from beatq import AsyncResult; "
        f"r = AsyncResult({result.id!r}, app=app); print(r.state, r.get(timeout=5))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["SUCCESS", "8"]
    assert AsyncResult(result.id, app=app).result == 8
