"""The app the end-to-end tests run in real worker processes.

Its broker comes from BEATQ_BROKER_URL and its key prefix from BEATQ_TEST_PREFIX, so
each test gets its own store. Tasks journal their side effects to files in the directory
BEATQ_TEST_JOURNAL (one file per kind, one line per entry): a journal that needs no
broker, read the same way whichever backend the test runs on.
"""

import json
import os
import time
from pathlib import Path

from beatq import Beatq

app = Beatq("tests.proj", include=["tests.proj.tasks"])
app.conf.update(
    broker_transport_options={
        "global_keyprefix": os.environ.get("BEATQ_TEST_PREFIX", "beatq-test"),
        "visibility_timeout": float(os.environ.get("BEATQ_TEST_VISIBILITY", "60")),
    },
    timezone=os.environ.get("BEATQ_TEST_TIMEZONE", "UTC"),
    accept_content=os.environ.get("BEATQ_TEST_ACCEPT", "json").split(","),
)
if os.environ.get("BEATQ_TEST_RESULT_EXPIRES"):
    app.conf.result_expires = float(os.environ["BEATQ_TEST_RESULT_EXPIRES"])
if os.environ.get("BEATQ_TEST_ROUTES"):
    app.conf.task_routes = json.loads(os.environ["BEATQ_TEST_ROUTES"])


def _journal_file(kind: str) -> Path:
    folder = os.environ.get("BEATQ_TEST_JOURNAL")
    if not folder:
        raise RuntimeError("BEATQ_TEST_JOURNAL is not set: the test fixtures set it")
    return Path(folder) / kind


def record(kind: str, value: str) -> None:
    """Append `value` to the test's journal `kind` (one write: appends never interleave)."""
    line = (json.dumps(value) + "\n").encode()  # one line, whatever `value` holds
    fd = os.open(_journal_file(kind), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def journal(kind: str) -> list[str]:
    """The entries of journal `kind`, oldest first."""
    try:
        text = _journal_file(kind).read_bytes().decode()
    except FileNotFoundError:
        return []
    lines = text.split("\n")[:-1]  # an entry being written has no newline yet
    return [json.loads(line) for line in lines]


def now() -> float:
    return time.time()
