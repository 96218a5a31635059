"""Logging: one line per event, times in the app's time zone with their UTC offset."""

from __future__ import annotations

import logging
import sys
from datetime import datetime, tzinfo

from . import signals

FORMAT = "[%(asctime)s %(levelname)s/%(processName)s] %(name)s: %(message)s"
# A record from a task logger (beatq.utils.log) logged inside a task, as Celery prints it
TASK_FORMAT = "[%(asctime)s %(levelname)s/%(processName)s] %(task_name)s[%(task_id)s]: %(message)s"


class ZoneFormatter(logging.Formatter):
    """Formats record times as `2026-11-24 18:30:01.123+08:00` in a given zone."""

    def __init__(self, zone: tzinfo, fmt: str = FORMAT) -> None:
        super().__init__(fmt)
        self.zone = zone
        self._task_style = logging.PercentStyle(TASK_FORMAT) if fmt == FORMAT else None

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802
        if self._task_style is not None and record.__dict__.get("task_id"):
            return self._task_style.format(record)
        return super().formatMessage(record)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return datetime.fromtimestamp(record.created, self.zone).isoformat(
            sep=" ", timespec="milliseconds"
        )


def setup_logging(level: str | int, zone: tzinfo, logfile: str | None = None) -> None:
    """Send beatq's logs (and the app's) to stderr, or to `logfile`, at `level`, times in
    `zone`.

    As Celery: a receiver of the `setup_logging` signal replaces this set-up (it is
    called instead); `after_setup_logger` follows either way, with the root logger."""
    if isinstance(level, str):
        level = logging.getLevelName(level.upper())
        if not isinstance(level, int):
            raise ValueError("log level must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    described = {"loglevel": level, "logfile": logfile, "format": FORMAT, "colorize": False}
    if signals.setup_logging.receivers:
        signals.setup_logging.send(sender=None, **described)
    else:
        _to_stderr(level, zone, logfile)
    if signals.after_setup_logger.receivers:
        signals.after_setup_logger.send(sender=None, logger=logging.getLogger(), **described)


def _to_stderr(level: int, zone: tzinfo, logfile: str | None = None) -> None:
    handler: logging.Handler
    if logfile:  # appended to, as Celery's --logfile; forked children share it
        handler = logging.FileHandler(logfile, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ZoneFormatter(zone))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
