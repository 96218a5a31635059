"""README "Errors to Sentry": a task failing in a real worker reaches Sentry with its task
name and id, through the task_failure signal and sentry-sdk's own client, its transport
replaced at the seam sentry-sdk documents (tests.sentry_errors), beatq itself untouched."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, scaled, wait_for

pytestmark = pytest.mark.backends("redis", "sqlite")


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_the_readme_receiver_is_the_one_tested() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Errors to Sentry") :]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block, "README's Errors to Sentry has a python block"
    receiver = block.group(1)[block.group(1).index("@task_failure.connect") :].strip()
    module = (ROOT / "tests" / "sentry_errors.py").read_text()
    assert receiver in module


def test_a_task_failure_reaches_sentry_with_its_name_and_id(
    app, start_worker, tmp_path: Path
) -> None:
    from tests.proj.tasks import CustomError, add, fail

    path = tmp_path / "sentry.jsonl"
    env = {"BEATQ_TEST_INCLUDE": "tests.sentry_errors", "SENTRY_TEST_FILE": str(path)}
    start_worker("-c", "1", extra_env=env)  # prefork: the event is sent from its child
    fine = add.delay(1, 2)
    failed = fail.delay("disk full")
    assert fine.get(timeout=scaled(15)) == 3
    with pytest.raises(CustomError):
        failed.get(timeout=scaled(15))
    events = wait_for(lambda: read_events(path), 15, "an event at the Sentry transport")
    assert len(events) == 1, "one event per failure (the ERROR log line is not a second)"
    event = events[0]
    assert event["tags"]["beatq.task"] == "tests.proj.tasks.fail"
    assert event["tags"]["beatq.task_id"] == failed.id
    assert event["contexts"]["beatq"]["args"] == "['disk full']"
    (exception,) = event["exception"]["values"]
    assert exception["type"] == "CustomError" and exception["value"] == "disk full"
    frames = exception["stacktrace"]["frames"]
    assert frames[-1]["function"] == "fail", "the traceback ends in the task's own code"
