"""`beatq.utils.log.get_task_logger`, as Celery's `celery.utils.log` (issue 22).

A task logger sits under `beatq.task`; what it logs inside a task carries the task's name
and id, and a real worker prints them as Celery does: `proj.tasks.add[<id>]: message`.
"""

from __future__ import annotations

import io
import logging
import re
from datetime import timezone

import pytest

from beatq import Beatq
from beatq.log import ZoneFormatter
from beatq.utils.log import get_logger, get_task_logger
from tests.conftest import scaled, wait_for


def test_a_task_logger_is_named_as_asked_and_sits_under_beatq_task() -> None:
    logger = get_task_logger("proj.tasks")
    assert logger.name == "proj.tasks"
    assert logger.parent is logging.getLogger("beatq.task")
    assert get_task_logger("proj.tasks") is logger
    assert len(logger.filters) == 1, "asking twice adds no second filter"
    assert get_logger("proj.other") is logging.getLogger("proj.other")


@pytest.mark.parametrize("name", ["beatq", "beatq.task", "celery", "celery.task"])
def test_reserved_names_are_refused(name: str) -> None:
    with pytest.raises(RuntimeError, match="reserved"):
        get_task_logger(name)


def test_outside_a_task_a_record_prints_as_any_other() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(ZoneFormatter(timezone.utc))
    logger = get_task_logger("tests.outside")
    logger.addHandler(handler)
    try:
        logger.warning("plain %d", 1)
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue().rstrip().endswith("] tests.outside: plain 1")


def test_inside_an_eager_task_the_record_carries_the_task() -> None:
    """Also when the task's app is not the newest one in the process."""
    from tests.proj import app
    from tests.proj.tasks import lg_log, lg_logger

    newer = Beatq("newer", broker="memory://")

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    lg_logger.addHandler(handler)
    lg_logger.setLevel(logging.INFO)
    try:
        res = lg_log.apply(("here",), task_id="eager-1")
    finally:
        lg_logger.removeHandler(handler)
        lg_logger.setLevel(logging.NOTSET)
    newer.close()
    assert res.get() == "here"
    assert app.tasks[lg_log.name] is lg_log
    [record] = records
    assert (record.task_name, record.task_id) == ("tests.proj.tasks.lg_log", "eager-1")


@pytest.mark.backends("redis", "sqlite")
@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_a_real_worker_prints_the_task_name_and_id(app, start_worker, pool) -> None:
    from tests.proj.tasks import lg_log

    worker = start_worker("-P", pool, "-c", "2", "-l", "INFO")
    sent = [lg_log.delay(f"word{i}") for i in range(3)]
    assert [r.get(timeout=scaled(10)) for r in sent] == ["word0", "word1", "word2"]
    for r, word in zip(sent, ["word0", "word1", "word2"]):
        line = re.compile(
            rf"^\[[^\]]+ INFO/[^\]]+\] tests\.proj\.tasks\.lg_log\[{r.id}\]: said {word}$", re.M
        )
        wait_for(lambda line=line: line.search(worker.log()), 5, f"the log line of {word}")
