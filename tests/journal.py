"""The tests' journal: side effects of tasks (and hooks, and signal receivers) written
to files in the directory BEATQ_TEST_JOURNAL, one file per kind, one JSON line per entry.
It needs no broker, and reads the same way whichever backend a test runs on."""

import json
import os
from pathlib import Path
from typing import Any


def _journal_file(kind: str) -> Path:
    folder = os.environ.get("BEATQ_TEST_JOURNAL")
    if not folder:
        raise RuntimeError("BEATQ_TEST_JOURNAL is not set: the test fixtures set it")
    return Path(folder) / kind


def record(kind: str, value: Any) -> None:
    """Append `value` to the test's journal `kind` (one write: appends never interleave)."""
    line = (json.dumps(value) + "\n").encode()  # one line, whatever `value` holds
    fd = os.open(_journal_file(kind), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def journal(kind: str) -> list[Any]:
    """The entries of journal `kind`, oldest first."""
    try:
        text = _journal_file(kind).read_bytes().decode()
    except FileNotFoundError:
        return []
    lines = text.split("\n")[:-1]  # an entry being written has no newline yet
    return [json.loads(line) for line in lines]
