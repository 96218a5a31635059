"""Logging: one line per event, times in the app's time zone with their UTC offset."""

from __future__ import annotations

import logging
import sys
from datetime import datetime, tzinfo

FORMAT = "[%(asctime)s %(levelname)s/%(processName)s] %(name)s: %(message)s"


class ZoneFormatter(logging.Formatter):
    """Formats record times as `2026-11-24 18:30:01.123+08:00` in a given zone."""

    def __init__(self, zone: tzinfo, fmt: str = FORMAT) -> None:
        super().__init__(fmt)
        self.zone = zone

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return datetime.fromtimestamp(record.created, self.zone).isoformat(
            sep=" ", timespec="milliseconds"
        )


def setup_logging(level: str | int, zone: tzinfo) -> None:
    """Send beatq's logs (and the app's) to stderr at `level`, times in `zone`."""
    if isinstance(level, str):
        level = logging.getLevelName(level.upper())
        if not isinstance(level, int):
            raise ValueError("log level must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ZoneFormatter(zone))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
